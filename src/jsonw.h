/*-------------------------------------------------------------------------
 *
 * jsonw.h
 *	  A minimal streaming JSON writer over a StringInfo.
 *
 * The facts document is written as JSON text and converted to jsonb once.
 * Strings that come from the network (certificate names, TXT records) may
 * hold NUL bytes or invalid UTF-8: jw_string_bytes replaces those with
 * U+FFFD so that the document is always valid jsonb.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_JSONW_H
#define APPGUARD_JSONW_H

#include "postgres.h"
#include "lib/stringinfo.h"

#define JW_MAX_DEPTH 16

typedef struct JsonWriter
{
	StringInfo	buf;
	int			depth;
	bool		has_items[JW_MAX_DEPTH];
} JsonWriter;

extern void jw_init(JsonWriter *jw, StringInfo buf);

/* key is NULL for array elements and for the outermost value */
extern void jw_begin_object(JsonWriter *jw, const char *key);
extern void jw_end_object(JsonWriter *jw);
extern void jw_begin_array(JsonWriter *jw, const char *key);
extern void jw_end_array(JsonWriter *jw);
extern void jw_string(JsonWriter *jw, const char *key, const char *value);	/* NULL -> null */
extern void jw_string_bytes(JsonWriter *jw, const char *key,
							const char *value, size_t len);
extern void jw_int(JsonWriter *jw, const char *key, int64 value);
extern void jw_bool(JsonWriter *jw, const char *key, bool value);
extern void jw_null(JsonWriter *jw, const char *key);
/* Insert JSON text written by another writer (NULL -> null) */
extern void jw_raw(JsonWriter *jw, const char *key, const char *json);

#endif							/* APPGUARD_JSONW_H */
