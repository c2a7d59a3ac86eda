/*-------------------------------------------------------------------------
 *
 * drift_rules.c
 *	  The rules that say what changed between a baseline snapshot of a host
 *	  and a current one, and why.
 *
 * What is compared is what the patient was shown and agreed to, not
 * certificate bytes: certificates renew every few weeks and CAs rotate
 * intermediates on purpose, so byte-level changes are reported at severity
 * "ignore", and the reasons that suspend are about trust, the validation
 * class, the identity in the certificate, and the domain's existence and
 * ownership.
 *
 * MEASUREMENT FAILURES ARE UNKNOWNS, NEVER CHANGES
 *
 * 1. The current snapshot's status is not "ok" (dns_failed, connect_failed,
 *	  tls_failed, timeout, blocked, or missing): only dns_domain_gone and
 *	  dns_dangling_cname run (see 3).
 *	  An outage or a broken handshake says nothing about who runs the app.
 *	  Parts of such a snapshot that did succeed (say the TXT answer of a
 *	  snapshot whose connection failed) are not used either: a half-measured
 *	  host is what a transient incident looks like, and persistent failure
 *	  is for the lifecycle's grace interval to judge.
 * 2. The baseline's status is not "ok": likewise only dns_domain_gone and
 *	  dns_dangling_cname.  A baseline that measured nothing cannot say what
 *	  changed.
 * 3. dns_domain_gone needs at baseline dns.rcode NOERROR and at least one
 *	  address in dns.a or dns.aaaa (the name resolved), and now dns.rcode
 *	  NXDOMAIN with neither the A nor the AAAA query answering NOERROR.  It
 *	  holds whatever the statuses say: a dns_failed snapshot with NXDOMAIN is
 *	  a DNS fact, not a failure to measure.  The facts hold no AA bit, so the
 *	  configured resolver's NXDOMAIN is taken as the answer.
 *	  dns_dangling_cname is the same for a host that is an alias: at
 *	  baseline the name resolved as above; now dns.cname holds a chain
 *	  (shorter than DRIFT_CNAME_CHAIN_MAX, so that its end was seen), dns.a
 *	  and dns.aaaa are empty, and the chain's end is either gone (NXDOMAIN
 *	  as for dns_domain_gone; RFC 6604: the rcode of a chain is its last
 *	  name's) or answered both the A and the AAAA question NOERROR or
 *	  NXDOMAIN without an address (NODATA).  The host's own name still
 *	  exists, so an NXDOMAIN at the end of a chain is dns_dangling_cname and
 *	  not dns_domain_gone: exactly one of the two fires.  It is the setting
 *	  of a subdomain takeover: whoever registers the target's name, or
 *	  claims the deleted cloud resource, receives the app's traffic.  A
 *	  timeout, SERVFAIL or REFUSED of either question leaves it unknown.
 * 4. A rule that reads a DNS answer runs only when the query behind it gave
 *	  a definitive answer, NOERROR or NXDOMAIN, in both snapshots; TIMEOUT,
 *	  SERVFAIL, REFUSED, ERROR, any other rcode and null (not asked) skip it:
 *		dns_ns_changed			NS
 *		dns_ownership_lost		TXT
 *		dns_caa_changed			CAA (the last query of the tree climb)
 *		dns_dnssec_lost			A (the AD bit is read from the A answer)
 *		dns_addresses_changed	A for dns.a, AAAA for dns.aaaa
 *		dns_cname_changed		A and AAAA (facts_dns.c reads the chain from
 *								the A answer, or AAAA when A holds no records)
 *	  NXDOMAIN is definitive: for the registrable domain's NS or TXT it means
 *	  an empty set, so a lapsed registrable domain loses its delegation and
 *	  its ownership record.
 * 5. A fact unknown in either view (missing key, wrong JSON type, no leaf
 *	  because the server sent no certificate) skips the rules that read it.
 *	  Known but absent (JSON null, a subject without O) is a value.
 *
 * THE RULES
 *	tls_trust_lost			verified true -> false.  The state is compared,
 *							never the dates; the values are the verify_error
 *							texts (NULL while verified).  A baseline that was
 *							not trusted cannot lose trust.
 *	tls_class_downgraded	validation OV, EV or IV -> DV or none.  All three
 *							vouch for an identity, so moves among them are no
 *							change; a class name not listed here is unknown.
 *	tls_identity_changed	subject O, C, ST or L differ after normalization,
 *							one row per part, when the baseline was OV, EV or
 *							IV (a DV subject was never validated).  The
 *							current class does not matter: a DV replacement
 *							without O also reports its O, C, ST, L as gone.
 *	dns_ownership_lost		an ownership id present at baseline, gone now; one
 *							row per id (old value the id, new value NULL).
 *							With a client_id only that id counts.
 *	dns_domain_gone			see 3.
 *	dns_dangling_cname		see 3.  The values are the chains at baseline and
 *							now (JSON arrays; the baseline's may be empty).
 *	tls_address_mismatch	an address of the current tls_addresses list,
 *							measured, other than tls.address (whose facts the
 *							rules above compare), serves
 *							  - a certificate that does not verify for the
 *							    name, when the baseline's did (field
 *							    tls_addresses[ADDRESS].verify_error, values
 *							    the verify_error texts), or
 *							  - a verified certificate whose organization is
 *							    not the baseline's, when the baseline was
 *							    OV, EV or IV: subject_o differs after
 *							    normalization, a DV or classless certificate
 *							    counting as no organization (field
 *							    tls_addresses[ADDRESS].subject_o, values the
 *							    baseline's subject O and the address's).
 *							An address whose entry is the same in the
 *							baseline's list (verified, leaf_sha256,
 *							subject_o, validation) is no change, and
 *							addresses that come and go are none either.
 *							Runs only when both documents have the list.
 *	tls_issuer_org_changed	leaf issuer O differs after normalization.
 *	dns_ns_changed, dns_caa_changed, dns_addresses_changed: the sets differ;
 *							order does not matter, nor ASCII case in names.
 *	dns_cname_changed		the chain differs; order matters.
 *	tls_version_weak		now below TLS 1.2, at baseline 1.2 or above.
 *	dns_dnssec_lost			ad true -> false.
 *	tls_serial_changed, tls_fingerprint_changed (leaf sha256),
 *	tls_spki_changed, tls_validity_changed (not_before and not_after, a row
 *	each), tls_intermediate_changed (chain[1].sha256, the intermediate as
 *	sent): plain comparison, hexadecimal without regard to case.
 *
 * Not a rule of this comparison: host_unreachable.  Two facts documents
 * cannot show that a host stayed unreachable for long (one failed
 * measurement is an unknown, see 1); the lifecycle reports the reason when
 * a host's snapshots have failed for longer than appguard.unreachable_grace
 * (off by default).  It is listed with the reasons so that policy can give
 * it a severity like any other.
 *
 * Not a rule: "certificate issuer not permitted by CAA".  CAA issue tags
 * name a CA by a domain (letsencrypt.org), a certificate names its issuer
 * by a DN (O=Let's Encrypt, CN=R3), and nothing in the facts maps one onto
 * the other; besides, CAA binds at issuance only, so a certificate issued
 * before a CAA change stays legitimate.  It would need a table of CAs'
 * CAA identifiers (as in the CCADB); dns_caa_changed reports CAA changes.
 *
 * NAME NORMALIZATION (organization and place names)
 *	1. ASCII letters are lower-cased; other bytes (UTF-8) are kept as is.
 *	2. '.', '\'' and U+2019 are deleted ("L.L.C." = "LLC", "Children's" =
 *	   "Childrens"); any other ASCII punctuation, white space, control
 *	   character and U+00A0 separates words.
 *	3. In organization names only, trailing legal-form words (legal_suffixes
 *	   below: Inc, Incorporated, LLC, Ltd, Limited, Corp, Corporation, Co,
 *	   GmbH, SA, ...) are dropped one by one, always keeping the first word.
 *	   So "Example Health, Inc." = "EXAMPLE HEALTH INC" = "Example Health
 *	   LLC": a patient recognizes the name, not the legal form, and C, ST
 *	   and L are compared as well.
 *	4. The words are joined without spaces: "St. Louis" = "St.Louis" =
 *	   "ST LOUIS".
 * A NULL name equals one whose key is empty.  When a key does not fit in
 * DRIFT_NAME_MAX bytes (never within RFC 5280's bounds) the two names are
 * compared byte for byte instead.  Letters outside ASCII are not
 * case-folded, and abbreviations (CA, California) are not expanded.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drift_rules.h"

/* Room for a comparison key: DN attributes are at most 128 characters */
#define DRIFT_NAME_MAX 1024

