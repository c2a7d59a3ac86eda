/*-------------------------------------------------------------------------
 *
 * grantwrite.c
 *	  Inserting a new grant into appguard.grants, and retiring one, the
 *	  way logical replication's apply worker writes a row: no parser,
 *	  planner or per-statement executor set-up.
 *
 * The consent trigger (refresh.c) records every new token row as a grant.
 * Through SPI, even with a kept plan, that INSERT cost about as much as
 * the auth server's own token INSERT.  Here the row is built in a virtual
 * slot and inserted with a minimal EState, as ExecSimpleRelationInsert
 * does (the table's constraints checked: NOT NULL, CHECK; the heap tuple
 * and every index entry, a partial index only where its predicate holds),
 * but speculatively, as INSERT ... ON CONFLICT inserts: when the primary
 * key already holds the key (a grant left under it, one another
 * transaction is writing, or one whose deletion is not committed), the
 * tuple is killed again and the caller's upsert decides.  The unique
 * index's own check is the look-up: a key is found once, not twice.
 *
 * The status trigger retires a grant (state 'inactive') the same way, as
 * the apply worker updates a row: found through the primary key and
 * locked (RelationFindReplTupleByIndex), then ExecSimpleRelationUpdate.
 * Through SPI, the kept UPDATE's executor start, and the CHECK constraint
 * read and planned again for each execution, cost as much as the update.
 *
 * Only the plain case is done so: the table a regular one, without
 * triggers or row security, every column the code does not write without
 * a default, created_at defaulting to now(), the columns of the types
 * written, and the current user (the extension's owner: the consent
 * trigger is SECURITY DEFINER) holding INSERT, SELECT and UPDATE on it.
 * Anything else returns false and the caller runs its SQL statement,
 * which then does whatever the table asks.
 *
 * Column numbers come from the C<->SQL contract of keyread.c (KT_GRANTS),
 * which sql/c_contract.sql checks.  What is worked out from the catalog
 * is kept per backend until a relcache invalidation names the table.
 *
 * On an error, the relation, its indexes, the slot's tuple descriptor and
 * the EState's memory are released by the aborting (sub)transaction's
 * resource owner and memory contexts, as they are for the executor.  The
 * kept expression states and index descriptions (ExecutorCache) live in a
 * context of their own under CacheMemoryContext, reset whenever they are
 * built again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "grantwrite.h"
#include "keyread.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/primnodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

/* The columns written, in this order */
enum
{
	GW_TOKEN_TABLE, GW_TOKEN_KEY, GW_CLIENT_ID, GW_STATE, GW_BASELINE, GW_CREATED_AT,
	GW_SUBJECT, GW_GRANT_KEY,
	GW_NCOLUMNS
};

static const Oid written_types[GW_NCOLUMNS] = {
	REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID
};

/*
 * What the executor would work out again for every row, kept: the CHECK
 * constraints' expression states and the indexes' IndexInfo (partial
 * index predicates prepared).  Re-reading the CHECK constraint's stored
 * expression and planning it was a tenth of the consent trigger's time.
 * Expression states with no parent plan may be kept and evaluated in any
 * expression context, as typcache.c keeps a domain's CHECK constraints.
 */
typedef struct ExecutorCache
{
	int			nchecks;
	ExprState **checks;
	int			nindexes;
	Oid		   *index_oids;
	IndexInfo **index_infos;
} ExecutorCache;

typedef struct GrantLayout
{
	Oid			relid;
	AttrNumber	attnums[GW_NCOLUMNS];
	bool		checked;		/* plain is known (the table was open) */
	bool		plain;			/* columns, types and defaults as expected */
	MemoryContext cxt;			/* holds cache; reset when the layout is */
	ExecutorCache *cache;		/* NULL: not built (or not possible) yet */
} GrantLayout;

static GrantLayout layout;
static bool layout_valid = false;
static bool callback_registered = false;

/*
 * Only marks the layout stale: the kept states may be in use by the insert
 * that took the lock whose invalidations run this, and stay valid for it
 * (no definition of appguard.grants changes while it holds the table).
 * resolve_layout frees them before the next insert.
 */
static void
forget_layout(Datum arg pg_attribute_unused(), Oid relid)
{
	if (relid == InvalidOid || relid == layout.relid)
		layout_valid = false;
}

