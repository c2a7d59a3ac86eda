/*-------------------------------------------------------------------------
 *
 * fuzz_drift.c
 *	  libFuzzer harness: two facts views -> drift reasons (drift_rules.c).
 *
 * The input is decoded into a baseline view, a current view and a client
 * id (see Reader below), and drift_compare() runs on them.  Invariants:
 *	- every reason emitted is a known one with a field name and values of
 *	  a valid kind, and lists hold count strings;
 *	- a view compared with itself, or with its sets in reverse order, has
 *	  no drift at all;
 *	- no rule but dns_domain_gone and dns_dangling_cname fires unless both
 *	  statuses are ok ("a failed measurement is an unknown, never a
 *	  change"; those two read answers, which a failed probe still has);
 *	- dns_domain_gone and dns_dangling_cname never fire together, and
 *	  dns_dangling_cname only for a current chain that is known, not
 *	  empty and shorter than DRIFT_CNAME_CHAIN_MAX, without an address;
 *	- tls_address_mismatch fires only when both views have the address
 *	  list, at most once per current address, with a tls_addresses[...]
 *	  field; an address list in another order is no change;
 *	- drift_names_equal is symmetric and reflexive.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drift_rules.h"

#define MAX_LIST 12
#define MAX_STRINGS 512
#define MAX_ADDRESSES 8

/*
 * The input as a stream: bytes for flags and small numbers, strings up to
 * the next NUL byte.  An exhausted stream reads as zeros and empty
 * strings, so every input decodes.
 */
typedef struct Reader
{
	const uint8_t *data;
	size_t		size;
	size_t		off;
	char	   *strings[MAX_STRINGS];
	int			nstrings;
	const char *lists[MAX_STRINGS];
	const char *sorted[MAX_STRINGS];	/* lists[] sorted, list by list */
	int			nlist_items;
	DriftAddress addresses[2][MAX_ADDRESSES];	/* of each view */
	int			nviews;
} Reader;

static uint8_t
next_byte(Reader *r)
{
	return r->off < r->size ? r->data[r->off++] : 0;
}

static const char *
next_string(Reader *r)
{
	const uint8_t *start = r->data + r->off;
	size_t		left = r->size - r->off;
	const uint8_t *nul = memchr(start, '\0', left);
	size_t		len = nul ? (size_t) (nul - start) : left;
	char	   *s;

	if (r->nstrings == MAX_STRINGS)
		return "";
	s = malloc(len + 1);
	memcpy(s, start, len);
	s[len] = '\0';
	r->off += len + (nul ? 1 : 0);
	r->strings[r->nstrings++] = s;
	return s;
}

static DriftText
next_text(Reader *r)
{
	DriftText	t = {false, NULL};
	uint8_t		kind = next_byte(r) % 3;	/* unknown, null, a string */

	t.known = kind != 0;
	if (kind == 2)
		t.value = next_string(r);
	return t;
}

static DriftBool
next_bool(Reader *r)
{
	uint8_t		b = next_byte(r);
	DriftBool	v = {(b & 1) != 0, (b & 2) != 0};

	return v;
}

static DriftList
next_list(Reader *r)
{
	DriftList	list = {false, 0, NULL, NULL};
	uint8_t		b = next_byte(r);
	int			n = (b >> 1) % MAX_LIST;
	int			first = r->nlist_items;

	list.known = (b & 1) != 0;
	if (!list.known)
		return list;
	if (r->nlist_items + n > MAX_STRINGS)
		n = MAX_STRINGS - r->nlist_items;
	list.items = &r->lists[first];
	for (int i = 0; i < n; i++)
		r->lists[r->nlist_items++] = next_string(r);
	list.count = n;
	drift_list_sort(&list, &r->sorted[first]);
	return list;
}

/*
 * The tls_addresses list: addresses drawn from a few values (so that the
 * two views share some), each with its facts
 */
