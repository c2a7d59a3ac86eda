/*-------------------------------------------------------------------------
 *
 * keydecode.c
 *	  Certificate public keys decoded by OpenSSL's built-in methods, while
 *	  a handshake or a trust store parses certificates (OpenSSL 3.0 only).
 *
 * OpenSSL 3.0 decodes the public key of every certificate it parses
 * (d2i_X509, inside SSL_do_handshake for the server's chain) through its
 * decoder framework, which builds a decoder context from every provider's
 * decoders each time: about 75 microseconds and 1.5 million instructions a
 * certificate on this project's machine, where its built-in method takes
 * about 5 microseconds.
 * It is a known regression of the 3.0 series (openssl/openssl issues
 * 19119, 17950, 15199), eased in 3.1 and later, and it was about two
 * fifths of a probe's instructions: a handshake parses two certificates.
 *
 * OpenSSL 3.0 still has the 1.1 path: x509_pubkey_ex_d2i_ex() decodes a
 * key with its built-in ASN.1 method when an ENGINE is registered for the
 * key's type, and the provider decoders themselves end in those same
 * methods (ossl_d2i_X509_PUBKEY_INTERNAL), so the key read is the same.
 * This file keeps one ENGINE for the backend, which offers the library's
 * own built-in methods for RSA and EC keys (EVP_PKEY_meth_find) and
 * nothing else, and registers it only between keydecode_begin() and
 * keydecode_end(): around SSL_do_handshake() and a trust store's loading.
 * While it is registered the handshake's own signature check also runs
 * the built-in RSA or EC method; the rest of the process (PostgreSQL's
 * own TLS, pgcrypto) never sees it.  The keys decoded keep no reference to
 * the ENGINE (it implements no ASN.1 method), so they work the same after
 * keydecode_end(): later operations export them to the provider, as
 * OpenSSL does with any key built by the 1.1 functions.
 *
 * Only for OpenSSL 3.0.x, checked when compiling and at run time (the
 * library loaded may be newer than the headers); elsewhere both calls do
 * nothing.  Deprecated functions are used on purpose: the ENGINE API is
 * what reaches that path in 3.0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#if !defined(OPENSSL_NO_ENGINE)
#include <openssl/engine.h>
#endif

#include "keydecode.h"

#if OPENSSL_VERSION_NUMBER >= 0x30000000L && OPENSSL_VERSION_NUMBER < 0x30100000L \
	&& !defined(OPENSSL_NO_ENGINE)
#define KEYDECODE_ENGINE 1
#endif

#ifdef KEYDECODE_ENGINE

typedef enum KeydecodeState
{
	KEYDECODE_UNSET,			/* not tried yet in this backend */
	KEYDECODE_READY,			/* engine made; register it around parsing */
	KEYDECODE_OFF				/* another library, or the engine failed */
} KeydecodeState;

static KeydecodeState state = KEYDECODE_UNSET;
static ENGINE *engine = NULL;
static bool registered = false;

/* The key types whose built-in methods the engine offers */
static const int engine_nids[] = {EVP_PKEY_RSA, EVP_PKEY_EC};

/* ENGINE_PKEY_METHS_PTR: the list of types, or the built-in method of one */
static int
builtin_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
	(void) e;
	if (pmeth == NULL)
	{
		*nids = engine_nids;
		return lengthof(engine_nids);
	}
	for (size_t i = 0; i < lengthof(engine_nids); i++)
		if (engine_nids[i] == nid)
		{
			/* (the library's own method, never modified through this) */
			*pmeth = (EVP_PKEY_METHOD *) EVP_PKEY_meth_find(nid);
			return *pmeth != NULL;
		}
	*pmeth = NULL;
	return 0;
}

/* The library loaded is of the 3.0 series: the one with the slow decoding */
static bool
library_is_3_0(void)
{
	return (OpenSSL_version_num() & 0xFFF00000UL) == 0x30000000UL;
}

static void
make_engine(void)
{
	ENGINE	   *e;

	state = KEYDECODE_OFF;
	if (!library_is_3_0())
		return;
	e = ENGINE_new();
	if (e == NULL)
	{
		ERR_clear_error();
		return;
	}
	if (ENGINE_set_id(e, "appguard-builtin-keys") != 1
		|| ENGINE_set_name(e, "appguard: OpenSSL's built-in RSA and EC key methods") != 1
		|| ENGINE_set_pkey_meths(e, builtin_pkey_meths) != 1)
	{
		ENGINE_free(e);
		ERR_clear_error();
		return;
	}
	engine = e;
	state = KEYDECODE_READY;
}

void
keydecode_begin(void)
{
	if (state == KEYDECODE_UNSET)
		make_engine();
	if (state != KEYDECODE_READY || registered)
		return;
	if (ENGINE_register_pkey_meths(engine) == 1)
		registered = true;
	else
		ERR_clear_error();		/* parsing goes the decoder framework's way */
}

void
keydecode_end(void)
{
	if (!registered)
		return;
	ENGINE_unregister_pkey_meths(engine);
	registered = false;
}

bool
keydecode_in_use(void)
{
	if (state == KEYDECODE_UNSET)
		make_engine();
	return state == KEYDECODE_READY;
}

#else							/* !KEYDECODE_ENGINE */

void
keydecode_begin(void)
{
}

void
keydecode_end(void)
{
}

bool
keydecode_in_use(void)
{
	return false;
}

#endif							/* KEYDECODE_ENGINE */
