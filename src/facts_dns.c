/*-------------------------------------------------------------------------
 *
 * facts_dns.c
 *	  The "dns" object of the facts document, from a probe's answers.
 *
 * Sets (addresses, name servers, TXT strings, CAA records) are written
 * sorted and without duplicates, so that two snapshots of an unchanged
 * zone produce the same document whatever order the server answered in.
 *
 * The CNAME chain is written with where it ends: the registrable domain of
 * its last name, and whether that is another registrable domain than the
 * host's.  An alias into someone else's domain (a cloud provider's, a
 * CDN's) is what a subdomain takeover needs once the target is deleted;
 * the drift rules judge the chain's end (dns_dangling_cname), the page and
 * an operator can tell whose name it is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "appguard.h"
#include "dns.h"
#include "dnswire.h"
#include "drift_rules.h"
#include "facts.h"

/* shared with the drift rules, which need to know a chain was cut short */
#define MAX_CNAME_CHAIN DRIFT_CNAME_CHAIN_MAX

static const char *const query_type_names[QUERY_KIND_COUNT] = {
	[QUERY_A] = "A",
	[QUERY_AAAA] = "AAAA",
	[QUERY_NS] = "NS",
	[QUERY_TXT] = "TXT",
	[QUERY_CAA] = "CAA",
};

/* The rcode a query ended with, as the facts document spells it */
static const char *
query_rcode_name(const QueryResult *r)
{
	switch (r->outcome)
	{
		case QUERY_ANSWERED:
			{
				const char *name;

				/*
				 * An answer whose records do not parse is no usable answer,
				 * whatever rcode its header claims: a NOERROR here would
				 * say "no such records", and an empty TXT set read that way
				 * would count as a lost ownership record.
				 */
				if (r->error != NULL)
					return "ERROR";
				name = dns_rcode_name(r->rcode);

				return name ? name : psprintf("RCODE%d", r->rcode);
			}
		case QUERY_TIMED_OUT:
		case QUERY_PENDING:
			return "TIMEOUT";
		case QUERY_FAILED:
			return "ERROR";
		case QUERY_NOT_ASKED:
			return NULL;
	}
	return NULL;
}

static bool
query_noerror(const QueryResult *r)
{
	return r->outcome == QUERY_ANSWERED && r->error == NULL &&
		r->rcode == DNS_RCODE_NOERROR;
}

/* rcode of the host itself: NOERROR if either address query said so */
static const char *
host_rcode_name(Probe *probe)
{
	if (query_noerror(&probe->results[QUERY_A]) ||
		query_noerror(&probe->results[QUERY_AAAA]))
		return "NOERROR";
	return query_rcode_name(&probe->results[QUERY_A]);
}

/*
 * A string off the wire: TXT strings and CAA tags and values may hold NUL
 * bytes, so they are compared and written with their length (jw_string_bytes
 * writes a NUL as U+FFFD), never cut at the first NUL.
 */
typedef struct ByteString
{
	const char *data;
	size_t		len;
} ByteString;

static int
cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

static int
cmp_byte_string(const void *a, const void *b)
{
	const ByteString *x = a;
	const ByteString *y = b;

	return cmp_bytes(x->data, x->len, y->data, y->len);
}

/* Sort, drop duplicates and write an array of strings */
static void
write_string_set(JsonWriter *jw, const char *key, ByteString *values, int n)
{
	qsort(values, n, sizeof(ByteString), cmp_byte_string);
	jw_begin_array(jw, key);
	for (int i = 0; i < n; i++)
		if (i == 0 || cmp_byte_string(&values[i], &values[i - 1]) != 0)
			jw_string_bytes(jw, NULL, values[i].data, values[i].len);
	jw_end_array(jw);
}