static DriftAddressList
next_addresses(Reader *r)
{
	static const char *const pool[] = {
		"192.0.2.10", "192.0.2.11", "192.0.2.12", "2001:db8::1",
	};
	DriftAddressList list = {false, 0, NULL};
	uint8_t		b = next_byte(r);

	list.known = (b & 1) != 0;
	if (!list.known || r->nviews >= 2)
		return list;
	list.items = r->addresses[r->nviews++];
	list.count = (b >> 1) % (MAX_ADDRESSES + 1);
	for (int i = 0; i < list.count; i++)
	{
		DriftAddress *a = &list.items[i];
		uint8_t		f = next_byte(r);

		a->address = (f & 4) ? next_string(r) : pool[f & 3];
		a->measured = (f & 8) != 0;
		a->verified = next_bool(r);
		a->verify_error = next_text(r);
		a->leaf_sha256 = next_text(r);
		a->subject_o = next_text(r);
		a->validation = next_text(r);
	}
	drift_addresses_sort(&list);
	return list;
}

static void
next_view(Reader *r, FactsView *v)
{
	facts_view_init(v);
	v->status_ok = (next_byte(r) & 1) != 0;
	v->host_rcode = (DriftRcode) (next_byte(r) % 4);
	for (int q = 0; q < DRIFT_QUERY_COUNT; q++)
		v->query_rcode[q] = (DriftRcode) (next_byte(r) % 4);
	v->ad = next_bool(r);
	v->cname = next_list(r);
	v->a = next_list(r);
	v->aaaa = next_list(r);
	v->ns = next_list(r);
	v->caa = next_list(r);
	v->ownership_ids = next_list(r);
	v->verified = next_bool(r);
	v->verify_error = next_text(r);
	v->version = next_text(r);
	v->validation = next_text(r);
	for (int p = 0; p < DRIFT_NAME_PART_COUNT; p++)
		v->subject[p] = next_text(r);
	v->issuer_org = next_text(r);
	v->serial = next_text(r);
	v->sha256 = next_text(r);
	v->spki_sha256 = next_text(r);
	v->not_before = next_text(r);
	v->not_after = next_text(r);
	v->intermediate_sha256 = next_text(r);
	v->address = next_text(r);
	v->addresses = next_addresses(r);
}

/* The same set in reverse order, in buf (room for list->count items) */
static DriftList
reversed(const DriftList *list, const char **buf, const char **sorted)
{
	DriftList	r = *list;

	if (!list->known)
		return r;
	for (int i = 0; i < list->count; i++)
		buf[i] = list->items[list->count - 1 - i];
	r.items = buf;
	drift_list_sort(&r, sorted);
	return r;
}

typedef struct Seen
{
	int			count;
	int			count_not_of_answers;	/* but domain_gone, dangling_cname */
	int			domain_gone;
	int			dangling_cname;
	int			address_mismatch;
} Seen;

static void
check_value(const DriftValue *v)
{
	switch (v->kind)
	{
		case DRIFT_VALUE_NULL:
			break;
		case DRIFT_VALUE_TEXT:
			if (v->text == NULL)
				abort();
			(void) strlen(v->text);
			break;
		case DRIFT_VALUE_LIST:
			if (v->list == NULL || v->list->count < 0)
				abort();
			for (int i = 0; i < v->list->count; i++)
				if (v->list->items[i] != NULL)
					(void) strlen(v->list->items[i]);
			break;
		default:
			fprintf(stderr, "invariant broken: value of kind %d\n", (int) v->kind);
			abort();
	}
}

static void
emit(void *arg, DriftReason reason, const char *field,
	 const DriftValue *old_value, const DriftValue *new_value)
{
	Seen	   *seen = arg;

	if ((int) reason < 0 || reason >= DRIFT_REASON_COUNT || field == NULL ||
		drift_reason_code(reason) == NULL ||
		drift_severity_name(drift_reason_default_severity(reason)) == NULL)
	{
		fprintf(stderr, "invariant broken: reason %d field %s\n", (int) reason,
				field ? field : "(null)");
		abort();
	}
	check_value(old_value);
	check_value(new_value);
	seen->count++;
	if (reason == DRIFT_DNS_DOMAIN_GONE)
		seen->domain_gone++;
	else if (reason == DRIFT_DNS_DANGLING_CNAME)
		seen->dangling_cname++;
	else
		seen->count_not_of_answers++;
	if (reason == DRIFT_TLS_ADDRESS_MISMATCH)
	{
		seen->address_mismatch++;
		if (strncmp(field, "tls_addresses[", 14) != 0)
		{
			fprintf(stderr, "invariant broken: tls_address_mismatch field %s\n", field);
			abort();
		}
	}
}

