/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Running part of a function as another role, the way a SECURITY
 *	  DEFINER function runs, with search_path pinned where SQL is run.
 *
 * Three kinds of appguard code cannot simply be SECURITY DEFINER:
 *  - a procedure that commits (sweep.c): it runs its SQL as its owner
 *    only between commits;
 *  - statements on an auth server's table (asowner.c): they run as that
 *    table's owner, in a security-restricted operation;
 *  - the consent trigger (refresh.c), which runs at every token INSERT:
 *    fmgr's SECURITY DEFINER wrapper, set up again for every statement
 *    that fires it, and its SET clause cost a measurable part of a
 *    rotation.  It becomes its owner here, and pins search_path only
 *    around the SQL it sometimes runs.
 *
 * The user id and the GUC nest level are what fmgr_security_definer
 * saves; an error needs no cleanup here, since aborting the (sub)
 * transaction restores both.  After a security-restricted operation (a
 * table owner's code) every setting changed inside is rolled back, as
 * PostgreSQL does after index functions and REFRESH MATERIALIZED VIEW:
 * the owner's code may call set_config(..., false), and a search_path it
 * kept would put its operators before pg_catalog's in appguard's own SQL,
 * run as appguard's owner, and in the caller's session.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "identity.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

Oid
routine_owner(Oid routine)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(routine));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", routine);
	owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	ReleaseSysCache(tuple);
	return owner;
}

int
identity_pin_search_path(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nestlevel;
}

void
identity_unpin(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

void
identity_become(Oid role, int sec_flags, bool pin_search_path, SavedIdentity *saved)
{
	GetUserIdAndSecContext(&saved->save_userid, &saved->save_sec_context);
	SetUserIdAndSecContext(role, saved->save_sec_context | SECURITY_LOCAL_USERID_CHANGE | sec_flags);
	saved->roll_back_settings = (sec_flags & SECURITY_RESTRICTED_OPERATION) != 0;
	/* after the switch: code run as role must not see or keep the caller's path */
	if (pin_search_path)
		saved->save_nestlevel = identity_pin_search_path();
	else
		saved->save_nestlevel = saved->roll_back_settings ? NewGUCNestLevel() : -1;
}

void
identity_restore(SavedIdentity *saved)
{
	if (saved->save_nestlevel >= 0)
		AtEOXact_GUC(!saved->roll_back_settings, saved->save_nestlevel);
	SetUserIdAndSecContext(saved->save_userid, saved->save_sec_context);
}
