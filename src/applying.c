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
 * The row triggers of a protected table fire for appguard's own writes
 * too (a fan-out's, a re-approval's), and appguard.grant_sync asks the
 * flag in C first and returns at once.  (Before, the status trigger's WHEN
 * clause read a setting mirroring the flag so that appguard's own rows did
 * not even queue it; PostgreSQL parsed that clause again for every
 * statement, which cost each host status UPDATE more than a fan-out saved,
 * and a placeholder of the setting's name needed a guard of its own.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "applying.h"
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
	int			lowered_level;	/* in lowered[]: the level it was lowered at */
} AppliedWrite;

static AppliedWrite raised[APPLYING_MAX_NESTING];
static int	nraised = 0;

/*
 * Entries lowered in a subtransaction that may still abort, in the order
 * they were lowered, kept so that the abort brings them back (the lowering
 * statement is undone).  Only entries raised below the level they were
 * lowered at; at most as many as could be raised.
 */
static AppliedWrite lowered[APPLYING_MAX_NESTING];
static int	nlowered = 0;

static bool callbacks_registered = false;

static int
current_trigger_depth(void)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	return DatumGetInt32(pg_trigger_depth(fcinfo));
}

/* Any end of the top transaction lowers everything */
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
 * stack is what it was when the subtransaction began, as the statements
 * that raised and lowered it are undone.  Commit: what was
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
