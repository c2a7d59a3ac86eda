/*-------------------------------------------------------------------------
 *
 * drift.c
 *	  SQL face of the drift rules: read two facts documents into views,
 *	  compare them (drift_rules.c) and return one row per difference.
 *
 *	  appguard_facts_diff(old jsonb, new jsonb, client_id text)
 *		  -> (reason, field, old_value, new_value)
 *	  appguard_drift_reasons()
 *		  -> (reason, default_severity, description)
 *
 * Reading is tolerant: a document written by an older or a handcrafted
 * probe may lack keys or hold values of another type, and every such fact
 * becomes "unknown", which the rules never count as a change.  Only a
 * document that is not an object at all, or declares another schema, is
 * refused.
 *
 * Values are returned as text: scalars as they are, sets and chains as
 * JSON arrays (["ns1.example.net","ns2.example.net"]), so that a page can
 * show them and a program can parse them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "appguard.h"
#include "drift.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(appguard_facts_diff);
PG_FUNCTION_INFO_V1(appguard_drift_reasons);

/* "queries" keys, in DriftQuery order */
static const char *const query_keys[DRIFT_QUERY_COUNT] = {
	[DRIFT_QUERY_A] = "A",
	[DRIFT_QUERY_AAAA] = "AAAA",
	[DRIFT_QUERY_NS] = "NS",
	[DRIFT_QUERY_TXT] = "TXT",
	[DRIFT_QUERY_CAA] = "CAA",
};

/* subject keys, in DriftNamePart order */
static const char *const name_part_keys[DRIFT_NAME_PART_COUNT] = {
	[DRIFT_NAME_O] = "O",
	[DRIFT_NAME_C] = "C",
	[DRIFT_NAME_ST] = "ST",
	[DRIFT_NAME_L] = "L",
};

/* ---- reading jsonb ---- */

/* The value of a key; false if obj is NULL or has no such key */
static bool
field_value(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	if (obj == NULL || !JsonContainerIsObject(obj))
		return false;
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

static JsonbContainer *
container_of(const JsonbValue *v, bool want_array)
{
	JsonbContainer *c;

	if (v == NULL || v->type != jbvBinary)
		return NULL;
	c = v->val.binary.data;
	if (want_array ? !JsonContainerIsArray(c) : !JsonContainerIsObject(c))
		return NULL;
	return c;
}

static JsonbContainer *
object_at(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	return field_value(obj, key, &v) ? container_of(&v, false) : NULL;
}

static JsonbContainer *
array_at(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	return field_value(obj, key, &v) ? container_of(&v, true) : NULL;
}

static char *
string_of(const JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static char *
numeric_text(const JsonbValue *v)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(v->val.numeric)));
}

/*
 * A string-or-null fact.  missing_is_null says whether the writer leaves
 * out keys of absent values (subject parts) or always writes them.
 */
static DriftText
text_at(JsonbContainer *obj, const char *key, bool missing_is_null)
{
	DriftText	t = {false, NULL};
	JsonbValue	v;

	if (obj == NULL)
		return t;
	if (!field_value(obj, key, &v))
		t.known = missing_is_null;
	else if (v.type == jbvNull)
		t.known = true;
	else if (v.type == jbvString)
	{
		t.known = true;
		t.value = string_of(&v);
	}
	return t;
}

static DriftBool
bool_at(JsonbContainer *obj, const char *key)
{
	DriftBool	b = {false, false};
	JsonbValue	v;

	if (field_value(obj, key, &v) && v.type == jbvBool)
	{
		b.known = true;
		b.value = v.val.boolean;
	}
	return b;
}

static DriftRcode
rcode_at(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!field_value(obj, key, &v) || v.type != jbvString)
		return DRIFT_RCODE_UNKNOWN;
	return drift_rcode_from_name(string_of(&v));
}

/*
 * The number of elements of an array that is read as a list, refused
 * (54000) above DRIFT_MAX_LIST_ITEMS so that one call's work stays bounded.
 */
static int
list_size(JsonbContainer *array, const char *argname, const char *path)
{
	int			n = JsonContainerSize(array);

	if (n > DRIFT_MAX_LIST_ITEMS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("appguard_facts_diff compares arrays of at most %d elements",
						DRIFT_MAX_LIST_ITEMS),
				 errdetail("Array %s of argument \"%s\" has %d elements.",
						   path, argname, n),
				 errhint("A facts document of a real probe holds a few records per array; pass the facts column of appguard.snapshots or a result of appguard_probe().")));
	return n;
}

