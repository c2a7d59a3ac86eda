/*-------------------------------------------------------------------------
 *
 * applying.c
 *	  The flag that tells appguard's own writes to a protected table from
 *	  the host's.
 *
 * When appguard suspends or re-approves a row of an auth server's token
 * table, it updates the host's status column itself; the row triggers of
 * that table (sql/parts/32_protect.sql) must then leave appguard's state
 * of the row to appguard, where a write by the host would change it.
 *
 * The flag lives in this backend's memory, not in a setting: any role can
 * set a placeholder setting, and a host role that could raise the flag
 * could change a row's status behind appguard's back.  It is raised and
 * lowered by appguard.set_applying(boolean), which nobody is granted
 * (only appguard's SECURITY DEFINER functions, run as the extension's
 * superuser owner, call it), and it is read by appguard.applying(), the
 * same.
 *
 * A raised flag covers only appguard's own statement: it answers true only
 * to a trigger that fires one trigger level below the code that raised it,
 * which is where the row triggers of the statement appguard runs fire.  A
 * statement run by the host's own trigger code meanwhile fires its
 * triggers one level deeper, and is the host's write.  Raises nest (a
 * stack), so an appguard function called from such host code neither
 * lowers nor moves the flag of the write it interrupted.
 *
 * No error can leave the flag raised: the end of the transaction, commit
 * or abort, lowers it, and the abort of a subtransaction (a savepoint or
 * a PL/pgSQL exception block) lowers what was raised inside it.
 *
 * The setting appguard.applying_depth mirrors the top of the stack: the
 * raising code's pg_trigger_depth() as text, or '' when nothing is raised.
 * The row trigger appguard_protect_status (sql/parts/32_protect.sql) reads
 * it in its WHEN clause, so that appguard's own statement -- whose row
 * events are queued at the depth the flag was raised at -- does not even
 * queue the trigger (a fan-out of 100,000 rows saved the queueing, the
 * re-fetch of each row and a call of appguard.grant_sync for each).  A
 * WHEN clause runs with the rights of the role that runs the UPDATE, so it
 * cannot call appguard.applying(), which nobody is granted; it reads a
 * setting and compares it with pg_trigger_depth(), both PUBLIC's.
 * grant_sync still asks appguard.applying(): the flag in memory stays the
 * authority, the setting only spares work.
 *
 * The setting is set with SET LOCAL semantics (GUC_ACTION_LOCAL), so the
 * server rolls it back where the stack is rolled back: the end of the
 * transaction, and the abort of a subtransaction (savepoint, PL/pgSQL
 * exception block) restores the value it had when the subtransaction
 * began.  A function's SET clause (appguard.apply_suspensions has one)
 * opens a nest level whose exit keeps a SET LOCAL made inside it, as a
 * subtransaction commit does.  To stay in step with that restore, an
 * entry lowered inside a subtransaction that then aborts comes back too
 * (the "lowered" list below): after any abort the stack is what it was
 * when the subtransaction began, as the setting is.
 *
 * Who can make the setting lie, and what it could achieve.  It is
 * PGC_SUSET: with the library preloaded (shared_preload_libraries, the
 * supported set-up) a non-superuser's SET, SET LOCAL, set_config() or
 * PGOPTIONS value is refused (42501, "permission denied to set
 * parameter").  Its check hook refuses any value but '' that this file
 * did not set (a superuser's SET, ALTER ROLE ... SET, a GRANT SET ON
 * PARAMETER to a role), other than the copy a parallel worker takes of
 * its leader's settings; RESET ALL leaves it alone (GUC_NO_RESET_ALL).
 * Loaded late instead (by the first call of one of its C functions), the
 * library is absent from a session that has not called one yet, and in
 * such a session any role can SET a placeholder named
 * appguard.applying_depth, say to '0': without more, the host's own
 * UPDATE of the status at trigger depth 0 would not queue
 * appguard_protect_status, and appguard's state of the row (grants.state,
 * the host_took_over / host_reactivated events) would not follow the
 * host's decision.  That would never let a suspended or drifted grant
 * refresh -- the refresh check reads appguard.grants; a missed
 * re-enabling leaves the grant suspended, a missed revocation leaves it
 * active and verify_grant still suspends it if its baseline drifted -- but
 * it would let a host role hide its status writes from appguard's state
 * and audit trail.  So the WHEN clause also asks whether the setting is
 * appguard's own: pg_settings_get_flags() reports NO_RESET_ALL for the
 * setting this library defines and never for a placeholder (the flags of
 * placeholders are fixed), and a placeholder can exist only while the
 * library is not loaded (loading refuses a non-superuser's value for a
 * superuser-only setting, and MarkGUCPrefixReserved removes the rest).  A
 * placeholder therefore always fires the trigger, and grant_sync's call of
 * appguard.applying() loads the library.  The test of the flags runs only
 * when the depth matches (appguard's own rows, or a spoof), so the host's
 * ordinary writes pay nothing for it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "applying.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(appguard_set_applying);
PG_FUNCTION_INFO_V1(appguard_applying);

/* How deep appguard's own writes may nest (host code calling appguard). */
#define APPLYING_MAX_NESTING 32

