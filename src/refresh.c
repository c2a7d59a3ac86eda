/*-------------------------------------------------------------------------
 *
 * refresh.c
 *	  The auth server's hot paths: the refresh check and the consent
 *	  trigger, in their common case.
 *
 *	  appguard_check_refresh(token_id text) -> jsonb
 *	  appguard_check_refresh(tbl regclass, row_key text) -> jsonb
 *	  appguard_reapprove(tbl regclass, row_key text) -> jsonb (the gate)
 *	  appguard.refresh_token_issue() -> trigger (BEFORE INSERT)
 *
 * An active grant whose baseline has been compared with its client's
 * latest snapshot and found not (confirmed) drifted is allowed after a
 * few index lookups (keyread.c); so is one whose baseline is pending or
 * whose client is not registered.  Everything else -- suspended, revoked,
 * unknown, a verdict still to be reached, a live snapshot due, an error
 * to raise -- is left to the full check in SQL
 * (appguard.check_refresh_full, appguard.check_row_refresh_full, in
 * sql/parts/34_refresh.sql), which may measure, evaluate and suspend.
 * The fast path only ever answers "allowed", and only where the full
 * check would answer the same without acting.
 *
 * The consent trigger gives a new active grant its client's latest
 * successful snapshot as baseline when it is recent enough, else asks
 * appguard.baseline_for (a live snapshot, or pending).
 *
 * Reads take a fresh snapshot after a command counter increment, as a
 * volatile PL/pgSQL function's statements do: a refresh check asked in
 * the host's SELECT ... FOR UPDATE, which waited for a suspension to
 * commit, sees that suspension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "appguard.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "hostrow.h"
#include "keyread.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(appguard_check_refresh_token);
PG_FUNCTION_INFO_V1(appguard_check_refresh_row);
PG_FUNCTION_INFO_V1(appguard_refresh_token_issue);
PG_FUNCTION_INFO_V1(appguard_reapprove_row);

/* Recording an allowed refresh, re-checking the status under the row lock */
static SPIPlanPtr record_refresh_plan = NULL;

/* ---- small helpers ---- */

static bool
text_equals(Datum value, const char *expected)
{
	text	   *t = DatumGetTextPP(value);
	size_t		len = strlen(expected);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), expected, len) == 0;
}

static bool
within_seconds(TimestampTz at, int seconds)
{
	return at >= GetCurrentTimestamp() - (int64) seconds * USECS_PER_SEC;
}

static void
begin_fresh_read(void)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
}

static void
end_fresh_read(void)
{
	PopActiveSnapshot();
}

/* {"allowed": true}, parsed once per backend */
static Jsonb *
allowed_body(void)
{
	static Jsonb *allowed = NULL;
	Jsonb	   *copy;

	if (allowed == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		allowed = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"allowed\": true}")));
		MemoryContextSwitchTo(old);
	}
	copy = palloc(VARSIZE(allowed));
	memcpy(copy, allowed, VARSIZE(allowed));
	return copy;
}

/*
 * Call appguard.<name>(args), looked up schema-qualified, on the slow
 * paths only.  No EXECUTE check (fmgr makes none): the caller's right to
 * call this file's SQL functions is the gate.  A SECURITY DEFINER callee
 * runs as the extension's owner, as usual.
 */