/* A list that was read: sorted for the set comparisons, and known */
static DriftList
list_done(const char **items, int n)
{
	DriftList	list = {true, n, items, NULL};

	CHECK_FOR_INTERRUPTS();
	drift_list_sort(&list, palloc((n + 1) * sizeof(char *)));
	return list;
}

/* An array of strings; unknown if any element is not a string */
static DriftList
list_at(JsonbContainer *obj, const char *key, const char *argname)
{
	DriftList	list = {false, 0, NULL, NULL};
	JsonbContainer *array = array_at(obj, key);
	int			n;
	const char **items;

	if (array == NULL)
		return list;
	n = list_size(array, argname, psprintf("dns.%s", key));
	items = palloc((n + 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(array, i);

		CHECK_FOR_INTERRUPTS();
		if (v == NULL || v->type != jbvString)
			return list;
		items[i] = string_of(v);
	}
	return list_done(items, n);
}

/*
 * Whether a CAA value can be written without quotes in a zone file:
 * printable ASCII without blanks, quotes, backslashes, comments or
 * parentheses.
 */
static bool
zone_word(const char *value)
{
	if (*value == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *) value; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || strchr("\"\\;()", *p) != NULL)
			return false;
	return true;
}

/* A CAA record in presentation form: 0 issue ca.example */
static char *
caa_record_text(JsonbContainer *record)
{
	JsonbValue	flags;
	DriftText	tag = text_at(record, "tag", false);
	DriftText	value = text_at(record, "value", false);
	StringInfoData buf;

	if (!field_value(record, "flags", &flags) || flags.type != jbvNumeric ||
		tag.value == NULL || value.value == NULL)
		return NULL;
	initStringInfo(&buf);
	appendStringInfo(&buf, "%s %s ", numeric_text(&flags), tag.value);
	if (zone_word(value.value))
	{
		appendStringInfoString(&buf, value.value);
		return buf.data;
	}
	appendStringInfoChar(&buf, '"');
	for (const char *p = value.value; *p != '\0'; p++)
	{
		if (*p == '"' || *p == '\\')
			appendStringInfoChar(&buf, '\\');
		appendStringInfoChar(&buf, *p);
	}
	appendStringInfoChar(&buf, '"');
	return buf.data;
}