/* Items of one type in a result (NS or TXT), as strings */
static ByteString *
item_strings(const QueryResult *r, uint16 type, int *count)
{
	ByteString *out = palloc((r->nitems + 1) * sizeof(ByteString));
	int			n = 0;

	for (int i = 0; i < r->nitems; i++)
	{
		const DnsItem *item = &r->items[i];

		if (item->type != type)
			continue;
		switch (type)
		{
			case DNS_TYPE_NS:
				out[n].data = item->target;
				out[n++].len = strlen(item->target);
				break;
			case DNS_TYPE_TXT:
				out[n].data = item->bytes;
				out[n++].len = item->bytes_len;
				break;
		}
	}
	*count = n;
	return out;
}

static void
write_items(JsonWriter *jw, const char *key, const QueryResult *r, uint16 type)
{
	int			n;
	ByteString *values = item_strings(r, type, &n);

	write_string_set(jw, key, values, n);
}

static int
cmp_address_item(const void *a, const void *b)
{
	const DnsItem *x = *(DnsItem *const *) a;
	const DnsItem *y = *(DnsItem *const *) b;

	return memcmp(x->addr, y->addr, x->type == DNS_TYPE_A ? 4 : 16);
}

/*
 * An address set, sorted by address value as the probe sorts it when it
 * chooses where to connect (10.0.0.9 before 10.0.0.10, ::1 before 2001::),
 * not by text, and without duplicates.
 */
static void
write_addresses(JsonWriter *jw, const char *key, const QueryResult *r, uint16 type)
{
	const DnsItem **items = palloc((r->nitems + 1) * sizeof(DnsItem *));
	int			n = 0;

	for (int i = 0; i < r->nitems; i++)
		if (r->items[i].type == type)
			items[n++] = &r->items[i];
	qsort(items, n, sizeof(DnsItem *), cmp_address_item);
	jw_begin_array(jw, key);
	for (int i = 0; i < n; i++)
	{
		char		text[INET6_ADDRSTRLEN];

		if (i > 0 && cmp_address_item(&items[i], &items[i - 1]) == 0)
			continue;
		jw_string(jw, NULL, inet_ntop(type == DNS_TYPE_A ? AF_INET : AF_INET6,
									  items[i]->addr, text, sizeof(text)));
	}
	jw_end_array(jw);
}

/*
 * Follow CNAMEs from the question name through the answer section of the
 * A question (the AAAA question's when A holds no records); returns the
 * number of steps put in chain (room for MAX_CNAME_CHAIN).
 */
static int
cname_chain(Probe *probe, const char **chain)
{
	const QueryResult *r = &probe->results[QUERY_A];
	const char *current = probe->host;
	int			hops;

	if (r->nitems == 0)
		r = &probe->results[QUERY_AAAA];
	for (hops = 0; hops < MAX_CNAME_CHAIN; hops++)
	{
		const char *next = NULL;

		for (int i = 0; i < r->nitems && next == NULL; i++)
			if (r->items[i].type == DNS_TYPE_CNAME &&
				pg_strcasecmp(r->items[i].owner, current) == 0)
				next = r->items[i].target;
		if (next == NULL)
			break;
		chain[hops] = next;
		current = next;
	}
	return hops;
}

/*
 * The chain, then the registrable domain of its end and whether that is
 * not the host's: both null without a chain, and for a chain as long as
 * the limit, whose end was not seen (a loop, or longer than recorded).
 * A last name that is itself a public suffix has no registrable domain,
 * and so is another one than the host's.
 */
static void
write_cname_chain(JsonWriter *jw, Probe *probe)
{
	const char *chain[MAX_CNAME_CHAIN];
	int			n = cname_chain(probe, chain);
	char		target_domain[256];
	bool		has_domain = false;

	jw_begin_array(jw, "cname");
	for (int i = 0; i < n; i++)
		jw_string(jw, NULL, chain[i]);
	jw_end_array(jw);
	if (n == 0 || n == MAX_CNAME_CHAIN)
	{
		jw_null(jw, "cname_target_domain");
		jw_null(jw, "cname_cross_domain");
		return;
	}
	has_domain = dns_registrable_domain(chain[n - 1], target_domain,
										sizeof(target_domain));
	jw_string(jw, "cname_target_domain", has_domain ? target_domain : NULL);
	if (probe->registrable_domain[0] == '\0')
		jw_null(jw, "cname_cross_domain");
	else
		jw_bool(jw, "cname_cross_domain", !has_domain ||
				pg_strcasecmp(target_domain, probe->registrable_domain) != 0);
}