static Datum
call_appguard_function(const char *name, int nargs, const Oid *argtypes,
					   const Datum *args, const bool *argnulls, bool *isnull)
{
	List	   *qualified = list_make2(makeString("appguard"), makeString(pstrdup(name)));
	Oid			fn = LookupFuncName(qualified, nargs, argtypes, false);
	FmgrInfo	flinfo;
	Datum		result;

	LOCAL_FCINFO(fcinfo, 2);

	Assert(nargs <= 2);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
	for (int i = 0; i < nargs; i++)
	{
		fcinfo->args[i].value = args[i];
		fcinfo->args[i].isnull = argnulls[i];
	}
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

static Datum
call_full_check(const char *name, FunctionCallInfo outer, const Oid *argtypes)
{
	Datum		args[2] = {0};
	bool		argnulls[2] = {0};
	bool		isnull;
	Datum		result;

	for (int i = 0; i < outer->nargs; i++)
	{
		args[i] = outer->args[i].value;
		argnulls[i] = outer->args[i].isnull;
	}
	result = call_appguard_function(name, outer->nargs, argtypes, args, argnulls, &isnull);
	if (isnull)
		elog(ERROR, "appguard.%s returned NULL", name);
	return result;
}

/* ---- is an active grant verified? ---- */

/*
 * Whether an active grant needs nothing of appguard.verify_grant: its
 * baseline is pending, its client is not registered, or no live snapshot
 * is due (appguard.refresh_max_age) and the baseline is the client's
 * latest snapshot, or has been compared with it and is not confirmed
 * drifted.  False whenever verify_grant might act.  Reads with the active
 * snapshot.
 */
static bool
grant_verified(Datum client_id, bool client_null, Datum baseline, bool baseline_null)
{
	Snapshot	snap = GetActiveSnapshot();
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];
	Datum		bs_key[2];
	Datum		bs[BS_NCOLUMNS];
	bool		bs_null[BS_NCOLUMNS];
	int64		latest;

	if (baseline_null || client_null)
		return true;			/* baseline pending, or no client to watch */
	if (!keyread_row(KT_CLIENTS, &client_id, snap, cl, cl_null))
		return true;			/* unregistered client: left alone */
	if (appguard_refresh_max_age_s > 0
		&& (cl_null[CL_LAST_SNAPSHOT_AT]
			|| !within_seconds(DatumGetTimestampTz(cl[CL_LAST_SNAPSHOT_AT]),
							   appguard_refresh_max_age_s)))
		return false;			/* a live snapshot is due */
	if (cl_null[CL_LAST_SNAPSHOT_ID])
		return true;
	latest = DatumGetInt64(cl[CL_LAST_SNAPSHOT_ID]);
	if (latest == DatumGetInt64(baseline))
		return true;

	bs_key[0] = client_id;
	bs_key[1] = baseline;
	if (!keyread_row(KT_BASELINE_STATE, bs_key, snap, bs, bs_null))
		return false;			/* never compared with the latest snapshot */
	if (bs_null[BS_EVALUATED_SNAPSHOT_ID] || DatumGetInt64(bs[BS_EVALUATED_SNAPSHOT_ID]) != latest)
		return false;
	return !(DatumGetBool(bs[BS_DRIFTING])
			 && DatumGetInt32(bs[BS_STREAK]) >= appguard_confirmations);
}

/*
 * The grant keyed by key in table (KT_PROTECTED_ROWS or KT_REFRESH_TOKENS)
 * is active and verified
 */
static bool
active_grant_verified(KeyedTable table, const Datum *key)
{
	Datum		grant[GRANT_NCOLUMNS];
	bool		grant_null[GRANT_NCOLUMNS];
	bool		verified;

	begin_fresh_read();
	verified = keyread_row(table, key, GetActiveSnapshot(), grant, grant_null)
		&& !grant_null[GRANT_STATUS] && text_equals(grant[GRANT_STATUS], "active")
		&& grant_verified(grant[GRANT_CLIENT_ID], grant_null[GRANT_CLIENT_ID],
						  grant[GRANT_BASELINE_SNAPSHOT_ID], grant_null[GRANT_BASELINE_SNAPSHOT_ID]);
	end_fresh_read();
	return verified;
}

/*
 * Record the refresh of a verified token (last_refreshed_at) by an UPDATE
 * that re-checks the status: a suspension committing meanwhile is waited
 * for and honoured (false: the full check decides then).
 */
