/*-------------------------------------------------------------------------
 *
 * grantwrite.c
 *	  Inserting a new grant into appguard.grants, retiring one, and
 *	  starting a patient's consent in appguard.consents, the way logical
 *	  replication's apply worker writes a row: no parser, planner or
 *	  per-statement executor set-up.
 *
 * The consent trigger (refresh.c) records every new token row as a grant,
 * and a patient's first token starts the patient's consent.
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
 * A consent is started the same way as a grant is inserted: the row of
 * INSERT INTO appguard.consents ... ON CONFLICT (client_id, subject) DO
 * NOTHING, speculatively; a consent already there (or being written)
 * leaves the row to appguard.consent_grant.  Through SPI its kept plan's
 * executor start alone cost about 39,000 instructions a first consent.
 *
 * Only the plain case is done so: the table a regular one, without
 * triggers or row security, every column the code does not write without
 * a default, created_at defaulting to now(), the columns of the types
 * written, and the current user (the extension's owner: the consent
 * trigger becomes it) holding INSERT, SELECT and UPDATE on it.
 * Anything else returns false and the caller runs its SQL statement,
 * which then does whatever the table asks.
 *
 * Column numbers come from the C<->SQL contract of keyread.c (KT_GRANTS,
 * KT_CONSENTS), which sql/c_contract.sql checks.  What is worked out from
 * the catalog is kept per backend, per table, until a relcache
 * invalidation names the table.
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

/* The columns written of appguard.grants, in this order */
enum
{
	GW_TOKEN_TABLE, GW_TOKEN_KEY, GW_CLIENT_ID, GW_STATE, GW_BASELINE, GW_CREATED_AT,
	GW_SUBJECT, GW_GRANT_KEY,
	GW_NCOLUMNS
};

static const Oid grant_types[GW_NCOLUMNS] = {
	REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID
};

/* The columns written of appguard.consents, in this order */
enum
{
	CW_CLIENT_ID, CW_SUBJECT, CW_BASELINE, CW_CREATED_AT, CW_APPROVED_AT,
	CW_NCOLUMNS
};

static const Oid consent_types[CW_NCOLUMNS] = {
	TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID
};

#define DT_MAX_COLUMNS GW_NCOLUMNS

/* what resolve_layout's and DirectTable's arrays, sized for the widest, hold */
StaticAssertDecl((int) CW_NCOLUMNS <= (int) DT_MAX_COLUMNS,
				 "DirectTable.attnums holds every table's columns");
StaticAssertDecl((int) GRANT_NKEYS <= KEYREAD_MAX_KEYS && (int) CONSENT_NKEYS <= KEYREAD_MAX_KEYS,
				 "keyread_layout's key numbers fit");
StaticAssertDecl((int) GRANT_NCOLUMNS <= KEYREAD_MAX_COLUMNS && (int) CS_NCOLUMNS <= KEYREAD_MAX_COLUMNS,
				 "keyread_layout's column numbers fit");

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

struct DirectTable;
typedef void (*MapColumns) (struct DirectTable *t, const AttrNumber *keyattnums,
							const AttrNumber *attnums);

/*
 * A table written directly: which columns (by keyread.c's contract), of
 * which types, and what is kept of it for the backend.
 */
typedef struct DirectTable
{
	KeyedTable	kt;
	const char *cxt_name;
	int			ncolumns;
	const Oid  *types;			/* of each column written */
	int			created_at;		/* the written column that defaults to now() */
	MapColumns	map;			/* keyread_layout's numbers -> attnums */
	Oid			relid;
	AttrNumber	attnums[DT_MAX_COLUMNS];
	bool		valid;			/* relid and attnums are current */
	bool		checked;		/* plain is known (the table was open) */
	bool		plain;			/* columns, types and defaults as expected */
	MemoryContext cxt;			/* holds cache; reset when the layout is */
	ExecutorCache *cache;		/* NULL: not built (or not possible) yet */
} DirectTable;

static void
map_grant_columns(struct DirectTable *t, const AttrNumber *keyattnums, const AttrNumber *attnums)
{
	t->attnums[GW_TOKEN_TABLE] = keyattnums[GRANT_KEY_TOKEN_TABLE];
	t->attnums[GW_TOKEN_KEY] = keyattnums[GRANT_KEY_TOKEN_KEY];
	t->attnums[GW_CLIENT_ID] = attnums[GRANT_CLIENT_ID];
	t->attnums[GW_STATE] = attnums[GRANT_STATE];
	t->attnums[GW_BASELINE] = attnums[GRANT_BASELINE_SNAPSHOT_ID];
	t->attnums[GW_CREATED_AT] = attnums[GRANT_CREATED_AT];
	t->attnums[GW_SUBJECT] = attnums[GRANT_SUBJECT];
	t->attnums[GW_GRANT_KEY] = attnums[GRANT_GRANT_KEY];
}

