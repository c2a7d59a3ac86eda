/*-------------------------------------------------------------------------
 *
 * facts.c
 *	  The facts document of one probe (schema 2), as jsonb.
 *
 *	  { "schema": 2, "host", "port", "taken_at", "status", "error",
 *	    "elapsed_ms", "dns": {...}, "tls": {...} | null,
 *	    "tls_addresses": [...], "tls_addresses_skipped" }
 *
 * docs/facts.md documents every key.  The document is written as a tree
 * (jsonw.h) and converted to jsonb directly, each object's keys in jsonb's
 * order: the same jsonb, byte for byte, as writing it as JSON text and
 * parsing that with jsonb_in, without the text and the parse.
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
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/*
 * jsonb's order of an object's keys (lengthCompareJsonbPair in
 * jsonb_util.c): shorter first, then bytewise; of equal keys the one
 * written later first, so that it is the one kept, as jsonb_in keeps it.
 */
static int
compare_pairs(const void *a, const void *b, void *arg pg_attribute_unused())
{
	const JsonbPair *pa = (const JsonbPair *) a;
	const JsonbPair *pb = (const JsonbPair *) b;
	int			cmp;

	if (pa->key.val.string.len != pb->key.val.string.len)
		return pa->key.val.string.len > pb->key.val.string.len ? 1 : -1;
	cmp = memcmp(pa->key.val.string.val, pb->key.val.string.val,
				 pa->key.val.string.len);
	if (cmp != 0)
		return cmp;
	return pa->order > pb->order ? -1 : 1;
}

/* Sort an object's pairs into jsonb's order, keeping one of each key */
static void
order_pairs(JsonbValue *object)
{
	JsonbPair  *pairs = object->val.object.pairs;
	int			n = object->val.object.nPairs;
	bool		sorted = true;
	int			kept;

	/* many objects are written in order already */
	for (int i = 1; i < n && sorted; i++)
		sorted = compare_pairs(&pairs[i - 1], &pairs[i], NULL) < 0;
	if (sorted)
		return;					/* (a repeated key is never "in order") */
	if (n <= 32)
	{
		/* the facts' objects are small: no qsort's overhead */
		for (int i = 1; i < n; i++)
		{
			JsonbPair	pair = pairs[i];
			int			j = i;

			for (; j > 0 && compare_pairs(&pairs[j - 1], &pair, NULL) > 0; j--)
				pairs[j] = pairs[j - 1];
			pairs[j] = pair;
		}
	}
	else
		qsort_arg(pairs, n, sizeof(JsonbPair), compare_pairs, NULL);
	kept = 1;
	for (int i = 1; i < n; i++)
	{
		if (pairs[i].key.val.string.len == pairs[kept - 1].key.val.string.len &&
			memcmp(pairs[i].key.val.string.val, pairs[kept - 1].key.val.string.val,
				   pairs[i].key.val.string.len) == 0)
			continue;			/* an earlier duplicate: the later one stays */
		pairs[kept++] = pairs[i];
	}
	object->val.object.nPairs = kept;
}

/* The writer's node as a JsonbValue (containers with their values) */
static void
node_value(const JwNode *node, JsonbValue *value)
{
	int			n = 0;
	int			i = 0;

	check_stack_depth();
	switch (node->kind)
	{
		case JW_NULL:
			value->type = jbvNull;
			return;
		case JW_STRING:
			value->type = jbvString;
			value->val.string.val = node->v.str.data;
			value->val.string.len = node->v.str.len;
			return;
		case JW_INT:
			value->type = jbvNumeric;
			value->val.numeric = int64_to_numeric(node->v.num);
			return;
		case JW_BOOL:
			value->type = jbvBool;
			value->val.boolean = node->v.flag;
			return;
		case JW_OBJECT:
		case JW_ARRAY:
			break;
	}
	for (const JwNode *kid = node->v.kids.first; kid; kid = kid->next)
		n++;
	if (node->kind == JW_ARRAY)
	{
		value->type = jbvArray;
		value->val.array.rawScalar = false;
		value->val.array.nElems = n;
		value->val.array.elems = n ? palloc(n * sizeof(JsonbValue)) : NULL;
		for (const JwNode *kid = node->v.kids.first; kid; kid = kid->next)
			node_value(kid, &value->val.array.elems[i++]);
		return;
	}
	value->type = jbvObject;
	value->val.object.nPairs = n;
	value->val.object.pairs = n ? palloc(n * sizeof(JsonbPair)) : NULL;
	for (const JwNode *kid = node->v.kids.first; kid; kid = kid->next)
	{
		JsonbPair  *pair = &value->val.object.pairs[i];

		pair->key.type = jbvString;
		pair->key.val.string.val = (char *) kid->key;
		pair->key.val.string.len = strlen(kid->key);
		pair->order = i++;
		node_value(kid, &pair->value);
	}
	order_pairs(value);
}

/*
 * The tree of a JSON writer (an object or an array) as jsonb: the jsonb
 * that jsonb_in makes of the tree's text (jw_text), byte for byte.
 */
Jsonb *
jw_jsonb(const JwNode *root)
{
	JsonbValue	value;

	Assert(root->kind == JW_OBJECT || root->kind == JW_ARRAY);
	node_value(root, &value);
	return JsonbValueToJsonb(&value);
}

Jsonb *
facts_document(Engine *engine pg_attribute_unused(), Probe *probe)
{
	JsonWriter	jw;
	char		taken_at[MAXDATELEN + 1];
	const int	utc = 0;

	jw_init(&jw);
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
	jw_node(&jw, "tls", probe->tls_facts);
	facts_addresses(&jw, probe);
	jw_end_object(&jw);

	return jw_jsonb(jw.result);
}