/* UTF-8 of U+2019 RIGHT SINGLE QUOTATION MARK and U+00A0 NO-BREAK SPACE */
#define UTF8_RIGHT_QUOTE "\xE2\x80\x99"
#define UTF8_NO_BREAK_SPACE "\xC2\xA0"

typedef struct DriftReasonInfo
{
	const char *code;
	DriftSeverity severity;
	const char *description;	/* for the patient's "what changed" page */
} DriftReasonInfo;

static const DriftReasonInfo reason_info[DRIFT_REASON_COUNT] = {
	[DRIFT_TLS_TRUST_LOST] = {
		"tls_trust_lost", DRIFT_SEVERITY_SUSPEND,
		"The app's certificate is no longer trusted"
	},
	[DRIFT_TLS_CLASS_DOWNGRADED] = {
		"tls_class_downgraded", DRIFT_SEVERITY_SUSPEND,
		"The app's certificate no longer confirms the organization behind the app"
	},
	[DRIFT_TLS_IDENTITY_CHANGED] = {
		"tls_identity_changed", DRIFT_SEVERITY_SUSPEND,
		"The organization or location named in the app's certificate changed"
	},
	[DRIFT_DNS_OWNERSHIP_LOST] = {
		"dns_ownership_lost", DRIFT_SEVERITY_SUSPEND,
		"The app's domain no longer carries the record that ties it to this app"
	},
	[DRIFT_DNS_DOMAIN_GONE] = {
		"dns_domain_gone", DRIFT_SEVERITY_SUSPEND,
		"The app's domain name no longer exists"
	},
	[DRIFT_DNS_DANGLING_CNAME] = {
		"dns_dangling_cname", DRIFT_SEVERITY_SUSPEND,
		"The app's web address points to a service that no longer exists"
	},
	[DRIFT_TLS_ADDRESS_MISMATCH] = {
		"tls_address_mismatch", DRIFT_SEVERITY_SUSPEND,
		"One of the app's server addresses presents a certificate that is not the app's"
	},
	[DRIFT_HOST_UNREACHABLE] = {
		"host_unreachable", DRIFT_SEVERITY_SUSPEND,
		"The app could not be reached for longer than the grace period"
	},
	[DRIFT_TLS_ISSUER_ORG_CHANGED] = {
		"tls_issuer_org_changed", DRIFT_SEVERITY_WARN,
		"The app's certificate now comes from a different certificate authority"
	},
	[DRIFT_DNS_NS_CHANGED] = {
		"dns_ns_changed", DRIFT_SEVERITY_WARN,
		"The app's domain is now served by different name servers"
	},
	[DRIFT_DNS_CNAME_CHANGED] = {
		"dns_cname_changed", DRIFT_SEVERITY_WARN,
		"The app's web address now points to a different service"
	},
	[DRIFT_DNS_CAA_CHANGED] = {
		"dns_caa_changed", DRIFT_SEVERITY_WARN,
		"The app's domain changed which authorities may issue its certificates"
	},
	[DRIFT_TLS_VERSION_WEAK] = {
		"tls_version_weak", DRIFT_SEVERITY_WARN,
		"The app's server now uses an outdated version of encryption"
	},
	[DRIFT_DNS_DNSSEC_LOST] = {
		"dns_dnssec_lost", DRIFT_SEVERITY_WARN,
		"The app's domain name answers are no longer signed (DNSSEC)"
	},
	[DRIFT_TLS_SERIAL_CHANGED] = {
		"tls_serial_changed", DRIFT_SEVERITY_IGNORE,
		"The app's certificate was renewed (new serial number)"
	},
	[DRIFT_TLS_FINGERPRINT_CHANGED] = {
		"tls_fingerprint_changed", DRIFT_SEVERITY_IGNORE,
		"The app's certificate was renewed (new fingerprint)"
	},
	[DRIFT_TLS_SPKI_CHANGED] = {
		"tls_spki_changed", DRIFT_SEVERITY_IGNORE,
		"The app's certificate now holds a different key"
	},
	[DRIFT_TLS_VALIDITY_CHANGED] = {
		"tls_validity_changed", DRIFT_SEVERITY_IGNORE,
		"The app's certificate has new validity dates"
	},
	[DRIFT_TLS_INTERMEDIATE_CHANGED] = {
		"tls_intermediate_changed", DRIFT_SEVERITY_IGNORE,
		"The app's certificate was issued through a different intermediate authority"
	},
	[DRIFT_DNS_ADDRESSES_CHANGED] = {
		"dns_addresses_changed", DRIFT_SEVERITY_IGNORE,
		"The app's server addresses changed"
	},
};

