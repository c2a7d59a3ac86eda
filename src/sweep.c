/*-------------------------------------------------------------------------
 *
 * sweep.c
 *	  The measuring part of a sweep: CALL appguard.sweep_run(sweep_id)
 *	  probes every planned host of a running sweep in one event loop and
 *	  commits the snapshots in batches while the loop keeps going.
 *
 * The engine never stops between batches: a finished probe's row waits in
 * memory until a batch is full (the sweep's batch_size) or has waited a
 * second, then the batch is inserted (the snapshot trigger records each
 * row for the sweep), evaluated (appguard.sweep_evaluate, which also
 * updates the sweep's counts) and committed.  So a slow or stalled host
 * holds one slot of the loop, never a whole batch, and no transaction
 * (no xid, no snapshot, no lock) is open while the loop waits for the
 * network: each transaction is a few milliseconds of inserts.
 *
 * A procedure, to commit: it must be called with CALL from a context that
 * may commit (appguard_sweep does), and so cannot be SECURITY
 * DEFINER.  Like a SECURITY DEFINER function, it runs its SQL as its owner
 * with search_path pinned to pg_catalog, pg_temp, and only while doing so:
 * the user id and settings are back to the caller's before every commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/resowner.h"
#include "appguard.h"
#include "catalog/pg_type.h"
#include "engine.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "guard.h"
#include "identity.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "store.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(appguard_sweep_run);

/* A batch that waits this long is committed even if not full */
#define SWEEP_BATCH_MAX_WAIT_MS 1000

typedef struct Sweep
{
	MemoryContext cxt;			/* outlives the sweep's commits */
	int64		id;
	Oid			owner;			/* the procedure's owner: SQL runs as it */
	int			batch_size;
	TimestampTz deadline;		/* the budget: no host starts after it */

	ProbeTarget *targets;		/* planned hosts not measured yet */
	int			ntargets;

	MemoryContext rows_cxt;		/* rows waiting to be committed */
	SnapshotRow *rows;			/* in the order the probes finished */
	int			nrows;
	int			rows_space;
	TimestampTz oldest_row;		/* when the oldest waiting row came */

	int64		stored;
	int			batches;
	int			failed_batches;
} Sweep;

/*
 * Run SQL as the procedure's owner, search_path pinned (identity.c), and
 * with generic plans: a batch evaluates the same statements for every
 * host, thousands of times a sweep; planned anew each time (custom plans,
 * as the plan cache prefers for some of them) that would cost more than
 * running them.
 */
static void
become_owner(Sweep *sweep, SavedIdentity *as)
{
	identity_become(sweep->owner, 0, true, as);
	(void) set_config_option("plan_cache_mode", "force_generic_plan",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/* The memory that must outlive our commits must not belong to a transaction */
static void
check_outlives_commits(MemoryContext cxt)
{
	for (MemoryContext c = cxt; c != NULL; c = c->parent)
		if (c == TopTransactionContext || c == CurTransactionContext)
			elog(ERROR, "appguard.sweep_run was called in a transaction's memory");
}

static int64
run_sql_int8(const char *sql, int64 arg, int expected)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	int			rc;

	values[0] = Int64GetDatum(arg);
	rc = SPI_execute_with_args(sql, 1, types, values, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "appguard sweep: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
	return SPI_processed;
}

/* A host the sweep cannot measure counts as measured with an error */
static void
record_invalid_host(Sweep *sweep, const char *host, int port)
{
	static const char *sql =
		"UPDATE appguard.sweep_hosts sh SET error = $3, measured_at = pg_catalog.clock_timestamp() "
		"WHERE sh.sweep_id = $1 AND sh.host = $2 AND sh.port = $4";
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];

	values[0] = Int64GetDatum(sweep->id);
	values[1] = CStringGetTextDatum(host);
	values[2] = CStringGetTextDatum(psprintf("invalid host name or port: \"%s\" port %d", host, port));
	values[3] = Int32GetDatum(port);
	if (SPI_execute_with_args(sql, 4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the invalid host \"%s\" of a sweep", host);
}

/*
 * Read the sweep and its hosts still to measure.  Returns false when the
 * sweep is over already (nothing to do).
 */
static bool
load_sweep(Sweep *sweep, MemoryContext cxt)
{
	static const char *sweep_sql =
		"SELECT w.state, w.pid, w.deadline, w.batch_size FROM appguard.sweeps w WHERE w.id = $1";
	static const char *hosts_sql =
		"SELECT sh.host, sh.port FROM appguard.sweep_hosts sh "
		"WHERE sh.sweep_id = $1 AND sh.planned AND sh.snapshot_id IS NULL AND sh.error IS NULL "
		"ORDER BY sh.ord, sh.host, sh.port";
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	char	   *state;
	int			pid;
	List	   *invalid = NIL;
	ListCell   *lc;

	if (run_sql_int8(sweep_sql, sweep->id, SPI_OK_SELECT) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("sweep " INT64_FORMAT " does not exist", sweep->id)));
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	state = SPI_getvalue(tuple, desc, 1);
	pid = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
	sweep->deadline = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 3, &isnull));
	sweep->batch_size = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (strcmp(state, "running") != 0)
		return false;
	if (pid != MyProcPid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sweep " INT64_FORMAT " is run by another backend (pid %d)",
						sweep->id, pid)));

	run_sql_int8(hosts_sql, sweep->id, SPI_OK_SELECT);
	sweep->targets = MemoryContextAllocZero(cxt, sizeof(ProbeTarget) * (SPI_processed + 1));
	sweep->ntargets = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *host = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		int			port = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));
		char	   *normal = MemoryContextAlloc(cxt, GUARD_MAX_HOST_LEN + 2);

		/* registration keeps host names valid; check again all the same */
		if (guard_normalize_host(host, strlen(host), normal, GUARD_MAX_HOST_LEN + 2) != NULL ||
			strcmp(normal, host) != 0 || port < 1 || port > 65535)
		{
			invalid = lappend(invalid, list_make2(makeString(pstrdup(host)), makeInteger(port)));
			continue;
		}
		sweep->targets[sweep->ntargets].host = normal;
		sweep->targets[sweep->ntargets].port = port;
		sweep->ntargets++;
	}
	SPI_freetuptable(SPI_tuptable);
	foreach(lc, invalid)
		record_invalid_host(sweep, strVal(linitial(lfirst(lc))), intVal(lsecond(lfirst(lc))));
	return true;
}

