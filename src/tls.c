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
#include <sys/stat.h>
#include <openssl/err.h>

#include "keydecode.h"
#include "tls.h"

/*
 * Where a trust store came from: appguard.ca_file, or the system's default
 * file and directory, with what stat() said of each when it was loaded.
 */
typedef struct TrustFile
{
	char		path[MAXPGPATH];
	bool		exists;
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec mtime;
} TrustFile;

typedef struct TrustSources
{
	char		ca_file[MAXPGPATH];	/* the setting, "" for the default */
	TrustFile	file;
	TrustFile	dir;			/* the default store's directory */
} TrustSources;

/* The backend's client context and trust store: see tls_shared_context() */
static SSL_CTX *cached_ctx = NULL;
static X509_STORE *cached_store = NULL;
static TrustSources cached_sources;

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
	keydecode_begin();			/* (the store's certificates: keydecode.c) */
	if (ca_file != NULL && ca_file[0] != '\0')
		loaded = X509_STORE_load_file(store, ca_file) == 1;
	else
		loaded = X509_STORE_set_default_paths(store) == 1;
	keydecode_end();
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

static void
trust_file(TrustFile *f, const char *path)
{
	struct stat st;

	memset(f, 0, sizeof(*f));
	if (path == NULL)
		return;
	strlcpy(f->path, path, sizeof(f->path));
	if (stat(path, &st) != 0)
		return;
	f->exists = true;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtime = st.st_mtim;
}

static void
trust_sources(const char *ca_file, TrustSources *src)
{
	const char *env;

	memset(src, 0, sizeof(*src));
	if (ca_file != NULL && ca_file[0] != '\0')
	{
		strlcpy(src->ca_file, ca_file, sizeof(src->ca_file));
		trust_file(&src->file, ca_file);
		return;
	}
	/* as X509_STORE_set_default_paths() chooses them */
	env = getenv(X509_get_default_cert_file_env());
	trust_file(&src->file, env ? env : X509_get_default_cert_file());
	env = getenv(X509_get_default_cert_dir_env());
	trust_file(&src->dir, env ? env : X509_get_default_cert_dir());
}

/*
 * The client context and the trust store for appguard.ca_file, with a
 * reference each for the caller (SSL_CTX_free, X509_STORE_free).  Both are
 * kept for the backend's life and shared by every engine run: loading the
 * system's store parses every certificate of its bundle (144 on this
 * Debian, some 20 ms of CPU with OpenSSL 3.0), which each single-host
 * snapshot used to pay.  The store is loaded again when the setting
 * changes or the file (or the default directory) it came from changes on
 * disk: size, modification time, inode (update-ca-certificates and an
 * operator replacing a CA file both change them).  ereports on failure,
 * with nothing allocated.
 */
void
tls_shared_context(const char *ca_file, SSL_CTX **ctx, X509_STORE **store)
{
	TrustSources now;

	trust_sources(ca_file, &now);
	if (cached_store == NULL || memcmp(&now, &cached_sources, sizeof(now)) != 0)
	{
		X509_STORE *fresh = tls_trust_store(ca_file);

		if (cached_store != NULL)
			X509_STORE_free(cached_store);	/* engines keep their own refs */
		cached_store = fresh;
		cached_sources = now;
	}
	if (cached_ctx == NULL)
	{
		cached_ctx = tls_client_context();
		elog(DEBUG1, "appguard: certificate keys are decoded by %s",
			 keydecode_in_use() ? "OpenSSL's built-in RSA and EC methods (OpenSSL 3.0)"
			 : "OpenSSL's decoders");
	}
	if (!SSL_CTX_up_ref(cached_ctx))
		elog(ERROR, "could not take a reference to appguard's TLS context");
	if (!X509_STORE_up_ref(cached_store))
	{
		SSL_CTX_free(cached_ctx);	/* the reference just taken */
		elog(ERROR, "could not take a reference to appguard's trust store");
	}
	*ctx = cached_ctx;
	*store = cached_store;
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
		/* freed first: the message is palloc'd, and palloc may raise */
		SSL_free(ssl);
		*error = openssl_error_text("could not set up the TLS session");
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
	/* the server's certificates are parsed in here (keydecode.c) */
	keydecode_begin();
	rc = SSL_do_handshake(ssl);
	saved_errno = errno;
	keydecode_end();
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