/* The rules' view of a dangling chain, from the outside */
static bool
may_dangle(const FactsView *v)
{
	return v->cname.known && v->cname.count > 0 &&
		v->cname.count < DRIFT_CNAME_CHAIN_MAX &&
		v->a.known && v->a.count == 0 && v->aaaa.known && v->aaaa.count == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Reader		r;
	FactsView	baseline,
				current;
	const char *client_id;
	Seen		seen = {0, 0, 0, 0, 0};
	Seen		self = {0, 0, 0, 0, 0};

	memset(&r, 0, sizeof(r));
	r.data = data;
	r.size = size;
	next_view(&r, &baseline);
	next_view(&r, &current);
	client_id = (next_byte(&r) & 1) ? next_string(&r) : NULL;

	drift_compare(&baseline, &current, client_id, emit, &seen);
	if ((!baseline.status_ok || !current.status_ok) &&
		seen.count_not_of_answers > 0)
	{
		fprintf(stderr, "invariant broken: a failed measurement counted as a change\n");
		abort();
	}
	if (seen.domain_gone > 1 || seen.dangling_cname > 1 ||
		(seen.domain_gone && seen.dangling_cname) ||
		(seen.dangling_cname && !may_dangle(&current)))
	{
		fprintf(stderr, "invariant broken: domain_gone %d, dangling_cname %d\n",
				seen.domain_gone, seen.dangling_cname);
		abort();
	}
	if (seen.address_mismatch > 0 &&
		(!baseline.addresses.known || !current.addresses.known ||
		 seen.address_mismatch > current.addresses.count))
	{
		fprintf(stderr, "invariant broken: tls_address_mismatch without both lists, or more than one per address\n");
		abort();
	}
	drift_compare(&baseline, &baseline, client_id, emit, &self);
	drift_compare(&current, &current, NULL, emit, &self);
	{
		/* sets compare equal whatever their order: only cname is a chain */
		static const char *buf[5][MAX_STRINGS];
		static const char *sorted[5][MAX_STRINGS];
		FactsView	shuffled = baseline;

		shuffled.a = reversed(&baseline.a, buf[0], sorted[0]);
		shuffled.aaaa = reversed(&baseline.aaaa, buf[1], sorted[1]);
		shuffled.ns = reversed(&baseline.ns, buf[2], sorted[2]);
		shuffled.caa = reversed(&baseline.caa, buf[3], sorted[3]);
		shuffled.ownership_ids = reversed(&baseline.ownership_ids, buf[4], sorted[4]);
		drift_compare(&baseline, &shuffled, client_id, emit, &self);
		drift_compare(&shuffled, &baseline, NULL, emit, &self);
	}
	{
		/* an address list in another order is the same list */
		DriftAddress reversed_addresses[MAX_ADDRESSES];
		FactsView	shuffled = baseline;

		for (int i = 0; i < baseline.addresses.count; i++)
			reversed_addresses[i] = baseline.addresses.items[baseline.addresses.count - 1 - i];
		shuffled.addresses.items = reversed_addresses;
		drift_addresses_sort(&shuffled.addresses);
		drift_compare(&baseline, &shuffled, client_id, emit, &self);
	}
	if (self.count != 0)
	{
		fprintf(stderr, "invariant broken: a view drifted from itself (%d reasons)\n", self.count);
		abort();
	}
	for (int p = 0; p < DRIFT_NAME_PART_COUNT; p++)
	{
		const char *a = baseline.subject[p].value;
		const char *b = current.subject[p].value;

		if (drift_names_equal(a, b, p == 0) != drift_names_equal(b, a, p == 0) ||
			!drift_names_equal(a, a, p == 0))
		{
			fprintf(stderr, "invariant broken: name comparison not symmetric or reflexive\n");
			abort();
		}
	}
	for (int i = 0; i < r.nstrings; i++)
		free(r.strings[i]);
	return 0;
}
