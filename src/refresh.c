/*-------------------------------------------------------------------------
 *
 * refresh.c
 *	  The auth server's hot paths: the refresh check and the consent
 *	  trigger, in their common case.
 *
 *	  appguard_check_refresh(token_id text) -> jsonb
 *	  appguard_check_refresh(tbl regclass, row_key text) -> jsonb
 *	  appguard_reapprove(tbl regclass, row_key text) -> jsonb (the gate)
 *	  appguard.grant_insert() -> trigger (AFTER INSERT on token tables)
 *	  appguard.grant_sync() -> trigger (their other row and TRUNCATE triggers)
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
 * Every grant is a row of a protected table (appguard.refresh_tokens is
 * one), and appguard's state of it a row of appguard.grants: one model,
 * one fast path.  The consent trigger tracks a new row as a grant and
 * gives an active one its client's latest successful snapshot as baseline
 * when it is recent enough, else asks appguard.grant_baseline (a live
 * snapshot, or pending).
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
#include "applying.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "grantwrite.h"
#include "identity.h"
#include "hostrow.h"
#include "keyread.h"
#include "protected.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(appguard_check_refresh_token);
PG_FUNCTION_INFO_V1(appguard_check_refresh_row);
PG_FUNCTION_INFO_V1(appguard_grant_insert);
PG_FUNCTION_INFO_V1(appguard_grant_sync);
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
 * runs as the extension's owner, as usual.  context is passed on as the
 * callee's (a trigger's TriggerData), or NULL.
 */
static Datum
call_appguard_function(const char *name, int nargs, const Oid *argtypes,
					   const Datum *args, const bool *argnulls, bool *isnull,
					   Node *context)
{
	List	   *qualified = list_make2(makeString("appguard"), makeString(pstrdup(name)));
	Oid			fn = LookupFuncName(qualified, nargs, argtypes, false);
	FmgrInfo	flinfo;
	Datum		result;

	LOCAL_FCINFO(fcinfo, 2);

	Assert(nargs <= 2);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, context, NULL);
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
	result = call_appguard_function(name, outer->nargs, argtypes, args, argnulls, &isnull, NULL);
	if (isnull)
		elog(ERROR, "appguard.%s returned NULL", name);
	return result;
}

/*
 * Run query with args (nulls as SPI takes them, or NULL) through SPI, its
 * plan prepared the first time and kept for the backend in *slot; it must
 * answer expected (SPI_OK_INSERT, ...), else what went wrong is "what".
 * Returns the number of rows it processed.
 */
static uint64
run_plan(SPIPlanPtr *slot, const char *query, int nargs, const Oid *argtypes,
		 Datum *args, const char *nulls, int expected, const char *what, int cursor_options)
{
	uint64		processed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(query, nargs, (Oid *) argtypes, cursor_options);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	if (SPI_execute_plan(*slot, args, nulls, false, 0) != expected)
		elog(ERROR, "%s failed", what);
	processed = SPI_processed;
	SPI_finish();
	return processed;
}

static uint64
run_kept_plan(SPIPlanPtr *slot, const char *query, int nargs, const Oid *argtypes,
			  Datum *args, const char *nulls, int expected, const char *what)
{
	return run_plan(slot, query, nargs, argtypes, args, nulls, expected, what, 0);
}

/* ---- is an active grant verified? ---- */

/*
 * Whether baseline is one of the client's held baselines
 * (clients.held_baselines, of a client row already read): a suspension
 * applied to it holds its active grants (appguard.baseline_hold), unless
 * the host re-enabled one after it, which SQL tells (appguard.grant_states).
 */
static bool
baseline_held(const Datum *cl, const bool *cl_null, Datum baseline)
{
	ArrayType  *held;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int64		wanted = DatumGetInt64(baseline);

	if (cl_null[CL_HELD_BASELINES])
		return false;
	held = DatumGetArrayTypeP(cl[CL_HELD_BASELINES]);
	if (ARR_NDIM(held) == 0)
		return false;
	deconstruct_array(held, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && DatumGetInt64(elems[i]) == wanted)
			return true;
	return false;
}

/* The client's row says the grant's baseline is held (baseline_held) */
static bool
grant_baseline_held(Datum client_id, bool client_null, Datum baseline, bool baseline_null)
{
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];

	if (client_null || baseline_null)
		return false;
	if (!keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null))
		return false;
	return baseline_held(cl, cl_null, baseline);
}

