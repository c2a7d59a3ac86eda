/*-------------------------------------------------------------------------
 *
 * facts_tls.c
 *	  Certificate facts: verification against the trust store, stapled
 *	  OCSP, the chain as sent, and the leaf's identity.
 *
 * Verification runs after the handshake with a callback that records the
 * first error and carries on, so a certificate that fails verification is
 * still described in full.  The verification level is 2 (RSA keys of at
 * least 2048 bits): a weak key is a verification error, while the
 * handshake that preceded it was allowed to complete.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "chainverify.h"
#include "facts.h"
#include "tls.h"

/* Policy OIDs of the CA/Browser Forum validation classes */
#define OID_EV "2.23.140.1.1"
#define OID_DV "2.23.140.1.2.1"
#define OID_OV "2.23.140.1.2.2"
#define OID_IV "2.23.140.1.2.3"

/* Leeway for OCSP thisUpdate/nextUpdate, as in `openssl ocsp` */
#define OCSP_VALIDITY_LEEWAY_SECONDS 300

typedef struct VerifyResult
{
	bool		verified;
	int			code;			/* first X509_V_ERR_*, 0 when verified */
	int			depth;
	bool		hostname_match;
	X509	   *issuer;			/* leaf's issuer (own reference) or NULL */
	const char *ocsp;			/* good, revoked, unknown, or NULL */
	const char *ocsp_error;
} VerifyResult;

/* OpenSSL objects that must be freed even if an ERROR unwinds */
typedef struct TlsScratch
{
	X509_STORE_CTX *vctx;
	STACK_OF(X509) *untrusted;	/* the chain given to verification */
	OCSP_RESPONSE *resp;
	OCSP_BASICRESP *basic;
	OCSP_CERTID *certid;
	GENERAL_NAMES *sans;
	CERTIFICATEPOLICIES *policies;
	BIO		   *bio;
	unsigned char *der;
} TlsScratch;

static void
scratch_free(TlsScratch *s)
{
	X509_STORE_CTX_free(s->vctx);
	sk_X509_pop_free(s->untrusted, X509_free);
	OCSP_RESPONSE_free(s->resp);
	OCSP_BASICRESP_free(s->basic);
	OCSP_CERTID_free(s->certid);
	GENERAL_NAMES_free(s->sans);
	CERTIFICATEPOLICIES_free(s->policies);
	BIO_free(s->bio);
	OPENSSL_free(s->der);
	memset(s, 0, sizeof(*s));
}

/* Keep the first error; returning 1 lets verification see the whole chain */
static int
record_first_error(int ok, X509_STORE_CTX *ctx)
{
	VerifyResult *result = X509_STORE_CTX_get_app_data(ctx);

	if (!ok && result->code == 0)
	{
		result->code = X509_STORE_CTX_get_error(ctx);
		result->depth = X509_STORE_CTX_get_error_depth(ctx);
	}
	return 1;
}

/*
 * The certificates a server sends after its leaf (its issuers), decoded for
 * an earlier host, by DER: hosts under one CA send the same intermediate,
 * and verifying with the decoded copy kept from before skips what OpenSSL
 * works out once per certificate object (its extensions and digest, the
 * Montgomery form of its public key for checking the leaf's signature).
 * Every signature is checked as before: a copy only stands in for a
 * certificate with the same DER.  Kept for the backend, at most
 * KNOWN_ISSUERS, each slot replaced in turn.  OpenSSL's memory only: no
 * ERROR can leave a slot half made.
 */
#define KNOWN_ISSUERS 16

typedef struct KnownIssuer
{
	unsigned char *der;			/* OPENSSL_malloc'd */
	int			der_len;
	X509	   *cert;			/* a reference of the cache's */
} KnownIssuer;

static KnownIssuer known_issuers[KNOWN_ISSUERS];
static int	next_known_issuer = 0;

