/*-------------------------------------------------------------------------
 *
 * fuzz_tls.c
 *	  libFuzzer harness: a certificate chain as a server sends it -> facts.
 *
 * facts_tls_certificates() is what a probe runs on the chain and stapled
 * OCSP response a server sent: verification against the trust store with
 * the first error kept, OCSP, the chain as sent, and the leaf's names,
 * SANs, serial, dates, digests, key and policies.  Its output must be
 * valid UTF-8 and valid JSON whatever the certificates hold.  The
 * summary of a further address of a host (facts_tls_summary) must say
 * what the first address's (from the same work) says.
 *
 * Input: byte 0: bit 0 trusts the last certificate of the chain (so that
 * verification can succeed and reach the OCSP checks), bits 1-2 choose
 * the host name checked; then certificates, each as a 3-byte big-endian
 * length and that much DER (those OpenSSL cannot read are left out, as
 * the TLS stack would refuse them); what follows the last one is the
 * stapled OCSP response.
 *
 * Each certificate is read twice, as OpenSSL 3.0's decoder framework reads
 * it and as a handshake does in a probe, with its key decoded by the
 * library's built-in methods (keydecode.c): both must accept the same
 * certificates and read the same key from them.  The facts are taken from
 * the second, as a probe takes them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include "facts.h"
#include "jsonw.h"
#include "keydecode.h"
#include "shim.h"
#include "tls.h"

#define MAX_CERTS 16

static bool
same_text(const char *a, const char *b)
{
	return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/*
 * The DER read as a probe's handshake reads it, after checking that the
 * decoder framework reads the same certificate and key from it
 */
static X509 *
read_certificate(const unsigned char *der, long len)
{
	const unsigned char *p = der;
	X509	   *framework = d2i_X509(NULL, &p, len);
	long		framework_used = (long) (p - der);
	X509	   *builtin;
	EVP_PKEY   *fk;
	EVP_PKEY   *bk;

	p = der;
	keydecode_begin();
	builtin = d2i_X509(NULL, &p, len);
	keydecode_end();
	if ((framework == NULL) != (builtin == NULL))
		fuzz_fail("d2i_X509 %s the certificate with the decoder framework and %s it with the built-in key methods",
				  framework ? "read" : "refused", builtin ? "read" : "refused");
	if (builtin == NULL)
		return NULL;
	if ((long) (p - der) != framework_used)
		fuzz_fail("d2i_X509 read %ld bytes with the decoder framework, %ld with the built-in key methods",
				  framework_used, (long) (p - der));
	fk = X509_get0_pubkey(framework);
	bk = X509_get0_pubkey(builtin);
	if ((fk == NULL) != (bk == NULL))
		fuzz_fail("the certificate's key was %s by the decoder framework and %s by the built-in methods",
				  fk ? "read" : "not read", bk ? "read" : "not read");
	if (fk != NULL &&
		(EVP_PKEY_get_base_id(fk) != EVP_PKEY_get_base_id(bk) ||
		 EVP_PKEY_get_bits(fk) != EVP_PKEY_get_bits(bk) ||
		 EVP_PKEY_eq(fk, bk) != 1))
		fuzz_fail("the decoder framework and the built-in methods read different keys (types %d and %d, %d and %d bits)",
				  EVP_PKEY_get_base_id(fk), EVP_PKEY_get_base_id(bk),
				  EVP_PKEY_get_bits(fk), EVP_PKEY_get_bits(bk));
	X509_free(framework);
	return builtin;
}

static const char *const hosts[] = {
	"www.example.test", "example.test", "xn--bcher-kva.example.test", "a.b",
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	STACK_OF(X509) *chain;
	X509_STORE *store;
	StringInfoData buf;
	JsonWriter	jw;
	TlsSummary	full;
	TlsSummary	alone;
	size_t		off = 1;
	uint8_t		flags;
	int			n;

	if (size < 1)
		return 0;
	flags = data[0];
	chain = sk_X509_new_null();
	while (sk_X509_num(chain) < MAX_CERTS && off + 3 <= size)
	{
		size_t		len = ((size_t) data[off] << 16) | (data[off + 1] << 8) | data[off + 2];
		X509	   *cert;

		if (len > size - off - 3)
			break;
		cert = read_certificate(data + off + 3, (long) len);
		off += 3 + len;
		if (cert != NULL)
			sk_X509_push(chain, cert);
	}
	n = sk_X509_num(chain);
	ERR_clear_error();			/* what d2i_X509 refused is not the code's */
	store = X509_STORE_new();
	if ((flags & 1) && n > 0)
		X509_STORE_add_cert(store, sk_X509_value(chain, n - 1));

	jw_init(&jw);
	jw_begin_object(&jw, NULL);
	facts_tls_certificates(&jw, chain, store, hosts[(flags >> 1) & 3],
						   off < size ? data + off : NULL, (long) (size - off),
						   &full);
	jw_end_object(&jw);
	/* a further address's summary says the same as the first address's */
	facts_tls_summary(chain, store, hosts[(flags >> 1) & 3],
					  off < size ? data + off : NULL, (long) (size - off),
					  &alone);
	if (full.verified != alone.verified || full.verify_code != alone.verify_code ||
		!same_text(full.leaf_sha256, alone.leaf_sha256) ||
		!same_text(full.spki_sha256, alone.spki_sha256) ||
		!same_text(full.validation, alone.validation) ||
		full.subject_o_len != alone.subject_o_len ||
		(full.subject_o_len > 0 &&
		 memcmp(full.subject_o, alone.subject_o, full.subject_o_len) != 0))
		fuzz_fail("facts_tls_summary differs from the summary of facts_tls_certificates");
	if (jw.depth != 0)
		fuzz_fail("unbalanced JSON writer depth %d", jw.depth);
	initStringInfo(&buf);
	jw_text(&buf, jw.result);
	check_json(buf.data, buf.len, "tls facts");
	if (ERR_peek_error() != 0)
		fuzz_fail("facts_tls_certificates left an OpenSSL error queued");

	X509_STORE_free(store);
	sk_X509_pop_free(chain, X509_free);
	ERR_clear_error();
	shim_reset();
	return 0;
}
