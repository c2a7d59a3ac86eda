/*-------------------------------------------------------------------------
 *
 * tls.h
 *	  Client-side TLS for probes: a permissive context (weak servers are
 *	  recorded, not refused), non-blocking handshakes, and the trust store
 *	  that certificates are verified against afterwards.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_TLS_H
#define APPGUARD_TLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "jsonw.h"

typedef enum TlsStep
{
	TLS_STEP_DONE,
	TLS_STEP_WANT_READ,
	TLS_STEP_WANT_WRITE,
	TLS_STEP_FAILED
} TlsStep;

/* Both ereport(ERROR) on failure, before anything else is allocated */
extern SSL_CTX *tls_client_context(void);
extern X509_STORE *tls_trust_store(const char *ca_file);

/* Both, kept for the backend and loaded again when their files change */
extern void tls_shared_context(const char *ca_file, SSL_CTX **ctx, X509_STORE **store);

/* NULL on failure, with *error set (palloc'd) */
extern SSL *tls_start(SSL_CTX *ctx, int sock, const char *sni, char **error);
extern TlsStep tls_handshake_step(SSL *ssl, char **error);
extern void tls_close(SSL *ssl);

#endif							/* APPGUARD_TLS_H */
