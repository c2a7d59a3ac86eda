/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  SQL-callable entry points for measuring hosts: appguard_probe,
 *	  appguard_snapshot, appguard_snapshot_many, and the pure helpers the
 *	  tests and operators use (host-name normalisation, address classes).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "appguard.h"
#include "catalog/pg_type.h"
#include "engine.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "dns.h"
#include "guard.h"
#include "mb/pg_wchar.h"
#include "store.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(appguard_probe);
PG_FUNCTION_INFO_V1(appguard_snapshot);
PG_FUNCTION_INFO_V1(appguard_snapshot_many);
PG_FUNCTION_INFO_V1(appguard_normalize_host);
PG_FUNCTION_INFO_V1(appguard_address_class);
PG_FUNCTION_INFO_V1(appguard_address_allowed);
PG_FUNCTION_INFO_V1(appguard_registrable_domain);
PG_FUNCTION_INFO_V1(appguard_setting);
PG_FUNCTION_INFO_V1(appguard_url_encode);

/* How many bytes of a bad host name an error message quotes, at most */
#define QUOTED_HOST_MAX_BYTES 300

/* Validate a host argument; ERROR 22023 with the reason when it is bad */
static char *
host_argument(text *arg)
{
	char	   *out = palloc(GUARD_MAX_HOST_LEN + 2);
	const char *problem = guard_normalize_host(VARDATA_ANY(arg),
											   VARSIZE_ANY_EXHDR(arg),
											   out, GUARD_MAX_HOST_LEN + 2);

	/*
	 * The quote is cut on a character boundary: a message that ends in half
	 * a character is not valid in the database encoding, and converting it
	 * to the client's encoding fails, replacing this error with another.
	 */
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid host name \"%s\"",
						pnstrdup(VARDATA_ANY(arg),
								 pg_mbcliplen(VARDATA_ANY(arg),
											  VARSIZE_ANY_EXHDR(arg),
											  QUOTED_HOST_MAX_BYTES))),
				 errdetail("%c%s.", pg_toupper(problem[0]), problem + 1),
				 errhint("Give a DNS host name such as app.example.org, without scheme, port or path.")));
	return out;
}

static int
port_argument(int32 port)
{
	if (port < 1 || port > 65535)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid port %d", port),
				 errdetail("A port is a number from 1 to 65535.")));
	return port;
}

static void
require_args(FunctionCallInfo fcinfo, int n)
{
	for (int i = 0; i < n; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument %d of %s must not be null", i + 1,
							get_func_name(fcinfo->flinfo->fn_oid))));
}

/* ---- probing without storing ---- */

static void
keep_facts(Probe *probe pg_attribute_unused(), Jsonb *facts, void *arg)
{
	Jsonb	  **result = (Jsonb **) arg;
	MemoryContext cxt = GetMemoryChunkContext(result);

	*result = (Jsonb *) MemoryContextAlloc(cxt, VARSIZE(facts));
	memcpy(*result, facts, VARSIZE(facts));
}

/* Measure the host and port of the arguments, handing the facts to done */
static void
run_one(FunctionCallInfo fcinfo, ProbeDoneCallback done, void *arg)
{
	ProbeTarget target;
	EngineRun	run;

	appguard_require_settings();
	require_args(fcinfo, 2);
	target.host = host_argument(PG_GETARG_TEXT_PP(0));
	target.port = port_argument(PG_GETARG_INT32(1));
	memset(&run, 0, sizeof(run));
	run.targets = &target;
	run.ntargets = 1;
	run.concurrency = 1;
	run.done = done;
	run.arg = arg;
	engine_run(&run);
}

Datum
appguard_probe(PG_FUNCTION_ARGS)
{
	Jsonb	  **result = palloc0(sizeof(Jsonb *));

	run_one(fcinfo, keep_facts, result);
	PG_RETURN_JSONB_P(*result);
}

/* ---- probing and storing ---- */

typedef struct StoreOne
{
	MemoryContext cxt;
	Jsonb	   *result;
} StoreOne;

/* Insert the snapshot (its triggers fire now) and keep the facts with "id" */
static void
store_one(Probe *probe, Jsonb *facts, void *arg)
{
	StoreOne   *state = (StoreOne *) arg;
	SnapshotRow row;
	int64		id;
	MemoryContext old;

	snapshot_row_from_probe(&row, probe, facts);
	id = store_snapshot_row(&row);
	old = MemoryContextSwitchTo(state->cxt);
	state->result = facts_with_id(facts, id);
	MemoryContextSwitchTo(old);
}

Datum
appguard_snapshot(PG_FUNCTION_ARGS)
{
	StoreOne	state;

	state.cxt = CurrentMemoryContext;
	state.result = NULL;
	run_one(fcinfo, store_one, &state);
	PG_RETURN_JSONB_P(state.result);
}

typedef struct StoreMany
{
	Tuplestorestate *tupstore;
	TupleDesc	tupdesc;
	SnapshotStore *store;
} StoreMany;

static void
store_many(Probe *probe, Jsonb *facts, void *arg)
{
	StoreMany  *state = (StoreMany *) arg;
	SnapshotRow row;
	Datum		value;
	bool		isnull = false;

	snapshot_row_from_probe(&row, probe, facts);
	value = JsonbPGetDatum(facts_with_id(facts, snapshot_store_row(state->store, &row)));
	tuplestore_putvalues(state->tupstore, state->tupdesc, &value, &isnull);
}

