/*-------------------------------------------------------------------------
 *
 * keyread.c
 *	  Reading one row of an appguard table by its primary key, straight
 *	  through the index: no parser, planner or executor.  Also whether a
 *	  row exists by a plain index's key (keyread_exists_fresh).
 *
 * The refresh check runs inside the auth server's refresh transaction, the
 * consent trigger inside its token INSERT, and the snapshots trigger for
 * every snapshot stored outside a sweep.  Through SPI, even a
 * prepared single-row lookup costs more than the host's own statement;
 * an index scan costs a few microseconds.
 *
 * Tables, indexes and column numbers are looked up by name the first time
 * and kept until a relcache invalidation names one of them (ALTER, DROP,
 * ALTER EXTENSION UPDATE).  Every lookup is schema-qualified (schema
 * "appguard", the extension's fixed schema), so no search_path matters,
 * and the index is checked to be the one on the expected key columns.
 * Locks are those the executor takes for a read (AccessShareLock, held to
 * the end of the transaction).  Reading needs no privilege on the tables:
 * the SQL functions that call this decide who may.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "keyread.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

typedef struct KeyedTableDef
{
	const char *relname;
	const char *indexname;
	bool		index_is_primary;	/* else a plain index: keyread_exists_fresh */
	int			nkeys;
	const char *keycolumns[KEYREAD_MAX_KEYS];
	RegProcedure keyeq[KEYREAD_MAX_KEYS];	/* equality of each key column */
	int			ncolumns;
	const char *columns[KEYREAD_MAX_COLUMNS];	/* in the order of keyread.h */
} KeyedTableDef;

static const KeyedTableDef table_defs[KT_COUNT] = {
	[KT_GRANTS] = {
		"grants", "grants_pkey", true,
		2, {"token_table", "token_key"}, {F_OIDEQ, F_TEXTEQ},
		GRANT_NCOLUMNS, {"state", "client_id", "baseline_snapshot_id", "created_at",
						 "subject", "grant_key", "suspension_id"}
	},
	[KT_PROTECTED_TABLES] = {
		"protected_tables", "protected_tables_pkey", true,
		1, {"tbl"}, {F_OIDEQ},
		PT_NCOLUMNS, {"key_attnum", "client_attnum", "status_attnum", "active_value",
					  "subject_attnum", "grant_attnum"}
	},
	[KT_CLIENTS] = {
		"clients", "clients_pkey", true,
		1, {"client_id"}, {F_TEXTEQ},
		CL_NCOLUMNS, {"last_snapshot_id", "last_snapshot_at", "last_ok_snapshot_id", "last_ok_at",
					  "hosts_undecided", "hosts_drifted", "held_baselines"}
	},
	[KT_BASELINE_STATE] = {
		"baseline_state", "baseline_state_pkey", true,
		2, {"client_id", "baseline_snapshot_id"}, {F_TEXTEQ, F_INT8EQ},
		BS_NCOLUMNS, {"evaluated_snapshot_id", "drifting", "streak", "suspension_applied"}
	},
	[KT_CONSENTS] = {
		"consents", "consents_pkey", true,
		2, {"client_id", "subject"}, {F_TEXTEQ, F_TEXTEQ},
		CS_NCOLUMNS, {"baseline_snapshot_id", "shown_snapshot_id", "shown_at", "approved_at", "created_at"}
	},
	/* the index the evaluation's join uses; only whether a row exists */
	[KT_CLIENT_HOSTS] = {
		"client_hosts", "client_hosts_host", false,
		2, {"host", "port"}, {F_TEXTEQ, F_INT4EQ},
		0, {NULL}
	},
};

typedef struct ResolvedTable
{
	Oid			relid;
	Oid			indexid;
	AttrNumber	keyattnums[KEYREAD_MAX_KEYS];
	AttrNumber	attnums[KEYREAD_MAX_COLUMNS];
} ResolvedTable;

static ResolvedTable resolved[KT_COUNT];
static bool resolved_valid = false;
static bool callback_registered = false;

static void
forget_resolved(Datum arg pg_attribute_unused(), Oid relid)
{
	if (!resolved_valid)
		return;
	if (relid == InvalidOid)
	{
		resolved_valid = false;
		return;
	}
	for (int t = 0; t < KT_COUNT; t++)
		if (resolved[t].relid == relid || resolved[t].indexid == relid)
			resolved_valid = false;
}

