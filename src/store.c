/*-------------------------------------------------------------------------
 *
 * store.c
 *	  Storing a probe's measurement as a row of appguard.snapshots.
 *
 * One INSERT, prepared once per backend and kept (SPI_keepplan): a sweep
 * stores thousands of rows, and parsing and planning the statement again
 * for each cost more than the insert itself.  The statement names only
 * schema-qualified objects and no operator, so the search_path in effect
 * cannot change what it does.
 *
 * A snapshot row is larger than a page's TOAST threshold (the chain's DER,
 * the facts), so the insert compresses it.  With pglz that cost about a
 * twentieth of a snapshot's backend CPU; lz4, where the server has it,
 * compresses such rows several times faster (the rows read back the same:
 * each value records its own method).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "store.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
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

int64
store_snapshot_row(const SnapshotRow *row)
{
	Datum		values[6];
	bool		isnull;
	int64		id;
	int			nest_level;

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
	nest_level = NewGUCNestLevel();
#ifdef USE_LZ4
	(void) set_config_option("default_toast_compression", "lz4",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
#endif
	if (SPI_execute_plan(insert_plan, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not store the snapshot of %s", row->host);
	/* an ERROR above is undone by the (sub)transaction's abort */
	AtEOXact_GUC(true, nest_level);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return id;
}

/*
 * The facts with "id" added: what facts || '{"id": id}' gives (jsonb_concat),
 * without parsing a document for the id: the top-level members are pushed
 * again (a nested one as it is stored) and "id" last, so that it wins over
 * an "id" the facts might hold, as the right operand's does.
 */
Jsonb *
facts_with_id(Jsonb *facts, int64 id)
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