static bool
record_refresh(Datum token_id)
{
	Oid			argtypes[1] = {TEXTOID};
	bool		recorded;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (record_refresh_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("UPDATE appguard.refresh_tokens"
									   " SET last_refreshed_at = pg_catalog.now()"
									   " WHERE token_id OPERATOR(pg_catalog.=) $1"
									   " AND status OPERATOR(pg_catalog.=) 'active'",
									   1, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		record_refresh_plan = plan;
	}
	if (SPI_execute_plan(record_refresh_plan, &token_id, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "recording the refresh failed");
	recorded = SPI_processed == 1;
	SPI_finish();
	return recorded;
}

/* ---- SQL entry points ---- */

Datum
appguard_check_refresh_token(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[1] = {TEXTOID};

	if (!PG_ARGISNULL(0))
	{
		Datum		token_id = PG_GETARG_DATUM(0);

		if (active_grant_verified(KT_REFRESH_TOKENS, &token_id) && record_refresh(token_id))
			PG_RETURN_JSONB_P(allowed_body());
	}
	return call_full_check("check_refresh_full", fcinfo, argtypes);
}

Datum
appguard_check_refresh_row(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[2] = {REGCLASSOID, TEXTOID};

	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
	{
		Datum		key[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};

		hostrow_require_select(PG_GETARG_OID(0), PG_GETARG_DATUM(1), "check");
		if (active_grant_verified(KT_PROTECTED_ROWS, key))
			PG_RETURN_JSONB_P(allowed_body());
	}
	return call_full_check("check_row_refresh_full", fcinfo, argtypes);
}

/*
 * appguard_reapprove(tbl regclass, row_key text): the caller must be able
 * to SELECT the row (hostrow.c); appguard.reapprove_row_full, SECURITY
 * DEFINER and granted to nobody, does the rest.  Not SECURITY DEFINER
 * itself, so that the check sees the caller.
 */
Datum
appguard_reapprove_row(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[2] = {REGCLASSOID, TEXTOID};

	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
		hostrow_require_select(PG_GETARG_OID(0), PG_GETARG_DATUM(1), "re-approve");
	return call_full_check("reapprove_row_full", fcinfo, argtypes);
}

/* ---- the consent trigger ---- */

static int
column_number(TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "appguard.refresh_tokens has no column %s", name);
	return attnum;
}

/*
 * The baseline of a grant of client_id created now: the client's latest
 * successful snapshot if younger than appguard.baseline_max_age, else
 * whatever appguard.baseline_for decides (a live snapshot, or NULL:
 * pending, or the client is not registered).
 */
static Datum
baseline_for_new_grant(Datum client_id, bool *isnull)
{
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];
	bool		registered;
	static const Oid argtypes[1] = {TEXTOID};
	bool		argnull = false;

	begin_fresh_read();
	registered = keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null);
	end_fresh_read();
	if (!registered)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (!cl_null[CL_LAST_OK_SNAPSHOT_ID] && !cl_null[CL_LAST_OK_AT]
		&& within_seconds(DatumGetTimestampTz(cl[CL_LAST_OK_AT]), appguard_baseline_max_age_s))
	{
		*isnull = false;
		return cl[CL_LAST_OK_SNAPSHOT_ID];
	}
	return call_appguard_function("baseline_for", 1, argtypes, &client_id, &argnull, isnull);
}

/*
 * BEFORE INSERT on appguard.refresh_tokens: give a new active token its
 * baseline.  Never fails the INSERT because a measurement failed (the
 * baseline stays pending then).  A suspended row must name its
 * suspension (as a restored dump does).
 */
Datum
appguard_refresh_token_issue(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	int			status_att;
	int			baseline_att;
	Datum		status;
	bool		status_null;
	bool		isnull;
	Datum		client_id;
	Datum		baseline;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event)
		|| !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("appguard.refresh_token_issue() must be fired BEFORE INSERT FOR EACH ROW")));
	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	status_att = column_number(desc, "status");
	baseline_att = column_number(desc, "baseline_snapshot_id");
	status = heap_getattr(tuple, status_att, desc, &status_null);
	if (status_null)
		return PointerGetDatum(tuple);	/* the NOT NULL constraint says why */

	if (text_equals(status, "suspended"))
	{
		(void) heap_getattr(tuple, column_number(desc, "suspension_id"), desc, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a refresh token cannot be created suspended"),
					 errdetail("Only appguard suspends tokens, when their app's facts drift.")));
		return PointerGetDatum(tuple);
	}
	if (!text_equals(status, "active"))
		return PointerGetDatum(tuple);
	(void) heap_getattr(tuple, baseline_att, desc, &isnull);
	if (!isnull)
		return PointerGetDatum(tuple);	/* given (a restored dump) */
	client_id = heap_getattr(tuple, column_number(desc, "client_id"), desc, &isnull);
	if (isnull)
		return PointerGetDatum(tuple);	/* the NOT NULL constraint says why */

	baseline = baseline_for_new_grant(client_id, &isnull);
	if (isnull)
		return PointerGetDatum(tuple);	/* pending */
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, 1, &baseline_att,
													 &baseline, &isnull));
}