Oid
keyread_relation(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation appguard.%s does not exist", name),
				 errhint("The appguard library and its SQL objects do not match: "
						 "ALTER EXTENSION appguard UPDATE, or reinstall.")));
	return relid;
}

static AttrNumber
appguard_column(Oid relid, const char *relname, const char *column)
{
	AttrNumber	attnum = get_attnum(relid, column);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column %s of appguard.%s does not exist", column, relname),
				 errhint("The appguard library and its SQL objects do not match: "
						 "ALTER EXTENSION appguard UPDATE, or reinstall.")));
	return attnum;
}

/*
 * The index must be a btree on the key columns, in order, on every row (not
 * partial): the scans compare with btree equality, and the answer "no row"
 * must mean there is none.  A primary key's must also be unique: the first
 * row found is the only one.
 */
static void
check_key_index(const KeyedTableDef *def, Oid relid, Oid indexid)
{
	Relation	index = index_open(indexid, AccessShareLock);
	Form_pg_index form = index->rd_index;
	bool		ok = form->indrelid == relid && index->rd_rel->relam == BTREE_AM_OID
		&& (form->indisunique || !def->index_is_primary)
		&& heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL)
		&& form->indnkeyatts == def->nkeys;

	for (int k = 0; ok && k < def->nkeys; k++)
		ok = form->indkey.values[k] == appguard_column(relid, def->relname, def->keycolumns[k]);
	index_close(index, NoLock);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("index appguard.%s is not the %s appguard expects", def->indexname,
						def->index_is_primary ? "primary key" : "index")));
}

static void
resolve_tables(void)
{
	Oid			nsp = get_namespace_oid("appguard", false);

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_resolved, (Datum) 0);
		callback_registered = true;
	}
	for (int t = 0; t < KT_COUNT; t++)
	{
		const KeyedTableDef *def = &table_defs[t];
		ResolvedTable *res = &resolved[t];

		res->relid = keyread_relation(nsp, def->relname);
		res->indexid = keyread_relation(nsp, def->indexname);
		check_key_index(def, res->relid, res->indexid);
		for (int k = 0; k < def->nkeys; k++)
			res->keyattnums[k] = appguard_column(res->relid, def->relname, def->keycolumns[k]);
		for (int c = 0; c < def->ncolumns; c++)
			res->attnums[c] = appguard_column(res->relid, def->relname, def->columns[c]);
	}
	resolved_valid = true;
}

/*
 * Open the table, resolving names first if needed.  Taking the lock
 * processes pending invalidations, which may tell that the names now
 * point elsewhere (the extension was dropped and created again): then
 * resolve again, once.
 */
static Relation
open_keyed_table(ResolvedTable *res)
{
	Relation	heap;

	if (!resolved_valid)
		resolve_tables();
	heap = try_table_open(res->relid, AccessShareLock);
	if (heap != NULL && resolved_valid)
		return heap;
	if (heap != NULL)
		table_close(heap, AccessShareLock);
	resolve_tables();
	return table_open(res->relid, AccessShareLock);
}

/* Copy what the scan found out of its buffer */
static void
copy_columns(TupleTableSlot *slot, const KeyedTableDef *def, const ResolvedTable *res,
			 Datum *values, bool *nulls)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;

	for (int c = 0; c < def->ncolumns; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, res->attnums[c] - 1);
		Datum		value = slot_getattr(slot, res->attnums[c], &nulls[c]);

		values[c] = nulls[c] ? (Datum) 0 : datumCopy(value, att->attbyval, att->attlen);
	}
}

/* Lock the table and its index, as keyread_row and keyread_exists_fresh read */
static void
open_keyed(KeyedTable table, Relation *heap, Relation *index)
{
	ResolvedTable *res = &resolved[table];

	*heap = open_keyed_table(res);
	*index = index_open(res->indexid, AccessShareLock);
}

static void
close_keyed(Relation heap, Relation index)
{
	index_close(index, NoLock);
	table_close(heap, NoLock);
}

/*
 * Whether the index has a row with key[] seen by snapshot: the first one
 * found, whose columns go to values[] and nulls[] unless values is NULL.
 */