/*
 * Whether an active grant needs nothing of appguard.verify_grant: its
 * baseline is pending, its client is not registered, or no other watched
 * host of the client has an undecided suspension (clients.hosts_undecided)
 * or is drifted (clients.hosts_drifted: its applied suspension would hold
 * this grant too, appguard.other_host_blocking), no live snapshot is due
 * (appguard.refresh_max_age) and the baseline is the client's latest
 * snapshot, or has been compared with it and is not confirmed drifted.
 * False whenever verify_grant might act.  For a new row joining a consent
 * (joining), false also when a suspension of the baseline was applied:
 * appguard.consent_grant inserts the row suspended, even if the facts
 * came back since.  (The baseline's state row is read whenever it is not
 * the latest snapshot, and a suspension needs a later one.)  Reads with
 * the active snapshot; client_verifies judges a client row already read.
 */
static bool
client_verifies(Datum client_id, const Datum *cl, const bool *cl_null, Datum baseline,
				bool joining)
{
	Snapshot	snap = GetActiveSnapshot();
	Datum		bs_key[2];
	Datum		bs[BS_NCOLUMNS];
	bool		bs_null[BS_NCOLUMNS];
	int64		latest;

	if (baseline_held(cl, cl_null, baseline))
		return false;			/* a suspension holds the baseline: SQL decides */
	if (!cl_null[CL_HOSTS_UNDECIDED] && DatumGetBool(cl[CL_HOSTS_UNDECIDED]))
		return false;			/* another host's suspension is undecided */
	if (!cl_null[CL_HOSTS_DRIFTED] && DatumGetBool(cl[CL_HOSTS_DRIFTED]))
		return false;			/* another host drifted: its suspension may hold this grant */
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
	if (joining && DatumGetBool(bs[BS_SUSPENSION_APPLIED]))
		return false;			/* the consent's suspension holds its new rows */
	return !(DatumGetBool(bs[BS_DRIFTING])
			 && DatumGetInt32(bs[BS_STREAK]) >= appguard_confirmations);
}

static bool
grant_verified(Datum client_id, bool client_null, Datum baseline, bool baseline_null)
{
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];

	if (baseline_null || client_null)
		return true;			/* baseline pending, or no client to watch */
	if (!keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null))
		return true;			/* unregistered client: left alone */
	return client_verifies(client_id, cl, cl_null, baseline, false);
}

/* The grant keyed by key (token table, row key) is active and verified */
static bool
active_grant_verified(const Datum *key)
{
	Datum		grant[GRANT_NCOLUMNS];
	bool		grant_null[GRANT_NCOLUMNS];
	bool		verified;

	keyread_begin_fresh();
	verified = keyread_row(KT_GRANTS, key, GetActiveSnapshot(), grant, grant_null)
		&& !grant_null[GRANT_STATE] && text_equals(grant[GRANT_STATE], "active")
		&& grant_verified(grant[GRANT_CLIENT_ID], grant_null[GRANT_CLIENT_ID],
						  grant[GRANT_BASELINE_SNAPSHOT_ID], grant_null[GRANT_BASELINE_SNAPSHOT_ID]);
	keyread_end_fresh();
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
	static const Oid argtypes[1] = {TEXTOID};

	return run_kept_plan(&record_refresh_plan,
						 "UPDATE appguard.refresh_tokens"
						 " SET last_refreshed_at = pg_catalog.now()"
						 " WHERE token_id OPERATOR(pg_catalog.=) $1"
						 " AND status OPERATOR(pg_catalog.=) 'active'",
						 1, argtypes, &token_id, NULL, SPI_OK_UPDATE, "recording the refresh") == 1;
}

/* ---- SQL entry points ---- */