/* The CAA set; unknown if any record is malformed */
static DriftList
caa_list_at(JsonbContainer *dns, const char *argname)
{
	DriftList	list = {false, 0, NULL, NULL};
	JsonbContainer *array = array_at(dns, "caa");
	int			n;
	const char **items;

	if (array == NULL)
		return list;
	n = list_size(array, argname, "dns.caa");
	items = palloc((n + 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		JsonbContainer *record = container_of(getIthJsonbValueFromContainer(array, i),
											  false);

		CHECK_FOR_INTERRUPTS();
		items[i] = record ? caa_record_text(record) : NULL;
		if (items[i] == NULL)
			return list;
	}
	return list_done(items, n);
}

static void
read_dns(JsonbContainer *dns, FactsView *view, const char *argname)
{
	JsonbContainer *queries = object_at(dns, "queries");

	view->host_rcode = rcode_at(dns, "rcode");
	for (int q = 0; q < DRIFT_QUERY_COUNT; q++)
		view->query_rcode[q] = rcode_at(queries, query_keys[q]);
	view->ad = bool_at(dns, "ad");
	view->cname = list_at(dns, "cname", argname);
	view->a = list_at(dns, "a", argname);
	view->aaaa = list_at(dns, "aaaa", argname);
	view->ns = list_at(dns, "ns", argname);
	view->caa = caa_list_at(dns, argname);
	view->ownership_ids = list_at(dns, "ownership_ids", argname);
}

/*
 * verify_error of a failed verification; a document that gives only the
 * code still says something the page can show.
 */
static DriftText
verify_error_at(JsonbContainer *tls, const DriftBool *verified)
{
	DriftText	t = text_at(tls, "verify_error", true);
	JsonbValue	code;

	if (!verified->known || verified->value || t.value != NULL)
		return t;
	t.known = true;
	if (field_value(tls, "verify_code", &code) && code.type == jbvNumeric)
		t.value = psprintf("certificate verification failed (X509_V_ERR %s)",
						   numeric_text(&code));
	else
		t.value = "certificate verification failed";
	return t;
}

/* chain[1].sha256: the first intermediate as sent, NULL when none was */
static DriftText
intermediate_at(JsonbContainer *tls)
{
	DriftText	t = {false, NULL};
	JsonbContainer *chain = array_at(tls, "chain");

	if (chain == NULL)
		return t;
	if (JsonContainerSize(chain) < 2)
	{
		t.known = true;
		return t;
	}
	return text_at(container_of(getIthJsonbValueFromContainer(chain, 1), false),
				   "sha256", false);
}

static void
read_leaf(JsonbContainer *leaf, FactsView *view)
{
	JsonbContainer *subject = object_at(leaf, "subject");
	JsonbContainer *issuer = object_at(leaf, "issuer");

	view->validation = text_at(leaf, "validation", false);
	for (int part = 0; part < DRIFT_NAME_PART_COUNT; part++)
		view->subject[part] = text_at(subject, name_part_keys[part], true);
	view->issuer_org = text_at(issuer, "O", true);
	view->serial = text_at(leaf, "serial", false);
	view->sha256 = text_at(leaf, "sha256", false);
	view->spki_sha256 = text_at(leaf, "spki_sha256", false);
	view->not_before = text_at(leaf, "not_before", false);
	view->not_after = text_at(leaf, "not_after", false);
}

static void
read_tls(JsonbContainer *tls, FactsView *view)
{
	view->verified = bool_at(tls, "verified");
	view->verify_error = verify_error_at(tls, &view->verified);
	view->version = text_at(tls, "version", false);
	view->intermediate_sha256 = intermediate_at(tls);
	view->address = text_at(tls, "address", false);
	read_leaf(object_at(tls, "leaf"), view);
}

/*
 * The "tls_addresses" list; unknown when the document has none (written
 * before the list existed).  Entries without an address string are left
 * out; facts of the wrong type are unknown.
 */
static void
read_addresses(JsonbContainer *root, FactsView *view, const char *argname)
{
	JsonbContainer *array = array_at(root, "tls_addresses");
	DriftAddressList *list = &view->addresses;
	int			n;

	if (array == NULL)
		return;
	n = list_size(array, argname, "tls_addresses");
	list->known = true;
	list->items = palloc0((n + 1) * sizeof(DriftAddress));
	for (int i = 0; i < n; i++)
	{
		JsonbContainer *entry = container_of(getIthJsonbValueFromContainer(array, i),
											 false);
		DriftAddress *a = &list->items[list->count];
		DriftText	address = text_at(entry, "address", false);
		DriftText	status = text_at(entry, "status", false);

		CHECK_FOR_INTERRUPTS();
		if (address.value == NULL)
			continue;
		a->address = address.value;
		a->measured = status.value != NULL && strcmp(status.value, "ok") == 0;
		a->verified = bool_at(entry, "verified");
		a->verify_error = text_at(entry, "verify_error", false);
		a->leaf_sha256 = text_at(entry, "leaf_sha256", false);
		a->subject_o = text_at(entry, "subject_o", false);
		a->validation = text_at(entry, "validation", false);
		list->count++;
	}
	drift_addresses_sort(list);
}

static const char *
json_type_phrase(Jsonb *facts)
{
	JsonbValue	scalar;

	if (JB_ROOT_IS_OBJECT(facts))
		return "an object";
	if (!JB_ROOT_IS_SCALAR(facts) || !JsonbExtractScalar(&facts->root, &scalar))
		return "an array";
	switch (scalar.type)
	{
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		default:
			return "null";
	}
}

static void
require_facts_object(Jsonb *facts, const char *argname)
{
	if (!JB_ROOT_IS_OBJECT(facts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" is not a facts document", argname),
				 errdetail("A facts document is a JSON object; this is %s.",
						   json_type_phrase(facts)),
				 errhint("Pass the facts column of appguard.snapshots or a result of appguard_probe().")));
}

/*
 * Whether a schema number is one this version reads, by its text: "2" but
 * not "2.0" or "02", which no probe writes.
 */
static bool
schema_supported(const char *text)
{
	for (int v = APPGUARD_FACTS_SCHEMA_OLDEST; v <= APPGUARD_FACTS_SCHEMA; v++)
	{
		char		name[16];

		snprintf(name, sizeof(name), "%d", v);
		if (strcmp(text, name) == 0)
			return true;
	}
	return false;
}

/*
 * A document without "schema" is read as schema 1 (handcrafted ones).
 * Older schemas stay comparable: what a newer one added is missing from
 * them, hence unknown, and no rule counts an unknown as a change.
 */
