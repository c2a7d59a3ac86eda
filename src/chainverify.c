/*-------------------------------------------------------------------------
 *
 * chainverify.c
 *	  Checking a built chain's signatures and validity times, with the
 *	  signatures of CA certificates verified before kept for the backend.
 *
 * Hosts under one CA send the same intermediate, and OpenSSL checks its
 * signature by the root again for every host: an RSA signature check, as
 * much CPU as a tenth of the handshake.  X509_verify_cert() lets a caller
 * replace the step that checks the built chain's signatures and validity
 * times (X509_STORE_CTX_set_verify); everything before it (building the
 * chain from the trust store, extensions, purpose, key strength, the host
 * name) and after it (name constraints, policies) is OpenSSL's as before.
 *
 * chainverify_signatures() is that step.  For the chains appguard sees
 * (see usual_chain(): the top certificate self-issued, no proxy
 * certificate, no certificate whose extensions failed to decode, neither
 * X509_V_FLAG_PARTIAL_CHAIN nor X509_V_FLAG_CHECK_SS_SIGNATURE) it does
 * what OpenSSL 3.0's internal_verify() does, in the same order, with the
 * same errors and depths given to the verify callback: for each
 * certificate from the top down, its issuer's key usage must allow
 * signing certificates, the issuer's key must decode, the signature must
 * verify, and its validity times must hold (X509_cmp_time against the
 * verification time).  One thing differs: the signature of a certificate
 * other than the leaf is not checked again when the same issuer (the same
 * DER) was found to have signed the same certificate (the same DER) in an
 * earlier call with the same trust store.  The key usage, key and times
 * of both are checked every time.  Any other chain goes to OpenSSL's own
 * step unchanged.  (OpenSSL's step also notes each depth's issuer in the
 * context, which no public call sets: nothing after this step reads it,
 * and neither does facts_tls.c.)  Built with
 * APPGUARD_CHAINVERIFY_CROSSCHECK defined, facts_tls.c verifies every
 * chain again with OpenSSL's own step and logs any difference.
 *
 * Kept for the backend: at most VERIFIED_PAIRS pairs, each slot replaced
 * in turn, and the trust store they were verified for (a reference of
 * ours, so the pointer names the same store while they are kept); another
 * store empties them.  OpenSSL's memory only, and nothing here calls
 * PostgreSQL: this runs inside X509_verify_cert() and cannot ERROR.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "chainverify.h"

#define VERIFIED_PAIRS 16

typedef struct VerifiedPair
{
	unsigned char *issuer_der;	/* OPENSSL_malloc'd, NULL if the slot is free */
	int			issuer_len;
	unsigned char *subject_der;
	int			subject_len;
} VerifiedPair;

static VerifiedPair verified_pairs[VERIFIED_PAIRS];
static int	next_pair = 0;
static X509_STORE *pairs_store = NULL;	/* a reference of ours, or NULL */
static long pairs_kept = 0;
static long signatures_skipped = 0;

/* OpenSSL's own step, as X509_STORE_CTX_init() set it (internal_verify) */
static X509_STORE_CTX_verify_fn openssl_step = NULL;

static void
forget_pairs(void)
{
	for (int i = 0; i < VERIFIED_PAIRS; i++)
	{
		OPENSSL_free(verified_pairs[i].issuer_der);
		OPENSSL_free(verified_pairs[i].subject_der);
		memset(&verified_pairs[i], 0, sizeof(VerifiedPair));
	}
	next_pair = 0;
	X509_STORE_free(pairs_store);
	pairs_store = NULL;
}

/* The pairs are for this store from now on; false if they cannot be kept */
static bool
pairs_for_store(X509_STORE *store)
{
	if (store != NULL && store == pairs_store)
		return true;
	forget_pairs();
	if (store == NULL || !X509_STORE_up_ref(store))
		return false;
	pairs_store = store;
	return true;
}

static bool
pair_known(const unsigned char *ider, int ilen, const unsigned char *sder, int slen)
{
	for (int i = 0; i < VERIFIED_PAIRS; i++)
	{
		const VerifiedPair *p = &verified_pairs[i];

		if (p->issuer_der != NULL && p->issuer_len == ilen && p->subject_len == slen &&
			memcmp(p->subject_der, sder, slen) == 0 && memcmp(p->issuer_der, ider, ilen) == 0)
			return true;
	}
	return false;
}

/* Keep a verified pair: takes the two DER buffers */
static void
keep_pair(unsigned char *ider, int ilen, unsigned char *sder, int slen)
{
	VerifiedPair *p = &verified_pairs[next_pair];

	next_pair = (next_pair + 1) % VERIFIED_PAIRS;
	OPENSSL_free(p->issuer_der);
	OPENSSL_free(p->subject_der);
	p->issuer_der = ider;
	p->issuer_len = ilen;
	p->subject_der = sder;
	p->subject_len = slen;
	pairs_kept++;
}

/* OpenSSL's verify_cb_cert(): report err at depth for x; 0 to stop */
static int
fail(X509_STORE_CTX *ctx, X509 *x, int depth, int err)
{
	X509_STORE_CTX_set_error_depth(ctx, depth);
	X509_STORE_CTX_set_current_cert(ctx, x);
	X509_STORE_CTX_set_error(ctx, err);
	return X509_STORE_CTX_get_verify_cb(ctx) (0, ctx);
}