static SnapshotRow *
new_row(Sweep *sweep)
{
	if (sweep->nrows == sweep->rows_space)
	{
		sweep->rows_space = Max(2 * sweep->batch_size, sweep->rows_space * 2);
		sweep->rows = sweep->rows
			? repalloc(sweep->rows, sizeof(SnapshotRow) * sweep->rows_space)
			: MemoryContextAlloc(sweep->rows_cxt, sizeof(SnapshotRow) * sweep->rows_space);
	}
	return &sweep->rows[sweep->nrows++];
}

/* Keep a finished probe's row for the next batch */
static void
keep_row(Probe *probe, Jsonb *facts, void *arg)
{
	Sweep	   *sweep = (Sweep *) arg;
	MemoryContext old = MemoryContextSwitchTo(sweep->rows_cxt);

	if (sweep->nrows == 0)
		sweep->oldest_row = GetCurrentTimestamp();
	snapshot_row_from_probe(new_row(sweep), probe, facts);
	MemoryContextSwitchTo(old);
}

/*
 * Forget the first n rows (committed).  The others move to a fresh memory
 * context, so that the memory of committed rows is always given back.
 */
static void
drop_rows(Sweep *sweep, int n)
{
	MemoryContext old_cxt = sweep->rows_cxt;
	SnapshotRow *old_rows = sweep->rows;
	int			left = sweep->nrows - n;
	MemoryContext old;

	sweep->rows_cxt = AllocSetContextCreate(sweep->cxt, "appguard sweep rows",
											ALLOCSET_DEFAULT_SIZES);
	sweep->rows = NULL;
	sweep->nrows = 0;
	sweep->rows_space = 0;
	old = MemoryContextSwitchTo(sweep->rows_cxt);
	for (int i = 0; i < left; i++)
		snapshot_row_copy(new_row(sweep), &old_rows[n + i]);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(old_cxt);
}

