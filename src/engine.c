/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  Many probes in one event loop.
 *
 * Every socket (each probe's TCP connection and c-ares's UDP/TCP sockets)
 * is registered in one epoll set of our own, and that epoll descriptor is
 * the only socket in the backend's WaitEventSet, next to the latch and
 * postmaster death.  PostgreSQL 15's WaitEventSet cannot forget a socket,
 * so rebuilding it on every change would cost a system call per socket per
 * wake-up; the inner epoll set makes each change one call and each wake-up
 * independent of how many hosts are in flight.
 *
 * Waits use the nearest of every probe's deadline and c-ares's own
 * timeout; the latch wakes us for cancel, statement_timeout and shutdown,
 * and CHECK_FOR_INTERRUPTS() turns those into the usual ERROR, after which
 * PG_FINALLY releases every socket and library object.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "appguard.h"
#include "dns.h"
#include "engine.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "tls.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define EPOLL_BATCH 256

/*
 * epoll data: a probe pointer (even), or a c-ares socket tagged with the
 * low bit.
 */
#define ARES_TAG(fd)	((((uint64) (fd)) << 1) | 1)
#define IS_ARES_TAG(u)	(((u) & 1) != 0)
#define ARES_FD(u)		((ares_socket_t) ((u) >> 1))

static uint32
epoll_events_for(int wl_events)
{
	uint32		ev = 0;

	if (wl_events & WL_SOCKET_READABLE)
		ev |= EPOLLIN;
	if (wl_events & WL_SOCKET_WRITEABLE)
		ev |= EPOLLOUT;
	return ev;
}