/* One raise: where the flag was raised. */
typedef struct AppliedWrite
{
	int			trigger_depth;	/* pg_trigger_depth() of the raising code */
	int			xact_level;		/* (sub)transaction nesting level */
	int			lowered_level;	/* in lowered[]: the level it was lowered at */
} AppliedWrite;

static AppliedWrite raised[APPLYING_MAX_NESTING];
static int	nraised = 0;

/*
 * Entries lowered in a subtransaction that may still abort, in the order
 * they were lowered, kept so that the abort brings them back (the setting
 * comes back then).  Only entries raised below the level they were
 * lowered at; at most as many as could be raised.
 */
static AppliedWrite lowered[APPLYING_MAX_NESTING];
static int	nlowered = 0;

static bool callbacks_registered = false;

/* true while mirror_setting sets appguard.applying_depth */
static bool setting_ours = false;

/* The value of appguard.applying_depth (defined in appguard.c) */
extern char *appguard_applying_depth;
extern bool appguard_check_applying_depth(char **newval, void **extra, GucSource source);
char	   *appguard_applying_depth = NULL;

static int
current_trigger_depth(void)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	return DatumGetInt32(pg_trigger_depth(fcinfo));
}

/*
 * appguard.applying_depth's check hook: '' from anyone; anything else only
 * from mirror_setting, or as the copy of its leader's settings a parallel
 * worker starts with.
 */
bool
appguard_check_applying_depth(char **newval,
							  void **extra pg_attribute_unused(),
							  GucSource source pg_attribute_unused())
{
	if (*newval == NULL || (*newval)[0] == '\0' || setting_ours || InitializingParallelWorker)
		return true;
	GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
	GUC_check_errmsg("appguard.applying_depth is set by appguard only");
	GUC_check_errdetail("It marks appguard's own writes to protected tables while they run.");
	return false;
}

/*
 * Make appguard.applying_depth say the top of the stack, as SET LOCAL
 * would: rolled back with the (sub)transaction.
 */
