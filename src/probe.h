/*-------------------------------------------------------------------------
 *
 * probe.h
 *	  One host's measurement: the DNS queries, the connection, the TLS
 *	  handshake and what they found.  A probe is a state machine driven by
 *	  the engine (engine.c); it never waits by itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_PROBE_H
#define APPGUARD_PROBE_H

#include "postgres.h"

#include <sys/socket.h>
#include <openssl/ssl.h>

#include "datatype/timestamp.h"
#include "jsonw.h"
#include "lib/stringinfo.h"

typedef enum ProbeStatus
{
	PROBE_OK = 0,
	PROBE_DNS_FAILED,
	PROBE_CONNECT_FAILED,
	PROBE_TLS_FAILED,
	PROBE_TIMEOUT,
	PROBE_BLOCKED
} ProbeStatus;

typedef enum ProbePhase
{
	PHASE_QUEUED = 0,
	PHASE_RESOLVING,			/* waiting for A and AAAA */
	PHASE_CONNECTING,
	PHASE_HANDSHAKING,
	PHASE_FINISHING,			/* TLS done, other DNS queries outstanding */
	PHASE_DONE
} ProbePhase;

/* The DNS questions one probe asks */
typedef enum QueryKind
{
	QUERY_A = 0,
	QUERY_AAAA,
	QUERY_NS,					/* at the registrable domain */
	QUERY_TXT,					/* at the registrable domain */
	QUERY_CAA,					/* climbing from the host to the TLD */
	QUERY_KIND_COUNT
} QueryKind;

/* How a query ended; an answer carries its own rcode */
typedef enum QueryOutcome
{
	QUERY_PENDING = 0,
	QUERY_ANSWERED,
	QUERY_TIMED_OUT,
	QUERY_FAILED,				/* no usable answer: unreachable, bad reply */
	QUERY_NOT_ASKED
} QueryOutcome;

typedef struct Probe Probe;
struct SharedQuery;

/*
 * One address DNS gave for the host, as the probe measures it
 * (probe_addresses.c builds the list; probe.c connects to each).
 */
typedef enum AddressState
{
	ADDRESS_PENDING = 0,		/* allowed, not measured yet */
	ADDRESS_BLOCKED,			/* refused by the address policy: a fact */
	ADDRESS_MEASURED,			/* handshake done, tls filled in */
	ADDRESS_FAILED,				/* connect, TLS or time failed: status, error */
	ADDRESS_NOT_MEASURED		/* the probe ended before its turn */
} AddressState;

typedef struct ProbeAddress
{
	struct sockaddr_storage addr;
	socklen_t	addrlen;
	char		text[64];
	AddressState state;
	const char *blocked;		/* the address class, when blocked */
	ProbeStatus status;			/* when failed */
	char	   *error;			/* when failed */
	struct TlsSummary *tls;		/* when measured */
} ProbeAddress;

/*
 * What c-ares hands back, written by its callback.  The callback runs
 * inside ares_process_fd(), where a PostgreSQL ERROR would unwind through
 * c-ares, so it only copies the answer with malloc(); the engine parses it
 * afterwards.
 */
typedef struct QuerySlot
{
	Probe	   *probe;			/* NULL once the probe stopped listening */
	struct SharedQuery *shared; /* or the shared question it asks (dnsshare.c) */
	struct QuerySlot *next;		/* engine's free and orphan lists */
	QueryKind	kind;
	int			generation;		/* CAA climbs reuse the slot */
	bool		in_flight;		/* c-ares still owns the query */
	bool		completed;		/* answered, not yet read */
	int			ares_status;
	unsigned char *answer;		/* malloc'd copy, freed by the engine */
	int			answer_len;
} QuerySlot;

typedef struct DnsItem
{
	uint16		type;
	char	   *owner;
	char	   *target;			/* CNAME, NS */
	uint8		addr[16];		/* A, AAAA */
	int			caa_flags;
	char	   *caa_tag;		/* caa_tag_len bytes, NUL-terminated */
	int			caa_tag_len;
	char	   *bytes;			/* TXT joined strings, CAA value (may hold NUL bytes) */
	int			bytes_len;
} DnsItem;

typedef struct QueryResult
{
	QueryOutcome outcome;
	char		qname[256];
	int			rcode;			/* valid when answered */
	bool		ad;
	char	   *error;			/* parse or transport problem */
	int			nitems;
	DnsItem    *items;
} QueryResult;

struct Probe
{
	/* what to measure */
	char		host[256];
	int			port;
	char		registrable_domain[256];
	int			index;			/* position in the engine's target list */

	ProbePhase	phase;
	TimestampTz started_at;
	TimestampTz deadline;
	TimestampTz connect_deadline;

	MemoryContext cxt;			/* everything of this probe; freed when done */

	/*
	 * DNS.  Slots come from the engine, not from the probe's memory: c-ares
	 * may still answer a query after its probe has been freed.
	 */
	QuerySlot  *slots[QUERY_KIND_COUNT];	/* A and AAAA */
	struct SharedQuery *shared[QUERY_KIND_COUNT];	/* NS, TXT and CAA */
	QueryResult results[QUERY_KIND_COUNT];
	const char *caa_name;		/* the name the current CAA query asks */
	char		caa_found_at[256];	/* where the relevant CAA set was found */
	bool		caa_found;

	/*
	 * Addresses: IPv4 then IPv6, each sorted, at most
	 * appguard.max_addresses_per_family of each (and the first allowed
	 * one, always).  first is the one the "tls" object describes, current
	 * the one connected to now (-1: none).
	 */
	ProbeAddress *addresses;
	int			naddresses;
	int			addresses_skipped;	/* beyond the cap: counted only */
	int			first;
	int			current;
	bool		addresses_listed;

	/* connection, to addresses[current] */
	int			sock;
	struct sockaddr_storage addr;
	socklen_t	addrlen;
	char		addr_text[64];
	SSL		   *ssl;
	int			wait_events;	/* WL_SOCKET_* the socket waits for, 0 if none */
	bool		holds_fd;		/* AcquireExternalFD() succeeded for the socket */

	/* outcome */
	ProbeStatus status;
	char	   *error;
	bool		handshake_done;
	JwNode	   *tls_facts;		/* the "tls" object once measured, or NULL */
	char	  **chain_der;		/* certificates as sent (palloc'd DER) */
	int		   *chain_der_len;
	int			chain_len;
};

extern const char *probe_status_name(ProbeStatus status);

/* The state machine of one probe, driven by the engine (engine.c) */
struct Engine;
extern void probe_begin(struct Engine *engine, Probe *probe);
extern void probe_on_dns(struct Engine *engine, Probe *probe);
extern void probe_on_socket(struct Engine *engine, Probe *probe, int wl_events);
extern void probe_on_time(struct Engine *engine, Probe *probe, TimestampTz now);
extern TimestampTz probe_next_deadline(Probe *probe);
extern void probe_release(struct Engine *engine, Probe *probe);

/*
 * The address list of a probe whose A and AAAA answers are in
 * (probe_addresses.c): sorts the answers, applies the cap and the address
 * policy.  Returns whether any address was given at all.
 */
extern bool probe_list_addresses(Probe *probe);
/* The next address to connect to after index, or -1 */
extern int	probe_next_address(Probe *probe, int after);
/* Mark the addresses still pending as not measured */
extern void probe_addresses_abandon(Probe *probe);

#endif							/* APPGUARD_PROBE_H */