/* appguard.refresh_tokens (a syscache lookup) */
static Oid
refresh_tokens_relid(void)
{
	Oid			relid = get_relname_relid("refresh_tokens", get_namespace_oid("appguard", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation appguard.refresh_tokens does not exist")));
	return relid;
}

Datum
appguard_check_refresh_token(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[1] = {TEXTOID};

	appguard_require_settings();
	if (!PG_ARGISNULL(0))
	{
		Datum		key[2] = {ObjectIdGetDatum(refresh_tokens_relid()), PG_GETARG_DATUM(0)};

		if (active_grant_verified(key) && record_refresh(key[1]))
			PG_RETURN_JSONB_P(allowed_body());
	}
	return call_full_check("check_refresh_full", fcinfo, argtypes);
}

Datum
appguard_check_refresh_row(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[2] = {REGCLASSOID, TEXTOID};

	appguard_require_settings();
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
	{
		Datum		key[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};

		hostrow_require_select(PG_GETARG_OID(0), PG_GETARG_DATUM(1), "check");
		if (active_grant_verified(key))
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

/* Tracking a new row as a grant */
static SPIPlanPtr track_grant_plan = NULL;

/*
 * The client row's latest successful snapshot, if younger than
 * appguard.baseline_max_age: the baseline a grant created now takes
 * without measuring.
 */
static bool
cached_baseline(const Datum *cl, const bool *cl_null, Datum *baseline)
{
	if (cl_null[CL_LAST_OK_SNAPSHOT_ID] || cl_null[CL_LAST_OK_AT]
		|| !within_seconds(DatumGetTimestampTz(cl[CL_LAST_OK_AT]), appguard_baseline_max_age_s))
		return false;
	*baseline = cl[CL_LAST_OK_SNAPSHOT_ID];
	return true;
}

/*
 * The baseline of a grant of client_id created now: the client's latest
 * successful snapshot if younger than appguard.baseline_max_age, else
 * whatever appguard.grant_baseline decides (a live snapshot, or NULL:
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
	Datum		baseline;

	keyread_begin_fresh();
	registered = keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null);
	keyread_end_fresh();
	if (!registered)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (cached_baseline(cl, cl_null, &baseline))
	{
		*isnull = false;
		return baseline;
	}
	return call_appguard_function("grant_baseline", 1, argtypes, &client_id, &argnull, isnull, NULL);
}

/* What the consent trigger's C path found of a subject's consent */
typedef enum ConsentReading
{
	CONSENT_MISSING,			/* no consent yet */
	CONSENT_SETTLED,			/* its baseline, as it is (consent_reading) */
	CONSENT_FRESH_SCREEN,		/* approved on a fresh screen (consent_approved) */
	CONSENT_UNDECIDED			/* appguard.consent_grant decides */
} ConsentReading;

/*
 * The subject's consent to client_id, for a new active row of a table that
 * names its subject.  CONSENT_SETTLED, with *baseline, when the consent
 * settles the row's baseline here: no consent screen was shown to the
 * subject within appguard.consent_window since the consent's last
 * approval (a screen shown before it is spent), and no applied suspension
 * holds its baseline (the client's held_baselines: grant_baseline_held).
 * That is all appguard.consent_grant would weigh for such a row: it gives
 * the row the consent's baseline whatever the baseline's verdict, and
 * writes the row suspended only when a suspension of it is applied (a
 * verdict not applied yet reaches the row when it is, through the hold).
 * So neither the baseline's verdict nor the client's other hosts are read
 * here; the refresh check reads them.  CONSENT_FRESH_SCREEN when
 * such a screen was shown after the last approval: this row is the
 * patient's approval of it, with *shown the screen's snapshot and *old
 * (NULL: *old_null) the consent's baseline.  CONSENT_UNDECIDED for the
 * rest, which appguard.consent_grant decides (a pending consent, one whose
 * baseline drifted or whose suspension holds new rows).
 */
static ConsentReading
consent_reading(Datum client_id, Datum subject, Datum *baseline, Datum *shown,
				Datum *old, bool *old_null)
{
	Datum		key[2] = {client_id, subject};
	Datum		cs[CS_NCOLUMNS];
	bool		cs_null[CS_NCOLUMNS];
	ConsentReading reading = CONSENT_UNDECIDED;
	bool		recent_screen;
	bool		approved;

	keyread_begin_fresh();
	if (!keyread_row(KT_CONSENTS, key, GetActiveSnapshot(), cs, cs_null))
	{
		keyread_end_fresh();
		return CONSENT_MISSING;
	}
	recent_screen = !cs_null[CS_SHOWN_SNAPSHOT_ID] && !cs_null[CS_SHOWN_AT]
		&& within_seconds(DatumGetTimestampTz(cs[CS_SHOWN_AT]), appguard_consent_window_s);
	approved = !cs_null[CS_APPROVED_AT];	/* (a screen's own row has -infinity) */
	if (recent_screen && approved
		&& DatumGetTimestampTz(cs[CS_SHOWN_AT]) > DatumGetTimestampTz(cs[CS_APPROVED_AT]))
	{
		reading = CONSENT_FRESH_SCREEN;
		*shown = cs[CS_SHOWN_SNAPSHOT_ID];
		*old = cs[CS_BASELINE_SNAPSHOT_ID];
		*old_null = cs_null[CS_BASELINE_SNAPSHOT_ID];
	}
	else if ((!recent_screen || approved)	/* no screen, or a spent one */
			 && !cs_null[CS_BASELINE_SNAPSHOT_ID]
			 && !grant_baseline_held(client_id, false, cs[CS_BASELINE_SNAPSHOT_ID], false))
	{
		reading = CONSENT_SETTLED;
		*baseline = cs[CS_BASELINE_SNAPSHOT_ID];
	}
	keyread_end_fresh();
	return reading;
}

static SPIPlanPtr applied_suspension_plan = NULL;

/* Whether a suspension of client_id's baseline was applied */
static bool
baseline_suspension_applied(Datum client_id, Datum baseline)
{
	static const Oid argtypes[2] = {TEXTOID, INT8OID};
	Datum		args[2] = {client_id, baseline};

	return run_kept_plan(&applied_suspension_plan,
						 "SELECT FROM appguard.suspensions s"
						 " WHERE s.baseline_snapshot_id OPERATOR(pg_catalog.=) $2"
						 " AND s.client_id OPERATOR(pg_catalog.=) $1"
						 " AND s.state OPERATOR(pg_catalog.=) 'applied' LIMIT 1",
						 2, argtypes, args, NULL, SPI_OK_SELECT,
						 "looking for an applied suspension") > 0;
}

static SPIPlanPtr approve_consent_plan = NULL;

/*
 * The patient approved the app on a fresh consent screen (shown, the
 * screen's snapshot; old, the consent's baseline until now), in its common
 * case: the client is registered, the screen's snapshot is verified as a
 * joining row's baseline would be (client_verifies: no suspension of it
 * applied, no other host drifted), and no applied suspension holds the
 * baseline it replaces (that approval is a re-approval, with its event:
 * appguard.consent_grant).  The consent takes the screen's snapshot as its
 * baseline, as consent_grant's UPDATE does, by an UPDATE that checks again,
 * under the row's lock, that the screen is still unanswered and the
 * baseline still old (another token of the same approval may have answered
 * it meanwhile).  It is planned at each call, as consent_grant's statements
 * on appguard.consents are (a plan kept from when the table was small would
 * scan it whole).  False, with nothing written, leaves the row to
 * consent_grant.
 */
static bool
consent_approved(Datum client_id, Datum subject, Datum shown, Datum old, bool old_null)
{
	static const Oid argtypes[4] = {TEXTOID, TEXTOID, INT8OID, INT8OID};
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];
	Datum		args[4] = {client_id, subject, shown, old};
	char		nulls[4] = {' ', ' ', ' ', old_null ? 'n' : ' '};
	bool		usable;
	int			nestlevel;
	uint64		updated;

	keyread_begin_fresh();
	usable = keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null)
		&& client_verifies(client_id, cl, cl_null, shown, true);
	keyread_end_fresh();
	if (!usable)
		return false;
	if (!old_null && DatumGetInt64(old) != DatumGetInt64(shown)
		&& baseline_suspension_applied(client_id, old))
		return false;

	nestlevel = identity_pin_search_path();
	updated = run_plan(&approve_consent_plan,
					   "UPDATE appguard.consents k"
					   " SET baseline_snapshot_id = $3, approved_at = pg_catalog.clock_timestamp()"
					   " WHERE k.client_id = $1 AND k.subject = $2 AND k.shown_snapshot_id = $3"
					   " AND k.shown_at > k.approved_at AND k.baseline_snapshot_id IS NOT DISTINCT FROM $4",
					   4, argtypes, args, nulls, SPI_OK_UPDATE, "approving a consent",
					   CURSOR_OPT_CUSTOM_PLAN);
	identity_unpin(nestlevel);
	return updated == 1;
}

/* Starting a patient's first consent */
static SPIPlanPtr start_consent_plan = NULL;

/*
 * The first grant of a subject with no consent yet, in its common case:
 * the client is registered, its latest successful snapshot is younger than
 * appguard.baseline_max_age and verified (grant_verified: not drifted,
 * hence not suspended).  That snapshot becomes the new consent's baseline,
 * as appguard.consent_grant would make it, and *baseline is set.  False
 * leaves everything to appguard.consent_grant: an unregistered client, a
 * live snapshot due, a drifted baseline, or a consent another transaction
 * started meanwhile (the INSERT ... ON CONFLICT DO NOTHING found it).
 */
static bool
consent_started(Datum client_id, Datum subject, Datum *baseline)
{
	static const Oid argtypes[3] = {TEXTOID, TEXTOID, INT8OID};
	Datum		cl[CL_NCOLUMNS];
	bool		cl_null[CL_NCOLUMNS];
	Datum		args[3];
	bool		usable;
	int			nestlevel;
	bool		started;

	keyread_begin_fresh();
	usable = keyread_row(KT_CLIENTS, &client_id, GetActiveSnapshot(), cl, cl_null)
		&& cached_baseline(cl, cl_null, &args[2])
		&& client_verifies(client_id, cl, cl_null, args[2], true);
	keyread_end_fresh();
	if (!usable)
		return false;

	args[0] = client_id;
	args[1] = subject;
	switch (grantwrite_start_consent(client_id, subject, args[2]))
	{
		case GW_INSERTED:
			started = true;
			break;
		case GW_DUPLICATE:
			started = false;	/* another first grant of the consent: SQL decides */
			break;
		default:
			/* not a plain case (grantwrite.c): the statement does it */
			nestlevel = identity_pin_search_path();
			started = run_kept_plan(&start_consent_plan,
									"INSERT INTO appguard.consents (client_id, subject, baseline_snapshot_id, approved_at)"
									" VALUES ($1, $2, $3, pg_catalog.clock_timestamp())"
									" ON CONFLICT (client_id, subject) DO NOTHING",
									3, argtypes, args, NULL, SPI_OK_INSERT, "starting a consent") == 1;
			identity_unpin(nestlevel);
			break;
	}
	if (started)
		*baseline = args[2];
	return started;
}

/* appguard.consent_grant(tbl, key, client_id, subject, grant_key) */
static void
consent_grant(Datum relid, Datum key, Datum client_id, Datum subject,
			  Datum grant_key, bool grant_key_null)
{
	static const Oid argtypes[5] = {REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	List	   *qualified = list_make2(makeString("appguard"), makeString("consent_grant"));
	Oid			fn = LookupFuncName(qualified, 5, argtypes, false);
	FmgrInfo	flinfo;

	LOCAL_FCINFO(fcinfo, 5);

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 5, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = relid;
	fcinfo->args[1].value = key;
	fcinfo->args[2].value = client_id;
	fcinfo->args[3].value = subject;
	fcinfo->args[4].value = grant_key;
	for (int i = 0; i < 5; i++)
		fcinfo->args[i].isnull = false;
	fcinfo->args[4].isnull = grant_key_null;
	(void) FunctionCallInvoke(fcinfo);
}

/*
 * Record the grant.  As a rule nothing is under its key yet, and the row
 * is inserted directly (grantwrite.c); when the primary key holds the key
 * already (a grant left under it, see appguard_grant_insert, or one being
 * written by another transaction), nothing is left of that insert and the
 * upsert below replaces the grant or waits for that transaction.  Both
 * write the same row.
 */
static void
track_grant(Oid relid, const char *key, const char *client_id, bool active,
			const char *subject, const char *grant_key)
{
	static const Oid argtypes[7] = {REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID};
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', 'n', ' ', ' '};
	bool		baseline_null = true;
	int			nestlevel;

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(key);
	args[2] = client_id ? CStringGetTextDatum(client_id) : (Datum) 0;
	nulls[2] = client_id ? ' ' : 'n';
	args[3] = CStringGetTextDatum(active ? "active" : "inactive");
	args[4] = (Datum) 0;
	args[5] = subject ? CStringGetTextDatum(subject) : (Datum) 0;
	nulls[5] = subject ? ' ' : 'n';
	args[6] = grant_key ? CStringGetTextDatum(grant_key) : (Datum) 0;
	nulls[6] = grant_key ? ' ' : 'n';
	if (active && client_id && subject)
	{
		Datum		shown = (Datum) 0;
		Datum		old = (Datum) 0;
		bool		old_null = true;
		bool		decided;
		AttrNumber	keyattnums[KEYREAD_MAX_KEYS];
		AttrNumber	attnums[KEYREAD_MAX_COLUMNS];

		/*
		 * The grants' table lock, before the consent is read: appguard_prune
		 * deletes a consent none of whose grants is left under SHARE on it.
		 * So this row's grant either commits before prune looks, or the
		 * consent is read after prune committed (and may then be gone).
		 */
		LockRelationOid(keyread_layout(KT_GRANTS, keyattnums, attnums), RowExclusiveLock);
		/* the subject's consent decides (see consent_reading), or begins here */
		switch (consent_reading(args[2], args[5], &args[4], &shown, &old, &old_null))
		{
			case CONSENT_SETTLED:
				decided = true;
				break;
			case CONSENT_FRESH_SCREEN:
				decided = consent_approved(args[2], args[5], shown, old, old_null);
				args[4] = shown;
				break;
			case CONSENT_MISSING:
				decided = consent_started(args[2], args[5], &args[4]);
				break;
			default:
				decided = false;
				break;
		}
		if (!decided)
		{
			consent_grant(args[0], args[1], args[2], args[5], args[6], nulls[6] == 'n');
			return;
		}
		nulls[4] = ' ';
	}
	else if (active && client_id)
	{
		args[4] = baseline_for_new_grant(args[2], &baseline_null);
		nulls[4] = baseline_null ? 'n' : ' ';
	}

	if (grantwrite_insert(relid, args[1], args[2], nulls[2] == 'n', args[3],
						  args[4], nulls[4] == 'n', args[5], nulls[5] == 'n',
						  args[6], nulls[6] == 'n') == GW_INSERTED)
		return;

	nestlevel = identity_pin_search_path();
	(void) run_kept_plan(&track_grant_plan,
						 "INSERT INTO appguard.grants"
						 " (token_table, token_key, client_id, state, baseline_snapshot_id, subject, grant_key)"
						 " VALUES ($1, $2, $3, $4, $5, $6, $7)"
						 " ON CONFLICT (token_table, token_key) DO UPDATE"
						 " SET client_id = EXCLUDED.client_id, state = EXCLUDED.state,"
						 " baseline_snapshot_id = EXCLUDED.baseline_snapshot_id,"
						 " subject = EXCLUDED.subject, grant_key = EXCLUDED.grant_key,"
						 " suspension_id = NULL, suspended_at = NULL, error_uri = NULL,"
						 " created_at = pg_catalog.now(), reapproved_at = NULL",
						 7, argtypes, args, nulls, SPI_OK_INSERT, "tracking a grant");
	identity_unpin(nestlevel);
}

/*
 * A table fires the consent trigger while appguard has no protection of it
 * on record.  appguard_protect and appguard_unprotect create and drop the
 * trigger in the transaction that writes the record, so this is a copy of
 * the trigger on another relation: above all the shards of a table Citus
 * distributed after appguard_protect (with citus.enable_unsafe_triggers),
 * on nodes whose appguard knows nothing of the table.  A row inserted there
 * would be a token nobody guards, so the INSERT fails instead.
 */
static void
refuse_unguarded_insert(Relation rel)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("table \"%s\" fires appguard's consent trigger but is not protected by appguard",
					RelationGetRelationName(rel)),
			 errdetail("A row inserted here would be a token appguard does not guard. "
					   "A table distributed with Citus after appguard_protect is one such case: "
					   "appguard does not guard Citus tables."),
			 errhint("Drop the trigger appguard_protect_insert from the table, or keep the table local and protect it with appguard_protect.")));
}