/* cert, or the copy of its DER kept from an earlier host: a new reference */
static X509 *
known_issuer(X509 *cert)
{
	unsigned char *der = NULL;
	int			len = i2d_X509(cert, &der);
	KnownIssuer *slot;

	if (len > 0)
	{
		for (int i = 0; i < KNOWN_ISSUERS; i++)
		{
			slot = &known_issuers[i];
			if (slot->cert != NULL && slot->der_len == len &&
				memcmp(slot->der, der, len) == 0 && X509_up_ref(slot->cert))
			{
				OPENSSL_free(der);
				return slot->cert;
			}
		}
		if (X509_up_ref(cert))
		{
			slot = &known_issuers[next_known_issuer];
			next_known_issuer = (next_known_issuer + 1) % KNOWN_ISSUERS;
			X509_free(slot->cert);
			OPENSSL_free(slot->der);
			slot->der = der;
			slot->der_len = len;
			slot->cert = cert;
			der = NULL;
		}
	}
	OPENSSL_free(der);
	if (!X509_up_ref(cert))
		return NULL;
	return cert;
}

/*
 * The chain as sent, each issuer replaced by its kept copy (each element a
 * reference of the stack's), or NULL if that fails
 */
static STACK_OF(X509) *
verification_chain(STACK_OF(X509) *chain)
{
	int			n = sk_X509_num(chain);
	STACK_OF(X509) *untrusted = sk_X509_new_reserve(NULL, n);

	if (untrusted == NULL)
		return NULL;
	for (int i = 0; i < n; i++)
	{
		X509	   *cert = sk_X509_value(chain, i);
		X509	   *use;

		if (i == 0)
			use = X509_up_ref(cert) ? cert : NULL;
		else
			use = known_issuer(cert);
		if (use == NULL || !sk_X509_push(untrusted, use))
		{
			X509_free(use);
			sk_X509_pop_free(untrusted, X509_free);
			return NULL;
		}
	}
	return untrusted;
}

static X509 *
find_issuer_in_chain(STACK_OF(X509) *chain, X509 *cert)
{
	for (int i = 0; i < sk_X509_num(chain); i++)
	{
		X509	   *candidate = sk_X509_value(chain, i);

		if (candidate != cert && X509_check_issued(candidate, cert) == X509_V_OK)
		{
			X509_up_ref(candidate);
			return candidate;
		}
	}
	return NULL;
}

