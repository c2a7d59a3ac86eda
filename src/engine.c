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
 * The work of a wake-up is proportional to what happened, not to the
 * number of probes in flight: a probe is touched when its socket is ready
 * (epoll hands us the probe), when it has a DNS question out (the list
 * awaiting_dns, short in practice: a window bounds the probes waiting for
 * their addresses) or when its deadline has come (a pairing heap ordered
 * by each probe's next deadline, whose top gives the time to wait).
 *
 * Waits use the nearest of every probe's deadline and c-ares's own
 * timeout; the latch wakes us for cancel, statement_timeout and shutdown,
 * and CHECK_FOR_INTERRUPTS() turns those into the usual ERROR, after which
 * PG_FINALLY releases every socket and library object.
 *
 * Descriptors: PostgreSQL lets extensions hold about a third of
 * max_files_per_process (AcquireExternalFD); the engine reserves one for
 * its epoll set and two per DNS server (c-ares keeps one UDP socket per
 * server, and a TCP one after a truncated answer) up front, then one per
 * probe as it starts.  When none is left, probes wait for a running one to
 * finish, so any appguard.sweep_concurrency works on a stock cluster.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appguard.h"
#include "chainverify.h"
#include "dns.h"
#include "engine.h"
#include "facts.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "tls.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define EPOLL_BATCH 256

/* What c-ares's UDP sockets ask the kernel to buffer (it may grant less) */
#define DNS_RECEIVE_BUFFER (1024 * 1024)

/*
 * epoll data: a probe pointer (even), or a c-ares socket tagged with the
 * low bit.
 */
#define ARES_TAG(fd)	((((uint64) (fd)) << 1) | 1)
#define IS_ARES_TAG(u)	(((u) & 1) != 0)
#define ARES_FD(u)		((ares_socket_t) ((u) >> 1))

/*
 * A probe in flight and the engine's books on it.  The Probe comes first,
 * so that the Probe * that probe.c hands to engine_watch() is the Flight *.
 */
struct Flight
{
	Probe		probe;
	pairingheap_node heap_node; /* in engine->deadlines */
	TimestampTz deadline;		/* its key: probe_next_deadline() */
	dlist_node	dns_node;		/* in engine->awaiting_dns */
	bool		awaiting_dns;
	bool		resolving;		/* counted in engine->nresolving */
	bool		done;			/* on engine->finished */
	int			slot;			/* position in engine->active */
	Flight	   *next_finished;
};

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

/*
 * A larger receive buffer for c-ares's UDP sockets: answers to a window of
 * probes arrive together while the backend may be busy with a handshake.
 * Called from inside c-ares; failure only means the default size.
 */
static int
ares_socket_configure(ares_socket_t fd, int type, void *data pg_attribute_unused())
{
	int			size = DNS_RECEIVE_BUFFER;

	if (type == SOCK_DGRAM)
		(void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	return 0;
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
	slot->shared = NULL;
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

/* The nearest deadline at the top */
static int
deadline_cmp(const pairingheap_node *a,
			 const pairingheap_node *b,
			 void *arg pg_attribute_unused())
{
	const Flight *fa = pairingheap_const_container(Flight, heap_node, a);
	const Flight *fb = pairingheap_const_container(Flight, heap_node, b);

	if (fa->deadline < fb->deadline)
		return 1;
	if (fa->deadline > fb->deadline)
		return -1;
	return 0;
}

static void
reserve_fds(Engine *engine, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (!AcquireExternalFD())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor is available for appguard's DNS resolver"),
					 errdetail("Extensions may hold about a third of max_files_per_process (%d) descriptors, and other code holds them.",
							   max_files_per_process),
					 errhint("Raise max_files_per_process or the open-files limit.")));
		engine->reserved_fds++;
	}
}

static int
dns_server_count(ares_channel channel)
{
	struct ares_addr_port_node *servers = NULL;
	int			n = 0;

	if (ares_get_servers_ports(channel, &servers) == ARES_SUCCESS)
		for (struct ares_addr_port_node *s = servers; s != NULL; s = s->next)
			n++;
	ares_free_data(servers);
	return Max(n, 1);
}