void
engine_watch(Engine *engine, Probe *probe, int sock, int wl_events)
{
	struct epoll_event ev;
	int			op = probe->wait_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	if (probe->wait_events == wl_events)
		return;
	ev.events = epoll_events_for(wl_events);
	ev.data.u64 = (uint64) (uintptr_t) probe;
	if (epoll_ctl(engine->epoll_fd, op, sock, &ev) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not watch a probe socket: %m")));
	if (op == EPOLL_CTL_ADD)
		engine->nsockets++;
	probe->wait_events = wl_events;
}

void
engine_unwatch(Engine *engine, Probe *probe)
{
	if (probe->wait_events == 0)
		return;
	(void) epoll_ctl(engine->epoll_fd, EPOLL_CTL_DEL, probe->sock, NULL);
	engine->nsockets--;
	probe->wait_events = 0;
}

/*
 * c-ares tells us which of its sockets to watch.  Called from inside
 * c-ares: plain system calls only, no PostgreSQL error paths.
 */
static void
ares_socket_changed(void *data, ares_socket_t fd, int readable, int writable)
{
	Engine	   *engine = (Engine *) data;
	struct epoll_event ev;

	if (!readable && !writable)
	{
		if (epoll_ctl(engine->epoll_fd, EPOLL_CTL_DEL, fd, NULL) == 0)
			engine->nsockets--;
		return;
	}
	ev.events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	ev.data.u64 = ARES_TAG(fd);
	if (epoll_ctl(engine->epoll_fd, EPOLL_CTL_MOD, fd, &ev) < 0 &&
		epoll_ctl(engine->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
		engine->nsockets++;
}

QuerySlot *
engine_slot_get(Engine *engine)
{
	QuerySlot  *slot = engine->free_slots;

	if (slot != NULL)
		engine->free_slots = slot->next;
	else
		slot = MemoryContextAlloc(engine->cxt, sizeof(QuerySlot));
	memset(slot, 0, sizeof(*slot));
	return slot;
}

void
engine_slot_put(Engine *engine, QuerySlot *slot)
{
	slot->probe = NULL;
	dns_slot_discard(slot);
	if (slot->in_flight)
	{
		slot->next = engine->orphan_slots;
		engine->orphan_slots = slot;
	}
	else
	{
		slot->next = engine->free_slots;
		engine->free_slots = slot;
	}
}

/* Orphans whose query has ended can be used again */
static void
reclaim_orphans(Engine *engine)
{
	QuerySlot **link = &engine->orphan_slots;

	while (*link != NULL)
	{
		QuerySlot  *slot = *link;

		if (slot->in_flight)
			link = &slot->next;
		else
		{
			*link = slot->next;
			slot->next = engine->free_slots;
			engine->free_slots = slot;
		}
	}
}

static void
engine_open(Engine *engine)
{
	engine->ssl_ctx = tls_client_context();
	engine->trust_store = tls_trust_store(appguard_ca_file);
	engine->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (engine->epoll_fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create an epoll set: %m")));
	engine->channel = dns_channel_create(ares_socket_changed, engine);
	engine->wait_set = CreateWaitEventSet(engine->cxt, 3);
	AddWaitEventToSet(engine->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(engine->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(engine->wait_set, WL_SOCKET_READABLE, engine->epoll_fd, NULL, NULL);
}

static void
release_probe(Engine *engine, Probe *probe)
{
	probe_release(engine, probe);
	if (probe->holds_fd)
		ReleaseExternalFD();
	MemoryContextDelete(probe->cxt);
}

/* Release everything, in an order that keeps each callback's data alive */
static void
engine_close(Engine *engine)
{
	for (int i = 0; i < engine->nactive; i++)
		release_probe(engine, engine->active[i]);
	engine->nactive = 0;
	if (engine->channel)
		ares_destroy(engine->channel);	/* calls back with ARES_EDESTRUCTION */
	if (engine->wait_set)
		FreeWaitEventSet(engine->wait_set);
	if (engine->epoll_fd >= 0)
		close(engine->epoll_fd);
	if (engine->ssl_ctx)
		SSL_CTX_free(engine->ssl_ctx);
	if (engine->trust_store)
		X509_STORE_free(engine->trust_store);
	for (QuerySlot *slot = engine->orphan_slots; slot; slot = slot->next)
		dns_slot_discard(slot);
}

static bool
start_probe(Engine *engine, const ProbeTarget *target, int index)
{
	MemoryContext cxt;
	MemoryContext old;
	Probe	   *probe;

	/* one socket per probe; stay within what fd.c lets extensions hold */
	if (!AcquireExternalFD())
	{
		if (engine->nactive == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor is available for a probe"),
					 errhint("Raise max_files_per_process or the open-files limit.")));
		return false;
	}
	cxt = AllocSetContextCreate(engine->cxt, "appguard probe", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	probe = palloc0(sizeof(Probe));
	probe->cxt = cxt;
	probe->holds_fd = true;
	probe->index = index;
	probe->sock = -1;
	strlcpy(probe->host, target->host, sizeof(probe->host));
	probe->port = target->port;
	engine->active[engine->nactive++] = probe;
	probe_begin(engine, probe);
	MemoryContextSwitchTo(old);
	return true;
}

/* Let each probe see new DNS answers and the time; hand over finished ones */
static void
advance_probes(Engine *engine, ProbeDoneCallback done, void *arg)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i = 0;

	while (i < engine->nactive)
	{
		Probe	   *probe = engine->active[i];
		MemoryContext old = MemoryContextSwitchTo(probe->cxt);

		probe_on_dns(engine, probe);
		probe_on_time(engine, probe, now);
		if (probe->phase == PHASE_DONE)
		{
			Jsonb	   *facts = facts_document(engine, probe);

			probe_release(engine, probe);
			MemoryContextSwitchTo(old);
			done(probe, facts, arg);
			engine->active[i] = engine->active[--engine->nactive];
			if (probe->holds_fd)
				ReleaseExternalFD();
			MemoryContextDelete(probe->cxt);
			continue;
		}
		MemoryContextSwitchTo(old);
		i++;
	}
	reclaim_orphans(engine);
}

static long
wait_timeout_ms(Engine *engine)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz nearest = 0;
	struct timeval tv;
	long		ms;

	for (int i = 0; i < engine->nactive; i++)
	{
		TimestampTz d = probe_next_deadline(engine->active[i]);

		if (nearest == 0 || d < nearest)
			nearest = d;
	}
	ms = nearest ? TimestampDifferenceMilliseconds(now, nearest) : 1000;
	if (ares_timeout(engine->channel, NULL, &tv) != NULL)
		ms = Min(ms, tv.tv_sec * 1000L + (tv.tv_usec + 999) / 1000);
	return ms;
}

static void
dispatch_socket_events(Engine *engine)
{
	struct epoll_event events[EPOLL_BATCH];
	int			n = epoll_wait(engine->epoll_fd, events, EPOLL_BATCH, 0);

	for (int i = 0; i < n; i++)
	{
		uint64		tag = events[i].data.u64;
		uint32		ev = events[i].events;

		if (IS_ARES_TAG(tag))
			ares_process_fd(engine->channel,
							(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? ARES_FD(tag) : ARES_SOCKET_BAD,
							(ev & EPOLLOUT) ? ARES_FD(tag) : ARES_SOCKET_BAD);
		else
		{
			Probe	   *probe = (Probe *) (uintptr_t) tag;
			MemoryContext old = MemoryContextSwitchTo(probe->cxt);

			probe_on_socket(engine, probe,
							((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? WL_SOCKET_READABLE : 0) |
							((ev & EPOLLOUT) ? WL_SOCKET_WRITEABLE : 0));
			MemoryContextSwitchTo(old);
		}
	}
}

static void
wait_for_events(Engine *engine)
{
	WaitEvent	events[3];
	int			n;

	n = WaitEventSetWait(engine->wait_set, wait_timeout_ms(engine), events,
						 lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (events[i].events & WL_SOCKET_READABLE)
			dispatch_socket_events(engine);
	}
	/* let c-ares act on its own timeouts */
	ares_process_fd(engine->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

int
engine_run(const ProbeTarget *targets, int ntargets, int concurrency,
		   TimestampTz budget_deadline, ProbeDoneCallback done, void *arg)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "appguard engine",
											  ALLOCSET_DEFAULT_SIZES);
	Engine	   *engine = MemoryContextAllocZero(cxt, sizeof(Engine));
	int			next = 0;
	int			started = 0;

	engine->cxt = cxt;
	engine->epoll_fd = -1;
	engine->concurrency = Max(1, Min(concurrency, ntargets));
	engine->active = MemoryContextAllocZero(cxt, sizeof(Probe *) * engine->concurrency);

	PG_TRY();
	{
		engine_open(engine);
		for (;;)
		{
			CHECK_FOR_INTERRUPTS();
			while (engine->nactive < engine->concurrency && next < ntargets)
			{
				if (budget_deadline != 0 && GetCurrentTimestamp() >= budget_deadline)
				{
					next = ntargets;	/* out of budget: start no more */
					break;
				}
				if (!start_probe(engine, &targets[next], next))
					break;
				next++;
				started++;
			}
			advance_probes(engine, done, arg);
			if (engine->nactive == 0)
			{
				if (next >= ntargets)
					break;
				continue;
			}
			wait_for_events(engine);
		}
	}
	PG_FINALLY();
	{
		engine_close(engine);
		MemoryContextDelete(cxt);
	}
	PG_END_TRY();
	return started;
}