static const char *const severity_names[] = {
	[DRIFT_SEVERITY_SUSPEND] = "suspend",
	[DRIFT_SEVERITY_WARN] = "warn",
	[DRIFT_SEVERITY_IGNORE] = "ignore",
};

/*
 * Legal-form words, as they look after step 2 of the normalization (dots
 * deleted, lower case).  Only trailing words are dropped.
 */
static const char *const legal_suffixes[] = {
	/* English-speaking countries */
	"inc", "incorporated", "corp", "corporation", "co", "company",
	"llc", "pllc", "llp", "lllp", "lp", "ltd", "limited", "plc", "pc",
	"pty", "pte",
	/* continental Europe */
	"gmbh", "mbh", "ag", "kg", "ug", "ohg", "sa", "sas", "sarl", "srl",
	"spa", "sl", "bv", "nv", "ab", "as", "asa", "aps", "oy", "oyj",
	/* elsewhere */
	"kk", "bhd", "sdn", "ltda",
};

/* One comparison: the two views and where differences go */
typedef struct DriftContext
{
	const FactsView *baseline;
	const FactsView *current;
	DriftEmitFn emit;
	void	   *arg;
} DriftContext;

void
facts_view_init(FactsView *view)
{
	memset(view, 0, sizeof(*view));
}

