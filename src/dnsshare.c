/*-------------------------------------------------------------------------
 *
 * dnsshare.c
 *	  DNS questions the probes of one engine run share: NS and TXT at a
 *	  registrable domain, and CAA at each name of a climb.
 *
 * Every host under one registrable domain asks the same NS and TXT
 * questions, and, once its CAA climb has passed the host's own labels, the
 * same CAA questions.  Asked once per engine run (one sweep, one
 * appguard_snapshot_many call) and handed to every probe that asks, they
 * cost one query and one parse per domain rather than one per host.
 *
 * The facts stay those of asking one by one.  A probe that asks a question
 * already answered in this run gets that answer, as it would have from the
 * server had the zone not changed in between; a probe that asks while the
 * question is out waits for the same answer.  Only a definite answer is
 * handed to later askers (NOERROR or NXDOMAIN, parsed without error): a
 * timeout, SERVFAIL, REFUSED or malformed answer goes to the probes that
 * waited for it, and the next probe asks again, as it would have alone.
 *
 * Lifetime: a question and its parsed records live in a memory context of
 * their own, and each probe's QueryResult points at the records.  A probe
 * holds a reference from when it asks until it moves on (the next name of
 * a CAA climb) or is released.  An answer nobody refers to stays cached,
 * up to DNS_SHARE_IDLE_MAX of them; past that the oldest is freed, so that
 * a sweep of many distinct domains keeps a bounded amount of memory.
 * Question slots come from the engine like a probe's, so that c-ares may
 * still answer after we stopped listening.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "dns.h"
#include "dnswire.h"
#include "engine.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

/*
 * Answers kept for later askers while no probe refers to them.  Each costs
 * a small memory context (1-2 kB).  Most are the CAA answer at a host's own
 * name, which no other host asks: 4,096 of them raised a backend's private
 * memory by some 2.7 MB after 1,000-host sweeps (the sweep benchmark's
 * memory stage: +7.9 MB against +0.6 MB before sharing), 512 by under 1 MB.
 * Hosts of one domain probed at once share their answers whatever the cap.
 */
#define DNS_SHARE_IDLE_MAX 512

typedef struct SharedQueryEntry
{
	SharedQueryKey key;
	SharedQuery *query;
} SharedQueryEntry;

static const int share_types[QUERY_KIND_COUNT] = {
	[QUERY_NS] = DNS_TYPE_NS,
	[QUERY_TXT] = DNS_TYPE_TXT,
	[QUERY_CAA] = DNS_TYPE_CAA,
};

