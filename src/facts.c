/*-------------------------------------------------------------------------
 *
 * facts.c
 *	  The facts document of one probe (schema 2), as jsonb.
 *
 *	  { "schema": 2, "host", "port", "taken_at", "status", "error",
 *	    "elapsed_ms", "dns": {...}, "tls": {...} | null,
 *	    "tls_addresses": [...], "tls_addresses_skipped" }
 *
 * The README documents every key.  The document is written as JSON text
 * and parsed once into jsonb.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "appguard.h"
#include "catalog/pg_type.h"
#include "dns.h"
#include "engine.h"
#include "facts.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

Jsonb *
facts_document(Engine *engine pg_attribute_unused(), Probe *probe)
{
	StringInfoData buf;
	JsonWriter	jw;
	char		taken_at[MAXDATELEN + 1];
	const int	utc = 0;

	initStringInfo(&buf);
	jw_init(&jw, &buf);
	jw_begin_object(&jw, NULL);
	jw_int(&jw, "schema", APPGUARD_FACTS_SCHEMA);
	jw_string(&jw, "host", probe->host);
	jw_int(&jw, "port", probe->port);
	JsonEncodeDateTime(taken_at, TimestampTzGetDatum(probe->started_at),
					   TIMESTAMPTZOID, &utc);
	jw_string(&jw, "taken_at", taken_at);
	jw_string(&jw, "status", probe_status_name(probe->status));
	jw_string(&jw, "error", probe->error);
	jw_int(&jw, "elapsed_ms",
		   (GetCurrentTimestamp() - probe->started_at) / 1000);
	facts_dns(&jw, probe);
	jw_raw(&jw, "tls", probe->tls_json.data);
	facts_addresses(&jw, probe);
	jw_end_object(&jw);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
