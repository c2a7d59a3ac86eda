/*-------------------------------------------------------------------------
 *
 * engine.h
 *	  The event loop that drives many probes at once: c-ares, non-blocking
 *	  sockets and OpenSSL handshakes, all waited on through one
 *	  WaitEventSet together with the latch and the nearest deadline.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_ENGINE_H
#define APPGUARD_ENGINE_H

#include "postgres.h"

#include <ares.h>
#include <openssl/ssl.h>

#include "lib/ilist.h"
#include "lib/pairingheap.h"
#include "probe.h"
#include "storage/latch.h"
#include "utils/jsonb.h"

/*
 * How many probes may wait for their first DNS answers at once.  Each
 * sends up to five questions at its start (NS, TXT and CAA only when no
 * other probe of the run asked them: dnsshare.c); a window keeps the bursts the DNS
 * server sees (and the answers we receive) within what one UDP socket
 * buffers, so that no question is dropped and retried (a dropped question
 * would make a sweep's facts differ from a single probe's).
 */
#define ENGINE_DNS_WINDOW 24

typedef struct ProbeTarget
{
	const char *host;			/* already normalised by guard_normalize_host */
	int			port;
} ProbeTarget;

/*
 * Called once per finished probe with its facts, in completion order; may
 * use SPI, may ERROR.  The probe and the facts are freed when it returns.
 */
typedef void (*ProbeDoneCallback) (Probe *probe, Jsonb *facts, void *arg);

/*
 * Called once per turn of the loop, after the finished probes were handed
 * over and before the loop waits again (NULL: none).  It may use SPI and
 * even commit (the sweep does), as long as the engine's memory lives
 * outside the transaction.  Returns when it wants to be called again at
 * the latest, or 0 for whenever something happens.
 */
typedef TimestampTz (*EngineTurnCallback) (void *arg);

typedef struct EngineRun
{
	const ProbeTarget *targets;
	int			ntargets;
	int			concurrency;	/* probes in flight at most */
	TimestampTz budget_deadline;	/* start no probe after this; 0 = none */
	ProbeDoneCallback done;
	EngineTurnCallback turn;
	void	   *arg;
	/* filled in by engine_run */
	int			started;		/* probes started (the others were skipped) */
	int			most_in_flight;
	int64		wakeups;
	int64		shared_sent;	/* NS, TXT and CAA questions sent (dnsshare.c) */
	int64		shared_joined;	/* asks that took a question of the run instead */
} EngineRun;

typedef struct Flight Flight;

typedef struct Engine
{
	MemoryContext cxt;
	ares_channel channel;
	SSL_CTX    *ssl_ctx;
	X509_STORE *trust_store;
	int			epoll_fd;		/* every probe and c-ares socket */
	WaitEventSet *wait_set;		/* latch, postmaster death, epoll_fd */
	int			reserved_fds;	/* AcquireExternalFD() for epoll_fd and c-ares */
	int			nsockets;		/* sockets registered in epoll_fd */

	Flight	  **active;			/* probes in flight, in no order */
	int			nactive;
	int			concurrency;
	int			nresolving;		/* active probes waiting for A and AAAA */
	pairingheap *deadlines;		/* active probes by their next deadline */
	dlist_head	awaiting_dns;	/* active probes with a question pending */
	Flight	   *finished;		/* done, to hand over in the order they finished */
	Flight	   *finished_tail;

	QuerySlot  *free_slots;
	QuerySlot  *orphan_slots;	/* still out in c-ares, owner gone */

	/* questions the probes share (dnsshare.c) */
	MemoryContext share_cxt;
	struct HTAB *shared_queries;	/* by kind and name */
	dlist_head	shared_pending; /* asked, not answered yet */
	dlist_head	shared_idle;	/* answered, cached, nobody refers to it */
	int			nshared_idle;
	int64		shared_sent;	/* questions sent */
	int64		shared_joined;	/* asks answered by a question of the run */
} Engine;

/*
 * A DNS question the probes of one engine run share: NS or TXT at a
 * registrable domain, CAA at one name of a climb.  See dnsshare.c.
 */
typedef struct SharedQueryKey
{
	QueryKind	kind;
	char		name[256];
} SharedQueryKey;

typedef struct SharedQuery
{
	SharedQueryKey key;
	MemoryContext cxt;			/* this struct and its answer's records */
	QuerySlot  *slot;			/* while the question is out */
	QueryResult result;			/* once done */
	int			refcount;		/* probes whose result points into it */
	bool		done;
	bool		cached;			/* in the hash: later askers get it */
	dlist_node	node;			/* in shared_pending or shared_idle */
} SharedQuery;

/* dnsshare.c */
extern void dns_share_open(Engine *engine);
extern SharedQuery *dns_share_ask(Engine *engine, QueryKind kind, const char *name);
extern void dns_share_release(Engine *engine, SharedQuery *query);
extern void dns_share_collect(Engine *engine);
extern void dns_share_close(Engine *engine);

/*
 * Probe every target, at most run->concurrency at a time (and at most as
 * many as there are descriptors for extensions), calling run->done for
 * each as it finishes.  Targets not started before the budget deadline
 * are skipped.  Every socket and library object is released before it
 * returns or rethrows.
 */
extern void engine_run(EngineRun *run);

/* Socket registration, used by probe.c */
extern void engine_watch(Engine *engine, Probe *probe, int sock, int wl_events);
extern void engine_unwatch(Engine *engine, Probe *probe);

/* Query slots outlive probes; see probe.h */
extern QuerySlot *engine_slot_get(Engine *engine);
extern void engine_slot_put(Engine *engine, QuerySlot *slot);

#endif							/* APPGUARD_ENGINE_H */