static void
verify_chain(TlsScratch *s, STACK_OF(X509) *chain, X509_STORE *store,
			 const char *host, VerifyResult *result)
{
	X509	   *leaf = sk_X509_value(chain, 0);
	X509_VERIFY_PARAM *param;
	int			rc;

	result->hostname_match = X509_check_host(leaf, host, 0, 0, NULL) == 1;
	s->untrusted = verification_chain(chain);
	s->vctx = X509_STORE_CTX_new();
	if (s->vctx == NULL ||
		!X509_STORE_CTX_init(s->vctx, store, leaf, s->untrusted ? s->untrusted : chain))
	{
		result->code = X509_V_ERR_UNSPECIFIED;
		return;
	}
	param = X509_STORE_CTX_get0_param(s->vctx);
	X509_VERIFY_PARAM_set1_host(param, host, 0);
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	X509_STORE_CTX_set_purpose(s->vctx, X509_PURPOSE_SSL_SERVER);
	X509_STORE_CTX_set_app_data(s->vctx, result);
	X509_STORE_CTX_set_verify_cb(s->vctx, record_first_error);
	chainverify_install(s->vctx);
	rc = X509_verify_cert(s->vctx);
	if (rc <= 0 && result->code == 0)
		result->code = X509_STORE_CTX_get_error(s->vctx);
	if (rc <= 0 && result->code == 0)
		result->code = X509_V_ERR_UNSPECIFIED;
	result->verified = (result->code == 0);
#ifdef APPGUARD_CHAINVERIFY_CROSSCHECK
	{
		/* the same verification with OpenSSL's own step: the same result? */
		X509_STORE_CTX *v2 = X509_STORE_CTX_new();
		VerifyResult r2;
		int			rc2;

		memset(&r2, 0, sizeof(r2));
		if (v2 && X509_STORE_CTX_init(v2, store, leaf, s->untrusted ? s->untrusted : chain))
		{
			param = X509_STORE_CTX_get0_param(v2);
			X509_VERIFY_PARAM_set1_host(param, host, 0);
			X509_VERIFY_PARAM_set_auth_level(param, 2);
			X509_STORE_CTX_set_purpose(v2, X509_PURPOSE_SSL_SERVER);
			X509_STORE_CTX_set_app_data(v2, &r2);
			X509_STORE_CTX_set_verify_cb(v2, record_first_error);
			rc2 = X509_verify_cert(v2);
			if (rc2 <= 0 && r2.code == 0)
				r2.code = X509_STORE_CTX_get_error(v2);
			if (rc2 <= 0 && r2.code == 0)
				r2.code = X509_V_ERR_UNSPECIFIED;
			if (rc2 != rc || r2.code != result->code || r2.depth != result->depth ||
				X509_STORE_CTX_get_error(v2) != X509_STORE_CTX_get_error(s->vctx) ||
				X509_STORE_CTX_get_error_depth(v2) != X509_STORE_CTX_get_error_depth(s->vctx))
				elog(WARNING, "CHAINVERIFY-MISMATCH %s: rc %d/%d code %d/%d depth %d/%d",
					 host, rc, rc2, result->code, r2.code, result->depth, r2.depth);
			else
			{
				long		kept,
							skipped;

				chainverify_counts(&kept, &skipped);
				elog(LOG, "CHAINVERIFY-SAME %s: rc %d code %d depth %d chain %d kept %ld skipped %ld",
					 host, rc, r2.code, r2.depth,
					 sk_X509_num(X509_STORE_CTX_get0_chain(s->vctx)), kept, skipped);
			}
		}
		X509_STORE_CTX_free(v2);
	}
#endif

	/* the issuer as verification found it, else as the chain says */
	{
		STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(s->vctx);

		if (built != NULL && sk_X509_num(built) > 1)
		{
			result->issuer = sk_X509_value(built, 1);
			X509_up_ref(result->issuer);
		}
		else
			result->issuer = find_issuer_in_chain(chain, leaf);
	}
	X509_STORE_CTX_free(s->vctx);
	s->vctx = NULL;
	ERR_clear_error();
}