static void
mirror_setting(void)
{
	char		value[16];

	if (nraised > 0)
		snprintf(value, sizeof(value), "%d", raised[nraised - 1].trigger_depth);
	else
		value[0] = '\0';
	setting_ours = true;
	PG_TRY();
	{
		(void) set_config_option("appguard.applying_depth", value,
								 PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	}
	PG_FINALLY();
	{
		setting_ours = false;
	}
	PG_END_TRY();
}

/*
 * Any end of the top transaction lowers everything (the setting, set
 * LOCAL, goes back to '' at the same time).
 */
static void
applying_xact_callback(XactEvent event pg_attribute_unused(),
					   void *arg pg_attribute_unused())
{
	nraised = 0;
	nlowered = 0;
}

/*
 * The callbacks run while the ending subtransaction is still the current
 * one, so GetCurrentTransactionNestLevel() is its level.  Abort: what was
 * raised in it (or in subtransactions of it) goes, and what was lowered in
 * it comes back (last lowered first: it was the deepest), so that the
 * stack is what it was when the subtransaction began -- as is the setting,
 * which the server restores to its value of that moment.  Commit: what was
 * raised or lowered in it now counts as raised or lowered in its parent,
 * and is undone if the parent aborts.
 */
static void
applying_subxact_callback(SubXactEvent event,
						  SubTransactionId mySubid pg_attribute_unused(),
						  SubTransactionId parentSubid pg_attribute_unused(),
																		   void *arg pg_attribute_unused())
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (nraised > 0 && raised[nraised - 1].xact_level >= level)
			nraised--;
		while (nlowered > 0 && lowered[nlowered - 1].lowered_level >= level)
		{
			AppliedWrite back = lowered[--nlowered];

			if (back.xact_level < level)	/* else its raise is undone too */
			{
				Assert(nraised < APPLYING_MAX_NESTING);
				raised[nraised++] = back;
			}
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		int			kept = 0;

		for (int i = 0; i < nraised; i++)
			if (raised[i].xact_level >= level)
				raised[i].xact_level = level - 1;
		/* lowered in the level it was raised in, now: never comes back */
		for (int i = 0; i < nlowered; i++)
		{
			AppliedWrite e = lowered[i];

			if (e.xact_level >= level)
				e.xact_level = level - 1;
			if (e.lowered_level >= level)
				e.lowered_level = level - 1;
			if (e.lowered_level > e.xact_level)
				lowered[kept++] = e;
		}
		nlowered = kept;
	}
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(applying_xact_callback, NULL);
	RegisterSubXactCallback(applying_subxact_callback, NULL);
	callbacks_registered = true;
}

/*
 * appguard.set_applying(applying boolean) RETURNS void
 *
 * true: appguard is about to write the status of protected tables' rows
 * itself; false: done (the latest raise is lowered).
 */
Datum
appguard_set_applying(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("applying must not be null")));

	/*
	 * Nobody is granted EXECUTE; this check keeps it so should a role be
	 * granted every function of the schema.
	 */
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only appguard's own functions may mark its writes"),
				 errdetail("Only appguard's SECURITY DEFINER functions, which run as the extension's superuser owner, call appguard.set_applying.")));

	if (PG_GETARG_BOOL(0))
	{
		register_callbacks();
		if (nraised >= APPLYING_MAX_NESTING)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("appguard's writes to protected tables nest more than %d deep",
							APPLYING_MAX_NESTING),
					 errdetail("Triggers on a protected table call appguard functions that write to protected tables again.")));
		raised[nraised].trigger_depth = current_trigger_depth();
		raised[nraised].xact_level = GetCurrentTransactionNestLevel();
		raised[nraised].lowered_level = 0;
		nraised++;
	}
	else if (nraised > 0)
	{
		AppliedWrite top = raised[nraised - 1];
		int			level = GetCurrentTransactionNestLevel();

		/* lowered in a subtransaction of its raise: may come back */
		if (level > top.xact_level)
		{
			if (nlowered >= APPLYING_MAX_NESTING)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("appguard's writes to protected tables nest more than %d deep",
								APPLYING_MAX_NESTING),
						 errdetail("Marks of appguard's writes were lowered in %d nested subtransactions.",
								   APPLYING_MAX_NESTING)));
			top.lowered_level = level;
			lowered[nlowered++] = top;
		}
		nraised--;
	}

	/*
	 * The setting last: should it fail, the (sub)transaction aborts, and
	 * both are rolled back.
	 */
	mirror_setting();
	PG_RETURN_VOID();
}

/*
 * appguard.applying() RETURNS boolean
 *
 * For the row triggers of protected tables: whether the statement that
 * fired the calling trigger is appguard's own write.
 */
Datum
appguard_applying(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(appguard_applying_now());
}

/* The same, for C trigger functions */
bool
appguard_applying_now(void)
{
	return nraised > 0 && current_trigger_depth() == raised[nraised - 1].trigger_depth + 1;
}
