/*-------------------------------------------------------------------------
 *
 * jsonw.c
 *	  Minimal streaming JSON writer.  See jsonw.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/json.h"

#include "jsonw.h"

void
jw_init(JsonWriter *jw, StringInfo buf)
{
	jw->buf = buf;
	jw->depth = 0;
	jw->has_items[0] = false;
}

/* Comma and key before a value */
static void
jw_prefix(JsonWriter *jw, const char *key)
{
	if (jw->has_items[jw->depth])
		appendStringInfoChar(jw->buf, ',');
	jw->has_items[jw->depth] = true;
	if (key)
	{
		escape_json(jw->buf, key);
		appendStringInfoChar(jw->buf, ':');
	}
}

static void
jw_open(JsonWriter *jw, const char *key, char bracket)
{
	jw_prefix(jw, key);
	appendStringInfoChar(jw->buf, bracket);
	Assert(jw->depth + 1 < JW_MAX_DEPTH);
	jw->has_items[++jw->depth] = false;
}

void
jw_begin_object(JsonWriter *jw, const char *key)
{
	jw_open(jw, key, '{');
}

void
jw_end_object(JsonWriter *jw)
{
	appendStringInfoChar(jw->buf, '}');
	jw->depth--;
}

void
jw_begin_array(JsonWriter *jw, const char *key)
{
	jw_open(jw, key, '[');
}

void
jw_end_array(JsonWriter *jw)
{
	appendStringInfoChar(jw->buf, ']');
	jw->depth--;
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
 * Write value (len bytes; terminated says value[len] is a NUL) as a JSON
 * string.  Nearly every string is clean (valid UTF-8 without NUL):
 * escaped in place when terminated, else from one exact copy; only a
 * string with bytes to replace is rebuilt.
 */
static void
write_string(JsonWriter *jw, const char *key, const char *value, size_t len,
			 bool terminated)
{
	StringInfoData clean;
	const unsigned char *s = (const unsigned char *) value;
	size_t		i = clean_prefix_length(s, len);

	if (i == len)
	{
		char	   *copy = terminated ? NULL : pnstrdup(value, len);

		jw_prefix(jw, key);
		escape_json(jw->buf, copy ? copy : value);
		if (copy)
			pfree(copy);
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
	jw_prefix(jw, key);
	escape_json(jw->buf, clean.data);
	pfree(clean.data);
}

void
jw_string_bytes(JsonWriter *jw, const char *key, const char *value, size_t len)
{
	write_string(jw, key, value, len, false);
}

void
jw_string(JsonWriter *jw, const char *key, const char *value)
{
	if (value == NULL)
		jw_null(jw, key);
	else
		write_string(jw, key, value, strlen(value), true);
}

void
jw_int(JsonWriter *jw, const char *key, int64 value)
{
	jw_prefix(jw, key);
	appendStringInfo(jw->buf, INT64_FORMAT, value);
}

void
jw_bool(JsonWriter *jw, const char *key, bool value)
{
	jw_prefix(jw, key);
	appendStringInfoString(jw->buf, value ? "true" : "false");
}

void
jw_null(JsonWriter *jw, const char *key)
{
	jw_prefix(jw, key);
	appendStringInfoString(jw->buf, "null");
}

void
jw_raw(JsonWriter *jw, const char *key, const char *json)
{
	if (json == NULL)
	{
		jw_null(jw, key);
		return;
	}
	jw_prefix(jw, key);
	appendStringInfoString(jw->buf, json);
}