const char *
drift_reason_code(DriftReason reason)
{
	return reason_info[reason].code;
}

const char *
drift_reason_description(DriftReason reason)
{
	return reason_info[reason].description;
}

DriftSeverity
drift_reason_default_severity(DriftReason reason)
{
	return reason_info[reason].severity;
}

const char *
drift_severity_name(DriftSeverity severity)
{
	return severity_names[severity];
}

DriftRcode
drift_rcode_from_name(const char *name)
{
	if (name == NULL)
		return DRIFT_RCODE_UNKNOWN;
	if (strcmp(name, "NOERROR") == 0)
		return DRIFT_RCODE_NOERROR;
	if (strcmp(name, "NXDOMAIN") == 0)
		return DRIFT_RCODE_NXDOMAIN;
	return DRIFT_RCODE_OTHER;
}

/* ---- small comparisons (no locale, no allocation) ---- */

static unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* strcmp() with ASCII letters folded to lower case */
static int
ascii_caseless_compare(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *) a;
	const unsigned char *y = (const unsigned char *) b;

	while (*x != '\0' && ascii_lower(*x) == ascii_lower(*y))
	{
		x++;
		y++;
	}
	return (int) ascii_lower(*x) - (int) ascii_lower(*y);
}

/* NULL-aware: two absent values are equal */
static bool
texts_equal(const char *a, const char *b, bool ignore_case)
{
	if (a == NULL || b == NULL)
		return a == b;
	return ignore_case ? ascii_caseless_compare(a, b) == 0 : strcmp(a, b) == 0;
}

/*
 * The order of DriftList.sorted: NULL first, then ASCII case-insensitive,
 * then byte for byte.  With ignore_case only the first two count; since
 * they are a coarser form of the whole order, a sorted list is sorted for
 * both kinds of comparison.
 */
static int
compare_items(const char *a, const char *b, bool ignore_case)
{
	int			c;

	if (a == NULL || b == NULL)
		return (a != NULL) - (b != NULL);
	c = ascii_caseless_compare(a, b);
	if (c != 0 || ignore_case)
		return c;
	return strcmp(a, b);
}

static int
qsort_items(const void *a, const void *b)
{
	return compare_items(*(const char *const *) a, *(const char *const *) b,
						 false);
}

void
drift_list_sort(DriftList *list, const char **buffer)
{
	if (list->count > 0)
	{
		memcpy(buffer, list->items, list->count * sizeof(const char *));
		qsort(buffer, list->count, sizeof(const char *), qsort_items);
	}
	list->sorted = buffer;
}

static int
qsort_addresses(const void *a, const void *b)
{
	return strcmp(((const DriftAddress *) a)->address,
				  ((const DriftAddress *) b)->address);
}

void
drift_addresses_sort(DriftAddressList *list)
{
	if (list->count > 1)
		qsort(list->items, list->count, sizeof(DriftAddress), qsort_addresses);
}

/* Whether a list holds an item (exactly), by binary search in sorted */
static bool
list_contains(const DriftList *list, const char *item)
{
	int			lo = 0;
	int			hi = list->count;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;
		int			c = compare_items(list->sorted[mid], item, false);

		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/*
 * Each list's items all occur in the other; neither order nor repeats
 * count.  One merge of the two sorted arrays: O(n) after the sorts.
 */
static bool
lists_equal_as_sets(const DriftList *a, const DriftList *b, bool ignore_case)
{
	int			i = 0;
	int			j = 0;

	while (i < a->count && j < b->count)
	{
		const char *item = a->sorted[i];

		if (compare_items(item, b->sorted[j], ignore_case) != 0)
			return false;		/* the smaller one is missing from the other */
		while (i < a->count && compare_items(a->sorted[i], item, ignore_case) == 0)
			i++;
		while (j < b->count && compare_items(b->sorted[j], item, ignore_case) == 0)
			j++;
	}
	return i == a->count && j == b->count;
}

static bool
lists_equal_in_order(const DriftList *a, const DriftList *b, bool ignore_case)
{
	if (a->count != b->count)
		return false;
	for (int i = 0; i < a->count; i++)
		if (!texts_equal(a->items[i], b->items[i], ignore_case))
			return false;
	return true;
}

/* ---- name normalization ---- */

static bool
starts_with(const unsigned char *p, const char *prefix)
{
	return strncmp((const char *) p, prefix, strlen(prefix)) == 0;
}

static bool
is_legal_suffix(const char *word)
{
	for (size_t i = 0; i < sizeof(legal_suffixes) / sizeof(legal_suffixes[0]); i++)
		if (strcmp(word, legal_suffixes[i]) == 0)
			return true;
	return false;
}

/*
 * Steps 1 and 2: lower-case words separated by single spaces.  Returns the
 * length, or -1 if it does not fit.
 */
static int
split_words(const char *in, char *out, size_t outsize)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		len = 0;
	bool		pending_space = false;

	while (*p != '\0')
	{
		if (*p == '.' || *p == '\'' || starts_with(p, UTF8_RIGHT_QUOTE))
		{
			p += (*p == '.' || *p == '\'') ? 1 : strlen(UTF8_RIGHT_QUOTE);
			continue;
		}
		if (starts_with(p, UTF8_NO_BREAK_SPACE) ||
			(*p < 0x80 && !((*p >= 'a' && *p <= 'z') ||
							(*p >= 'A' && *p <= 'Z') ||
							(*p >= '0' && *p <= '9'))))
		{
			pending_space = true;
			p += (*p < 0x80) ? 1 : strlen(UTF8_NO_BREAK_SPACE);
			continue;
		}
		if (len + (pending_space ? 2 : 1) >= outsize)
			return -1;
		if (pending_space && len > 0)
			out[len++] = ' ';
		pending_space = false;
		out[len++] = (char) ascii_lower(*p++);
	}
	out[len] = '\0';
	return (int) len;
}