static void
engine_open(Engine *engine)
{
	tls_shared_context(appguard_ca_file, &engine->ssl_ctx, &engine->trust_store);
	dns_share_open(engine);
	reserve_fds(engine, 1);
	engine->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (engine->epoll_fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create an epoll set: %m")));
	engine->channel = dns_channel_create(ares_socket_changed, engine);
	ares_set_socket_configure_callback(engine->channel, ares_socket_configure, engine);
	reserve_fds(engine, 2 * dns_server_count(engine->channel));
	engine->wait_set = CreateWaitEventSet(engine->cxt, 3);
	AddWaitEventToSet(engine->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(engine->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(engine->wait_set, WL_SOCKET_READABLE, engine->epoll_fd, NULL, NULL);
	engine->deadlines = pairingheap_allocate(deadline_cmp, NULL);
	dlist_init(&engine->awaiting_dns);
}

static void
release_flight(Engine *engine, Flight *flight)
{
	probe_release(engine, &flight->probe);
	if (flight->probe.holds_fd)
		ReleaseExternalFD();
	MemoryContextDelete(flight->probe.cxt);
}

/* Release everything, in an order that keeps each callback's data alive */
static void
engine_close(Engine *engine)
{
	for (int i = 0; i < engine->nactive; i++)
		release_flight(engine, engine->active[i]);
	engine->nactive = 0;
	if (engine->channel)
		ares_destroy(engine->channel);	/* calls back with ARES_EDESTRUCTION */
	dns_share_close(engine);
	if (engine->wait_set)
		FreeWaitEventSet(engine->wait_set);
	if (engine->epoll_fd >= 0)
		close(engine->epoll_fd);
	while (engine->reserved_fds > 0)
	{
		ReleaseExternalFD();
		engine->reserved_fds--;
	}
	if (engine->ssl_ctx)
		SSL_CTX_free(engine->ssl_ctx);
	if (engine->trust_store)
		X509_STORE_free(engine->trust_store);
	for (QuerySlot *slot = engine->orphan_slots; slot; slot = slot->next)
		dns_slot_discard(slot);
}

static bool
probe_awaits_dns(const Probe *probe)
{
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
		if (probe->results[k].outcome == QUERY_PENDING)
			return true;
	return false;
}

/*
 * After every call into a probe's state machine: bring the engine's books
 * (DNS window, DNS list, deadline heap, finished list) up to date with it.
 */
static void
track(Engine *engine, Flight *flight)
{
	Probe	   *probe = &flight->probe;
	bool		awaiting;
	TimestampTz deadline;

	if (flight->done)
		return;
	if (flight->resolving && probe->phase != PHASE_RESOLVING)
	{
		flight->resolving = false;
		engine->nresolving--;
	}
	awaiting = probe->phase != PHASE_DONE && probe_awaits_dns(probe);
	if (awaiting != flight->awaiting_dns)
	{
		if (awaiting)
			dlist_push_tail(&engine->awaiting_dns, &flight->dns_node);
		else
			dlist_delete(&flight->dns_node);
		flight->awaiting_dns = awaiting;
	}
	if (probe->phase == PHASE_DONE)
	{
		pairingheap_remove(engine->deadlines, &flight->heap_node);
		flight->done = true;
		flight->next_finished = NULL;
		if (engine->finished == NULL)
			engine->finished = flight;
		else
			engine->finished_tail->next_finished = flight;
		engine->finished_tail = flight;
		return;
	}
	deadline = probe_next_deadline(probe);
	if (deadline != flight->deadline)
	{
		pairingheap_remove(engine->deadlines, &flight->heap_node);
		flight->deadline = deadline;
		pairingheap_add(engine->deadlines, &flight->heap_node);
	}
}

static bool
start_probe(Engine *engine, const ProbeTarget *target, int index)
{
	MemoryContext cxt;
	MemoryContext old;
	Flight	   *flight;
	Probe	   *probe;

	cxt = AllocSetContextCreate(engine->cxt, "appguard probe", ALLOCSET_SMALL_SIZES);
	/* before the descriptor: nothing may raise between taking it and the flight holding it */
	flight = MemoryContextAllocZero(cxt, sizeof(Flight));
	/* one socket per probe; stay within what fd.c lets extensions hold */
	if (!AcquireExternalFD())
	{
		MemoryContextDelete(cxt);
		if (engine->nactive == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no file descriptor is available for a probe"),
					 errdetail("Extensions may hold about a third of max_files_per_process (%d) descriptors, and other code holds them.",
							   max_files_per_process),
					 errhint("Raise max_files_per_process or the open-files limit.")));
		return false;
	}
	probe = &flight->probe;
	probe->cxt = cxt;
	probe->holds_fd = true;
	/* from here on, engine_close() releases both */
	flight->slot = engine->nactive;
	engine->active[engine->nactive++] = flight;

	old = MemoryContextSwitchTo(cxt);
	probe->index = index;
	probe->sock = -1;
	strlcpy(probe->host, target->host, sizeof(probe->host));
	probe->port = target->port;
	probe_begin(engine, probe);
	flight->deadline = probe_next_deadline(probe);
	pairingheap_add(engine->deadlines, &flight->heap_node);
	if (probe->phase == PHASE_RESOLVING)
	{
		flight->resolving = true;
		engine->nresolving++;
	}
	track(engine, flight);
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * Start probes while there is room: in the concurrency bound, in the DNS
 * window and in the descriptors.  Once the budget is spent, no more start.
 */
static void
start_probes(Engine *engine, EngineRun *run, int *next)
{
	while (*next < run->ntargets &&
		   engine->nactive < engine->concurrency &&
		   engine->nresolving < ENGINE_DNS_WINDOW)
	{
		if (run->budget_deadline != 0 && GetCurrentTimestamp() >= run->budget_deadline)
		{
			*next = run->ntargets;	/* out of budget: start no more */
			break;
		}
		if (!start_probe(engine, &run->targets[*next], *next))
			break;
		(*next)++;
		run->started++;
	}
	run->most_in_flight = Max(run->most_in_flight, engine->nactive);
}

/* Let the probes that have a question out read their answers */
static void
read_dns_answers(Engine *engine)
{
	dlist_mutable_iter iter;

	dns_share_collect(engine);
	dlist_foreach_modify(iter, &engine->awaiting_dns)
	{
		Flight	   *flight = dlist_container(Flight, dns_node, iter.cur);
		MemoryContext old = MemoryContextSwitchTo(flight->probe.cxt);

		probe_on_dns(engine, &flight->probe);
		track(engine, flight);
		MemoryContextSwitchTo(old);
	}
	reclaim_orphans(engine);
}

/* Every probe whose deadline has come learns the time */
static void
expire_deadlines(Engine *engine)
{
	TimestampTz now = GetCurrentTimestamp();

	while (!pairingheap_is_empty(engine->deadlines))
	{
		Flight	   *flight = pairingheap_container(Flight, heap_node,
												   pairingheap_first(engine->deadlines));
		MemoryContext old;

		if (flight->deadline > now)
			break;
		old = MemoryContextSwitchTo(flight->probe.cxt);
		probe_on_time(engine, &flight->probe, now);
		track(engine, flight);
		MemoryContextSwitchTo(old);
		if (!flight->done && flight->deadline <= now)
			elog(ERROR, "appguard probe of %s did not move past its deadline",
				 flight->probe.host);
	}
}

/*
 * A finished probe: its facts, release, then the caller's callback.  Not
 * inlined into the loop of hand_over(), where PG_TRY's state would be
 * clobbered.
 */
pg_noinline static void
hand_over_one(Engine *engine, EngineRun *run, Flight *flight)
{
	Probe	   *probe = &flight->probe;
	MemoryContext old = CurrentMemoryContext;
	Flight	   *last;

	/* out of the active set first: an ERROR below must not free it twice */
	last = engine->active[--engine->nactive];
	engine->active[flight->slot] = last;
	last->slot = flight->slot;

	PG_TRY();
	{
		Jsonb	   *facts;

		MemoryContextSwitchTo(probe->cxt);
		facts = facts_document(engine, probe);
		probe_release(engine, probe);
		MemoryContextSwitchTo(old);
		run->done(probe, facts, run->arg);
	}
	PG_CATCH();
	{
		/* the error may have left us in the context released here */
		MemoryContextSwitchTo(old);
		release_flight(engine, flight);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_flight(engine, flight);
}

static void
hand_over(Engine *engine, EngineRun *run)
{
	while (engine->finished != NULL)
	{
		Flight	   *flight = engine->finished;

		engine->finished = flight->next_finished;
		hand_over_one(engine, run, flight);
	}
}

static long
wait_timeout_ms(Engine *engine, TimestampTz turn_due)
{
	long		ms = 1000;
	struct timeval tv;

	if (!pairingheap_is_empty(engine->deadlines))
	{
		Flight	   *first = pairingheap_container(Flight, heap_node,
												  pairingheap_first(engine->deadlines));

		/* rounded up: the deadline has passed when we look again */
		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), first->deadline);
	}
	if (turn_due != 0)
		ms = Min(ms, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), turn_due));
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
			Flight	   *flight = (Flight *) (uintptr_t) tag;
			MemoryContext old = MemoryContextSwitchTo(flight->probe.cxt);

			probe_on_socket(engine, &flight->probe,
							((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? WL_SOCKET_READABLE : 0) |
							((ev & EPOLLOUT) ? WL_SOCKET_WRITEABLE : 0));
			track(engine, flight);
			MemoryContextSwitchTo(old);
		}
	}
}

