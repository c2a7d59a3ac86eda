/*-------------------------------------------------------------------------
 *
 * tls.c
 *	  OpenSSL client context, trust store and non-blocking handshake steps.
 *
 * The handshake itself verifies nothing (SSL_VERIFY_NONE) and accepts the
 * lowest security level: a weak or broken server is a fact to record, so
 * the handshake must complete.  The certificates are verified afterwards,
 * against the trust store, by facts_tls.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <openssl/err.h>

#include "tls.h"

SSL_CTX *
tls_client_context(void)
{
	SSL_CTX    *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a TLS client context: %s",
						ERR_reason_error_string(ERR_get_error()))));
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, 0);	/* lowest the library has */
	SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);

	/*
	 * Read what the socket holds at once rather than a record header and
	 * then its body: the server's flight (hello, certificates, verify,
	 * finished) takes one or two read() calls instead of two per record.
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
	return ctx;
}

X509_STORE *
tls_trust_store(const char *ca_file)
{
	X509_STORE *store;
	bool		loaded;

	ERR_clear_error();
	store = X509_STORE_new();
	if (store == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a certificate store")));
	if (ca_file != NULL && ca_file[0] != '\0')
		loaded = X509_STORE_load_file(store, ca_file) == 1;
	else
		loaded = X509_STORE_set_default_paths(store) == 1;
	if (!loaded)
	{
		unsigned long err = ERR_get_error();

		X509_STORE_free(store);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load trusted certificates from \"%s\": %s",
						ca_file && ca_file[0] ? ca_file : "the system default store",
						err ? ERR_reason_error_string(err) : "unknown error"),
				 errhint("Check appguard.ca_file.")));
	}
	return store;
}

static char *
openssl_error_text(const char *what)
{
	unsigned long err = ERR_get_error();
	const char *reason = err ? ERR_reason_error_string(err) : NULL;

	ERR_clear_error();
	return psprintf("%s: %s", what, reason ? reason : "unknown OpenSSL error");
}

SSL *
tls_start(SSL_CTX *ctx, int sock, const char *sni, char **error)
{
	SSL		   *ssl;

	ERR_clear_error();
	ssl = SSL_new(ctx);
	if (ssl == NULL)
	{
		*error = openssl_error_text("could not create a TLS session");
		return NULL;
	}
	if (SSL_set_fd(ssl, sock) != 1 ||
		SSL_set_tlsext_host_name(ssl, sni) != 1 ||
		SSL_set_tlsext_status_type(ssl, TLSEXT_STATUSTYPE_ocsp) != 1)
	{
		*error = openssl_error_text("could not set up the TLS session");
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

TlsStep
tls_handshake_step(SSL *ssl, char **error)
{
	int			rc;
	int			saved_errno;

	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(ssl);
	saved_errno = errno;
	if (rc == 1)
		return TLS_STEP_DONE;
	switch (SSL_get_error(ssl, rc))
	{
		case SSL_ERROR_WANT_READ:
			return TLS_STEP_WANT_READ;
		case SSL_ERROR_WANT_WRITE:
			return TLS_STEP_WANT_WRITE;
		case SSL_ERROR_SYSCALL:
			if (ERR_peek_error() != 0)
				*error = openssl_error_text("TLS handshake failed");
			else if (saved_errno != 0)
				*error = psprintf("TLS handshake failed: %s", strerror(saved_errno));
			else
				*error = pstrdup("TLS handshake failed: the server closed the connection");
			return TLS_STEP_FAILED;
		case SSL_ERROR_ZERO_RETURN:
			*error = pstrdup("TLS handshake failed: the server closed the connection");
			ERR_clear_error();
			return TLS_STEP_FAILED;
		default:
			*error = openssl_error_text("TLS handshake failed");
			return TLS_STEP_FAILED;
	}
}

void
tls_close(SSL *ssl)
{
	if (ssl == NULL)
		return;
	/* a polite close_notify if the socket takes it now; never wait for it */
	if (SSL_is_init_finished(ssl))
		(void) SSL_shutdown(ssl);
	SSL_free(ssl);
	ERR_clear_error();
}
