/*-------------------------------------------------------------------------
 *
 * probe.c
 *	  The state machine of one host's measurement.
 *
 *	  RESOLVING   A, AAAA, NS, TXT and CAA questions are out; we wait for
 *	              A and AAAA only.  NS, TXT and CAA are shared by the
 *	              probes of a run (dnsshare.c): asked once per name.
 *	  CONNECTING  a non-blocking connect() to the first address DNS gave
 *	              that the address policy allows (never a second lookup).
 *	  HANDSHAKING SSL_do_handshake() steps as the socket becomes ready.
 *	              Then CONNECTING and HANDSHAKING again for each further
 *	              address of the list (probe_addresses.c), one at a time,
 *	              within the same deadline; the first address's outcome
 *	              is the probe's, a further one's is a fact of the list.
 *	  FINISHING   TLS is measured; NS, TXT or the CAA climb still running.
 *	  DONE        everything answered, failed or timed out.
 *
 * The engine calls in when DNS answers arrive, when the socket is ready
 * and when time passes; nothing here waits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appguard.h"
#include "dns.h"
#include "dnswire.h"
#include "engine.h"
#include "facts.h"
#include "guard.h"
#include "tls.h"
#include "utils/timestamp.h"

static const char *const probe_status_names[] = {
	[PROBE_OK] = "ok",
	[PROBE_DNS_FAILED] = "dns_failed",
	[PROBE_CONNECT_FAILED] = "connect_failed",
	[PROBE_TLS_FAILED] = "tls_failed",
	[PROBE_TIMEOUT] = "timeout",
	[PROBE_BLOCKED] = "blocked",
};

static const char *const phase_names[] = {
	[PHASE_QUEUED] = "waiting to start",
	[PHASE_RESOLVING] = "resolving the host name",
	[PHASE_CONNECTING] = "connecting",
	[PHASE_HANDSHAKING] = "in the TLS handshake",
	[PHASE_FINISHING] = "waiting for DNS answers",
	[PHASE_DONE] = "done",
};

static const int query_types[QUERY_KIND_COUNT] = {
	[QUERY_A] = DNS_TYPE_A,
	[QUERY_AAAA] = DNS_TYPE_AAAA,
	[QUERY_NS] = DNS_TYPE_NS,
	[QUERY_TXT] = DNS_TYPE_TXT,
	[QUERY_CAA] = DNS_TYPE_CAA,
};

static void caa_climb(Engine *engine, Probe *probe);

const char *
probe_status_name(ProbeStatus status)
{
	return probe_status_names[status];
}

/* Point a probe's result at a shared question's answer */
static void
take_shared(Probe *probe, QueryKind kind)
{
	QueryResult *r = &probe->results[kind];
	const QueryResult *answer = &probe->shared[kind]->result;

	r->outcome = answer->outcome;
	r->rcode = answer->rcode;
	r->ad = answer->ad;
	r->error = answer->error;
	r->nitems = answer->nitems;
	r->items = answer->items;	/* read only: facts_dns.c sorts copies */
}

/*
 * A question is out again (a CAA climb's next name): drop the last
 * answer, whose records may belong to a shared question this probe no
 * longer holds (and that may be freed), so that nothing reads them if the
 * probe ends before the new answer comes (facts_dns.c reads the items of a
 * timed-out query too).
 */
static void
forget_answer(QueryResult *result)
{
	result->outcome = QUERY_PENDING;
	result->rcode = 0;
	result->ad = false;
	result->error = NULL;
	result->nitems = 0;
	result->items = NULL;
}

/*
 * NS, TXT and CAA are asked through the run's shared questions
 * (dnsshare.c): an answer this run already has is taken at once.
 */
static void
ask_shared(Engine *engine, Probe *probe, QueryKind kind, const char *name)
{
	QueryResult *result = &probe->results[kind];
	SharedQuery *previous = probe->shared[kind];

	strlcpy(result->qname, name, sizeof(result->qname));
	forget_answer(result);
	probe->shared[kind] = dns_share_ask(engine, kind, result->qname);
	if (previous != NULL)
		dns_share_release(engine, previous);	/* a CAA climb's last name */
	if (probe->shared[kind]->done)
		take_shared(probe, kind);
}