static void
map_consent_columns(struct DirectTable *t, const AttrNumber *keyattnums, const AttrNumber *attnums)
{
	t->attnums[CW_CLIENT_ID] = keyattnums[CONSENT_KEY_CLIENT_ID];
	t->attnums[CW_SUBJECT] = keyattnums[CONSENT_KEY_SUBJECT];
	t->attnums[CW_BASELINE] = attnums[CS_BASELINE_SNAPSHOT_ID];
	t->attnums[CW_CREATED_AT] = attnums[CS_CREATED_AT];
	t->attnums[CW_APPROVED_AT] = attnums[CS_APPROVED_AT];
}

static DirectTable grants_table = {
	.kt = KT_GRANTS, .cxt_name = "appguard.grants", .ncolumns = GW_NCOLUMNS,
	.types = grant_types, .created_at = GW_CREATED_AT, .map = map_grant_columns
};
static DirectTable consents_table = {
	.kt = KT_CONSENTS, .cxt_name = "appguard.consents", .ncolumns = CW_NCOLUMNS,
	.types = consent_types, .created_at = CW_CREATED_AT, .map = map_consent_columns
};
static DirectTable *const direct_tables[] = {&grants_table, &consents_table};
static bool callback_registered = false;

/*
 * Only marks the layout stale: the kept states may be in use by the insert
 * that took the lock whose invalidations run this, and stay valid for it
 * (no definition of the table changes while it holds the table).
 * resolve_layout frees them before the next write.
 */
static void
forget_layout(Datum arg pg_attribute_unused(), Oid relid)
{
	for (size_t i = 0; i < lengthof(direct_tables); i++)
		if (relid == InvalidOid || relid == direct_tables[i]->relid)
			direct_tables[i]->valid = false;
}

/* Table and column numbers from keyread.c's contract */
static void
resolve_layout(DirectTable *t)
{
	AttrNumber	keyattnums[KEYREAD_MAX_KEYS];
	AttrNumber	attnums[KEYREAD_MAX_COLUMNS];

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_layout, (Datum) 0);
		callback_registered = true;
	}
	if (t->cxt == NULL)
	{
		t->cxt = AllocSetContextCreate(CacheMemoryContext, "appguard direct write",
									   ALLOCSET_SMALL_SIZES);
		MemoryContextSetIdentifier(t->cxt, t->cxt_name);
	}
	MemoryContextReset(t->cxt);
	t->cache = NULL;
	t->relid = keyread_layout(t->kt, keyattnums, attnums);
	t->map(t, keyattnums, attnums);
	t->checked = false;
	t->plain = false;
	t->valid = true;
}

/*
 * The table, RowExclusiveLock taken, as an INSERT opens it.  Taking the
 * lock processes pending invalidations, which may tell that the names now
 * point elsewhere: then resolve again, once (as keyread.c does).
 */
static Relation
open_direct(DirectTable *t)
{
	Relation	rel;

	if (!t->valid)
		resolve_layout(t);
	rel = try_table_open(t->relid, RowExclusiveLock);
	if (rel != NULL && t->valid)
		return rel;
	if (rel != NULL)
		table_close(rel, RowExclusiveLock);
	resolve_layout(t);
	return table_open(t->relid, RowExclusiveLock);
}

static bool
is_written(DirectTable *t, AttrNumber attnum)
{
	for (int c = 0; c < t->ncolumns; c++)
		if (t->attnums[c] == attnum)
			return true;
	return false;
}

/*
 * Whether the columns are as the direct insert assumes: those written of
 * the expected types, created_at defaulting to now(), no other default,
 * nothing generated.  Else the SQL statement must fill the row.
 */
static bool
columns_plain(DirectTable *t, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Node	   *created_default;

	if (desc->constr && desc->constr->has_generated_stored)
		return false;
	for (int c = 0; c < t->ncolumns; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, t->attnums[c] - 1);

		if (att->attisdropped || att->atttypid != t->types[c])
			return false;
	}
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || is_written(t, att->attnum))
			continue;
		if (att->attgenerated || build_column_default(rel, att->attnum) != NULL)
			return false;
	}
	created_default = build_column_default(rel, t->attnums[t->created_at]);
	return created_default != NULL && IsA(created_default, FuncExpr)
		&& ((FuncExpr *) created_default)->funcid == F_NOW;
}

/*
 * Build the executor cache for rel, in t->cxt.  NULL when an index has
 * expressions (their states belong to an EState): ExecOpenIndices then
 * does the work every time.
 */
