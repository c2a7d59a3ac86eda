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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"

PG_FUNCTION_INFO_V1(appguard_set_applying);
PG_FUNCTION_INFO_V1(appguard_applying);

/* How deep appguard's own writes may nest (host code calling appguard). */
#define APPLYING_MAX_NESTING 32

/* One raise: where the flag was raised. */
typedef struct AppliedWrite
{
	int			trigger_depth;	/* pg_trigger_depth() of the raising code */
	int			xact_level;		/* (sub)transaction nesting level */
} AppliedWrite;

static AppliedWrite raised[APPLYING_MAX_NESTING];
static int	nraised = 0;
static bool callbacks_registered = false;

static int
current_trigger_depth(void)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	return DatumGetInt32(pg_trigger_depth(fcinfo));
}

/* Any end of the top transaction lowers everything. */
static void
applying_xact_callback(XactEvent event, void *arg)
{
	nraised = 0;
}

/*
 * The callbacks run while the ending subtransaction is still the current
 * one, so GetCurrentTransactionNestLevel() is its level.  Abort: what was
 * raised in it (or in subtransactions of it) goes.  Commit: what was raised
 * in it now belongs to its parent, and goes if the parent aborts.
 */
static void
applying_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (nraised > 0 && raised[nraised - 1].xact_level >= level)
			nraised--;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = 0; i < nraised; i++)
			if (raised[i].xact_level >= level)
				raised[i].xact_level = level - 1;
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
		nraised++;
	}
	else if (nraised > 0)
		nraised--;
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
	PG_RETURN_BOOL(nraised > 0 &&
				   current_trigger_depth() == raised[nraised - 1].trigger_depth + 1);
}
