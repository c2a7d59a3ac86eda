/*-------------------------------------------------------------------------
 *
 * dns.c
 *	  c-ares channel, query sending and answer collection.
 *
 * Queries are built with ares_create_query() and sent with ares_send() so
 * that (a) the AD bit can be set, asking a validating resolver to report
 * DNSSEC status, and (b) every response code reaches us as it is:
 * ARES_FLAG_NOCHECKRESP stops c-ares from turning SERVFAIL or REFUSED into
 * retries against other servers, which would blur the very facts we record.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <libpsl.h>
#include <stdlib.h>

#include "appguard.h"
#include "dns.h"
#include "dnswire.h"

#define DNS_EDNS_UDP_SIZE 1232	/* the DNS flag day 2020 recommendation */
#define DNS_TRIES 2

ares_channel
dns_channel_create(ares_sock_state_cb sock_state_cb, void *cb_data)
{
	struct ares_options opts;
	ares_channel channel;
	int			rc;

	memset(&opts, 0, sizeof(opts));
	opts.flags = ARES_FLAG_NOCHECKRESP | ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH |
		ARES_FLAG_NOALIASES;
	/* c-ares doubles the timeout on the second try: t + 2t = the setting */
	opts.timeout = Max(appguard_dns_timeout_ms / 3, 1);
	opts.tries = DNS_TRIES;
	opts.ednspsz = DNS_EDNS_UDP_SIZE;
	opts.sock_state_cb = sock_state_cb;
	opts.sock_state_cb_data = cb_data;
	rc = ares_init_options(&channel, &opts,
						   ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
						   ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a DNS resolver: %s", ares_strerror(rc))));
	if (appguard_dns_servers != NULL && appguard_dns_servers[0] != '\0')
	{
		rc = ares_set_servers_ports_csv(channel, appguard_dns_servers);
		if (rc != ARES_SUCCESS)
		{
			ares_destroy(channel);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid appguard.dns_servers \"%s\": %s",
							appguard_dns_servers, ares_strerror(rc)),
					 errhint("Give a comma-separated list of ip or ip:port, e.g. 192.0.2.53:53 or [2001:db8::53]:53.")));
		}
	}
	return channel;
}

/*
 * Runs inside ares_process_fd() or ares_destroy(): no PostgreSQL calls
 * here (an ERROR would unwind through c-ares), so the answer is copied
 * with malloc() and parsed later by dns_take_answer().
 */
static void
dns_answer_callback(void *arg, int status, int timeouts pg_attribute_unused(),
					unsigned char *abuf, int alen)
{
	QuerySlot  *slot = (QuerySlot *) arg;

	slot->in_flight = false;
	if (slot->probe == NULL && slot->shared == NULL)
		return;					/* the probe ended; nobody wants this */
	slot->ares_status = status;
	slot->answer = NULL;
	slot->answer_len = 0;
	if (status == ARES_SUCCESS && abuf != NULL && alen > 0)
	{
		slot->answer = malloc(alen);
		if (slot->answer != NULL)
		{
			memcpy(slot->answer, abuf, alen);
			slot->answer_len = alen;
		}
		else
			slot->ares_status = ARES_ENOMEM;
	}
	slot->completed = true;
}

void
dns_send(ares_channel channel, QuerySlot *slot, const char *name, int type)
{
	unsigned char *query = NULL;
	int			query_len = 0;
	int			rc;

	slot->completed = false;
	slot->answer = NULL;
	rc = ares_create_query(name, 1 /* class IN */, type, 0, 1, &query, &query_len,
						   DNS_EDNS_UDP_SIZE);
	if (rc != ARES_SUCCESS)
	{
		slot->ares_status = rc;
		slot->completed = true;
		return;
	}
	query[3] |= 0x20;			/* AD: report DNSSEC validation (RFC 6840) */
	slot->in_flight = true;
	ares_send(channel, query, query_len, dns_answer_callback, slot);
	ares_free_string(query);
}

void
dns_slot_discard(QuerySlot *slot)
{
	free(slot->answer);
	slot->answer = NULL;
	slot->answer_len = 0;
}

typedef struct ParseState
{
	QueryResult *result;
	int			capacity;
} ParseState;