static void
wait_for_events(Engine *engine, EngineRun *run, TimestampTz turn_due)
{
	WaitEvent	events[3];
	int			n;

	n = WaitEventSetWait(engine->wait_set, wait_timeout_ms(engine, turn_due), events,
						 lengthof(events), PG_WAIT_EXTENSION);
	run->wakeups++;
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

void
engine_run(EngineRun *run)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "appguard engine",
											  ALLOCSET_DEFAULT_SIZES);
	Engine	   *engine = MemoryContextAllocZero(cxt, sizeof(Engine));
	int			next = 0;
	TimestampTz turn_due;

	engine->cxt = cxt;
	engine->epoll_fd = -1;
	engine->concurrency = Max(1, Min(run->concurrency, run->ntargets));
	engine->active = MemoryContextAllocZero(cxt, sizeof(Flight *) * engine->concurrency);
	run->started = 0;
	run->most_in_flight = 0;
	run->wakeups = 0;

	PG_TRY();
	{
		engine_open(engine);
		for (;;)
		{
			CHECK_FOR_INTERRUPTS();
			start_probes(engine, run, &next);
			read_dns_answers(engine);
			expire_deadlines(engine);
			hand_over(engine, run);
			turn_due = run->turn ? run->turn(run->arg) : 0;
			if (engine->nactive == 0)
			{
				if (next >= run->ntargets)
					break;
				continue;
			}
			wait_for_events(engine, run, turn_due);
		}
	}
	PG_FINALLY();
	{
		/* an error may have left us in a probe's context, deleted below */
		MemoryContextSwitchTo(caller);
		run->shared_sent = engine->shared_sent;
		run->shared_joined = engine->shared_joined;
		engine_close(engine);
		MemoryContextDelete(cxt);
	}
	PG_END_TRY();
	elog(DEBUG1, "appguard engine: %d of %d hosts probed, at most %d at once, %lld wake-ups, %lld shared DNS questions sent, %lld asks answered by them",
		 run->started, run->ntargets, run->most_in_flight, (long long) run->wakeups,
		 (long long) run->shared_sent, (long long) run->shared_joined);
	{
		long		kept,
					skipped;

		chainverify_counts(&kept, &skipped);
		elog(DEBUG1, "appguard engine: CA signatures verified before (this backend): %ld pairs kept, %ld checks skipped",
			 kept, skipped);
	}
}