static void
ask(Engine *engine, Probe *probe, QueryKind kind, const char *name)
{
	QueryResult *result = &probe->results[kind];
	QuerySlot  *slot;

	if (kind != QUERY_A && kind != QUERY_AAAA)
	{
		ask_shared(engine, probe, kind, name);
		return;
	}
	if (probe->slots[kind] == NULL)
		probe->slots[kind] = engine_slot_get(engine);
	slot = probe->slots[kind];

	strlcpy(result->qname, name, sizeof(result->qname));
	forget_answer(result);
	slot->probe = probe;
	slot->kind = kind;
	slot->generation++;
	dns_send(engine->channel, slot, result->qname, query_types[kind]);
}

void
probe_begin(Engine *engine, Probe *probe)
{
	probe->started_at = GetCurrentTimestamp();
	probe->deadline = TimestampTzPlusMilliseconds(probe->started_at,
												  appguard_timeout_ms);
	probe->sock = -1;
	probe->first = -1;			/* no address listed yet */
	probe->current = -1;
	probe->phase = PHASE_RESOLVING;
	probe->status = PROBE_OK;
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
		probe->results[k].outcome = QUERY_NOT_ASKED;

	if (!guard_port_in_list(probe->port, appguard_allowed_ports))
	{
		probe->status = PROBE_BLOCKED;
		probe->error = psprintf("port %d is not in appguard.allowed_ports (%s)",
								probe->port, appguard_allowed_ports);
		probe->phase = PHASE_DONE;
		return;
	}
	if (!dns_registrable_domain(probe->host, probe->registrable_domain,
								sizeof(probe->registrable_domain)))
		probe->registrable_domain[0] = '\0';

	ask(engine, probe, QUERY_A, probe->host);
	ask(engine, probe, QUERY_AAAA, probe->host);
	if (probe->registrable_domain[0])
	{
		ask(engine, probe, QUERY_NS, probe->registrable_domain);
		ask(engine, probe, QUERY_TXT, probe->registrable_domain);
	}
	probe->caa_name = probe->host;
	ask(engine, probe, QUERY_CAA, probe->caa_name);
	caa_climb(engine, probe);
}

static void
finish(Probe *probe, ProbeStatus status, char *error)
{
	probe->status = status;
	probe->error = error;
}

static void
close_connection(Engine *engine, Probe *probe)
{
	if (probe->ssl)
	{
		tls_close(probe->ssl);
		probe->ssl = NULL;
	}
	if (probe->sock >= 0)
	{
		engine_unwatch(engine, probe);
		close(probe->sock);
		probe->sock = -1;
	}
}

static bool
dns_all_done(Probe *probe)
{
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
		if (probe->results[k].outcome == QUERY_PENDING)
			return false;
	return true;
}

/* Leave FINISHING (or a failed phase) for DONE once DNS is complete */
static void
maybe_done(Probe *probe)
{
	if (probe->phase == PHASE_FINISHING && dns_all_done(probe))
		probe->phase = PHASE_DONE;
}

static bool
caa_set_present(const QueryResult *r)
{
	for (int i = 0; i < r->nitems; i++)
		if (r->items[i].type == DNS_TYPE_CAA)
			return true;
	return false;
}

/*
 * RFC 8659 tree climbing: when a name has no CAA set, ask its parent, up to
 * the top-level domain.  An error (SERVFAIL, REFUSED, timeout) ends the
 * climb: the answer is then unknown, which the rcode records.  A parent
 * another probe of the run asked already answers at once: climb on.
 */
