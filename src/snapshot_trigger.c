/*-------------------------------------------------------------------------
 *
 * snapshot_trigger.c
 *	  The AFTER INSERT trigger of appguard.snapshots, in its common case.
 *
 *	  appguard.snapshot_inserted_check() -> trigger
 *
 * Each stored snapshot is passed to appguard.snapshot_inserted() (PL/pgSQL,
 * sql/parts/33_suspension.sql), which records it for the running sweep or
 * evaluates it for every client watching its host.  Outside a sweep, a
 * snapshot of a host no client watches has nothing to be evaluated for:
 * that function would loop over no client and do nothing.  This trigger
 * sees that case with one index lookup (appguard.client_hosts by host and
 * port: keyread.c's KT_CLIENT_HOSTS, declared there with what else C reads
 * by name) and returns, sparing every such row a SECURITY DEFINER PL/pgSQL
 * call and the statements it runs (about a fortieth of a snapshot's
 * backend CPU in appguard_snapshot_many).  Every other row is handed to
 * appguard.snapshot_inserted() as its trigger call, unchanged.
 *
 * "Outside a sweep" is decided as appguard.current_sweep() does first: the
 * setting appguard_lifecycle.sweep_id unset or not a number; when it is
 * set, the PL/pgSQL function decides.  The lookup reads as a volatile
 * PL/pgSQL statement does (keyread_exists_fresh), through the index the
 * evaluation's join uses, with the index's collation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "keyread.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(appguard_snapshot_inserted_check);

/* appguard.current_sweep()'s first test: '^[0-9]{1,18}$' */
static bool
sweep_setting_present(void)
{
	const char *v = GetConfigOption("appguard_lifecycle.sweep_id", true, false);
	size_t		len;

	if (v == NULL)
		return false;
	len = strlen(v);
	if (len < 1 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++)
		if (v[i] < '0' || v[i] > '9')
			return false;
	return true;
}

/*
 * What a trigger call looks up by name, kept in the trigger's FmgrInfo
 * (fn_extra): the executor keeps that for a statement, or for the rows of
 * a SnapshotStore (src/store.c), as it keeps the trigger function itself.
 * (The lookup of appguard.client_hosts is keyread.c's, kept per backend.)
 */
typedef struct TriggerCache
{
	bool		have_inner;
	FmgrInfo	inner;			/* appguard.snapshot_inserted() */
} TriggerCache;

static TriggerCache *
trigger_cache(FunctionCallInfo fcinfo)
{
	TriggerCache *cache = (TriggerCache *) fcinfo->flinfo->fn_extra;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(TriggerCache));
		fcinfo->flinfo->fn_extra = cache;
	}
	return cache;
}

/* appguard.snapshot_inserted(), called as the trigger it is */
static Datum
pass_on(FunctionCallInfo outer)
{
	TriggerCache *cache = trigger_cache(outer);
	LOCAL_FCINFO(fcinfo, 0);
	Datum		result;

	if (!cache->have_inner)
	{
		List	   *name = list_make2(makeString("appguard"), makeString("snapshot_inserted"));

		fmgr_info_cxt(LookupFuncName(name, 0, NULL, false), &cache->inner,
					  outer->flinfo->fn_mcxt);
		cache->have_inner = true;
	}
	InitFunctionCallInfoData(*fcinfo, &cache->inner, 0, InvalidOid, outer->context, NULL);
	result = FunctionCallInvoke(fcinfo);
	if (fcinfo->isnull)
		result = PointerGetDatum(NULL);
	return result;
}

Datum
appguard_snapshot_inserted_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Datum		key[KEYREAD_MAX_KEYS];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event)
		|| !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("appguard.snapshot_inserted_check() must be fired AFTER INSERT FOR EACH ROW")));
	if (sweep_setting_present())
		return pass_on(fcinfo);

	/*
	 * The snapshot's host and port are its columns named as client_hosts'
	 * key columns; a snapshot without them, or with a NULL one, is passed on.
	 */
	if (!keyread_key_from_tuple(KT_CLIENT_HOSTS, trigdata->tg_relation, trigdata->tg_trigtuple, key)
		|| keyread_exists_fresh(KT_CLIENT_HOSTS, key))
		return pass_on(fcinfo);
	return PointerGetDatum(NULL);	/* an AFTER trigger's result is ignored */
}