/* Read a stapled OCSP response; a revocation makes the leaf unverified */
static void
check_ocsp_staple(TlsScratch *s, STACK_OF(X509) *chain, X509_STORE *store,
				  const unsigned char *der, long len, VerifyResult *result)
{
	const unsigned char *p = der;
	int			status,
				reason;
	ASN1_GENERALIZEDTIME *revoked_at,
			   *this_update,
			   *next_update;

	if (der == NULL || len <= 0)
		return;					/* nothing stapled: ocsp stays null */
	result->ocsp = "unknown";
	s->resp = d2i_OCSP_RESPONSE(NULL, &p, len);
	if (s->resp == NULL)
	{
		result->ocsp_error = "malformed OCSP response";
		goto done;
	}
	if (OCSP_response_status(s->resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
	{
		result->ocsp_error = OCSP_response_status_str(OCSP_response_status(s->resp));
		goto done;
	}
	s->basic = OCSP_response_get1_basic(s->resp);
	if (s->basic == NULL || result->issuer == NULL)
	{
		result->ocsp_error = s->basic ? "issuer of the certificate not known" : "OCSP response has no basic response";
		goto done;
	}
	if (OCSP_basic_verify(s->basic, chain, store, 0) <= 0)
	{
		result->ocsp_error = "OCSP response signature does not verify";
		goto done;
	}
	s->certid = OCSP_cert_to_id(NULL, sk_X509_value(chain, 0), result->issuer);
	if (s->certid == NULL ||
		!OCSP_resp_find_status(s->basic, s->certid, &status, &reason,
							   &revoked_at, &this_update, &next_update))
	{
		result->ocsp_error = "OCSP response does not cover this certificate";
		goto done;
	}
	if (!OCSP_check_validity(this_update, next_update,
							 OCSP_VALIDITY_LEEWAY_SECONDS, -1))
	{
		result->ocsp_error = "OCSP response is outside its validity period";
		goto done;
	}
	if (status == V_OCSP_CERTSTATUS_GOOD)
		result->ocsp = "good";
	else if (status == V_OCSP_CERTSTATUS_REVOKED)
	{
		result->ocsp = "revoked";
		if (result->verified)
		{
			result->verified = false;
			result->code = X509_V_ERR_CERT_REVOKED;
			result->depth = 0;
		}
	}
done:
	ERR_clear_error();
}

static char *
hex_string(const unsigned char *bytes, unsigned int len)
{
	static const char digits[] = "0123456789abcdef";
	char	   *out = palloc(len * 2 + 1);

	/* not a sprintf per byte: this runs five times a host */
	for (unsigned int i = 0; i < len; i++)
	{
		out[i * 2] = digits[bytes[i] >> 4];
		out[i * 2 + 1] = digits[bytes[i] & 0x0f];
	}
	out[len * 2] = '\0';
	return out;
}

/*
 * SHA-256, fetched from the provider once for the backend: EVP_sha256()
 * makes every EVP_Digest() look the implementation up again (OpenSSL 3),
 * which cost about as much as hashing a certificate.
 */
static char *
sha256_hex(const unsigned char *data, size_t len)
{
	static EVP_MD *sha256 = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (sha256 == NULL)
		sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);	/* kept: malloc'd */
	if (!EVP_Digest(data, len, md, &mdlen, sha256 ? sha256 : EVP_sha256(), NULL))
		return NULL;
	return hex_string(md, mdlen);
}

/*
 * Find the TBSCertificate inside a certificate's DER: the first element of
 * the outer SEQUENCE.  Hashing these bytes, not a re-encoding, is what a
 * pin on the to-be-signed part means.
 */
static bool
der_first_inner_element(const unsigned char *der, long len,
						const unsigned char **elem, long *elem_len)
{
	const unsigned char *p = der;
	long		outer_len,
				inner_len;
	int			tag,
				xclass;

	if (ASN1_get_object(&p, &outer_len, &tag, &xclass, len) & 0x80)
		return false;
	*elem = p;
	if (ASN1_get_object(&p, &inner_len, &tag, &xclass, outer_len) & 0x80)
		return false;
	*elem_len = (p - *elem) + inner_len;
	return *elem_len <= len - (*elem - der);
}

/* A name as RFC 2253 text; the scratch's memory BIO is kept for the next */
static char *
name_rfc2253(TlsScratch *s, X509_NAME *name)
{
	char	   *data;
	long		len;
	char	   *copy;

	if (s->bio == NULL)
		s->bio = BIO_new(BIO_s_mem());
	else
		(void) BIO_reset(s->bio);
	if (s->bio == NULL)
		return NULL;
	X509_NAME_print_ex(s->bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	len = BIO_get_mem_data(s->bio, &data);
	copy = palloc(len + 1);
	if (len > 0)				/* an empty name leaves data NULL */
		memcpy(copy, data, len);
	copy[len] = '\0';
	return copy;
}

/*
 * The chain's names in order (each certificate's subject, then issuer):
 * a name whose DER is the previous one's (an issuer and the next
 * certificate's subject, in a chain in order) has the same text.
 */
typedef struct NameText
{
	const unsigned char *der;
	size_t		der_len;
	char	   *text;
} NameText;

static char *
chain_name(TlsScratch *s, NameText *last, X509_NAME *name)
{
	const unsigned char *der;
	size_t		der_len;

	if (!X509_NAME_get0_der(name, &der, &der_len))
		return name_rfc2253(s, name);
	if (last->text == NULL || der_len != last->der_len ||
		memcmp(der, last->der, der_len) != 0)
	{
		last->text = name_rfc2253(s, name);
		last->der = der;
		last->der_len = der_len;
	}
	return last->text;
}

static void
write_name_parts(JsonWriter *jw, const char *key, X509_NAME *name)
{
	static const struct
	{
		int			nid;
		const char *key;
	}			parts[] = {
		{NID_commonName, "CN"},
		{NID_organizationName, "O"},
		{NID_organizationalUnitName, "OU"},
		{NID_countryName, "C"},
		{NID_stateOrProvinceName, "ST"},
		{NID_localityName, "L"},
	};

	jw_begin_object(jw, key);
	for (int i = 0; i < (int) lengthof(parts); i++)
	{
		int			idx = X509_NAME_get_index_by_NID(name, parts[i].nid, -1);
		ASN1_STRING *value;

		if (idx < 0)
			continue;
		value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
		if (value != NULL)
			jw_string_bytes(jw, parts[i].key,
							(const char *) ASN1_STRING_get0_data(value),
							ASN1_STRING_length(value));
	}
	jw_end_object(jw);
}

/* An ASN1_TIME as ISO 8601 UTC (palloc'd), or NULL if it cannot be read */
static char *
time_text(const ASN1_TIME *t)
{
	struct tm	tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return NULL;
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02dZ",
					tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void
write_time(JsonWriter *jw, const char *key, const ASN1_TIME *t)
{
	char	   *text = time_text(t);

	if (text == NULL)
		jw_null(jw, key);
	else
		jw_string(jw, key, text);
}

static void
write_serial(JsonWriter *jw, X509 *cert)
{
	BIGNUM	   *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char	   *hex = bn ? BN_bn2hex(bn) : NULL;

	BN_free(bn);
	if (hex == NULL)
	{
		jw_null(jw, "serial");
		return;
	}
	PG_TRY();
	{
		jw_string(jw, "serial", hex);
	}
	PG_FINALLY();
	{
		OPENSSL_free(hex);
	}
	PG_END_TRY();
}

static void
write_sans(TlsScratch *s, JsonWriter *jw, X509 *cert)
{
	jw_begin_array(jw, "san_dns");
	s->sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; i < sk_GENERAL_NAME_num(s->sans); i++)
	{
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(s->sans, i);

		if (gn->type == GEN_DNS)
			jw_string_bytes(jw, NULL,
							(const char *) ASN1_STRING_get0_data(gn->d.dNSName),
							ASN1_STRING_length(gn->d.dNSName));
	}
	GENERAL_NAMES_free(s->sans);
	s->sans = NULL;
	jw_end_array(jw);
}

/*
 * Write the policy OIDs (unless jw is NULL) and return the validation class
 * they imply
 */
static const char *
write_policies(TlsScratch *s, JsonWriter *jw, X509 *cert)
{
	bool		ev = false,
				ov = false,
				iv = false,
				dv = false;

	if (jw)
		jw_begin_array(jw, "policies");
	s->policies = X509_get_ext_d2i(cert, NID_certificate_policies, NULL, NULL);
	for (int i = 0; i < sk_POLICYINFO_num(s->policies); i++)
	{
		POLICYINFO *pi = sk_POLICYINFO_value(s->policies, i);
		char		oid[128];

		if (OBJ_obj2txt(oid, sizeof(oid), pi->policyid, 1) <= 0)
			continue;
		if (jw)
			jw_string(jw, NULL, oid);
		ev |= strcmp(oid, OID_EV) == 0;
		ov |= strcmp(oid, OID_OV) == 0;
		iv |= strcmp(oid, OID_IV) == 0;
		dv |= strcmp(oid, OID_DV) == 0;
	}
	CERTIFICATEPOLICIES_free(s->policies);
	s->policies = NULL;
	if (jw)
		jw_end_array(jw);
	return ev ? "EV" : ov ? "OV" : iv ? "IV" : dv ? "DV" : NULL;
}

static const char *
key_type_name(EVP_PKEY *key)
{
	switch (EVP_PKEY_get_base_id(key))
	{
		case EVP_PKEY_RSA:
			return "RSA";
		case EVP_PKEY_RSA_PSS:
			return "RSA-PSS";
		case EVP_PKEY_EC:
			return "EC";
		case EVP_PKEY_DSA:
			return "DSA";
		case EVP_PKEY_ED25519:
			return "Ed25519";
		case EVP_PKEY_ED448:
			return "Ed448";
		default:
			return OBJ_nid2sn(EVP_PKEY_get_base_id(key));
	}
}

/*
 * SHA-256 of the leaf's DER (unless known: the chain's list has it already),
 * of its TBSCertificate (when tbs_sha256 is given) and of its
 * SubjectPublicKeyInfo
 */
static void
leaf_digests(TlsScratch *s, X509 *cert, char *known_sha256, char **sha256,
			 char **spki_sha256, char **tbs_sha256)
{
	int			len;
	const unsigned char *tbs;
	long		tbs_len;

	*sha256 = *spki_sha256 = NULL;
	if (tbs_sha256)
		*tbs_sha256 = NULL;
	len = i2d_X509(cert, &s->der);
	if (known_sha256)
		*sha256 = known_sha256;
	else if (len > 0)
		*sha256 = sha256_hex(s->der, len);
	if (tbs_sha256 && len > 0 &&
		der_first_inner_element(s->der, len, &tbs, &tbs_len))
		*tbs_sha256 = sha256_hex(tbs, tbs_len);
	OPENSSL_free(s->der);
	s->der = NULL;

	len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &s->der);
	if (len > 0)
		*spki_sha256 = sha256_hex(s->der, len);
	OPENSSL_free(s->der);
	s->der = NULL;
}

/* The DER-derived digests: certificate, SubjectPublicKeyInfo, TBS */
static void
write_digests(TlsScratch *s, JsonWriter *jw, X509 *cert, char *known_sha256,
			  TlsSummary *summary)
{
	char	   *sha256;
	char	   *spki_sha256;
	char	   *tbs_sha256;

	leaf_digests(s, cert, known_sha256, &sha256, &spki_sha256, &tbs_sha256);
	jw_string(jw, "sha256", sha256);
	jw_string(jw, "tbs_sha256", tbs_sha256);
	jw_string(jw, "spki_sha256", spki_sha256);
	if (summary)
	{
		summary->leaf_sha256 = sha256;
		summary->spki_sha256 = spki_sha256;
	}
}

/* The subject's O as the certificate has it (bytes, may hold any value) */
static void
summarize_subject_o(X509 *leaf, TlsSummary *summary)
{
	X509_NAME  *name = X509_get_subject_name(leaf);
	int			idx = X509_NAME_get_index_by_NID(name, NID_organizationName, -1);
	ASN1_STRING *value;

	summary->subject_o = NULL;
	summary->subject_o_len = 0;
	if (idx < 0)
		return;
	value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
	if (value == NULL)
		return;
	summary->subject_o_len = ASN1_STRING_length(value);
	summary->subject_o = palloc(summary->subject_o_len + 1);
	memcpy(summary->subject_o, ASN1_STRING_get0_data(value), summary->subject_o_len);
	summary->subject_o[summary->subject_o_len] = '\0';
}

static void
write_leaf(TlsScratch *s, JsonWriter *jw, X509 *leaf, char *leaf_sha256,
		   TlsSummary *summary)
{
	EVP_PKEY   *key = X509_get0_pubkey(leaf);
	int			signid = X509_get_signature_nid(leaf);
	const char *validation;

	jw_begin_object(jw, "leaf");
	write_name_parts(jw, "subject", X509_get_subject_name(leaf));
	write_name_parts(jw, "issuer", X509_get_issuer_name(leaf));
	write_sans(s, jw, leaf);
	write_serial(jw, leaf);
	write_time(jw, "not_before", X509_get0_notBefore(leaf));
	write_time(jw, "not_after", X509_get0_notAfter(leaf));
	write_digests(s, jw, leaf, leaf_sha256, summary);
	jw_string(jw, "key_type", key ? key_type_name(key) : NULL);
	if (key)
		jw_int(jw, "key_bits", EVP_PKEY_get_bits(key));
	else
		jw_null(jw, "key_bits");
	jw_string(jw, "signature_algorithm",
			  signid != NID_undef ? OBJ_nid2ln(signid) : NULL);
	validation = write_policies(s, jw, leaf);
	jw_string(jw, "validation", validation);
	jw_end_object(jw);
	if (summary)
	{
		summary->validation = validation;
		summarize_subject_o(leaf, summary);
		summary->not_after = time_text(X509_get0_notAfter(leaf));
	}
}

/*
 * What the chain's list says of a certificate after the leaf (an issuer),
 * kept by DER for the backend: hosts under one CA send the same
 * intermediate, whose issuer's name and SHA-256 each host computed again.
 * At most KNOWN_CHAIN_CERTS, each slot replaced in turn; OpenSSL's memory
 * only (nothing here can ERROR and leave a slot half made).
 */
#define KNOWN_CHAIN_CERTS 16

typedef struct KnownChainCert
{
	unsigned char *der;			/* NULL: a free slot */
	int			der_len;
	char	   *subject;
	char	   *issuer;
	char	   *sha256;			/* NULL if it could not be computed */
} KnownChainCert;

static KnownChainCert known_chain_certs[KNOWN_CHAIN_CERTS];
static int	next_known_chain_cert = 0;

static const KnownChainCert *
known_chain_cert(const unsigned char *der, int len)
{
	for (int i = 0; i < KNOWN_CHAIN_CERTS; i++)
	{
		const KnownChainCert *k = &known_chain_certs[i];

		if (k->der != NULL && k->der_len == len && memcmp(k->der, der, len) == 0)
			return k;
	}
	return NULL;
}

static void
keep_chain_cert(const unsigned char *der, int len, const char *subject,
				const char *issuer, const char *sha256)
{
	KnownChainCert fresh;
	KnownChainCert *slot;

	if (subject == NULL || issuer == NULL)
		return;
	fresh.der = OPENSSL_memdup(der, len);
	fresh.der_len = len;
	fresh.subject = OPENSSL_strdup(subject);
	fresh.issuer = OPENSSL_strdup(issuer);
	fresh.sha256 = sha256 ? OPENSSL_strdup(sha256) : NULL;
	if (fresh.der == NULL || fresh.subject == NULL || fresh.issuer == NULL ||
		(sha256 != NULL && fresh.sha256 == NULL))
	{
		OPENSSL_free(fresh.der);
		OPENSSL_free(fresh.subject);
		OPENSSL_free(fresh.issuer);
		OPENSSL_free(fresh.sha256);
		return;
	}
	slot = &known_chain_certs[next_known_chain_cert];
	next_known_chain_cert = (next_known_chain_cert + 1) % KNOWN_CHAIN_CERTS;
	OPENSSL_free(slot->der);
	OPENSSL_free(slot->subject);
	OPENSSL_free(slot->issuer);
	OPENSSL_free(slot->sha256);
	*slot = fresh;
}

/* The chain's list; returns the first certificate's (the leaf's) SHA-256 */
static char *
write_chain(TlsScratch *s, JsonWriter *jw, STACK_OF(X509) *chain)
{
	bool		in_order = true;
	int			n = sk_X509_num(chain);
	char	   *leaf_sha256 = NULL;
	NameText	last = {0};

	for (int i = 0; i + 1 < n; i++)
		if (X509_NAME_cmp(X509_get_issuer_name(sk_X509_value(chain, i)),
						  X509_get_subject_name(sk_X509_value(chain, i + 1))) != 0)
			in_order = false;
	jw_bool(jw, "chain_in_order", in_order);

	jw_begin_array(jw, "chain");
	for (int i = 0; i < n; i++)
	{
		X509	   *cert = sk_X509_value(chain, i);
		int			len;
		char	   *sha256;
		const KnownChainCert *known = NULL;
		const unsigned char *issuer_der;
		size_t		issuer_der_len;

		jw_begin_object(jw, NULL);
		len = i2d_X509(cert, &s->der);
		if (i > 0 && len > 0)
			known = known_chain_cert(s->der, len);
		if (known != NULL &&
			X509_NAME_get0_der(X509_get_issuer_name(cert), &issuer_der, &issuer_der_len))
		{
			/* as chain_name would print them, and the issuer is the last */
			jw_string(jw, "subject", known->subject);
			jw_string(jw, "issuer", known->issuer);
			last.text = pstrdup(known->issuer);
			last.der = issuer_der;
			last.der_len = issuer_der_len;
			sha256 = known->sha256 ? pstrdup(known->sha256) : NULL;
		}
		else
		{
			char	   *subject = chain_name(s, &last, X509_get_subject_name(cert));
			char	   *issuer = chain_name(s, &last, X509_get_issuer_name(cert));

			jw_string(jw, "subject", subject);
			jw_string(jw, "issuer", issuer);
			sha256 = len > 0 ? sha256_hex(s->der, len) : NULL;
			if (i > 0 && len > 0)
				keep_chain_cert(s->der, len, subject, issuer, sha256);
		}
		jw_string(jw, "sha256", sha256);
		OPENSSL_free(s->der);
		s->der = NULL;
		jw_end_object(jw);
		if (i == 0)
			leaf_sha256 = sha256;
	}
	jw_end_array(jw);
	return leaf_sha256;
}

static void
summarize_verification(const VerifyResult *result, TlsSummary *summary)
{
	summary->verified = result->verified;
	summary->verify_code = result->code;
	summary->verify_error = result->verified ? NULL :
		X509_verify_cert_error_string(result->code);
}

static void
summarize_no_certificate(TlsSummary *summary)
{
	memset(summary, 0, sizeof(*summary));
	summary->verify_code = X509_V_ERR_UNSPECIFIED;
	summary->verify_error = "the server sent no certificate";
}

void
facts_tls_certificates(JsonWriter *jw, STACK_OF(X509) *chain,
					   X509_STORE *store, const char *host,
					   const unsigned char *ocsp, long ocsp_len,
					   TlsSummary *summary)
{
	TlsScratch	scratch;
	VerifyResult result;

	memset(&scratch, 0, sizeof(scratch));
	memset(&result, 0, sizeof(result));
	if (chain == NULL || sk_X509_num(chain) == 0)
	{
		jw_bool(jw, "verified", false);
		jw_int(jw, "verify_code", X509_V_ERR_UNSPECIFIED);
		jw_string(jw, "verify_error", "the server sent no certificate");
		if (summary)
			summarize_no_certificate(summary);
		return;
	}
	PG_TRY();
	{
		char	   *leaf_sha256;

		verify_chain(&scratch, chain, store, host, &result);
		check_ocsp_staple(&scratch, chain, store, ocsp, ocsp_len, &result);

		jw_bool(jw, "verified", result.verified);
		jw_int(jw, "verify_code", result.code);
		jw_string(jw, "verify_error", result.verified ? NULL :
				  X509_verify_cert_error_string(result.code));
		jw_int(jw, "verify_depth", result.verified ? 0 : result.depth);
		jw_bool(jw, "hostname_match", result.hostname_match);
		jw_string(jw, "ocsp", result.ocsp);
		jw_string(jw, "ocsp_error", result.ocsp_error);
		leaf_sha256 = write_chain(&scratch, jw, chain);
		write_leaf(&scratch, jw, sk_X509_value(chain, 0), leaf_sha256, summary);
		if (summary)
			summarize_verification(&result, summary);
	}
	PG_FINALLY();
	{
		scratch_free(&scratch);
		X509_free(result.issuer);
		ERR_clear_error();
	}
	PG_END_TRY();
}

void
facts_tls_summary(STACK_OF(X509) *chain, X509_STORE *store, const char *host,
				  const unsigned char *ocsp, long ocsp_len, TlsSummary *summary)
{
	TlsScratch	scratch;
	VerifyResult result;

	memset(&scratch, 0, sizeof(scratch));
	memset(&result, 0, sizeof(result));
	if (chain == NULL || sk_X509_num(chain) == 0)
	{
		summarize_no_certificate(summary);
		return;
	}
	PG_TRY();
	{
		X509	   *leaf = sk_X509_value(chain, 0);

		verify_chain(&scratch, chain, store, host, &result);
		check_ocsp_staple(&scratch, chain, store, ocsp, ocsp_len, &result);
		summarize_verification(&result, summary);
		leaf_digests(&scratch, leaf, NULL, &summary->leaf_sha256,
					 &summary->spki_sha256, NULL);
		summarize_subject_o(leaf, summary);
		summary->validation = write_policies(&scratch, NULL, leaf);
		summary->not_after = time_text(X509_get0_notAfter(leaf));
	}
	PG_FINALLY();
	{
		scratch_free(&scratch);
		X509_free(result.issuer);
		ERR_clear_error();
	}
	PG_END_TRY();
}