static void
caa_climb(Engine *engine, Probe *probe)
{
	const QueryResult *r = &probe->results[QUERY_CAA];

	while (r->outcome == QUERY_ANSWERED)
	{
		const char *dot;

		if (r->error != NULL)
			return;				/* a malformed answer ends the climb: unknown */
		if (caa_set_present(r))
		{
			probe->caa_found = true;
			strlcpy(probe->caa_found_at, probe->caa_name, sizeof(probe->caa_found_at));
			return;
		}
		if (r->rcode != DNS_RCODE_NOERROR && r->rcode != DNS_RCODE_NXDOMAIN)
			return;
		dot = strchr(probe->caa_name, '.');
		if (dot == NULL || dot[1] == '\0')
			return;
		probe->caa_name = dot + 1;
		ask(engine, probe, QUERY_CAA, probe->caa_name);
	}
}

/* Connect to the next address from here on */
static void
use_address(Probe *probe, int index)
{
	ProbeAddress *address = &probe->addresses[index];

	probe->current = index;
	memcpy(&probe->addr, &address->addr, sizeof(probe->addr));
	probe->addrlen = address->addrlen;
	strlcpy(probe->addr_text, address->text, sizeof(probe->addr_text));
}

/*
 * No address is allowed: the probe is refused, naming the first address
 * (the list holds at least one: the cap is at least 1 per family).
 */
static void
refuse_all(Probe *probe)
{
	const ProbeAddress *first = &probe->addresses[0];

	probe->addr_text[0] = '\0';
	finish(probe, PROBE_BLOCKED,
		   psprintf("refused by the address policy: %s is a %s address%s",
					first->text, first->blocked,
					appguard_allow_private_addresses ? "" :
					" (appguard.allow_private_addresses is off, and appguard.allowed_networks does not list it)"));
}

/*
 * The connection to the current address failed: an address after the
 * first is one fact of the list; the first one's failure is the probe's,
 * as when a probe measured one address, and the others are then not
 * measured (a failed probe is an unknown: its other facts are not used).
 */
static void
record_failure(Probe *probe, ProbeStatus status, char *error)
{
	ProbeAddress *address = &probe->addresses[probe->current];

	address->state = ADDRESS_FAILED;
	address->status = status;
	address->error = error;
	if (probe->current == probe->first)
	{
		finish(probe, status, error);
		probe_addresses_abandon(probe);
	}
}

/* Connect to probe->addr; false, with the failure recorded, if it failed */
static bool
start_connect(Engine *engine, Probe *probe)
{
	int			sock;

	probe->phase = PHASE_CONNECTING;
	probe->connect_deadline =
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), appguard_connect_timeout_ms);
	sock = socket(probe->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sock < 0)
	{
		record_failure(probe, PROBE_CONNECT_FAILED,
					   psprintf("could not create a socket: %m"));
		return false;
	}
	probe->sock = sock;
	engine_watch(engine, probe, sock, WL_SOCKET_WRITEABLE);
	if (connect(sock, (struct sockaddr *) &probe->addr, probe->addrlen) < 0 &&
		errno != EINPROGRESS)
	{
		record_failure(probe, PROBE_CONNECT_FAILED,
					   psprintf("could not connect to %s port %d: %m",
								probe->addr_text, probe->port));
		close_connection(engine, probe);
		return false;
	}
	return true;
}

/*
 * The first address is done: on to the next allowed one, one connection
 * at a time (the probe holds one descriptor), until none is left.
 */
static void
next_address(Engine *engine, Probe *probe)
{
	int			next;

	while ((next = probe_next_address(probe, probe->current)) >= 0 &&
		   GetCurrentTimestamp() < probe->deadline)
	{
		use_address(probe, next);
		if (start_connect(engine, probe))
			return;
	}
	probe_addresses_abandon(probe);	/* out of time: the rest */
	probe->current = -1;
	probe->phase = PHASE_FINISHING;
}

