/*-------------------------------------------------------------------------
 *
 * facts.h
 *	  The facts document of a probe: facts.c (the whole document),
 *	  facts_dns.c (its "dns" object), facts_tls.c (the certificate facts of
 *	  its "tls" object).
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_FACTS_H
#define APPGUARD_FACTS_H

#include "postgres.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "jsonw.h"
#include "probe.h"
#include "utils/jsonb.h"

struct Engine;

/* The whole facts document of a finished probe (facts.c) */
extern Jsonb *facts_document(struct Engine *engine, Probe *probe);

/* Write the "dns" object of the facts document (facts_dns.c) */
extern void facts_dns(JsonWriter *jw, Probe *probe);

/*
 * Append the certificate facts of a TLS connection to an open "tls" object:
 * verification, OCSP, the chain as sent and the leaf (facts_tls.c).  Pure
 * function of its arguments, so that the fuzzers can feed it arbitrary
 * chains.
 */
extern void facts_tls_certificates(JsonWriter *jw, STACK_OF(X509) *chain,
								   X509_STORE *store, const char *host,
								   const unsigned char *ocsp, long ocsp_len);

#endif							/* APPGUARD_FACTS_H */