/*
 * No token of appguard.refresh_tokens is created suspended: a suspension
 * needs its record and error_uri, which only appguard writes (a restore
 * runs with appguard's triggers idle: README, Upgrading).  Checked here,
 * in the consent trigger every row fires anyway, rather than by a trigger
 * of its own: a WHEN clause is parsed again for every INSERT statement.
 */
static void
refuse_suspended_token(Oid relid)
{
	if (relid == refresh_tokens_relid() && !appguard_applying_now())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a refresh token cannot be created suspended"),
				 errdetail("Only appguard suspends tokens, when their app's facts drift.")));
}

/*
 * appguard.refresh_tokens: an empty token id or subject (every token of a
 * client with an empty subject would share one consent).  Checked here,
 * where the row's key and subject are read anyway, rather than by a CHECK
 * constraint, whose expression PostgreSQL reads again for every INSERT
 * statement (about 28,000 instructions a token).
 */
static void
refuse_empty_token_ids(Oid relid)
{
	if (relid == refresh_tokens_relid())
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("a refresh token needs a token_id and a subject that are not empty"),
				 errdetail("Every token of a client with an empty subject would share one consent.")));
}

/*
 * AFTER INSERT on every protected table: track the new row as a grant
 * (appguard.grants).  Its key, client and status are read through their
 * types' output functions (hostrow.c), as the table's other triggers read
 * them; it is active when its status prints as the table's active value.
 * A grant left under the same key (its row went while appguard's triggers
 * were off) is replaced: the new row is a new grant.  A restore runs with
 * appguard's triggers idle (session_replication_role = replica), so the
 * grants it brings back stay as they were.  Never fails the INSERT because a measurement
 * failed (the baseline stays pending then).
 *
 * Not SECURITY DEFINER: it becomes its owner (the extension's) only to
 * track the grant, after reading the row's columns as the inserting role,
 * and pins search_path only around the SQL of its slow paths (the fast
 * path resolves no name).  fmgr's SECURITY DEFINER wrapper, set up anew
 * for every INSERT statement, and a SET clause cost a measurable part of
 * a rotation (identity.c).  EXECUTE is revoked from PUBLIC, so only
 * appguard_protect can attach it to a table.
 */