static bool
scan_keyed(KeyedTable table, Relation heap, Relation index, const Datum *key,
		   Snapshot snapshot, Datum *values, bool *nulls)
{
	const KeyedTableDef *def = &table_defs[table];
	ScanKeyData keys[KEYREAD_MAX_KEYS];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	/*
	 * The key's collation is the index's: a text key compared under another
	 * collation than the index was built with could miss the row.
	 */
	for (int k = 0; k < def->nkeys; k++)
		ScanKeyEntryInitialize(&keys[k], 0, k + 1, BTEqualStrategyNumber, InvalidOid,
							   index->rd_indcollation[k], def->keyeq[k], key[k]);

	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, index, snapshot, def->nkeys, 0);
	index_rescan(scan, keys, def->nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found && values != NULL)
		copy_columns(slot, def, &resolved[table], values, nulls);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

bool
keyread_row(KeyedTable table, const Datum *key, Snapshot snapshot,
			Datum *values, bool *nulls)
{
	Relation	heap;
	Relation	index;
	bool		found;

	Assert(table_defs[table].index_is_primary);
	open_keyed(table, &heap, &index);
	found = scan_keyed(table, heap, index, key, snapshot, values, nulls);
	close_keyed(heap, index);
	return found;
}

/*
 * A PL/pgSQL statement's locks are taken as its plan is fetched, before its
 * snapshot: so here, and a lock waited for shows what its holder committed.
 */
bool
keyread_exists_fresh(KeyedTable table, const Datum *key)
{
	Relation	heap;
	Relation	index;
	bool		found;

	open_keyed(table, &heap, &index);
	keyread_begin_fresh();
	found = scan_keyed(table, heap, index, key, GetActiveSnapshot(), NULL, NULL);
	keyread_end_fresh();
	close_keyed(heap, index);
	return found;
}

/*
 * rel's columns are found by the names of table_defs' key columns at each
 * call (a short scan of rel's tuple descriptor), not resolved and kept:
 * rel is not the keyed table, and a rel without them is an answer (false),
 * not an error.
 */
bool
keyread_key_from_tuple(KeyedTable table, Relation rel, HeapTuple tuple, Datum *key)
{
	const KeyedTableDef *def = &table_defs[table];
	TupleDesc	desc = RelationGetDescr(rel);

	for (int k = 0; k < def->nkeys; k++)
	{
		int			attnum = SPI_fnumber(desc, def->keycolumns[k]);
		bool		isnull;

		if (attnum <= 0)
			return false;
		key[k] = heap_getattr(tuple, attnum, desc, &isnull);
		if (isnull)
			return false;
	}
	return true;
}

void
keyread_begin_fresh(void)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
}

void
keyread_end_fresh(void)
{
	PopActiveSnapshot();
}

/*
 * The table's OID and the numbers of its key columns and of the columns
 * listed in keyread.h, for code that writes the table (grantwrite.c).  As
 * keyread_row's, they hold until the next relcache invalidation naming
 * the table or its index: the caller keeps a copy only as long (its own
 * relcache callback), and checks them again after locking the table.
 */
Oid
keyread_layout(KeyedTable table, AttrNumber *keyattnums, AttrNumber *attnums)
{
	const KeyedTableDef *def = &table_defs[table];
	ResolvedTable *res = &resolved[table];

	if (!resolved_valid)
		resolve_tables();
	for (int k = 0; k < def->nkeys; k++)
		keyattnums[k] = res->keyattnums[k];
	for (int c = 0; c < def->ncolumns; c++)
		attnums[c] = res->attnums[c];
	return res->relid;
}

PG_FUNCTION_INFO_V1(appguard_keyread_contract);

static Datum
text_array(const char *const *items, int n)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * appguard.keyread_contract() RETURNS TABLE (table_name, index_name,
 * index_is_primary, key_columns, columns): what this file reads by name,
 * for the regression test that checks it against the catalog
 * (sql/c_contract.sql).
 */
Datum
appguard_keyread_contract(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int t = 0; t < KT_COUNT; t++)
	{
		const KeyedTableDef *def = &table_defs[t];
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		values[0] = CStringGetTextDatum(def->relname);
		values[1] = CStringGetTextDatum(def->indexname);
		values[2] = BoolGetDatum(def->index_is_primary);
		values[3] = text_array(def->keycolumns, def->nkeys);
		values[4] = text_array(def->columns, def->ncolumns);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