void
probe_on_dns(Engine *engine, Probe *probe)
{
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
	{
		QuerySlot  *slot = probe->slots[k];

		if (probe->results[k].outcome != QUERY_PENDING)
			continue;
		if (probe->shared[k] != NULL)
		{
			if (!probe->shared[k]->done)
				continue;
			take_shared(probe, k);
		}
		else
		{
			if (!slot->completed)
				continue;
			slot->completed = false;
			dns_take_answer(slot, &probe->results[k]);
		}
		if (k == QUERY_CAA)
			caa_climb(engine, probe);
	}

	if (probe->phase == PHASE_RESOLVING &&
		probe->results[QUERY_A].outcome != QUERY_PENDING &&
		probe->results[QUERY_AAAA].outcome != QUERY_PENDING)
	{
		if (!probe_list_addresses(probe))
		{
			finish(probe, PROBE_DNS_FAILED,
				   psprintf("%s has no IPv4 or IPv6 address", probe->host));
			probe->phase = PHASE_FINISHING;
		}
		else if (probe->first < 0)
		{
			refuse_all(probe);
			probe->phase = PHASE_FINISHING;
		}
		else
		{
			use_address(probe, probe->first);
			if (!start_connect(engine, probe))
				probe->phase = PHASE_FINISHING;
		}
	}
	maybe_done(probe);
}

/* Copy the certificates as sent, for the snapshot's chain column */
static void
keep_chain_der(Probe *probe, STACK_OF(X509) *chain)
{
	int			n = chain ? sk_X509_num(chain) : 0;

	probe->chain_len = n;
	probe->chain_der = palloc0((n + 1) * sizeof(char *));
	probe->chain_der_len = palloc0((n + 1) * sizeof(int));
	for (int i = 0; i < n; i++)
	{
		X509	   *cert = sk_X509_value(chain, i);
		int			len = i2d_X509(cert, NULL);
		unsigned char *der;

		if (len <= 0)
			continue;
		/* into palloc'd memory: nothing of OpenSSL's to free if palloc fails */
		probe->chain_der[i] = palloc(len);
		der = (unsigned char *) probe->chain_der[i];
		if (i2d_X509(cert, &der) != len)
		{
			pfree(probe->chain_der[i]);
			probe->chain_der[i] = NULL;
			continue;
		}
		probe->chain_der_len[i] = len;
	}
}

static void
write_tls_connection(JsonWriter *jw, Probe *probe)
{
	jw_string(jw, "address", probe->addr_text);
	jw_string(jw, "sni", probe->host);
}

/*
 * The handshake is done: measure, then hang up.  The first address gets
 * the whole "tls" object, the others the summary of the list.
 */
static void
measure_tls(Engine *engine, Probe *probe)
{
	JsonWriter	jw;
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(probe->ssl);
	const unsigned char *ocsp = NULL;
	long		ocsp_len = SSL_get_tlsext_status_ocsp_resp(probe->ssl, &ocsp);
	ProbeAddress *address = &probe->addresses[probe->current];

	address->tls = palloc0(sizeof(TlsSummary));
	if (probe->current == probe->first)
	{
		jw_init(&jw);
		jw_begin_object(&jw, NULL);
		write_tls_connection(&jw, probe);
		jw_string(&jw, "version", SSL_get_version(probe->ssl));
		jw_string(&jw, "cipher", SSL_get_cipher_name(probe->ssl));
		facts_tls_certificates(&jw, chain, engine->trust_store, probe->host,
							   ocsp, ocsp_len, address->tls);
		jw_end_object(&jw);
		probe->tls_facts = jw.result;
		keep_chain_der(probe, chain);
		probe->handshake_done = true;
	}
	else
		facts_tls_summary(chain, engine->trust_store, probe->host,
						  ocsp, ocsp_len, address->tls);
	address->state = ADDRESS_MEASURED;
	close_connection(engine, probe);
	next_address(engine, probe);
}

static void
fail_connection(Engine *engine, Probe *probe, ProbeStatus status, char *error)
{
	JsonWriter	jw;
	bool		first = probe->current == probe->first;

	record_failure(probe, status, error);
	if (first && probe->phase == PHASE_HANDSHAKING)
	{
		/* connected but no TLS: say where we were, nothing more */
		jw_init(&jw);
		jw_begin_object(&jw, NULL);
		write_tls_connection(&jw, probe);
		jw_end_object(&jw);
		probe->tls_facts = jw.result;
	}
	close_connection(engine, probe);
	if (first)
	{
		probe->current = -1;
		probe->phase = PHASE_FINISHING;
	}
	else
		next_address(engine, probe);
}