Datum
appguard_grant_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			relid;
	Datum		pt[PT_NCOLUMNS];
	bool		pt_null[PT_NCOLUMNS];
	HeapTuple	tuple;
	TupleDesc	desc;
	char	   *key;
	char	   *client_id;
	char	   *status;
	char	   *active_value;
	char	   *subject = NULL;
	char	   *grant_key = NULL;
	SavedIdentity caller;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event)
		|| !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("appguard.grant_insert() must be fired AFTER INSERT FOR EACH ROW")));
	appguard_require_settings();
	relid = protected_table_of(trigdata->tg_relation, pt, pt_null);
	if (!OidIsValid(relid))
		refuse_unguarded_insert(trigdata->tg_relation);

	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	key = hostrow_column_text(tuple, desc, DatumGetInt16(pt[PT_KEY_ATTNUM]));
	if (key == NULL)
		return PointerGetDatum(NULL);	/* (a primary key is never NULL) */
	client_id = hostrow_column_text(tuple, desc, DatumGetInt16(pt[PT_CLIENT_ATTNUM]));
	status = hostrow_column_text(tuple, desc, DatumGetInt16(pt[PT_STATUS_ATTNUM]));
	active_value = TextDatumGetCString(pt[PT_ACTIVE_VALUE]);
	if (!pt_null[PT_SUBJECT_ATTNUM])
		subject = hostrow_column_text(tuple, desc, DatumGetInt16(pt[PT_SUBJECT_ATTNUM]));
	if (!pt_null[PT_GRANT_ATTNUM])
		grant_key = hostrow_column_text(tuple, desc, DatumGetInt16(pt[PT_GRANT_ATTNUM]));
	if (status != NULL && strcmp(status, "suspended") == 0)
		refuse_suspended_token(relid);
	if (key[0] == '\0' || (subject != NULL && subject[0] == '\0'))
		refuse_empty_token_ids(relid);
	/* the columns were read as the inserting role; appguard's state is written as its owner */
	identity_become(routine_owner(fcinfo->flinfo->fn_oid), 0, false, &caller);
	track_grant(relid, key, client_id, status != NULL && strcmp(status, active_value) == 0,
				subject, grant_key);
	identity_restore(&caller);
	return PointerGetDatum(NULL);
}

