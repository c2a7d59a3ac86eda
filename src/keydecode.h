/*-------------------------------------------------------------------------
 *
 * keydecode.h
 *	  Certificate public keys decoded by OpenSSL's built-in methods, around
 *	  the calls that parse certificates (OpenSSL 3.0 only; see keydecode.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_KEYDECODE_H
#define APPGUARD_KEYDECODE_H

/*
 * Between begin and end, the certificates OpenSSL parses have their RSA
 * and EC public keys decoded by the library's built-in methods instead of
 * its decoder framework.  Nothing between the two may call back into
 * PostgreSQL (no ereport, no palloc): end must run.  Both do nothing where
 * the library is not OpenSSL 3.0.
 */
extern void keydecode_begin(void);
extern void keydecode_end(void);

/* Whether begin and end register the engine in this backend */
extern bool keydecode_in_use(void);

#endif							/* APPGUARD_KEYDECODE_H */
