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
 * port) and returns, sparing every such row a SECURITY DEFINER PL/pgSQL
 * call and the statements it runs (about a fortieth of a snapshot's
 * backend CPU in appguard_snapshot_many).  Every other row is handed to
 * appguard.snapshot_inserted() as its trigger call, unchanged.
 *
 * "Outside a sweep" is decided as appguard.current_sweep() does first: the
 * setting appguard_lifecycle.sweep_id unset or not a number; when it is
 * set, the PL/pgSQL function decides.  The lookup reads as a volatile
 * PL/pgSQL statement does (keyread_begin_fresh), through the index the
 * evaluation's join uses, with the index's collation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "keyread.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

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
 */
typedef struct TriggerCache
{
	Oid			client_hosts;
	Oid			client_hosts_host;
	bool		have_inner;
	FmgrInfo	inner;			/* appguard.snapshot_inserted() */
} TriggerCache;

static TriggerCache *
trigger_cache(FunctionCallInfo fcinfo)
{
	TriggerCache *cache = (TriggerCache *) fcinfo->flinfo->fn_extra;

	if (cache == NULL)
	{
		Oid			nsp = get_namespace_oid("appguard", false);
		Oid			heap = keyread_relation(nsp, "client_hosts");
		Oid			index = keyread_relation(nsp, "client_hosts_host");

		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(TriggerCache));
		cache->client_hosts = heap;
		cache->client_hosts_host = index;
		fcinfo->flinfo->fn_extra = cache;
	}
	return cache;
}

/* Whether a row of appguard.client_hosts has this host and port */
static bool
host_watched(TriggerCache *cache, Datum host, Datum port)
{
	Relation	heap = table_open(cache->client_hosts, AccessShareLock);
	Relation	index = index_open(cache->client_hosts_host, AccessShareLock);
	Form_pg_index form = index->rd_index;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	if (form->indrelid != RelationGetRelid(heap) || form->indnkeyatts != 2 ||
		form->indkey.values[0] != get_attnum(RelationGetRelid(heap), "host") ||
		form->indkey.values[1] != get_attnum(RelationGetRelid(heap), "port"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("index appguard.client_hosts_host is not on (host, port)")));
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, host);
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[1], F_INT4EQ, port);
	keyread_begin_fresh();
	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	keyread_end_fresh();
	index_close(index, NoLock);
	table_close(heap, NoLock);
	return found;
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
	TupleDesc	desc;
	AttrNumber	host_att,
				port_att;
	Datum		host,
				port;
	bool		host_null,
				port_null;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event)
		|| !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("appguard.snapshot_inserted_check() must be fired AFTER INSERT FOR EACH ROW")));
	if (sweep_setting_present())
		return pass_on(fcinfo);

	desc = RelationGetDescr(trigdata->tg_relation);
	host_att = SPI_fnumber(desc, "host");
	port_att = SPI_fnumber(desc, "port");
	if (host_att <= 0 || port_att <= 0)
		return pass_on(fcinfo);
	host = heap_getattr(trigdata->tg_trigtuple, host_att, desc, &host_null);
	port = heap_getattr(trigdata->tg_trigtuple, port_att, desc, &port_null);
	if (host_null || port_null || host_watched(trigger_cache(fcinfo), host, port))
		return pass_on(fcinfo);
	return PointerGetDatum(NULL);	/* an AFTER trigger's result is ignored */
}