/* Table and column numbers from keyread.c's contract */
static void
resolve_layout(void)
{
	AttrNumber	keyattnums[GRANT_NKEYS];
	AttrNumber	attnums[GRANT_NCOLUMNS];

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_layout, (Datum) 0);
		callback_registered = true;
		layout.cxt = AllocSetContextCreate(CacheMemoryContext, "appguard grant insert",
										   ALLOCSET_SMALL_SIZES);
	}
	MemoryContextReset(layout.cxt);
	layout.cache = NULL;
	layout.relid = keyread_layout(KT_GRANTS, keyattnums, attnums);
	layout.attnums[GW_TOKEN_TABLE] = keyattnums[GRANT_KEY_TOKEN_TABLE];
	layout.attnums[GW_TOKEN_KEY] = keyattnums[GRANT_KEY_TOKEN_KEY];
	layout.attnums[GW_CLIENT_ID] = attnums[GRANT_CLIENT_ID];
	layout.attnums[GW_STATE] = attnums[GRANT_STATE];
	layout.attnums[GW_BASELINE] = attnums[GRANT_BASELINE_SNAPSHOT_ID];
	layout.attnums[GW_CREATED_AT] = attnums[GRANT_CREATED_AT];
	layout.attnums[GW_SUBJECT] = attnums[GRANT_SUBJECT];
	layout.attnums[GW_GRANT_KEY] = attnums[GRANT_GRANT_KEY];
	layout.checked = false;
	layout.plain = false;
	layout_valid = true;
}

/*
 * appguard.grants, RowExclusiveLock taken, as an INSERT opens it.  Taking
 * the lock processes pending invalidations, which may tell that the names
 * now point elsewhere: then resolve again, once (as keyread.c does).
 */
static Relation
open_grants(void)
{
	Relation	rel;

	if (!layout_valid)
		resolve_layout();
	rel = try_table_open(layout.relid, RowExclusiveLock);
	if (rel != NULL && layout_valid)
		return rel;
	if (rel != NULL)
		table_close(rel, RowExclusiveLock);
	resolve_layout();
	return table_open(layout.relid, RowExclusiveLock);
}

static bool
is_written(AttrNumber attnum)
{
	for (int c = 0; c < GW_NCOLUMNS; c++)
		if (layout.attnums[c] == attnum)
			return true;
	return false;
}

/*
 * Whether the columns are as the direct insert assumes: those written of
 * the expected types, created_at defaulting to now(), no other default,
 * nothing generated.  Else the SQL statement must fill the row.
 */
static bool
columns_plain(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Node	   *created_default;

	if (desc->constr && desc->constr->has_generated_stored)
		return false;
	for (int c = 0; c < GW_NCOLUMNS; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, layout.attnums[c] - 1);

		if (att->attisdropped || att->atttypid != written_types[c])
			return false;
	}
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || is_written(att->attnum))
			continue;
		if (att->attgenerated || build_column_default(rel, att->attnum) != NULL)
			return false;
	}
	created_default = build_column_default(rel, layout.attnums[GW_CREATED_AT]);
	return created_default != NULL && IsA(created_default, FuncExpr)
		&& ((FuncExpr *) created_default)->funcid == F_NOW;
}

/*
 * Build the executor cache for rel, in layout.cxt.  NULL when an index has
 * expressions (their states belong to an EState): ExecOpenIndices then
 * does the work every time.
 */
static ExecutorCache *
build_executor_cache(Relation rel)
{
	MemoryContext old;
	ExecutorCache *cache;
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	List	   *index_oids;
	ListCell   *lc;
	int			i = 0;

	MemoryContextReset(layout.cxt);	/* what a build cut short by an error left */
	old = MemoryContextSwitchTo(layout.cxt);
	cache = palloc0(sizeof(ExecutorCache));
	index_oids = RelationGetIndexList(rel);

	cache->nchecks = constr ? constr->num_check : 0;
	cache->checks = palloc0(Max(cache->nchecks, 1) * sizeof(ExprState *));
	for (int c = 0; c < cache->nchecks; c++)
		cache->checks[c] = ExecInitExpr(expression_planner(stringToNode(constr->check[c].ccbin)),
										NULL);

	cache->nindexes = list_length(index_oids);
	cache->index_oids = palloc(Max(cache->nindexes, 1) * sizeof(Oid));
	cache->index_infos = palloc(Max(cache->nindexes, 1) * sizeof(IndexInfo *));
	foreach(lc, index_oids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(index);

		index_close(index, NoLock);
		if (info->ii_Expressions != NIL)
		{
			MemoryContextSwitchTo(old);
			MemoryContextReset(layout.cxt);
			return NULL;
		}
		if (info->ii_Predicate != NIL)
			info->ii_PredicateState =
				ExecInitQual((List *) expression_planner((Expr *) info->ii_Predicate), NULL);
		cache->index_oids[i] = lfirst_oid(lc);
		cache->index_infos[i++] = info;
	}
	MemoryContextSwitchTo(old);
	return cache;
}