/*
 * appguard_snapshot_many(hosts text[], ports int[] DEFAULT NULL): every
 * host measured by one engine, appguard.sweep_concurrency at a time, each
 * stored as it finishes, through one SnapshotStore (in the caller's
 * transaction: for batches that commit as they go, see the sweep in
 * sweep.c).
 */
Datum
appguard_snapshot_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *hosts;
	Datum	   *host_values;
	bool	   *host_nulls;
	int			nhosts;
	int32	   *ports = NULL;
	int			nports = 0;
	ProbeTarget *targets;
	StoreMany	state;
	EngineRun	run;

	appguard_require_settings();
	require_args(fcinfo, 1);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC | MAT_SRF_BLESS);
	hosts = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(hosts, TEXTOID, -1, false, TYPALIGN_INT,
					  &host_values, &host_nulls, &nhosts);
	if (!PG_ARGISNULL(1))
	{
		ArrayType  *port_array = PG_GETARG_ARRAYTYPE_P(1);

		if (ARR_NDIM(port_array) > 1 || ARR_HASNULL(port_array))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ports must be a one-dimensional array without nulls")));
		nports = ArrayGetNItems(ARR_NDIM(port_array), ARR_DIMS(port_array));
		ports = (int32 *) ARR_DATA_PTR(port_array);
		if (nports != nhosts)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ports has %d elements but hosts has %d", nports, nhosts),
					 errhint("Give one port per host, or none for port 443 everywhere.")));
	}
	targets = palloc0(sizeof(ProbeTarget) * (nhosts + 1));
	for (int i = 0; i < nhosts; i++)
	{
		if (host_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("hosts must not contain nulls")));
		targets[i].host = host_argument(DatumGetTextPP(host_values[i]));
		targets[i].port = ports ? port_argument(ports[i]) : APPGUARD_DEFAULT_PORT;
	}
	state.tupstore = rsinfo->setResult;
	state.tupdesc = rsinfo->setDesc;
	memset(&run, 0, sizeof(run));
	run.targets = targets;
	run.ntargets = nhosts;
	run.concurrency = appguard_sweep_concurrency;
	run.done = store_many;
	run.arg = &state;
	state.store = snapshot_store_open();
	engine_run(&run);
	snapshot_store_close(state.store);
	return (Datum) 0;
}

/* ---- pure helpers ---- */

Datum
appguard_normalize_host(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(host_argument(PG_GETARG_TEXT_PP(0))));
}

/* The registrable domain (eTLD+1) of a host, or NULL for a public suffix */
Datum
appguard_registrable_domain(PG_FUNCTION_ARGS)
{
	char	   *host = host_argument(PG_GETARG_TEXT_PP(0));
	char		regdom[GUARD_MAX_HOST_LEN + 2];

	if (!dns_registrable_domain(host, regdom, sizeof(regdom)))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(regdom));
}

static void
inet_to_sockaddr(inet *addr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (ip_family(addr) == PGSQL_AF_INET)
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ip_addr(addr), 4);
	}
	else
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ip_addr(addr), 16);
	}
}

Datum
appguard_address_class(PG_FUNCTION_ARGS)
{
	struct sockaddr_storage ss;

	inet_to_sockaddr(PG_GETARG_INET_PP(0), &ss);
	PG_RETURN_TEXT_P(cstring_to_text(guard_address_class_name(
												guard_classify_address((struct sockaddr *) &ss))));
}

/*
 * appguard_address_allowed(addr inet, allow_private boolean, networks text)
 * RETURNS boolean: the address policy's decision (guard_address_allowed) as
 * a pure function of its arguments, what a probe would decide under those
 * two settings; a malformed list is 22023.
 */
Datum
appguard_address_allowed(PG_FUNCTION_ARGS)
{
	struct sockaddr_storage ss;
	char	   *networks = text_to_cstring(PG_GETARG_TEXT_PP(2));
	AddressClass cls;

	if (!guard_network_list_valid(networks))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid network list \"%s\"", networks),
				 errhint("Give a comma-separated list of addresses and CIDR networks, e.g. \"10.20.0.0/16, fd00:1::/48\".")));
	inet_to_sockaddr(PG_GETARG_INET_PP(0), &ss);
	PG_RETURN_BOOL(guard_address_allowed((struct sockaddr *) &ss, PG_GETARG_BOOL(1), networks, &cls));
}

/*
 * appguard_setting(name): the value of an appguard.* setting.  SQL code
 * calls this rather than current_setting() because calling it loads the
 * library, and with it the definitions of the settings; and because it
 * refuses (55000) in a session whose superuser-only settings lost their
 * configured values at load, so that no suspension is decided with
 * built-in defaults.
 */
Datum
appguard_setting(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	appguard_require_settings();

	if (strncmp(name, "appguard.", 9) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not an appguard setting", name)));
	PG_RETURN_TEXT_P(cstring_to_text(GetConfigOptionByName(name, NULL, false)));
}

/* Percent-encode everything but RFC 3986 unreserved characters */
Datum
appguard_url_encode(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(in);
	int			len = VARSIZE_ANY_EXHDR(in);
	StringInfoData out;

	initStringInfo(&out);
	for (int i = 0; i < len; i++)
	{
		unsigned char c = p[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(&out, (char) c);
		else
			appendStringInfo(&out, "%%%02X", c);
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
