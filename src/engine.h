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

#include "probe.h"
#include "storage/latch.h"
#include "utils/jsonb.h"

typedef struct ProbeTarget
{
	const char *host;			/* already normalised by guard_normalize_host */
	int			port;
} ProbeTarget;

/* Called once per finished probe with its facts; may use SPI, may ERROR */
typedef void (*ProbeDoneCallback) (Probe *probe, Jsonb *facts, void *arg);

typedef struct Engine
{
	MemoryContext cxt;
	ares_channel channel;
	SSL_CTX    *ssl_ctx;
	X509_STORE *trust_store;
	int			epoll_fd;		/* every probe and c-ares socket */
	WaitEventSet *wait_set;		/* latch, postmaster death, epoll_fd */
	Probe	  **active;			/* probes in flight */
	int			nactive;
	int			concurrency;
	int			nsockets;		/* sockets registered in epoll_fd */
	QuerySlot  *free_slots;
	QuerySlot  *orphan_slots;	/* still out in c-ares, owner gone */
} Engine;

/*
 * Probe every target, at most concurrency at a time, calling done for each
 * as it finishes (in completion order).  Targets not started before the
 * budget deadline (0 = none) are skipped; returns how many were probed.
 * Every socket and library object is released before it returns or
 * rethrows.
 */
extern int	engine_run(const ProbeTarget *targets, int ntargets, int concurrency,
					   TimestampTz budget_deadline,
					   ProbeDoneCallback done, void *arg);

/* Socket registration, used by probe.c */
extern void engine_watch(Engine *engine, Probe *probe, int sock, int wl_events);
extern void engine_unwatch(Engine *engine, Probe *probe);

/* Query slots outlive probes; see probe.h */
extern QuerySlot *engine_slot_get(Engine *engine);
extern void engine_slot_put(Engine *engine, QuerySlot *slot);

/* The state machine of one probe, in probe.c */
extern void probe_begin(Engine *engine, Probe *probe);
extern void probe_on_dns(Engine *engine, Probe *probe);
extern void probe_on_socket(Engine *engine, Probe *probe, int wl_events);
extern void probe_on_time(Engine *engine, Probe *probe, TimestampTz now);
extern TimestampTz probe_next_deadline(Probe *probe);
extern void probe_release(Engine *engine, Probe *probe);

/* The whole facts document, in facts.c */
extern Jsonb *facts_document(Engine *engine, Probe *probe);

#endif							/* APPGUARD_ENGINE_H */
