/*-------------------------------------------------------------------------
 *
 * chainverify.h
 *	  Checking a built chain's signatures and validity times, with the
 *	  signatures of CA certificates verified before kept for the backend.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_CHAINVERIFY_H
#define APPGUARD_CHAINVERIFY_H

#include <openssl/x509_vfy.h>

/*
 * After X509_STORE_CTX_init(): the context's step that checks the built
 * chain's signatures and times becomes one that does what OpenSSL 3.0's
 * internal_verify() does (each certificate's issuer may sign it, its
 * signature, its validity times, the verify callback at each depth), but
 * does not check again a signature on a CA certificate that an earlier
 * call verified, with the same DER of both certificates and the same trust
 * store; a chain it does not expect goes to OpenSSL's step.  That step
 * runs no PostgreSQL code (it cannot ERROR).  Left as it is if the
 * context's step is not the one OpenSSL set first.
 */
extern void chainverify_install(X509_STORE_CTX *ctx);

/* Pairs kept and signatures skipped so far (tests, DEBUG) */
extern void chainverify_counts(long *kept, long *skipped);

#endif							/* APPGUARD_CHAINVERIFY_H */
