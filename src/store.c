/*-------------------------------------------------------------------------
 *
 * store.c
 *	  Storing a probe's measurement as a row of appguard.snapshots.
 *
 * A run that stores many rows (appguard_snapshot_many, a sweep's batch)
 * opens a SnapshotStore once and inserts each row the way the executor's
 * INSERT does, without its per-statement set-up: the row's id from the
 * identity column's sequence, the CHECK constraints (prepared once for
 * the store, not once a row), the heap and its indexes, and the table's
 * AFTER INSERT row triggers, queued and fired for each row right after it
 * as the statement's end would fire them (the trigger that evaluates the
 * snapshot, src/snapshot_trigger.c; any other one).  BEFORE row triggers
 * fire too (ExecSimpleRelationInsert).  That path is taken only where the
 * INSERT would do nothing more: a plain table whose columns are the seven
 * below, no row level security, and INSERT granted to the current user;
 * else each row goes through one INSERT, prepared once per backend and
 * kept (SPI_keepplan).  The statement names only schema-qualified objects
 * and no operator, so the search_path in effect cannot change what it
 * does.
 *
 * A snapshot row is larger than a page's TOAST threshold (the chain's DER,
 * the facts), so the insert compresses it.  With pglz that cost about a
 * twentieth of a snapshot's backend CPU; lz4, where the server has it,
 * compresses such rows several times faster (the rows read back the same:
 * each value records its own method).  The setting holds for the insert
 * and its triggers, as it did around the statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "store.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

static SPIPlanPtr insert_plan = NULL;

static ArrayType *
chain_array(Probe *probe)
{
	Datum	   *elems = palloc((probe->chain_len + 1) * sizeof(Datum));
	int			n = 0;

	for (int i = 0; i < probe->chain_len; i++)
	{
		bytea	   *der;

		if (probe->chain_der == NULL || probe->chain_der[i] == NULL)
			continue;
		der = palloc(VARHDRSZ + probe->chain_der_len[i]);
		SET_VARSIZE(der, VARHDRSZ + probe->chain_der_len[i]);
		memcpy(VARDATA(der), probe->chain_der[i], probe->chain_der_len[i]);
		elems[n++] = PointerGetDatum(der);
	}
	return construct_array(elems, n, BYTEAOID, -1, false, TYPALIGN_INT);
}

void
snapshot_row_from_probe(SnapshotRow *row, Probe *probe, Jsonb *facts)
{
	row->host = pstrdup(probe->host);
	row->port = probe->port;
	row->taken_at = probe->started_at;
	row->status = probe_status_name(probe->status);
	row->facts = (Jsonb *) palloc(VARSIZE(facts));
	memcpy(row->facts, facts, VARSIZE(facts));
	row->chain = chain_array(probe);
}

void
snapshot_row_copy(SnapshotRow *dst, const SnapshotRow *src)
{
	dst->host = pstrdup(src->host);
	dst->port = src->port;
	dst->taken_at = src->taken_at;
	dst->status = src->status;	/* a constant */
	dst->facts = (Jsonb *) palloc(VARSIZE(src->facts));
	memcpy(dst->facts, src->facts, VARSIZE(src->facts));
	dst->chain = (ArrayType *) palloc(VARSIZE(src->chain));
	memcpy(dst->chain, src->chain, VARSIZE(src->chain));
}

static void
prepare_insert(void)
{
	static const char *sql =
		"INSERT INTO appguard.snapshots (host, port, taken_at, status, facts, chain) "
		"VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
	Oid			types[6] = {TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID, JSONBOID, BYTEAARRAYOID};
	SPIPlanPtr	plan = SPI_prepare(sql, 6, types);

	if (plan == NULL)
		elog(ERROR, "could not prepare the snapshot insert: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the snapshot insert plan");
	insert_plan = plan;
}