/*
 * What ExecOpenIndices does, with the kept IndexInfos; the kept CHECK
 * states for ExecConstraints.
 */
static void
prepare_result_rel(ResultRelInfo *rri)
{
	ExecutorCache *cache = layout.cache;

	if (cache == NULL)
	{
		ExecOpenIndices(rri, false);
		return;
	}
	if (cache->nchecks > 0)
		rri->ri_ConstraintExprs = cache->checks;
	rri->ri_NumIndices = cache->nindexes;
	rri->ri_IndexRelationInfo = cache->index_infos;
	rri->ri_IndexRelationDescs = palloc(Max(cache->nindexes, 1) * sizeof(Relation));
	for (int i = 0; i < cache->nindexes; i++)
		rri->ri_IndexRelationDescs[i] = index_open(cache->index_oids[i], RowExclusiveLock);
}

/* The table, its privileges and columns allow a direct write (insert or retire) */
static bool
direct_write_allowed(Relation rel)
{
	const AclMode needed = ACL_INSERT | ACL_SELECT | ACL_UPDATE;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition
		|| rel->rd_rel->relrowsecurity || rel->trigdesc != NULL)
		return false;
	if (!layout.checked)
	{
		layout.plain = columns_plain(rel);
		layout.cache = layout.plain ? build_executor_cache(rel) : NULL;
		layout.checked = true;
	}
	return layout.plain
		&& pg_class_aclmask(layout.relid, GetUserId(), needed, ACLMASK_ALL) == needed;
}

/*
 * Insert the slot's tuple unless a unique index already holds its key, the
 * way ExecInsert does for ON CONFLICT, without its pre-check: the
 * speculative tuple's index entries are the check.  Returns false, the
 * tuple dead to everyone, on a possible duplicate.
 */
static bool
insert_unless_duplicate(ResultRelInfo *rri, EState *estate, TupleTableSlot *slot)
{
	Relation	rel = rri->ri_RelationDesc;
	TransactionId xid = GetCurrentTransactionId();
	bool		conflict = false;
	uint32		token;
	List	   *recheck;

	CheckCmdReplicaIdentity(rel, CMD_INSERT);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, estate);
	token = SpeculativeInsertionLockAcquire(xid);
	table_tuple_insert_speculative(rel, slot, GetCurrentCommandId(true), 0, NULL, token);
	recheck = ExecInsertIndexTuples(rri, slot, estate, false, true, &conflict, NIL);
	table_tuple_complete_speculative(rel, slot, token, !conflict);
	SpeculativeInsertionLockRelease(xid);
	list_free(recheck);
	return !conflict;
}

/* A direct write: the relation, and a minimal EState with its result relation */
typedef struct DirectWrite
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
} DirectWrite;

/*
 * Open appguard.grants for a direct write, with a one-relation range table
 * as the apply worker's.  False, the table closed again, where the SQL
 * statement must do the write (see direct_write_allowed).
 */
static bool
direct_write_begin(DirectWrite *w)
{
	RangeTblEntry *rte;

	w->rel = open_grants();
	if (!direct_write_allowed(w->rel))
	{
		table_close(w->rel, NoLock);	/* the statement takes the same lock */
		return false;
	}
	w->estate = CreateExecutorState();
	w->estate->es_output_cid = GetCurrentCommandId(true);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = layout.relid;
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(w->estate, list_make1(rte));
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->rel, 1, NULL, 0);
	prepare_result_rel(w->rri);
	return true;
}

