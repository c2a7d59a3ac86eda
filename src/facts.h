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
extern Jsonb *jw_jsonb(const JwNode *root);

/* Write the "dns" object of the facts document (facts_dns.c) */
extern void facts_dns(JsonWriter *jw, Probe *probe);

/*
 * What the per-address list (facts_addresses.c) says of one address's
 * certificate: whether it verified for the host name (a stapled OCSP
 * revocation included), the leaf's digests, subject O, validation class and
 * end of validity.
 * Strings are palloc'd; verify_error points to static text.
 */
typedef struct TlsSummary
{
	bool		verified;
	int			verify_code;
	const char *verify_error;	/* NULL when verified */
	char	   *leaf_sha256;
	char	   *spki_sha256;
	char	   *subject_o;		/* NULL when the subject has none */
	int			subject_o_len;
	const char *validation;		/* DV, OV, IV, EV or NULL */
	char	   *not_after;		/* the leaf's, ISO 8601 UTC, or NULL */
} TlsSummary;

/*
 * Append the certificate facts of a TLS connection to an open "tls" object:
 * verification, OCSP, the chain as sent and the leaf (facts_tls.c).  Pure
 * function of its arguments, so that the fuzzers can feed it arbitrary
 * chains.  With a summary, also fills it from the same work.
 */
extern void facts_tls_certificates(JsonWriter *jw, STACK_OF(X509) *chain,
								   X509_STORE *store, const char *host,
								   const unsigned char *ocsp, long ocsp_len,
								   TlsSummary *summary);

/*
 * Only the summary, for the further addresses of a host: verification and
 * the leaf's digests, subject O and class, without the rest of the facts.
 */
extern void facts_tls_summary(STACK_OF(X509) *chain, X509_STORE *store,
							  const char *host, const unsigned char *ocsp,
							  long ocsp_len, TlsSummary *summary);

/* Write the "tls_addresses" list of a probe (facts_addresses.c) */
extern void facts_addresses(JsonWriter *jw, Probe *probe);

#endif							/* APPGUARD_FACTS_H */
