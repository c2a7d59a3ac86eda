/*-------------------------------------------------------------------------
 *
 * drift_rules.h
 *	  What counts as a change between two snapshots of one host: the reason
 *	  codes, their default severities, and the rules that compare two views
 *	  of a facts document.
 *
 * This header and drift_rules.c use the C library only (no PostgreSQL
 * headers, no allocation), so that a fuzzing harness can build FactsViews
 * from arbitrary bytes and call the rules directly.  drift.c builds the
 * views from jsonb.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_DRIFT_RULES_H
#define APPGUARD_DRIFT_RULES_H

/* PostgreSQL's c.h, when included first, has already defined bool */
#ifndef C_H
#include <stdbool.h>
#endif
#include <stddef.h>

/* Stable reason codes; the SQL names are in drift_reason_code() */
typedef enum DriftReason
{
	/* default severity: suspend */
	DRIFT_TLS_TRUST_LOST,
	DRIFT_TLS_CLASS_DOWNGRADED,
	DRIFT_TLS_IDENTITY_CHANGED,
	DRIFT_DNS_OWNERSHIP_LOST,
	DRIFT_DNS_DOMAIN_GONE,
	DRIFT_DNS_DANGLING_CNAME,
	DRIFT_TLS_ADDRESS_MISMATCH,
	DRIFT_HOST_UNREACHABLE,		/* reported by the lifecycle, not compared */
	/* default severity: warn */
	DRIFT_TLS_ISSUER_ORG_CHANGED,
	DRIFT_DNS_NS_CHANGED,
	DRIFT_DNS_CNAME_CHANGED,
	DRIFT_DNS_CAA_CHANGED,
	DRIFT_TLS_VERSION_WEAK,
	DRIFT_DNS_DNSSEC_LOST,
	/* default severity: ignore */
	DRIFT_TLS_SERIAL_CHANGED,
	DRIFT_TLS_FINGERPRINT_CHANGED,
	DRIFT_TLS_SPKI_CHANGED,
	DRIFT_TLS_VALIDITY_CHANGED,
	DRIFT_TLS_INTERMEDIATE_CHANGED,
	DRIFT_DNS_ADDRESSES_CHANGED,
	DRIFT_REASON_COUNT
} DriftReason;

typedef enum DriftSeverity
{
	DRIFT_SEVERITY_SUSPEND,
	DRIFT_SEVERITY_WARN,
	DRIFT_SEVERITY_IGNORE
} DriftSeverity;

/*
 * The longest CNAME chain a facts document records (facts_dns.c stops
 * there).  A chain of this length may not have ended (a loop is recorded
 * as its first 16 steps), so its end is unknown.
 */
#define DRIFT_CNAME_CHAIN_MAX 16

/* A DNS response code as far as the rules care */
typedef enum DriftRcode
{
	DRIFT_RCODE_UNKNOWN = 0,	/* not asked, missing, or not a string */
	DRIFT_RCODE_NOERROR,
	DRIFT_RCODE_NXDOMAIN,
	DRIFT_RCODE_OTHER			/* SERVFAIL, REFUSED, TIMEOUT, ERROR, ... */
} DriftRcode;

/* The DNS questions of a probe, as in the document's "queries" object */
typedef enum DriftQuery
{
	DRIFT_QUERY_A,
	DRIFT_QUERY_AAAA,
	DRIFT_QUERY_NS,
	DRIFT_QUERY_TXT,
	DRIFT_QUERY_CAA,
	DRIFT_QUERY_COUNT
} DriftQuery;

/* The subject name parts compared for tls_identity_changed */
typedef enum DriftNamePart
{
	DRIFT_NAME_O,
	DRIFT_NAME_C,
	DRIFT_NAME_ST,
	DRIFT_NAME_L,
	DRIFT_NAME_PART_COUNT
} DriftNamePart;

/*
 * Every fact carries whether it is known.  An unknown fact (missing from
 * the document, of the wrong type, or not measured) never takes part in a
 * comparison; a known fact may still be absent (value NULL).
 */
typedef struct DriftText
{
	bool		known;
	const char *value;			/* NULL: known to be absent */
} DriftText;

typedef struct DriftBool
{
	bool		known;
	bool		value;
} DriftBool;

/*
 * A list of strings as the document has it (items), and the same strings
 * in comparison order (sorted, see drift_list_sort), which the set rules
 * need: every known list of a view must be sorted before drift_compare.
 */
typedef struct DriftList
{
	bool		known;
	int			count;
	const char *const *items;
	const char *const *sorted;
} DriftList;

/*
 * One entry of the document's "tls_addresses" list, as the rule
 * tls_address_mismatch reads it.  An entry without an address string is
 * left out of the list.
 */