/* ---- the host retires a row ---- */

static SPIPlanPtr retire_grant_plan = NULL;

/*
 * The suspension holding the grant's baseline (appguard.baseline_hold),
 * read as appguard's owner, as text for a message; "" if none.
 */
static char *
baseline_hold_text(Oid owner, Datum client_id, Datum baseline)
{
	static const Oid argtypes[2] = {TEXTOID, INT8OID};
	Datum		args[2] = {client_id, baseline};
	bool		argnulls[2] = {false, false};
	bool		isnull;
	Datum		hold;
	SavedIdentity caller;

	identity_become(owner, 0, false, &caller);
	hold = call_appguard_function("baseline_hold", 2, argtypes, args, argnulls, &isnull, NULL);
	identity_restore(&caller);
	return isnull ? "" : psprintf(INT64_FORMAT, DatumGetInt64(hold));
}

/*
 * appguard.refresh_tokens: only appguard suspends a token, or makes one it
 * suspended active again (appguard_reapprove, which takes a new
 * baseline); the auth server revokes, and a token revoked while suspended
 * stays revoked.  The host's status UPDATE is refused (55000).  Called for
 * the host's writes only (appguard's return before), and only for a row
 * whose new status is 'suspended' or 'active'.
 */
static void
refuse_token_status(TriggerData *trigdata, Oid root, const Datum *pt, const char *status,
					Oid owner)
{
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	AttrNumber	status_attnum = DatumGetInt16(pt[PT_STATUS_ATTNUM]);
	char	   *old_status;
	Datum		key[2];
	Datum		grant[GRANT_NCOLUMNS];
	bool		grant_null[GRANT_NCOLUMNS];
	bool		found;
	bool		held;
	bool		held_by_baseline;

	if (root != refresh_tokens_relid())
		return;
	old_status = hostrow_column_text(trigdata->tg_trigtuple, desc, status_attnum);
	if (old_status != NULL && strcmp(old_status, status) == 0)
		return;					/* not a change of the status */
	if (strcmp(status, "suspended") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("only appguard suspends refresh tokens"),
				 errhint("Set status to 'revoked' to revoke a token.")));

	key[0] = ObjectIdGetDatum(root);
	key[1] = CStringGetTextDatum(hostrow_column_text(trigdata->tg_newtuple, desc,
													 DatumGetInt16(pt[PT_KEY_ATTNUM])));
	keyread_begin_fresh();
	found = keyread_row(KT_GRANTS, key, GetActiveSnapshot(), grant, grant_null)
		&& !grant_null[GRANT_STATE];
	held = found
		&& (text_equals(grant[GRANT_STATE], "suspended")
			|| (text_equals(grant[GRANT_STATE], "inactive") && !grant_null[GRANT_SUSPENSION_ID]));
	/* an active grant on a held baseline: suspended by the baseline's hold */
	held_by_baseline = found && !held && text_equals(grant[GRANT_STATE], "active")
		&& grant_baseline_held(grant[GRANT_CLIENT_ID], grant_null[GRANT_CLIENT_ID],
							   grant[GRANT_BASELINE_SNAPSHOT_ID], grant_null[GRANT_BASELINE_SNAPSHOT_ID]);
	keyread_end_fresh();
	if (held || held_by_baseline)
	{
		/* before ereport: baseline_hold_text runs SQL */
		char	   *suspension = held_by_baseline
			? baseline_hold_text(owner, grant[GRANT_CLIENT_ID], grant[GRANT_BASELINE_SNAPSHOT_ID])
			: grant_null[GRANT_SUSPENSION_ID] ? ""
			: psprintf(INT64_FORMAT, DatumGetInt64(grant[GRANT_SUSPENSION_ID]));

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("refresh token was suspended by appguard"),
				 errdetail("It is %s under suspension %s; only appguard_reapprove makes it active again.",
						   old_status ? old_status : "", suspension),
				 errhint("Reactivate a suspended token with appguard_reapprove(token_id), which takes a new baseline; a token revoked while suspended stays revoked.")));
	}
}