/* The INSERT, through SPI */
static int64
insert_row_sql(const SnapshotRow *row)
{
	Datum		values[6];
	bool		isnull;
	int64		id;

	values[0] = CStringGetTextDatum(row->host);
	values[1] = Int32GetDatum(row->port);
	values[2] = TimestampTzGetDatum(row->taken_at);
	values[3] = CStringGetTextDatum(row->status);
	values[4] = JsonbPGetDatum(row->facts);
	values[5] = PointerGetDatum(row->chain);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (insert_plan == NULL)
		prepare_insert();
	if (SPI_execute_plan(insert_plan, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not store the snapshot of %s", row->host);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return id;
}

/* The columns of appguard.snapshots, in the order of SnapshotStore.attnums */
static const char *const snapshot_columns[SS_NCOLUMNS] = {
	"id", "host", "port", "taken_at", "status", "facts", "chain"
};

/* ... and the types of the Datums written to them */
static const Oid snapshot_column_types[SS_NCOLUMNS] = {
	INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID, JSONBOID, BYTEAARRAYOID
};

/*
 * Whether rel allows the direct insert: a plain table of exactly the
 * seven columns, of the types written (the statement would coerce), none
 * generated and id an identity column (the others' values are always
 * given), no row level security, no trigger but AFTER INSERT row
 * triggers, INSERT granted to the current user (what the statement's
 * permission check asks).
 */
static bool
direct_insert_allowed(SnapshotStore *store, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trig = rel->trigdesc;
	int			live = 0;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relrowsecurity
		|| rel->rd_rel->relispartition)
		return false;
	/* AFTER INSERT row triggers only: they fire as the statement's end would */
	if (trig != NULL && (trig->trig_insert_before_row || trig->trig_insert_instead_row
						 || trig->trig_insert_before_statement
						 || trig->trig_insert_after_statement || trig->trig_insert_new_table))
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	if (live != SS_NCOLUMNS)
		return false;
	for (int c = 0; c < SS_NCOLUMNS; c++)
	{
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), snapshot_columns[c]);
		Form_pg_attribute att;

		if (attnum == InvalidAttrNumber)
			return false;
		att = TupleDescAttr(desc, attnum - 1);
		if (att->atttypid != snapshot_column_types[c] || att->attgenerated
			|| (c == SS_ID) != (att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS))
			return false;
		store->attnums[c] = attnum;
	}
	store->id_sequence = getIdentitySequence(RelationGetRelid(rel), store->attnums[SS_ID], true);
	if (!OidIsValid(store->id_sequence))
		return false;
	return pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT) == ACLCHECK_OK;
}

SnapshotStore *
snapshot_store_open(void)
{
	SnapshotStore *store = palloc0(sizeof(SnapshotStore));
	Oid			nsp = get_namespace_oid("appguard", false);
	Oid			relid = get_relname_relid("snapshots", nsp);
	RangeTblEntry *rte;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation appguard.snapshots does not exist")));
	store->rel = table_open(relid, RowExclusiveLock);
	if (!direct_insert_allowed(store, store->rel))
	{
		table_close(store->rel, NoLock);	/* the statement takes the same lock */
		store->rel = NULL;
		return store;
	}
	store->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(store->estate, list_make1(rte));
	store->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(store->rri, store->rel, 1, NULL, 0);
	/* where AfterTriggerEndQuery's ExecGetTriggerResultRel finds it */
	store->estate->es_opened_result_relations =
		lappend(store->estate->es_opened_result_relations, store->rri);
	ExecOpenIndices(store->rri, false);
	store->slot = ExecInitExtraTupleSlot(store->estate, RelationGetDescr(store->rel),
										 &TTSOpsVirtual);
	return store;
}