typedef struct DriftAddress
{
	const char *address;
	bool		measured;		/* "status" is "ok": a handshake was done */
	DriftBool	verified;
	DriftText	verify_error;
	DriftText	leaf_sha256;
	DriftText	subject_o;
	DriftText	validation;
} DriftAddress;

/*
 * The list, sorted by address (drift_addresses_sort) before drift_compare.
 * Unknown in documents written before the list existed: the rule then
 * does not run, so an old baseline drifts from nothing it lacks.
 */
typedef struct DriftAddressList
{
	bool		known;
	int			count;
	DriftAddress *items;
} DriftAddressList;

/* The longest address text the rule reads; longer ones are no address */
#define DRIFT_ADDRESS_MAX 63

/*
 * What the rules read from one facts document.  All zeros (see
 * facts_view_init) is a view in which nothing is known.  The strings
 * belong to whoever built the view.
 */
typedef struct FactsView
{
	bool		status_ok;		/* "status" is "ok" */

	/* dns */
	DriftRcode	host_rcode;		/* dns.rcode */
	DriftRcode	query_rcode[DRIFT_QUERY_COUNT]; /* dns.queries */
	DriftBool	ad;
	DriftList	cname;			/* a chain: order matters */
	DriftList	a;
	DriftList	aaaa;
	DriftList	ns;
	DriftList	caa;			/* presentation form: 0 issue ca.example */
	DriftList	ownership_ids;

	/* tls, after a handshake */
	DriftBool	verified;
	DriftText	verify_error;
	DriftText	version;		/* "TLSv1.3", ... */
	DriftText	validation;		/* DV, OV, IV, EV or NULL */
	DriftText	subject[DRIFT_NAME_PART_COUNT];
	DriftText	issuer_org;
	DriftText	serial;
	DriftText	sha256;
	DriftText	spki_sha256;
	DriftText	not_before;
	DriftText	not_after;
	DriftText	intermediate_sha256;	/* chain[1].sha256; NULL if none sent */
	DriftText	address;		/* tls.address: the first address */

	/* tls_addresses: every address measured */
	DriftAddressList addresses;
} FactsView;

/* A value handed to the emit callback */
typedef enum DriftValueKind
{
	DRIFT_VALUE_NULL,
	DRIFT_VALUE_TEXT,
	DRIFT_VALUE_LIST
} DriftValueKind;

typedef struct DriftValue
{
	DriftValueKind kind;
	const char *text;			/* DRIFT_VALUE_TEXT */
	const DriftList *list;		/* DRIFT_VALUE_LIST */
} DriftValue;

/*
 * Called once per difference.  The field names the document path
 * ("tls.leaf.subject.O"); the values point into the views or into static
 * storage and are valid only during the call.
 */
typedef void (*DriftEmitFn) (void *arg, DriftReason reason, const char *field,
							 const DriftValue *old_value,
							 const DriftValue *new_value);

extern void facts_view_init(FactsView *view);

/*
 * Fill buffer (room for list->count pointers) with the list's items in
 * comparison order and point list->sorted at it.  The order is ASCII
 * case-insensitive first, then byte for byte, NULL first, so strings that
 * differ only in case are neighbours.  O(n log n); no allocation.
 */
extern void drift_list_sort(DriftList *list, const char **buffer);

/* Sort an address list in place, by address (byte order); no allocation */
extern void drift_addresses_sort(DriftAddressList *list);

/*
 * Compare a baseline with a current view and emit every difference.  With
 * a client_id, dns_ownership_lost is about that id only; with NULL, about
 * any id that vanished.
 */
extern void drift_compare(const FactsView *baseline, const FactsView *current,
						  const char *client_id,
						  DriftEmitFn emit, void *arg);

extern const char *drift_reason_code(DriftReason reason);
extern const char *drift_reason_description(DriftReason reason);
extern DriftSeverity drift_reason_default_severity(DriftReason reason);
extern const char *drift_severity_name(DriftSeverity severity);

/* "NOERROR", "NXDOMAIN", ... to DriftRcode */
extern DriftRcode drift_rcode_from_name(const char *name);

/*
 * The comparison key of an organization or place name (see the comment
 * at the top of drift_rules.c).  Returns false when the key does not fit
 * in outsize bytes.
 */
extern bool drift_normalize_name(const char *in, bool strip_legal_suffixes,
								 char *out, size_t outsize);

/* Whether two names are equal after normalization; NULL equals empty */
extern bool drift_names_equal(const char *a, const char *b,
							  bool strip_legal_suffixes);

#endif							/* APPGUARD_DRIFT_RULES_H */