/*
 * The common case of the status trigger: the host retired an active row
 * (a rotation consumed it, a revocation): its status was the table's
 * active value and no longer is.  Its grant goes inactive directly
 * (grantwrite_retire: its current version locked, then re-checked), or
 * through one kept statement that does the same where the direct write is
 * not possible.  True when that was all there was to do; false leaves the
 * row to appguard.grant_sync_sql: a row appguard suspended (its status the
 * suspended value: a fan-out's write of the row comes before the host's,
 * which waits for it; an event, and its consent's other rows), one it does
 * not track, one the host (re)activates, a table it does not protect.
 */
static bool
grant_retired(TriggerData *trigdata, Oid owner)
{
	static const Oid argtypes[2] = {REGCLASSOID, TEXTOID};
	Relation	rel = trigdata->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			root;
	Datum		pt[PT_NCOLUMNS];
	bool		pt_null[PT_NCOLUMNS];
	char	   *status;
	char	   *old_status;
	char	   *key;
	Datum		args[2];
	SavedIdentity caller;
	GrantWriteResult result;

	root = protected_table_of(rel, pt, pt_null);
	if (!OidIsValid(root))
		return false;
	status = hostrow_column_text(trigdata->tg_newtuple, desc, DatumGetInt16(pt[PT_STATUS_ATTNUM]));
	if (status != NULL && (strcmp(status, "suspended") == 0 || strcmp(status, "active") == 0))
		refuse_token_status(trigdata, root, pt, status, owner);
	if (status != NULL && strcmp(status, TextDatumGetCString(pt[PT_ACTIVE_VALUE])) == 0)
		return false;			/* (re)activated */
	old_status = hostrow_column_text(trigdata->tg_trigtuple, desc, DatumGetInt16(pt[PT_STATUS_ATTNUM]));
	if (old_status == NULL || strcmp(old_status, TextDatumGetCString(pt[PT_ACTIVE_VALUE])) != 0)
		return false;			/* not an active row: one appguard suspended, say */
	key = hostrow_column_text(trigdata->tg_newtuple, desc, DatumGetInt16(pt[PT_KEY_ATTNUM]));
	if (key == NULL)
		return false;

	args[0] = ObjectIdGetDatum(root);
	args[1] = CStringGetTextDatum(key);
	/* the columns were read as the writing role; appguard's state is written as its owner */
	identity_become(owner, 0, false, &caller);
	result = grantwrite_retire(root, args[1]);
	if (result == GW_NOT_DIRECT)
	{
		int			nestlevel = identity_pin_search_path();

		result = run_kept_plan(&retire_grant_plan,
							   "UPDATE appguard.grants SET state = 'inactive'"
							   " WHERE token_table = $1 AND token_key = $2 AND state = 'active'",
							   2, argtypes, args, NULL, SPI_OK_UPDATE, "retiring a grant") == 1
			? GW_RETIRED : GW_NOT_ACTIVE;
		identity_unpin(nestlevel);
	}
	identity_restore(&caller);
	return result == GW_RETIRED;
}