/* Insert n rows (the trigger records each for the sweep) and evaluate them */
static void
store_batch(Sweep *sweep, int n)
{
	SavedIdentity as;
	char		sweep_id[32];
	SnapshotStore *store;

	snprintf(sweep_id, sizeof(sweep_id), INT64_FORMAT, sweep->id);
	become_owner(sweep, &as);
	(void) set_config_option("appguard_lifecycle.sweep_id", sweep_id,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	store = snapshot_store_open();
	for (int i = 0; i < n; i++)
		(void) snapshot_store_row(store, &sweep->rows[i]);
	snapshot_store_close(store);
	run_sql_int8("SELECT appguard.sweep_evaluate($1)", sweep->id, SPI_OK_SELECT);
	SPI_freetuptable(SPI_tuptable);
	identity_restore(&as);
}

/* A batch that could not be stored: its hosts are measured, with the error */
static void
record_batch_error(Sweep *sweep, int n, const char *message)
{
	static const char *sql =
		"UPDATE appguard.sweep_hosts sh SET error = $2, measured_at = pg_catalog.clock_timestamp() "
		"WHERE sh.sweep_id = $1 AND sh.host = $3 AND sh.port = $4 AND sh.snapshot_id IS NULL";
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];
	SavedIdentity as;

	become_owner(sweep, &as);
	values[0] = Int64GetDatum(sweep->id);
	values[1] = CStringGetTextDatum(message);
	for (int i = 0; i < n; i++)
	{
		values[2] = CStringGetTextDatum(sweep->rows[i].host);
		values[3] = Int32GetDatum(sweep->rows[i].port);
		if (SPI_execute_with_args(sql, 4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the error of a sweep's batch");
	}
	identity_restore(&as);
}

/*
 * Store n rows in a subtransaction, as a PL/pgSQL exception block would: a
 * batch that fails (a lock timeout, a deadlock with a refresh check, a bug)
 * costs its own hosts, recorded with the error, not the whole sweep.
 * Cancel and statement_timeout still end the sweep.
 */
static bool
store_batch_or_record_error(Sweep *sweep, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool stored = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		store_batch(sweep, n);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		ereport(WARNING,
				(errmsg("appguard sweep " INT64_FORMAT ": a batch of %d snapshots could not be stored: %s",
						sweep->id, n, edata->message),
				 errdetail("Its hosts are recorded with this error; the sweep goes on.")));
		record_batch_error(sweep, n, edata->message);
		FreeErrorData(edata);
		stored = false;
	}
	PG_END_TRY();
	return stored;
}

/* Store and commit the oldest batch_size rows (or fewer) */
static void
commit_batch(Sweep *sweep)
{
	int			n = Min(sweep->nrows, sweep->batch_size);

	if (n == 0)
		return;
	if (store_batch_or_record_error(sweep, n))
		sweep->stored += n;
	else
		sweep->failed_batches++;
	SPI_commit();
	sweep->batches++;
	drop_rows(sweep, n);
}

/*
 * After each turn of the engine's loop: commit a batch when batch_size rows
 * wait or the oldest has waited long enough.  One batch a turn, so that
 * the loop looks at its sockets between batches; with more waiting, it
 * asks to be called again at once, else when the oldest row will be due.
 */
static TimestampTz
commit_if_due(void *arg)
{
	Sweep	   *sweep = (Sweep *) arg;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due;

	if (sweep->nrows == 0)
		return 0;
	due = TimestampTzPlusMilliseconds(sweep->oldest_row, SWEEP_BATCH_MAX_WAIT_MS);
	if (sweep->nrows < sweep->batch_size && now < due)
		return due;
	commit_batch(sweep);
	if (sweep->nrows >= sweep->batch_size)
		return now;
	if (sweep->nrows > 0)
		return due;				/* the rest came after the oldest */
	return 0;
}

/* CALL appguard.sweep_run(sweep_id bigint) */
Datum
appguard_sweep_run(PG_FUNCTION_ARGS)
{
	MemoryContext cxt;
	MemoryContext old;
	Sweep	   *sweep;
	SavedIdentity as;
	EngineRun	run;
	bool		running;

	appguard_require_settings();
	if (!fcinfo->context || !IsA(fcinfo->context, CallContext) ||
		((CallContext *) fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("appguard.sweep_run must be called with CALL outside a transaction block"),
				 errhint("Run a sweep with CALL appguard_sweep(...).")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sweep_id must not be null")));

	cxt = AllocSetContextCreate(CurrentMemoryContext, "appguard sweep", ALLOCSET_DEFAULT_SIZES);
	check_outlives_commits(cxt);
	old = MemoryContextSwitchTo(cxt);
	sweep = palloc0(sizeof(Sweep));
	sweep->id = PG_GETARG_INT64(0);
	sweep->owner = routine_owner(fcinfo->flinfo->fn_oid);
	sweep->cxt = cxt;
	sweep->rows_cxt = AllocSetContextCreate(cxt, "appguard sweep rows", ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	become_owner(sweep, &as);
	running = load_sweep(sweep, cxt);
	identity_restore(&as);
	/* nothing held while the network is waited for */
	SPI_commit();

	if (running)
	{
		memset(&run, 0, sizeof(run));
		run.targets = sweep->targets;
		run.ntargets = sweep->ntargets;
		run.concurrency = appguard_sweep_concurrency;
		run.budget_deadline = sweep->deadline;
		run.done = keep_row;
		run.turn = commit_if_due;
		run.arg = sweep;
		MemoryContextSwitchTo(cxt);
		engine_run(&run);
		while (sweep->nrows > 0)
			commit_batch(sweep);
		elog(DEBUG1, "appguard sweep " INT64_FORMAT ": %d of %d hosts started, " INT64_FORMAT " snapshots stored in %d batches (%d failed), at most %d at once",
			 sweep->id, run.started, run.ntargets, sweep->stored, sweep->batches,
			 sweep->failed_batches, run.most_in_flight);
	}
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	PG_RETURN_VOID();
}