/* A virtual slot of appguard.grants' row type, every column NULL */
static TupleTableSlot *
null_row_slot(DirectWrite *w)
{
	TupleTableSlot *slot = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(w->rel), &TTSOpsVirtual);

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, slot->tts_tupleDescriptor->natts * sizeof(bool));
	return slot;
}

/* Set written column c (GW_*) of a virtual slot being filled */
static inline void
set_column(TupleTableSlot *slot, int c, Datum value, bool isnull)
{
	slot->tts_values[layout.attnums[c] - 1] = value;
	slot->tts_isnull[layout.attnums[c] - 1] = isnull;
}

static void
direct_write_end(DirectWrite *w)
{
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
}

GrantWriteResult
grantwrite_insert(Oid token_table, Datum token_key,
				  Datum client_id, bool client_null,
				  Datum state,
				  Datum baseline, bool baseline_null,
				  Datum subject, bool subject_null,
				  Datum grant_key, bool grant_key_null)
{
	DirectWrite w;
	TupleTableSlot *slot;
	bool		inserted;

	if (!direct_write_begin(&w))
		return GW_NOT_DIRECT;

	slot = null_row_slot(&w);
	set_column(slot, GW_TOKEN_TABLE, ObjectIdGetDatum(token_table), false);
	set_column(slot, GW_TOKEN_KEY, token_key, false);
	set_column(slot, GW_CLIENT_ID, client_id, client_null);
	set_column(slot, GW_STATE, state, false);
	set_column(slot, GW_BASELINE, baseline, baseline_null);
	set_column(slot, GW_SUBJECT, subject, subject_null);
	set_column(slot, GW_GRANT_KEY, grant_key, grant_key_null);
	/* now(): the transaction's start, as the column's default */
	set_column(slot, GW_CREATED_AT, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
	ExecStoreVirtualTuple(slot);

	inserted = insert_unless_duplicate(w.rri, w.estate, slot);

	direct_write_end(&w);
	return inserted ? GW_INSERTED : GW_DUPLICATE;
}

/*
 * The grant's current version, found through the primary key and locked
 * (FOR UPDATE), waiting for a transaction writing it, as the apply worker
 * finds a row; true when it is there and active.
 */
static bool
lock_active_grant(DirectWrite *w, Oid token_table, Datum token_key, TupleTableSlot *found)
{
	TupleTableSlot *search = null_row_slot(w);
	bool		isnull;
	Datum		state;

	set_column(search, GW_TOKEN_TABLE, ObjectIdGetDatum(token_table), false);
	set_column(search, GW_TOKEN_KEY, token_key, false);
	ExecStoreVirtualTuple(search);

	if (!RelationFindReplTupleByIndex(w->rel, RelationGetPrimaryKeyIndex(w->rel),
									  LockTupleExclusive, search, found))
		return false;
	state = slot_getattr(found, layout.attnums[GW_STATE], &isnull);
	return !isnull && strcmp(TextDatumGetCString(state), "active") == 0;
}

GrantWriteResult
grantwrite_retire(Oid token_table, Datum token_key)
{
	DirectWrite w;
	TupleTableSlot *found;
	TupleTableSlot *retired;
	EPQState	epqstate;
	bool		active;

	if (!direct_write_begin(&w))
		return GW_NOT_DIRECT;

	found = table_slot_create(w.rel, &w.estate->es_tupleTable);
	active = lock_active_grant(&w, token_table, token_key, found);
	if (active)
	{
		int			natts = RelationGetDescr(w.rel)->natts;

		retired = ExecInitExtraTupleSlot(w.estate, RelationGetDescr(w.rel), &TTSOpsVirtual);
		ExecClearTuple(retired);
		slot_getallattrs(found);
		memcpy(retired->tts_values, found->tts_values, natts * sizeof(Datum));
		memcpy(retired->tts_isnull, found->tts_isnull, natts * sizeof(bool));
		set_column(retired, GW_STATE, CStringGetTextDatum("inactive"), false);
		ExecStoreVirtualTuple(retired);

		EvalPlanQualInit(&epqstate, w.estate, NULL, NIL, -1);
		ExecSimpleRelationUpdate(w.rri, w.estate, &epqstate, found, retired);
		EvalPlanQualEnd(&epqstate);
	}
	direct_write_end(&w);
	return active ? GW_RETIRED : GW_NOT_ACTIVE;
}