/*
 * Every row trigger of a protected table but INSERT's, and its TRUNCATE
 * trigger; TG_ARGV[0] says which fired.  A host retiring an active row
 * (the status trigger, at every rotation) is done here in C; the rest is
 * appguard.grant_sync_sql's, in PL/pgSQL, called with this trigger's data.
 * appguard's own writes fire it too (the status trigger has no WHEN
 * clause) and return at once.  Not SECURITY DEFINER, as grant_insert: the
 * row's columns are read as the writing role, and appguard's state is
 * written as the function's owner (identity.c).
 */
Datum
appguard_grant_sync(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	SavedIdentity caller;
	bool		row_update;
	Oid			owner;
	Datum		result;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("appguard.grant_sync() must be called as a trigger")));
	row_update = TRIGGER_FIRED_AFTER(trigdata->tg_event) && TRIGGER_FIRED_FOR_ROW(trigdata->tg_event)
		&& TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event);
	/* appguard's own suspension or re-approval: nothing to mirror */
	if (row_update && appguard_applying_now())
		return PointerGetDatum(NULL);
	owner = routine_owner(fcinfo->flinfo->fn_oid);
	if (row_update && trigdata->tg_trigger->tgnargs == 1
		&& strcmp(trigdata->tg_trigger->tgargs[0], "status") == 0
		&& grant_retired(trigdata, owner))
		return PointerGetDatum(NULL);
	/*
	 * The rest: appguard.grant_sync_sql() as the trigger that fired, with
	 * its data; looked up as the owner (the writing role may not use schema
	 * appguard), and SECURITY DEFINER itself.
	 */
	identity_become(owner, 0, false, &caller);
	result = call_appguard_function("grant_sync_sql", 0, NULL, NULL, NULL, &fcinfo->isnull,
									fcinfo->context);
	identity_restore(&caller);
	return result;
}