static int
cmp_caa(const void *a, const void *b)
{
	const DnsItem *x = *(DnsItem *const *) a;
	const DnsItem *y = *(DnsItem *const *) b;
	int			c = cmp_bytes(x->caa_tag, x->caa_tag_len, y->caa_tag, y->caa_tag_len);

	if (c == 0)
		c = cmp_bytes(x->bytes, x->bytes_len, y->bytes, y->bytes_len);
	if (c == 0)
		c = x->caa_flags - y->caa_flags;
	return c;
}

static void
write_caa(JsonWriter *jw, Probe *probe)
{
	const QueryResult *r = &probe->results[QUERY_CAA];
	DnsItem   **caa = palloc((r->nitems + 1) * sizeof(DnsItem *));
	int			n = 0;

	for (int i = 0; i < r->nitems; i++)
		if (r->items[i].type == DNS_TYPE_CAA)
			caa[n++] = &r->items[i];
	qsort(caa, n, sizeof(DnsItem *), cmp_caa);
	jw_begin_array(jw, "caa");
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && cmp_caa(&caa[i], &caa[i - 1]) == 0)
			continue;
		jw_begin_object(jw, NULL);
		jw_int(jw, "flags", caa[i]->caa_flags);
		jw_string_bytes(jw, "tag", caa[i]->caa_tag, caa[i]->caa_tag_len);
		jw_string_bytes(jw, "value", caa[i]->bytes, caa[i]->bytes_len);
		jw_end_object(jw);
	}
	jw_end_array(jw);
	jw_string(jw, "caa_domain", probe->caa_found ? probe->caa_found_at : NULL);
}

/* TXT strings at the registrable domain, and the client ids they claim */
static void
write_txt_and_ownership(JsonWriter *jw, Probe *probe)
{
	const QueryResult *r = &probe->results[QUERY_TXT];
	int			n;
	ByteString *txt = item_strings(r, DNS_TYPE_TXT, &n);
	ByteString *ids = palloc((n + 1) * sizeof(ByteString));
	int			nids = 0;
	char	   *prefix = psprintf("%s=", appguard_ownership_prefix);
	size_t		prefix_len = strlen(prefix);

	write_string_set(jw, "txt", txt, n);
	/* the whole record is the claim: "id\0 more" claims "id\ufffd more" */
	for (int i = 0; i < n; i++)
		if (txt[i].len > prefix_len && memcmp(txt[i].data, prefix, prefix_len) == 0)
		{
			ids[nids].data = txt[i].data + prefix_len;
			ids[nids++].len = txt[i].len - prefix_len;
		}
	write_string_set(jw, "ownership_ids", ids, nids);
}

void
facts_dns(JsonWriter *jw, Probe *probe)
{
	jw_begin_object(jw, "dns");
	jw_string(jw, "rcode", host_rcode_name(probe));
	jw_begin_object(jw, "queries");
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
		jw_string(jw, query_type_names[k], query_rcode_name(&probe->results[k]));
	jw_end_object(jw);
	jw_bool(jw, "ad", probe->results[QUERY_A].outcome == QUERY_ANSWERED &&
			probe->results[QUERY_A].ad);
	write_cname_chain(jw, probe);
	write_addresses(jw, "a", &probe->results[QUERY_A], DNS_TYPE_A);
	write_addresses(jw, "aaaa", &probe->results[QUERY_AAAA], DNS_TYPE_AAAA);
	jw_string(jw, "registrable_domain",
			  probe->registrable_domain[0] ? probe->registrable_domain : NULL);
	write_items(jw, "ns", &probe->results[QUERY_NS], DNS_TYPE_NS);
	write_caa(jw, probe);
	write_txt_and_ownership(jw, probe);
	jw_end_object(jw);
}