/* Insert the row directly: see the file's comment */
static int64
insert_row_direct(SnapshotStore *store, const SnapshotRow *row)
{
	TupleTableSlot *slot = store->slot;
	EState	   *estate = store->estate;
	MemoryContext old;
	int64		id;

	CHECK_FOR_INTERRUPTS();
	id = nextval_internal(store->id_sequence, false);
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, slot->tts_tupleDescriptor->natts * sizeof(bool));
#define SET_COLUMN(c, value) \
	(slot->tts_values[store->attnums[c] - 1] = (value), \
	 slot->tts_isnull[store->attnums[c] - 1] = false)
	SET_COLUMN(SS_ID, Int64GetDatum(id));
	SET_COLUMN(SS_HOST, CStringGetTextDatum(row->host));
	SET_COLUMN(SS_PORT, Int32GetDatum(row->port));
	SET_COLUMN(SS_TAKEN_AT, TimestampTzGetDatum(row->taken_at));
	SET_COLUMN(SS_STATUS, CStringGetTextDatum(row->status));
	SET_COLUMN(SS_FACTS, JsonbPGetDatum(row->facts));
	SET_COLUMN(SS_CHAIN, PointerGetDatum(row->chain));
#undef SET_COLUMN
	ExecStoreVirtualTuple(slot);

	/*
	 * One statement's worth: a command of its own (SPI increments the
	 * counter before each statement), its AFTER trigger queue, fired at its
	 * end
	 */
	CommandCounterIncrement();
	estate->es_output_cid = GetCurrentCommandId(true);
	AfterTriggerBeginQuery();
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
	ExecSimpleRelationInsert(store->rri, estate, slot);
	MemoryContextSwitchTo(old);
	AfterTriggerEndQuery(estate);
	ExecClearTuple(slot);
	ResetPerTupleExprContext(estate);
	return id;
}