void
dns_share_open(Engine *engine)
{
	HASHCTL		ctl;

	engine->share_cxt = AllocSetContextCreate(engine->cxt, "appguard shared DNS",
											  ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(SharedQueryKey);
	ctl.entrysize = sizeof(SharedQueryEntry);
	ctl.hcxt = engine->share_cxt;
	engine->shared_queries = hash_create("appguard shared DNS questions", 256, &ctl,
										 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	dlist_init(&engine->shared_pending);
	dlist_init(&engine->shared_idle);
	engine->nshared_idle = 0;
}

static void
make_key(SharedQueryKey *key, QueryKind kind, const char *name)
{
	memset(key, 0, sizeof(*key));	/* hashed as bytes */
	key->kind = kind;
	strlcpy(key->name, name, sizeof(key->name));
}

/* Later askers no longer find it; it lives on while referred to */
static void
uncache(Engine *engine, SharedQuery *query)
{
	if (!query->cached)
		return;
	(void) hash_search(engine->shared_queries, &query->key, HASH_REMOVE, NULL);
	query->cached = false;
}

static void
free_query(SharedQuery *query)
{
	Assert(query->refcount == 0 && query->slot == NULL);
	MemoryContextDelete(query->cxt);
}

/* Nobody refers to a done question: keep it for later askers, or free it */
static void
become_idle(Engine *engine, SharedQuery *query)
{
	if (!query->cached)
	{
		free_query(query);
		return;
	}
	dlist_push_tail(&engine->shared_idle, &query->node);
	engine->nshared_idle++;
	if (engine->nshared_idle > DNS_SHARE_IDLE_MAX)
	{
		SharedQuery *oldest = dlist_container(SharedQuery, node,
											  dlist_pop_head_node(&engine->shared_idle));

		engine->nshared_idle--;
		uncache(engine, oldest);
		free_query(oldest);
	}
}

static SharedQuery *
new_query(Engine *engine, const SharedQueryKey *key)
{
	MemoryContext cxt = AllocSetContextCreate(engine->share_cxt, "appguard DNS answer",
											  ALLOCSET_SMALL_SIZES);
	SharedQuery *query = MemoryContextAllocZero(cxt, sizeof(SharedQuery));

	query->cxt = cxt;
	query->key = *key;
	strlcpy(query->result.qname, key->name, sizeof(query->result.qname));
	query->result.outcome = QUERY_PENDING;
	query->slot = engine_slot_get(engine);
	query->slot->shared = query;
	query->slot->kind = key->kind;
	dlist_push_tail(&engine->shared_pending, &query->node);
	dns_send(engine->channel, query->slot, query->result.qname, share_types[key->kind]);
	return query;
}

/*
 * The shared question (kind, name), asked now unless this run has it out
 * or answered already.  The caller holds a reference until it calls
 * dns_share_release().
 */
SharedQuery *
dns_share_ask(Engine *engine, QueryKind kind, const char *name)
{
	SharedQueryKey key;
	SharedQueryEntry *entry;
	bool		found;

	Assert(kind == QUERY_NS || kind == QUERY_TXT || kind == QUERY_CAA);
	make_key(&key, kind, name);
	entry = hash_search(engine->shared_queries, &key, HASH_ENTER, &found);
	if (!found)
	{
		entry->query = NULL;	/* an ERROR below leaves no dangling entry */
		PG_TRY();
		{
			entry->query = new_query(engine, &key);
		}
		PG_CATCH();
		{
			(void) hash_search(engine->shared_queries, &key, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		entry->query->cached = true;
		engine->shared_sent++;
	}
	else
		engine->shared_joined++;
	if (found && entry->query->done && entry->query->refcount == 0)
	{
		/* an idle answer is in use again */
		dlist_delete(&entry->query->node);
		engine->nshared_idle--;
	}
	entry->query->refcount++;
	return entry->query;
}

void
dns_share_release(Engine *engine, SharedQuery *query)
{
	Assert(query->refcount > 0);
	if (--query->refcount == 0 && query->done)
		become_idle(engine, query);
}

/* A definite answer, which a probe asking later would get too */
static bool
reusable(const QueryResult *r)
{
	return r->outcome == QUERY_ANSWERED && r->error == NULL &&
		(r->rcode == DNS_RCODE_NOERROR || r->rcode == DNS_RCODE_NXDOMAIN);
}

/* Parse the answers that came; the probes read them in probe_on_dns() */
void
dns_share_collect(Engine *engine)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &engine->shared_pending)
	{
		SharedQuery *query = dlist_container(SharedQuery, node, iter.cur);
		QuerySlot  *slot = query->slot;
		MemoryContext old;

		if (!slot->completed)
			continue;
		slot->completed = false;
		old = MemoryContextSwitchTo(query->cxt);
		dns_take_answer(slot, &query->result);
		MemoryContextSwitchTo(old);
		dlist_delete(&query->node);
		query->slot = NULL;
		engine_slot_put(engine, slot);
		query->done = true;
		if (!reusable(&query->result))
			uncache(engine, query);
		if (query->refcount == 0)
			become_idle(engine, query);
	}
}

/*
 * After ares_destroy(): the answers copied for questions nobody read.  The
 * memory goes with the engine's context.
 */
void
dns_share_close(Engine *engine)
{
	dlist_iter	iter;

	if (engine->share_cxt == NULL)
		return;
	dlist_foreach(iter, &engine->shared_pending)
	{
		SharedQuery *query = dlist_container(SharedQuery, node, iter.cur);

		if (query->slot != NULL)
			dns_slot_discard(query->slot);
	}
}
