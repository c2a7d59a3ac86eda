/*-------------------------------------------------------------------------
 *
 * jsonw.c
 *	  Minimal JSON writer building a tree of values.  See jsonw.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/json.h"

#include "jsonw.h"

void
jw_init(JsonWriter *jw)
{
	jw->depth = 0;
	jw->result = NULL;
}

/* A new value of the open container (or the outermost one) */
static JwNode *
jw_add(JsonWriter *jw, const char *key, JwKind kind)
{
	JwNode	   *node = palloc(sizeof(JwNode));

	node->kind = kind;
	node->key = key ? pstrdup(key) : NULL;
	node->next = NULL;
	if (jw->depth == 0)
	{
		if (jw->result != NULL)
			elog(ERROR, "appguard JSON writer: a second outermost value");
		jw->result = node;
	}
	else
	{
		JwNode	   *parent = jw->open[jw->depth];

		/* a caller's mistake: fail rather than build a tree jsonb cannot take */
		if ((parent->kind == JW_OBJECT) != (key != NULL))
			elog(ERROR, "appguard JSON writer: %s",
				 key ? "a key in an array" : "an object member without a key");
		if (parent->v.kids.last)
			parent->v.kids.last->next = node;
		else
			parent->v.kids.first = node;
		parent->v.kids.last = node;
	}
	return node;
}

static void
jw_open(JsonWriter *jw, const char *key, JwKind kind)
{
	JwNode	   *node = jw_add(jw, key, kind);

	node->v.kids.first = node->v.kids.last = NULL;
	if (jw->depth >= JW_MAX_DEPTH)
		elog(ERROR, "appguard JSON writer nested too deep");
	jw->open[++jw->depth] = node;
}

void
jw_begin_object(JsonWriter *jw, const char *key)
{
	jw_open(jw, key, JW_OBJECT);
}

static void
jw_close(JsonWriter *jw, JwKind kind)
{
	if (jw->depth <= 0 || jw->open[jw->depth]->kind != kind)
		elog(ERROR, "appguard JSON writer: no %s to end",
			 kind == JW_OBJECT ? "object" : "array");
	jw->depth--;
}

void
jw_end_object(JsonWriter *jw)
{
	jw_close(jw, JW_OBJECT);
}

void
jw_begin_array(JsonWriter *jw, const char *key)
{
	jw_open(jw, key, JW_ARRAY);
}

void
jw_end_array(JsonWriter *jw)
{
	jw_close(jw, JW_ARRAY);
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), 0 if invalid */
static int
utf8_sequence_length(const unsigned char *s, size_t len)
{
	int			n;
	unsigned int cp;

	if (s[0] < 0x80)
		return s[0] == 0 ? 0 : 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if ((size_t) n > len)
		return 0;
	for (int i = 1; i < n; i++)
	{
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates and values past U+10FFFF */
	if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
		(n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		(cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Length of the prefix of s that needs no replacement: valid UTF-8, no NUL */
static size_t
clean_prefix_length(const unsigned char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		int			n = s[i] < 0x80 ? (s[i] != 0) : utf8_sequence_length(s + i, len - i);

		if (n == 0)
			break;
		i += n;
	}
	return i;
}

/*
 * Add value (len bytes; terminated says value[len] is a NUL) as a string,
 * copied.  Nearly every string is clean (valid UTF-8 without NUL): copied
 * as it is; only a string with bytes to replace is rebuilt.
 */
static void
write_string(JsonWriter *jw, const char *key, const char *value, size_t len)
{
	StringInfoData clean;
	const unsigned char *s = (const unsigned char *) value;
	size_t		i = clean_prefix_length(s, len);
	JwNode	   *node;

	if (i == len)
	{
		node = jw_add(jw, key, JW_STRING);
		node->v.str.data = pnstrdup(value, len);
		node->v.str.len = (int) len;
		return;
	}
	initStringInfo(&clean);
	appendBinaryStringInfo(&clean, value, i);
	while (i < len)
	{
		int			n = utf8_sequence_length(s + i, len - i);

		if (n == 0)
		{
			appendStringInfoString(&clean, "\xEF\xBF\xBD");	/* U+FFFD */
			i++;
		}
		else
		{
			appendBinaryStringInfo(&clean, (const char *) s + i, n);
			i += n;
		}
	}
	node = jw_add(jw, key, JW_STRING);
	node->v.str.data = clean.data;
	node->v.str.len = clean.len;
}

void
jw_string_bytes(JsonWriter *jw, const char *key, const char *value, size_t len)
{
	write_string(jw, key, value, len);
}

void
jw_string(JsonWriter *jw, const char *key, const char *value)
{
	if (value == NULL)
		jw_null(jw, key);
	else
		write_string(jw, key, value, strlen(value));
}

void
jw_int(JsonWriter *jw, const char *key, int64 value)
{
	jw_add(jw, key, JW_INT)->v.num = value;
}

void
jw_bool(JsonWriter *jw, const char *key, bool value)
{
	jw_add(jw, key, JW_BOOL)->v.flag = value;
}

void
jw_null(JsonWriter *jw, const char *key)
{
	(void) jw_add(jw, key, JW_NULL);
}

/* A shallow copy under this key: the other writer's tree is shared */
void
jw_node(JsonWriter *jw, const char *key, const JwNode *value)
{
	JwNode	   *node;

	if (value == NULL)
	{
		jw_null(jw, key);
		return;
	}
	node = jw_add(jw, key, value->kind);
	node->v = value->v;
}

void
jw_text(StringInfo buf, const JwNode *node)
{
	switch (node->kind)
	{
		case JW_NULL:
			appendStringInfoString(buf, "null");
			break;
		case JW_STRING:
			escape_json(buf, node->v.str.data);
			break;
		case JW_INT:
			appendStringInfo(buf, INT64_FORMAT, node->v.num);
			break;
		case JW_BOOL:
			appendStringInfoString(buf, node->v.flag ? "true" : "false");
			break;
		case JW_OBJECT:
		case JW_ARRAY:
			appendStringInfoChar(buf, node->kind == JW_OBJECT ? '{' : '[');
			for (const JwNode *kid = node->v.kids.first; kid; kid = kid->next)
			{
				if (kid != node->v.kids.first)
					appendStringInfoChar(buf, ',');
				if (node->kind == JW_OBJECT)
				{
					escape_json(buf, kid->key);
					appendStringInfoChar(buf, ':');
				}
				jw_text(buf, kid);
			}
			appendStringInfoChar(buf, node->kind == JW_OBJECT ? '}' : ']');
			break;
	}
}