/* OpenSSL 3.0's ossl_x509_check_cert_time(), for a depth >= 0 */
static int
check_cert_time(X509_STORE_CTX *ctx, X509 *x, int depth)
{
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	unsigned long flags = X509_VERIFY_PARAM_get_flags(param);
	time_t		check_time;
	time_t	   *ptime = NULL;
	int			i;

	if (flags & X509_V_FLAG_USE_CHECK_TIME)
	{
		check_time = X509_VERIFY_PARAM_get_time(param);
		ptime = &check_time;
	}
	else if (flags & X509_V_FLAG_NO_CHECK_TIME)
		return 1;

	i = X509_cmp_time(X509_get0_notBefore(x), ptime);
	if (i == 0 && !fail(ctx, x, depth, X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD))
		return 0;
	if (i > 0 && !fail(ctx, x, depth, X509_V_ERR_CERT_NOT_YET_VALID))
		return 0;
	i = X509_cmp_time(X509_get0_notAfter(x), ptime);
	if (i == 0 && !fail(ctx, x, depth, X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD))
		return 0;
	if (i < 0 && !fail(ctx, x, depth, X509_V_ERR_CERT_HAS_EXPIRED))
		return 0;
	return 1;
}

/*
 * The chains this file checks itself; for any other, OpenSSL's own step.
 * With no proxy certificate, OpenSSL's ossl_x509_signing_allowed() asks
 * for keyCertSign alone; with no certificate's extensions failed,
 * X509_get_key_usage() is the key usage it reads.  X509_check_issued() is
 * OpenSSL's ossl_x509_likely_issued() and then that key usage check,
 * which fails with one of two codes of its own.
 */
static bool
usual_chain(X509_STORE_CTX *ctx, STACK_OF(X509) *chain)
{
	int			n = sk_X509_num(chain);
	unsigned long flags = X509_VERIFY_PARAM_get_flags(X509_STORE_CTX_get0_param(ctx));
	X509	   *top;
	int			issued;

	if (n < 2 || (flags & (X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_CHECK_SS_SIGNATURE)) != 0)
		return false;
	for (int i = 0; i < n; i++)
	{
		uint32_t	ex = X509_get_extension_flags(sk_X509_value(chain, i));

		if ((ex & (EXFLAG_PROXY | EXFLAG_INVALID)) != 0 || (ex & EXFLAG_SET) == 0)
			return false;
	}
	top = sk_X509_value(chain, n - 1);
	issued = X509_check_issued(top, top);
	return issued == X509_V_OK || issued == X509_V_ERR_KEYUSAGE_NO_CERTSIGN ||
		issued == X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE;
}

/*
 * Whether subject's signature verifies with issuer's key: from the kept
 * pairs for a certificate other than the leaf (depth > 0), else checked
 * (and kept when it verifies, for such a certificate)
 */
static bool
signature_verifies(X509 *subject, X509 *issuer, EVP_PKEY *pkey, int depth, bool keep)
{
	unsigned char *ider = NULL;
	unsigned char *sder = NULL;
	int			ilen = -1;
	int			slen = -1;
	bool		ok;

	if (depth > 0 && keep)
	{
		ilen = i2d_X509(issuer, &ider);
		slen = i2d_X509(subject, &sder);
		if (ilen > 0 && slen > 0 && pair_known(ider, ilen, sder, slen))
		{
			OPENSSL_free(ider);
			OPENSSL_free(sder);
			signatures_skipped++;
			return true;
		}
	}
	ok = X509_verify(subject, pkey) > 0;
	if (ok && ilen > 0 && slen > 0)
	{
		keep_pair(ider, ilen, sder, slen);
		ider = sder = NULL;
	}
	OPENSSL_free(ider);
	OPENSSL_free(sder);
	return ok;
}

static int
chainverify_signatures(X509_STORE_CTX *ctx)
{
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	int			n;
	X509	   *xi;
	X509	   *xs;
	bool		keep;

	if (chain == NULL || !usual_chain(ctx, chain))
		return openssl_step(ctx);
	keep = pairs_for_store(X509_STORE_CTX_get0_store(ctx));

	/* internal_verify(), the top certificate self-issued */
	n = sk_X509_num(chain) - 1;
	xi = xs = sk_X509_value(chain, n);
	X509_STORE_CTX_set_error_depth(ctx, n);
	while (n >= 0)
	{
		if (xs != xi)
		{
			EVP_PKEY   *pkey;

			/* the issuer's key usage must allow signing certificates */
			if ((X509_get_key_usage(xi) & KU_KEY_CERT_SIGN) == 0 &&
				!fail(ctx, xi, n + 1, X509_V_ERR_KEYUSAGE_NO_CERTSIGN))
				return 0;
			if ((pkey = X509_get0_pubkey(xi)) == NULL)
			{
				if (!fail(ctx, xi, n + 1, X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY))
					return 0;
			}
			else if (!signature_verifies(xs, xi, pkey, n, keep) &&
					 !fail(ctx, xs, n, X509_V_ERR_CERT_SIGNATURE_FAILURE))
				return 0;
		}
		if (!check_cert_time(ctx, xs, n))
			return 0;
		/* success at this depth; an earlier error stays (the callback's) */
		X509_STORE_CTX_set_current_cert(ctx, xs);
		X509_STORE_CTX_set_error_depth(ctx, n);
		if (!X509_STORE_CTX_get_verify_cb(ctx) (1, ctx))
			return 0;
		if (--n >= 0)
		{
			xi = xs;
			xs = sk_X509_value(chain, n);
		}
	}
	return 1;
}

void
chainverify_install(X509_STORE_CTX *ctx)
{
	X509_STORE_CTX_verify_fn step = X509_STORE_CTX_get_verify(ctx);

	if (step == NULL || step == chainverify_signatures)
		return;
	if (openssl_step != NULL && step != openssl_step)
		return;					/* not the step first seen: leave it */
	openssl_step = step;
	X509_STORE_CTX_set_verify(ctx, chainverify_signatures);
}

void
chainverify_counts(long *kept, long *skipped)
{
	*kept = pairs_kept;
	*skipped = signatures_skipped;
}