/* Step 3: drop trailing legal-form words, keeping the first word */
static void
drop_legal_suffixes(char *words)
{
	char	   *last_space;

	while ((last_space = strrchr(words, ' ')) != NULL &&
		   is_legal_suffix(last_space + 1))
		*last_space = '\0';
}

/* Step 4: join the words */
static void
remove_spaces(char *words)
{
	char	   *to = words;

	for (const char *from = words; *from != '\0'; from++)
		if (*from != ' ')
			*to++ = *from;
	*to = '\0';
}

bool
drift_normalize_name(const char *in, bool strip_legal_suffixes,
					 char *out, size_t outsize)
{
	if (outsize == 0)
		return false;
	if (in == NULL)
	{
		out[0] = '\0';
		return true;
	}
	if (split_words(in, out, outsize) < 0)
		return false;
	if (strip_legal_suffixes)
		drop_legal_suffixes(out);
	remove_spaces(out);
	return true;
}

bool
drift_names_equal(const char *a, const char *b, bool strip_legal_suffixes)
{
	char		key_a[DRIFT_NAME_MAX];
	char		key_b[DRIFT_NAME_MAX];

	if (!drift_normalize_name(a, strip_legal_suffixes, key_a, sizeof(key_a)) ||
		!drift_normalize_name(b, strip_legal_suffixes, key_b, sizeof(key_b)))
		return texts_equal(a, b, false);
	return strcmp(key_a, key_b) == 0;
}

/* ---- emitting ---- */

static DriftValue
text_value(const char *text)
{
	DriftValue	v;

	v.kind = text ? DRIFT_VALUE_TEXT : DRIFT_VALUE_NULL;
	v.text = text;
	v.list = NULL;
	return v;
}

static DriftValue
list_value(const DriftList *list)
{
	DriftValue	v;

	v.kind = DRIFT_VALUE_LIST;
	v.text = NULL;
	v.list = list;
	return v;
}

static void
emit_texts(DriftContext *cx, DriftReason reason, const char *field,
		   const char *old_text, const char *new_text)
{
	DriftValue	old_value = text_value(old_text);
	DriftValue	new_value = text_value(new_text);

	cx->emit(cx->arg, reason, field, &old_value, &new_value);
}

static void
emit_lists(DriftContext *cx, DriftReason reason, const char *field,
		   const DriftList *old_list, const DriftList *new_list)
{
	DriftValue	old_value = list_value(old_list);
	DriftValue	new_value = list_value(new_list);

	cx->emit(cx->arg, reason, field, &old_value, &new_value);
}

/* ---- which facts may be compared ---- */

static bool
rcode_definitive(DriftRcode rcode)
{
	return rcode == DRIFT_RCODE_NOERROR || rcode == DRIFT_RCODE_NXDOMAIN;
}

/* Both snapshots got a definitive answer to this question */
static bool
answered_in_both(DriftContext *cx, DriftQuery query)
{
	return rcode_definitive(cx->baseline->query_rcode[query]) &&
		rcode_definitive(cx->current->query_rcode[query]);
}

static bool
resolved(const FactsView *view)
{
	return view->host_rcode == DRIFT_RCODE_NOERROR &&
		((view->a.known && view->a.count > 0) ||
		 (view->aaaa.known && view->aaaa.count > 0));
}

static bool
name_gone(const FactsView *view)
{
	return view->host_rcode == DRIFT_RCODE_NXDOMAIN &&
		view->query_rcode[DRIFT_QUERY_A] != DRIFT_RCODE_NOERROR &&
		view->query_rcode[DRIFT_QUERY_AAAA] != DRIFT_RCODE_NOERROR;
}

static bool
known_empty(const DriftList *list)
{
	return list->known && list->count == 0;
}