static char *
lowercase_copy(const char *s)
{
	char	   *copy = pstrdup(s);

	for (char *p = copy; *p; p++)
		*p = pg_ascii_tolower((unsigned char) *p);
	return copy;
}

/* The same for len bytes that may hold a NUL (a CAA tag off the wire) */
static char *
lowercase_copy_bytes(const char *s, int len)
{
	char	   *copy = palloc(len + 1);

	for (int i = 0; i < len; i++)
		copy[i] = pg_ascii_tolower((unsigned char) s[i]);
	copy[len] = '\0';
	return copy;
}

/* Called by the wire parser for each answer record: keep what we use */
static void
collect_record(const DnsRecord *rec, void *arg)
{
	ParseState *st = (ParseState *) arg;
	QueryResult *r = st->result;
	DnsItem    *item;

	if (rec->type != DNS_TYPE_A && rec->type != DNS_TYPE_AAAA &&
		rec->type != DNS_TYPE_CNAME && rec->type != DNS_TYPE_NS &&
		rec->type != DNS_TYPE_TXT && rec->type != DNS_TYPE_CAA)
		return;
	if (r->nitems == st->capacity)
	{
		st->capacity = st->capacity ? st->capacity * 2 : 8;
		r->items = r->items ? repalloc(r->items, st->capacity * sizeof(DnsItem))
			: palloc(st->capacity * sizeof(DnsItem));
	}
	item = &r->items[r->nitems++];
	memset(item, 0, sizeof(*item));
	item->type = rec->type;
	item->owner = lowercase_copy(rec->owner);
	switch (rec->type)
	{
		case DNS_TYPE_A:
		case DNS_TYPE_AAAA:
			memcpy(item->addr, rec->addr, sizeof(item->addr));
			break;
		case DNS_TYPE_CNAME:
		case DNS_TYPE_NS:
			item->target = lowercase_copy(rec->target);
			break;
		case DNS_TYPE_TXT:
			item->bytes_len = dns_txt_join(rec->rdata, rec->rdlen, NULL, 0);
			item->bytes = palloc(item->bytes_len + 1);
			dns_txt_join(rec->rdata, rec->rdlen, item->bytes, item->bytes_len + 1);
			break;
		case DNS_TYPE_CAA:
			item->caa_flags = rec->caa_flags;
			item->caa_tag = lowercase_copy_bytes(rec->caa_tag, rec->caa_tag_len);
			item->caa_tag_len = rec->caa_tag_len;
			item->bytes_len = rec->caa_value_len;
			item->bytes = palloc(rec->caa_value_len + 1);
			memcpy(item->bytes, rec->caa_value, rec->caa_value_len);
			item->bytes[rec->caa_value_len] = '\0';
			break;
	}
}

void
dns_take_answer(QuerySlot *slot, QueryResult *result)
{
	ParseState	st;
	DnsHeader	header;
	const char *volatile problem = NULL;

	result->nitems = 0;
	result->items = NULL;
	result->error = NULL;
	if (slot->ares_status == ARES_ETIMEOUT)
	{
		result->outcome = QUERY_TIMED_OUT;
		return;
	}
	if (slot->ares_status != ARES_SUCCESS || slot->answer == NULL)
	{
		result->outcome = QUERY_FAILED;
		result->error = pstrdup(ares_strerror(slot->ares_status));
		dns_slot_discard(slot);
		return;
	}
	st.result = result;
	st.capacity = 0;
	PG_TRY();
	{
		problem = dns_parse_message(slot->answer, slot->answer_len, &header,
									collect_record, &st);
	}
	PG_FINALLY();
	{
		dns_slot_discard(slot);
	}
	PG_END_TRY();
	result->outcome = QUERY_ANSWERED;
	result->rcode = header.rcode;
	result->ad = header.ad;
	if (problem)
		result->error = pstrdup(problem);
}

bool
dns_registrable_domain(const char *host, char *out, size_t outsize)
{
	static const psl_ctx_t *psl = NULL;
	const char *regdom;

	if (psl == NULL)
		psl = psl_latest(NULL); /* newest of the built-in and Debian's list */
	if (psl == NULL)
		psl = psl_builtin();
	regdom = psl ? psl_registrable_domain(psl, host) : NULL;
	if (regdom == NULL || strlen(regdom) >= outsize)
		return false;
	strcpy(out, regdom);
	return true;
}
