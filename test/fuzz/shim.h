/*-------------------------------------------------------------------------
 *
 * shim.h
 *	  What the fuzzing harnesses share: the memory reset of shim.c and a
 *	  check that written JSON is what jsonb_in would accept.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_FUZZ_SHIM_H
#define APPGUARD_FUZZ_SHIM_H

#include <stddef.h>

/* Free every palloc'd chunk: the end of one input's memory context */
extern void shim_reset(void);
extern size_t shim_live_chunks(void);

/*
 * Abort (a crash to libFuzzer) unless text is valid UTF-8 and valid JSON
 * by PostgreSQL's own parser; what names the document in the message.
 */
extern void check_json(const char *text, size_t len, const char *what);

/* Abort with a message: a broken invariant */
extern void fuzz_fail(const char *fmt,...) pg_attribute_printf(1, 2);

#endif