/*
 * The host is an alias whose chain ends at a name that is gone or has no
 * address (rule 3).  A chain of DRIFT_CNAME_CHAIN_MAX steps may be a loop
 * or cut short, so its end is unknown.
 */
static bool
chain_dangles(const FactsView *view)
{
	const DriftList *chain = &view->cname;

	if (!chain->known || chain->count == 0 ||
		chain->count >= DRIFT_CNAME_CHAIN_MAX ||
		!known_empty(&view->a) || !known_empty(&view->aaaa))
		return false;
	return name_gone(view) ||
		(rcode_definitive(view->query_rcode[DRIFT_QUERY_A]) &&
		 rcode_definitive(view->query_rcode[DRIFT_QUERY_AAAA]));
}

/* OV, EV and IV vouch for who holds the certificate */
typedef enum ValidationClass
{
	VALIDATION_UNKNOWN,
	VALIDATION_DOMAIN_ONLY,		/* DV or no policy */
	VALIDATION_IDENTITY			/* OV, EV, IV */
} ValidationClass;

static ValidationClass
validation_class(const DriftText *validation)
{
	const char *v = validation->value;

	if (!validation->known)
		return VALIDATION_UNKNOWN;
	if (v == NULL || strcmp(v, "DV") == 0)
		return VALIDATION_DOMAIN_ONLY;
	if (strcmp(v, "OV") == 0 || strcmp(v, "EV") == 0 || strcmp(v, "IV") == 0)
		return VALIDATION_IDENTITY;
	return VALIDATION_UNKNOWN;
}

/* Protocol versions as SSL_get_version() names them; -1 if unknown */
static int
tls_version_rank(const DriftText *version)
{
	static const char *const versions[] = {
		"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
	};

	if (!version->known || version->value == NULL)
		return -1;
	for (int i = 0; i < (int) (sizeof(versions) / sizeof(versions[0])); i++)
		if (strcmp(version->value, versions[i]) == 0)
			return i;
	return -1;
}

#define TLS_RANK_1_2 4

/* ---- the rules that suspend ---- */

static void
check_trust(DriftContext *cx)
{
	const FactsView *b = cx->baseline;
	const FactsView *c = cx->current;

	if (b->verified.known && b->verified.value &&
		c->verified.known && !c->verified.value)
		emit_texts(cx, DRIFT_TLS_TRUST_LOST, "tls.verify_error",
				   b->verify_error.value, c->verify_error.value);
}

static void
check_class(DriftContext *cx)
{
	if (validation_class(&cx->baseline->validation) == VALIDATION_IDENTITY &&
		validation_class(&cx->current->validation) == VALIDATION_DOMAIN_ONLY)
		emit_texts(cx, DRIFT_TLS_CLASS_DOWNGRADED, "tls.leaf.validation",
				   cx->baseline->validation.value,
				   cx->current->validation.value);
}

static void
check_identity(DriftContext *cx)
{
	static const char *const fields[DRIFT_NAME_PART_COUNT] = {
		[DRIFT_NAME_O] = "tls.leaf.subject.O",
		[DRIFT_NAME_C] = "tls.leaf.subject.C",
		[DRIFT_NAME_ST] = "tls.leaf.subject.ST",
		[DRIFT_NAME_L] = "tls.leaf.subject.L",
	};

	if (validation_class(&cx->baseline->validation) != VALIDATION_IDENTITY)
		return;
	for (int part = 0; part < DRIFT_NAME_PART_COUNT; part++)
	{
		const DriftText *old_name = &cx->baseline->subject[part];
		const DriftText *new_name = &cx->current->subject[part];

		if (!old_name->known || !new_name->known)
			continue;
		if (!drift_names_equal(old_name->value, new_name->value,
							   part == DRIFT_NAME_O))
			emit_texts(cx, DRIFT_TLS_IDENTITY_CHANGED, fields[part],
					   old_name->value, new_name->value);
	}
}

static void
check_ownership(DriftContext *cx, const char *client_id)
{
	const DriftList *old_ids = &cx->baseline->ownership_ids;
	const DriftList *new_ids = &cx->current->ownership_ids;

	if (!answered_in_both(cx, DRIFT_QUERY_TXT) || !old_ids->known || !new_ids->known)
		return;
	/* in sorted order, each id once */
	for (int i = 0; i < old_ids->count; i++)
	{
		const char *id = old_ids->sorted[i];

		if (id == NULL || (client_id != NULL && strcmp(id, client_id) != 0))
			continue;
		if (i > 0 && texts_equal(old_ids->sorted[i - 1], id, false))
			continue;
		if (!list_contains(new_ids, id))
			emit_texts(cx, DRIFT_DNS_OWNERSHIP_LOST, "dns.ownership_ids", id, NULL);
	}
}