static void
handshake(Engine *engine, Probe *probe)
{
	char	   *error = NULL;

	switch (tls_handshake_step(probe->ssl, &error))
	{
		case TLS_STEP_DONE:
			measure_tls(engine, probe);
			break;
		case TLS_STEP_WANT_READ:
			engine_watch(engine, probe, probe->sock, WL_SOCKET_READABLE);
			break;
		case TLS_STEP_WANT_WRITE:
			engine_watch(engine, probe, probe->sock, WL_SOCKET_WRITEABLE);
			break;
		case TLS_STEP_FAILED:
			fail_connection(engine, probe, PROBE_TLS_FAILED, error);
			break;
	}
}

static void
connected(Engine *engine, Probe *probe)
{
	int			err = 0;
	socklen_t	len = sizeof(err);
	char	   *error = NULL;

	if (getsockopt(probe->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0)
	{
		fail_connection(engine, probe, PROBE_CONNECT_FAILED,
						psprintf("could not connect to %s port %d: %s",
								 probe->addr_text, probe->port, strerror(err)));
		return;
	}
	probe->phase = PHASE_HANDSHAKING;
	probe->ssl = tls_start(engine->ssl_ctx, probe->sock, probe->host, &error);
	if (probe->ssl == NULL)
	{
		fail_connection(engine, probe, PROBE_TLS_FAILED, error);
		return;
	}
	handshake(engine, probe);
}

void
probe_on_socket(Engine *engine, Probe *probe, int wl_events pg_attribute_unused())
{
	if (probe->phase == PHASE_CONNECTING)
		connected(engine, probe);
	else if (probe->phase == PHASE_HANDSHAKING)
		handshake(engine, probe);
	maybe_done(probe);
}

/* Stop waiting for a query: it counts as timed out */
static void
abandon_query(QueryResult *result)
{
	if (result->outcome == QUERY_PENDING)
		result->outcome = QUERY_TIMED_OUT;
}

void
probe_on_time(Engine *engine, Probe *probe, TimestampTz now)
{
	if (probe->phase == PHASE_DONE)
		return;
	if (now >= probe->deadline)
	{
		char	   *error = psprintf("no answer within %d ms while %s",
									 appguard_timeout_ms, phase_names[probe->phase]);

		if (probe->phase == PHASE_CONNECTING || probe->phase == PHASE_HANDSHAKING)
		{
			/* a further address times out alone (next_address sees the time) */
			fail_connection(engine, probe, PROBE_TIMEOUT, error);
		}
		else if (probe->phase != PHASE_FINISHING)
			finish(probe, PROBE_TIMEOUT, error);
		if (probe->addresses_listed)
			probe_addresses_abandon(probe);
		for (int k = 0; k < QUERY_KIND_COUNT; k++)
			abandon_query(&probe->results[k]);
		probe->phase = PHASE_DONE;
		return;
	}
	if (probe->phase == PHASE_CONNECTING && now >= probe->connect_deadline)
		fail_connection(engine, probe, PROBE_CONNECT_FAILED,
						psprintf("could not connect to %s port %d within %d ms",
								 probe->addr_text, probe->port,
								 appguard_connect_timeout_ms));
	maybe_done(probe);
}

TimestampTz
probe_next_deadline(Probe *probe)
{
	if (probe->phase == PHASE_CONNECTING && probe->connect_deadline < probe->deadline)
		return probe->connect_deadline;
	return probe->deadline;
}

void
probe_release(Engine *engine, Probe *probe)
{
	close_connection(engine, probe);
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
	{
		abandon_query(&probe->results[k]);
		if (probe->slots[k] != NULL)
			engine_slot_put(engine, probe->slots[k]);
		probe->slots[k] = NULL;
		if (probe->shared[k] != NULL)
			dns_share_release(engine, probe->shared[k]);
		probe->shared[k] = NULL;
	}
}
