/*-------------------------------------------------------------------------
 *
 * jsonw.h
 *	  A minimal JSON writer that builds a tree of values.
 *
 * The facts document is built as a tree (JwNode) and converted to jsonb
 * once, without JSON text in between (facts.c, jw_jsonb): writing the text
 * and parsing it again with jsonb_in cost a snapshot more CPU than anything
 * else outside the handshake and the chain's verification.  jw_text writes
 * the same tree as JSON text (the fuzzers check it with PostgreSQL's parser).
 *
 * Strings that come from the network (certificate names, TXT records) may
 * hold NUL bytes or invalid UTF-8: jw_string_bytes replaces those with
 * U+FFFD so that the document is always valid jsonb.  Every string and key
 * is copied into the current memory context: the writer's callers may pass
 * buffers of their own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_JSONW_H
#define APPGUARD_JSONW_H

#include "postgres.h"
#include "lib/stringinfo.h"

#define JW_MAX_DEPTH 16

typedef enum JwKind
{
	JW_NULL,
	JW_STRING,
	JW_INT,
	JW_BOOL,
	JW_OBJECT,
	JW_ARRAY
} JwKind;

/* One value: a member of an object (key set), an element, or the top */
typedef struct JwNode
{
	JwKind		kind;
	const char *key;			/* NULL for array elements and the top */
	struct JwNode *next;		/* the next member or element */
	union
	{
		struct
		{
			char	   *data;	/* valid UTF-8 without NUL, terminated */
			int			len;
		}			str;
		int64		num;
		bool		flag;
		struct
		{
			struct JwNode *first;
			struct JwNode *last;
		}			kids;
	}			v;
} JwNode;

typedef struct JsonWriter
{
	int			depth;			/* containers open */
	JwNode	   *open[JW_MAX_DEPTH + 1]; /* open[1..depth] */
	JwNode	   *result;			/* the outermost value, once begun */
} JsonWriter;

extern void jw_init(JsonWriter *jw);

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
/* Insert a value written by another writer (its result; NULL -> null) */
extern void jw_node(JsonWriter *jw, const char *key, const JwNode *value);

/* The tree as JSON text, members in the order written */
extern void jw_text(StringInfo buf, const JwNode *node);

#endif							/* APPGUARD_JSONW_H */