/* the host's own name is gone; its alias's target is chain_dangles' */
static void
check_domain_gone(DriftContext *cx)
{
	if (resolved(cx->baseline) && name_gone(cx->current) &&
		!chain_dangles(cx->current))
		emit_texts(cx, DRIFT_DNS_DOMAIN_GONE, "dns.rcode", "NOERROR", "NXDOMAIN");
}

static void
check_dangling_cname(DriftContext *cx)
{
	if (resolved(cx->baseline) && chain_dangles(cx->current))
		emit_lists(cx, DRIFT_DNS_DANGLING_CNAME, "dns.cname",
				   &cx->baseline->cname, &cx->current->cname);
}

static bool
same_text_fact(const DriftText *a, const DriftText *b, bool ignore_case)
{
	return a->known == b->known &&
		(!a->known || texts_equal(a->value, b->value, ignore_case));
}

/* The baseline's entry of an address says what the current one says */
static bool
same_address_facts(const DriftAddress *a, const DriftAddress *b)
{
	return a->measured == b->measured &&
		a->verified.known == b->verified.known &&
		(!a->verified.known || a->verified.value == b->verified.value) &&
		same_text_fact(&a->leaf_sha256, &b->leaf_sha256, true) &&
		same_text_fact(&a->subject_o, &b->subject_o, false) &&
		same_text_fact(&a->validation, &b->validation, false);
}