int64
snapshot_store_row(SnapshotStore *store, const SnapshotRow *row)
{
	int			nest_level;
	int64		id;

	nest_level = NewGUCNestLevel();
#ifdef USE_LZ4
	(void) set_config_option("default_toast_compression", "lz4",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
#endif
	if (store->rel != NULL)
		id = insert_row_direct(store, row);
	else
		id = insert_row_sql(row);
	/* an ERROR above is undone by the (sub)transaction's abort */
	AtEOXact_GUC(true, nest_level);
	return id;
}

/*
 * Close the store.  After an ERROR there is nothing to close: the
 * (sub)transaction's abort releases the table, its indexes and the
 * executor state's memory, as it does a statement's.
 */
void
snapshot_store_close(SnapshotStore *store)
{
	if (store->rel != NULL)
	{
		ExecCloseIndices(store->rri);
		ExecResetTupleTable(store->estate->es_tupleTable, false);
		FreeExecutorState(store->estate);
		table_close(store->rel, NoLock);
	}
	pfree(store);
}

int64
store_snapshot_row(const SnapshotRow *row)
{
	SnapshotStore *store = snapshot_store_open();
	int64		id = snapshot_store_row(store, row);

	snapshot_store_close(store);
	return id;
}

/*
 * The facts with "id" added: what facts || '{"id": id}' gives (jsonb_concat),
 * by pushing the top-level members again (a nested one as it is stored)
 * and "id" last, so that it wins over an "id" the facts might hold, as the
 * right operand's does.  Decodes and encodes every nested container: used
 * only where facts_with_id's copy does not apply.
 */
static Jsonb *
facts_with_id_pushed(Jsonb *facts, int64 id)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it = JsonbIteratorInit(&facts->root);
	JsonbIteratorToken token;
	JsonbValue	value;
	JsonbValue *result;

	token = JsonbIteratorNext(&it, &value, false);
	if (token != WJB_BEGIN_OBJECT)
		elog(ERROR, "appguard facts document is not an object");
	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	while ((token = JsonbIteratorNext(&it, &value, true)) != WJB_END_OBJECT)
		(void) pushJsonbValue(&state, token, &value);
	value.type = jbvString;
	value.val.string.val = "id";
	value.val.string.len = 2;
	(void) pushJsonbValue(&state, WJB_KEY, &value);
	value.type = jbvNumeric;
	value.val.numeric = int64_to_numeric(id);
	result = pushJsonbValue(&state, WJB_VALUE, &value);
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/* Append a child's JEntry as convertJsonbObject does: a length, or an offset */
static void
put_jentry(JEntry *entries, int i, uint32 type, uint32 len, uint32 *totallen)
{
	*totallen += len;
	if ((i % JB_OFFSET_STRIDE) == 0)
		entries[i] = type | *totallen | JENTRY_HAS_OFF;
	else
		entries[i] = type | len;
}

/*
 * The facts with "id" added, the same jsonb byte for byte as
 * facts_with_id_pushed gives, written directly: the top-level object again
 * with one more key, its keys' and values' data copied as they are stored
 * (a nested container or a number at a 4-byte boundary, as jsonb aligns
 * them: its own layout is relative to that boundary), "id" among the keys
 * in jsonb's key order (shorter first, then bytewise) and its value a
 * number.  Facts that already hold "id" (they do not) go the long way.
 */
Jsonb *
facts_with_id(Jsonb *facts, int64 id)
{
	const JsonbContainer *jc = &facts->root;
	uint32		count;
	uint32		ncount;
	uint32		old_end;
	int			p;
	const char *odata;
	Numeric		num;
	Size		numlen;
	char	   *buf;
	JsonbContainer *out;
	char	   *ndata;
	uint32		pos = 0;
	uint32		totallen = 0;
	int			e = 0;

	if ((jc->header & (JB_FOBJECT | JB_FSCALAR)) != JB_FOBJECT || JsonContainerSize(jc) == 0)
		return facts_with_id_pushed(facts, id);
	count = JsonContainerSize(jc);
	odata = (const char *) &jc->children[2 * count];
	for (p = 0; p < (int) count; p++)
	{
		uint32		len = getJsonbLength(jc, p);
		int			cmp = len != 2 ? (len > 2 ? 1 : -1) :
			memcmp(odata + getJsonbOffset(jc, p), "id", 2);

		if (cmp == 0)
			return facts_with_id_pushed(facts, id);
		if (cmp > 0)
			break;
	}
	old_end = getJsonbOffset(jc, 2 * count - 1) + getJsonbLength(jc, 2 * count - 1);
	num = int64_to_numeric(id);
	numlen = VARSIZE_ANY(num);
	ncount = count + 1;
	/* room for every child's data, its padding, and the new pair */
	buf = palloc0(VARHDRSZ + sizeof(uint32) + 2 * ncount * sizeof(JEntry)
				  + old_end + 2 + numlen + 4 * (ncount + 1));
	out = (JsonbContainer *) (buf + VARHDRSZ);
	out->header = ncount | JB_FOBJECT;
	ndata = (char *) &out->children[2 * ncount];

	for (int k = 0; k < (int) ncount; k++)
	{
		uint32		len;

		if (k == p)
		{
			memcpy(ndata + pos, "id", 2);
			len = 2;
		}
		else
		{
			int			old = k < p ? k : k - 1;

			len = getJsonbLength(jc, old);
			memcpy(ndata + pos, odata + getJsonbOffset(jc, old), len);
		}
		pos += len;
		put_jentry(out->children, e++, JENTRY_ISSTRING, len, &totallen);
	}
	for (int k = 0; k < (int) ncount; k++)
	{
		uint32		start = pos;
		uint32		type;

		if (k == p)
		{
			type = JENTRY_ISNUMERIC;
			pos = INTALIGN(pos);
			memcpy(ndata + pos, num, numlen);
			pos += numlen;
		}
		else
		{
			int			old = (k < p ? k : k - 1) + count;
			uint32		off = getJsonbOffset(jc, old);
			uint32		end = off + getJsonbLength(jc, old);

			type = jc->children[old] & JENTRY_TYPEMASK;
			if (type == JENTRY_ISNUMERIC || type == JENTRY_ISCONTAINER)
			{
				off = INTALIGN(off);	/* past its padding */
				pos = INTALIGN(pos);
			}
			memcpy(ndata + pos, odata + off, end - off);
			pos += end - off;
		}
		put_jentry(out->children, e++, type, pos - start, &totallen);
	}
	SET_VARSIZE(buf, ndata + pos - buf);
	return (Jsonb *) buf;
}