static ExecutorCache *
build_executor_cache(DirectTable *t, Relation rel)
{
	MemoryContext old;
	ExecutorCache *cache;
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	List	   *index_oids;
	ListCell   *lc;
	int			i = 0;

	MemoryContextReset(t->cxt);	/* what a build cut short by an error left */
	old = MemoryContextSwitchTo(t->cxt);
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
			MemoryContextReset(t->cxt);
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
prepare_result_rel(DirectTable *t, ResultRelInfo *rri)
{
	ExecutorCache *cache = t->cache;

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
direct_write_allowed(DirectTable *t, Relation rel)
{
	const AclMode needed = ACL_INSERT | ACL_SELECT | ACL_UPDATE;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition
		|| rel->rd_rel->relrowsecurity || rel->trigdesc != NULL)
		return false;
	if (!t->checked)
	{
		t->plain = columns_plain(t, rel);
		t->cache = t->plain ? build_executor_cache(t, rel) : NULL;
		t->checked = true;
	}
	return t->plain
		&& pg_class_aclmask(t->relid, GetUserId(), needed, ACLMASK_ALL) == needed;
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
	DirectTable *t;
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
} DirectWrite;

/*
 * Open the table for a direct write, with a one-relation range table as
 * the apply worker's.  False, the table closed again, where the SQL
 * statement must do the write (see direct_write_allowed).
 */
static bool
direct_write_begin(DirectWrite *w, DirectTable *t)
{
	RangeTblEntry *rte;

	w->t = t;
	w->rel = open_direct(t);
	if (!direct_write_allowed(t, w->rel))
	{
		table_close(w->rel, NoLock);	/* the statement takes the same lock */
		return false;
	}
	w->estate = CreateExecutorState();
	w->estate->es_output_cid = GetCurrentCommandId(true);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = t->relid;
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(w->estate, list_make1(rte));
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->rel, 1, NULL, 0);
	prepare_result_rel(t, w->rri);
	return true;
}

/* A virtual slot of the table's row type, every column NULL */
static TupleTableSlot *
null_row_slot(DirectWrite *w)
{
	TupleTableSlot *slot = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(w->rel), &TTSOpsVirtual);

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, slot->tts_tupleDescriptor->natts * sizeof(bool));
	return slot;
}

/* Set written column c (GW_*, CW_*) of a virtual slot being filled */
static inline void
set_column(DirectWrite *w, TupleTableSlot *slot, int c, Datum value, bool isnull)
{
	slot->tts_values[w->t->attnums[c] - 1] = value;
	slot->tts_isnull[w->t->attnums[c] - 1] = isnull;
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

	if (!direct_write_begin(&w, &grants_table))
		return GW_NOT_DIRECT;

	slot = null_row_slot(&w);
	set_column(&w, slot, GW_TOKEN_TABLE, ObjectIdGetDatum(token_table), false);
	set_column(&w, slot, GW_TOKEN_KEY, token_key, false);
	set_column(&w, slot, GW_CLIENT_ID, client_id, client_null);
	set_column(&w, slot, GW_STATE, state, false);
	set_column(&w, slot, GW_BASELINE, baseline, baseline_null);
	set_column(&w, slot, GW_SUBJECT, subject, subject_null);
	set_column(&w, slot, GW_GRANT_KEY, grant_key, grant_key_null);
	/* now(): the transaction's start, as the column's default */
	set_column(&w, slot, GW_CREATED_AT, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
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

	set_column(w, search, GW_TOKEN_TABLE, ObjectIdGetDatum(token_table), false);
	set_column(w, search, GW_TOKEN_KEY, token_key, false);
	ExecStoreVirtualTuple(search);

	if (!RelationFindReplTupleByIndex(w->rel, RelationGetPrimaryKeyIndex(w->rel),
									  LockTupleExclusive, search, found))
		return false;
	state = slot_getattr(found, w->t->attnums[GW_STATE], &isnull);
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

	if (!direct_write_begin(&w, &grants_table))
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
		set_column(&w, retired, GW_STATE, CStringGetTextDatum("inactive"), false);
		ExecStoreVirtualTuple(retired);

		EvalPlanQualInit(&epqstate, w.estate, NULL, NIL, -1);
		ExecSimpleRelationUpdate(w.rri, w.estate, &epqstate, found, retired);
		EvalPlanQualEnd(&epqstate);
	}
	direct_write_end(&w);
	return active ? GW_RETIRED : GW_NOT_ACTIVE;
}

GrantWriteResult
grantwrite_start_consent(Datum client_id, Datum subject, Datum baseline)
{
	DirectWrite w;
	TupleTableSlot *slot;
	bool		inserted;

	if (!direct_write_begin(&w, &consents_table))
		return GW_NOT_DIRECT;

	slot = null_row_slot(&w);
	set_column(&w, slot, CW_CLIENT_ID, client_id, false);
	set_column(&w, slot, CW_SUBJECT, subject, false);
	set_column(&w, slot, CW_BASELINE, baseline, false);
	/* now() as the column's default; clock_timestamp() as the statement's */
	set_column(&w, slot, CW_CREATED_AT, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
	set_column(&w, slot, CW_APPROVED_AT, TimestampTzGetDatum(GetCurrentTimestamp()), false);
	ExecStoreVirtualTuple(slot);

	inserted = insert_unless_duplicate(w.rri, w.estate, slot);

	direct_write_end(&w);
	return inserted ? GW_INSERTED : GW_DUPLICATE;
}