/* Some entry of the baseline's list for this address says the same */
static bool
unchanged_since_baseline(const DriftAddressList *list, const DriftAddress *entry)
{
	int			lo = 0;
	int			hi = list->count;

	while (lo < hi)				/* the first entry not below the address */
	{
		int			mid = lo + (hi - lo) / 2;

		if (strcmp(list->items[mid].address, entry->address) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (int i = lo; i < list->count &&
		 strcmp(list->items[i].address, entry->address) == 0; i++)
		if (same_address_facts(&list->items[i], entry))
			return true;
	return false;
}

static void
check_addresses(DriftContext *cx)
{
	const FactsView *b = cx->baseline;
	const FactsView *c = cx->current;
	bool		baseline_trusted = b->verified.known && b->verified.value;
	const DriftText *baseline_org = &b->subject[DRIFT_NAME_O];
	bool		baseline_identity =
		validation_class(&b->validation) == VALIDATION_IDENTITY &&
		baseline_org->known;

	if (!b->addresses.known || !c->addresses.known)
		return;
	for (int i = 0; i < c->addresses.count; i++)
	{
		const DriftAddress *e = &c->addresses.items[i];
		char		field[DRIFT_ADDRESS_MAX + 32];

		if (!e->measured || !e->verified.known ||
			strlen(e->address) > DRIFT_ADDRESS_MAX)
			continue;
		if (c->address.known && c->address.value != NULL &&
			strcmp(c->address.value, e->address) == 0)
			continue;			/* the first address: the rules above */
		if (unchanged_since_baseline(&b->addresses, e))
			continue;
		if (!e->verified.value)
		{
			if (!baseline_trusted)
				continue;
			snprintf(field, sizeof(field), "tls_addresses[%s].verify_error",
					 e->address);
			emit_texts(cx, DRIFT_TLS_ADDRESS_MISMATCH, field,
					   b->verify_error.known ? b->verify_error.value : NULL,
					   e->verify_error.known && e->verify_error.value ?
					   e->verify_error.value : "certificate verification failed");
		}
		else if (baseline_identity)
		{
			ValidationClass cls = validation_class(&e->validation);
			const char *org;

			if (cls == VALIDATION_UNKNOWN ||
				(cls == VALIDATION_IDENTITY && !e->subject_o.known))
				continue;
			org = cls == VALIDATION_IDENTITY ? e->subject_o.value : NULL;
			if (drift_names_equal(baseline_org->value, org, true))
				continue;
			snprintf(field, sizeof(field), "tls_addresses[%s].subject_o",
					 e->address);
			emit_texts(cx, DRIFT_TLS_ADDRESS_MISMATCH, field,
					   baseline_org->value, org);
		}
	}
}

/* ---- the rules that warn ---- */

static void
check_issuer_org(DriftContext *cx)
{
	const DriftText *old_org = &cx->baseline->issuer_org;
	const DriftText *new_org = &cx->current->issuer_org;

	if (old_org->known && new_org->known &&
		!drift_names_equal(old_org->value, new_org->value, true))
		emit_texts(cx, DRIFT_TLS_ISSUER_ORG_CHANGED, "tls.leaf.issuer.O",
				   old_org->value, new_org->value);
}

/* A DNS set, compared when its query was answered in both snapshots */
static void
check_dns_set(DriftContext *cx, DriftReason reason, const char *field,
			  DriftQuery query, const DriftList *old_set,
			  const DriftList *new_set, bool ignore_case)
{
	if (!answered_in_both(cx, query) || !old_set->known || !new_set->known)
		return;
	if (!lists_equal_as_sets(old_set, new_set, ignore_case))
		emit_lists(cx, reason, field, old_set, new_set);
}

static void
check_cname(DriftContext *cx)
{
	const DriftList *old_chain = &cx->baseline->cname;
	const DriftList *new_chain = &cx->current->cname;

	if (!answered_in_both(cx, DRIFT_QUERY_A) ||
		!answered_in_both(cx, DRIFT_QUERY_AAAA) ||
		!old_chain->known || !new_chain->known)
		return;
	if (!lists_equal_in_order(old_chain, new_chain, true))
		emit_lists(cx, DRIFT_DNS_CNAME_CHANGED, "dns.cname", old_chain, new_chain);
}

static void
check_tls_version(DriftContext *cx)
{
	int			old_rank = tls_version_rank(&cx->baseline->version);
	int			new_rank = tls_version_rank(&cx->current->version);

	if (old_rank >= TLS_RANK_1_2 && new_rank >= 0 && new_rank < TLS_RANK_1_2)
		emit_texts(cx, DRIFT_TLS_VERSION_WEAK, "tls.version",
				   cx->baseline->version.value, cx->current->version.value);
}

static void
check_dnssec(DriftContext *cx)
{
	const DriftBool *old_ad = &cx->baseline->ad;
	const DriftBool *new_ad = &cx->current->ad;

	if (answered_in_both(cx, DRIFT_QUERY_A) &&
		old_ad->known && old_ad->value && new_ad->known && !new_ad->value)
		emit_texts(cx, DRIFT_DNS_DNSSEC_LOST, "dns.ad", "true", "false");
}

/* ---- the rules that are recorded only ---- */

static void
check_text(DriftContext *cx, DriftReason reason, const char *field,
		   const DriftText *old_text, const DriftText *new_text)
{
	if (old_text->known && new_text->known &&
		!texts_equal(old_text->value, new_text->value, true))
		emit_texts(cx, reason, field, old_text->value, new_text->value);
}

static void
check_certificate_bytes(DriftContext *cx)
{
	const FactsView *b = cx->baseline;
	const FactsView *c = cx->current;

	check_text(cx, DRIFT_TLS_SERIAL_CHANGED, "tls.leaf.serial",
			   &b->serial, &c->serial);
	check_text(cx, DRIFT_TLS_FINGERPRINT_CHANGED, "tls.leaf.sha256",
			   &b->sha256, &c->sha256);
	check_text(cx, DRIFT_TLS_SPKI_CHANGED, "tls.leaf.spki_sha256",
			   &b->spki_sha256, &c->spki_sha256);
	check_text(cx, DRIFT_TLS_VALIDITY_CHANGED, "tls.leaf.not_before",
			   &b->not_before, &c->not_before);
	check_text(cx, DRIFT_TLS_VALIDITY_CHANGED, "tls.leaf.not_after",
			   &b->not_after, &c->not_after);
	check_text(cx, DRIFT_TLS_INTERMEDIATE_CHANGED, "tls.chain[1].sha256",
			   &b->intermediate_sha256, &c->intermediate_sha256);
}

void
drift_compare(const FactsView *baseline, const FactsView *current,
			  const char *client_id, DriftEmitFn emit, void *arg)
{
	DriftContext cx;

	cx.baseline = baseline;
	cx.current = current;
	cx.emit = emit;
	cx.arg = arg;

	/*
	 * An NXDOMAIN or a chain that ends nowhere is a DNS fact even when the
	 * rest could not be measured (a host without an address is dns_failed)
	 */
	if (!baseline->status_ok || !current->status_ok)
	{
		check_domain_gone(&cx);
		check_dangling_cname(&cx);
		return;
	}

	check_trust(&cx);
	check_class(&cx);
	check_identity(&cx);
	check_ownership(&cx, client_id);
	check_domain_gone(&cx);
	check_dangling_cname(&cx);
	check_addresses(&cx);

	check_issuer_org(&cx);
	check_dns_set(&cx, DRIFT_DNS_NS_CHANGED, "dns.ns", DRIFT_QUERY_NS,
				  &baseline->ns, &current->ns, true);
	check_cname(&cx);
	check_dns_set(&cx, DRIFT_DNS_CAA_CHANGED, "dns.caa", DRIFT_QUERY_CAA,
				  &baseline->caa, &current->caa, false);
	check_tls_version(&cx);
	check_dnssec(&cx);

	check_certificate_bytes(&cx);
	check_dns_set(&cx, DRIFT_DNS_ADDRESSES_CHANGED, "dns.a", DRIFT_QUERY_A,
				  &baseline->a, &current->a, true);
	check_dns_set(&cx, DRIFT_DNS_ADDRESSES_CHANGED, "dns.aaaa", DRIFT_QUERY_AAAA,
				  &baseline->aaaa, &current->aaaa, true);
}