static void
require_known_schema(JsonbContainer *root, const char *argname)
{
	JsonbValue	schema;
	char	   *text;

	if (!field_value(root, "schema", &schema))
		return;
	if (schema.type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("facts schema in argument \"%s\" is not a number", argname),
				 errdetail("This version compares facts documents of schema %d to %d.",
						   APPGUARD_FACTS_SCHEMA_OLDEST, APPGUARD_FACTS_SCHEMA)));
	text = numeric_text(&schema);
	if (!schema_supported(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported facts schema %s in argument \"%s\"",
						text, argname),
				 errdetail("This version compares facts documents of schema %d to %d.",
						   APPGUARD_FACTS_SCHEMA_OLDEST, APPGUARD_FACTS_SCHEMA)));
}

void
facts_view_from_jsonb(Jsonb *facts, const char *argname, FactsView *view)
{
	JsonbContainer *root = &facts->root;
	DriftText	status;

	require_facts_object(facts, argname);
	require_known_schema(root, argname);
	facts_view_init(view);
	status = text_at(root, "status", false);
	view->status_ok = status.value != NULL && strcmp(status.value, "ok") == 0;
	read_dns(object_at(root, "dns"), view, argname);
	read_tls(object_at(root, "tls"), view);
	read_addresses(root, view, argname);
}

/* ---- returning rows ---- */

typedef struct DiffOutput
{
	Tuplestorestate *store;
	TupleDesc	desc;
} DiffOutput;

static void
set_value(const DriftValue *value, Datum *datum, bool *isnull)
{
	StringInfoData buf;

	*isnull = false;
	switch (value->kind)
	{
		case DRIFT_VALUE_NULL:
			*isnull = true;
			*datum = (Datum) 0;
			return;
		case DRIFT_VALUE_TEXT:
			*datum = CStringGetTextDatum(value->text);
			return;
		case DRIFT_VALUE_LIST:
			initStringInfo(&buf);
			appendStringInfoChar(&buf, '[');
			for (int i = 0; i < value->list->count; i++)
			{
				CHECK_FOR_INTERRUPTS();
				if (i > 0)
					appendStringInfoChar(&buf, ',');
				escape_json(&buf, value->list->items[i]);
			}
			appendStringInfoChar(&buf, ']');
			*datum = CStringGetTextDatum(buf.data);
			return;
	}
}

static void
put_difference(void *arg, DriftReason reason, const char *field,
			   const DriftValue *old_value, const DriftValue *new_value)
{
	DiffOutput *out = (DiffOutput *) arg;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(drift_reason_code(reason));
	values[1] = CStringGetTextDatum(field);
	set_value(old_value, &values[2], &nulls[2]);
	set_value(new_value, &values[3], &nulls[3]);
	tuplestore_putvalues(out->store, out->desc, values, nulls);
}

/*
 * appguard_facts_diff(old jsonb, new jsonb, client_id text DEFAULT NULL)
 *
 * Not STRICT because client_id may be NULL; a NULL document gives no rows,
 * as STRICT would.
 */
Datum
appguard_facts_diff(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work;
	MemoryContext old;
	FactsView	baseline;
	FactsView	current;
	DiffOutput	out;
	const char *client_id = NULL;

	InitMaterializedSRF(fcinfo, MAT_SRF_BLESS);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return (Datum) 0;

	/* the views' strings and the detoasted documents live only this long */
	work = AllocSetContextCreate(CurrentMemoryContext, "appguard_facts_diff",
								 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(work);
	facts_view_from_jsonb(PG_GETARG_JSONB_P(0), "old", &baseline);
	facts_view_from_jsonb(PG_GETARG_JSONB_P(1), "new", &current);
	if (!PG_ARGISNULL(2))
		client_id = text_to_cstring(PG_GETARG_TEXT_PP(2));
	out.store = rsinfo->setResult;
	out.desc = rsinfo->setDesc;
	drift_compare(&baseline, &current, client_id, put_difference, &out);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
	return (Datum) 0;
}

/* appguard_drift_reasons(): every reason with its built-in severity */
Datum
appguard_drift_reasons(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_BLESS);
	for (int r = 0; r < DRIFT_REASON_COUNT; r++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(drift_reason_code(r));
		values[1] = CStringGetTextDatum(drift_severity_name(drift_reason_default_severity(r)));
		values[2] = CStringGetTextDatum(drift_reason_description(r));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
