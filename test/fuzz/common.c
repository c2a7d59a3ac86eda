/*-------------------------------------------------------------------------
 *
 * common.c
 *	  Checks the harnesses share.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "shim.h"

void
fuzz_fail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fputs("invariant broken: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

void
check_json(const char *text, size_t len, const char *what)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;

	if (strlen(text) != len)
		fuzz_fail("%s: NUL byte inside the JSON text", what);
	if (pg_encoding_verifymbstr(PG_UTF8, text, (int) len) != (int) len)
		fuzz_fail("%s: not valid UTF-8: %s", what, text);
	lex = makeJsonLexContextCstringLen((char *) text, (int) len, PG_UTF8, true);
	rc = pg_parse_json(lex, &nullSemAction);
	if (rc != JSON_SUCCESS)
		fuzz_fail("%s: not valid JSON (error %d): %s", what, (int) rc, text);
}
