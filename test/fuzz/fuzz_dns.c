/*-------------------------------------------------------------------------
 *
 * fuzz_dns.c
 *	  libFuzzer harness: DNS answers -> facts.
 *
 * The input is the answers a server sent to one probe's questions.  Each
 * goes through the code a probe runs on a real answer: the wire parser
 * (dns_parse_message) via dns_take_answer, which copies the records a
 * probe keeps, then the writer of the "dns" object of the facts document
 * (facts_dns).  The document must be valid UTF-8 and valid JSON, since
 * the backend turns it into jsonb.
 *
 * Input: byte 0 chooses the probe's host name and which questions timed
 * out instead of answering; then up to five answers (A, AAAA, NS, TXT,
 * CAA), each as a 2-byte big-endian length and that many bytes.  The
 * whole input is also given to dns_parse_message as one message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ares.h>
#include <stdlib.h>

#include "dns.h"
#include "dnswire.h"
#include "facts.h"
#include "jsonw.h"
#include "probe.h"
#include "shim.h"

static const char *const hosts[] = {
	"www.example.test", "alias.example.test", "example.test",
	"a.b.c.example.co.uk", "xn--bcher-kva.example.test", "loop.example.test",
	"deep.sub.example.test", "t.test",
};

static int	records_seen;

static void
count_record(const DnsRecord *rec, void *arg)
{
	/* every field the parser fills must be terminated within its buffer */
	if (memchr(rec->owner, '\0', sizeof(rec->owner)) == NULL ||
		memchr(rec->target, '\0', sizeof(rec->target)) == NULL ||
		memchr(rec->caa_tag, '\0', sizeof(rec->caa_tag)) == NULL)
		fuzz_fail("unterminated name in a record of type %d", rec->type);
	if (rec->rdlen < 0)
		fuzz_fail("negative rdata length");
	if (rec->type == DNS_TYPE_CAA &&
		(rec->caa_tag_len != rec->rdata[1] || memcmp(rec->caa_tag, rec->rdata + 2, rec->caa_tag_len) != 0))
		fuzz_fail("CAA tag not the record's %d bytes", rec->rdata[1]);
	if (rec->type == DNS_TYPE_TXT &&
		dns_txt_join(rec->rdata, rec->rdlen, NULL, 0) < 0)
		fuzz_fail("TXT record delivered although malformed");
	records_seen++;
}

static void
take(QueryResult *result, const uint8_t *data, size_t len, bool timed_out)
{
	QuerySlot	slot;

	memset(&slot, 0, sizeof(slot));
	slot.ares_status = timed_out ? ARES_ETIMEOUT : ARES_SUCCESS;
	if (!timed_out)
	{
		/* as dns_answer_callback does: a malloc'd copy the slot owns */
		slot.answer = malloc(len ? len : 1);
		memcpy(slot.answer, data, len);
		slot.answer_len = (int) len;
		if (len == 0)
			slot.ares_status = ARES_EBADRESP;
	}
	dns_take_answer(&slot, result);
	if (slot.answer != NULL)
		fuzz_fail("dns_take_answer kept the answer copy");
	free(slot.answer);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	DnsHeader	header;
	Probe	   *probe;
	StringInfoData buf;
	JsonWriter	jw;
	size_t		off = 1;
	uint8_t		flags;

	records_seen = 0;
	(void) dns_parse_message(data, size, &header, count_record, NULL);
	if (size < 1)
		return 0;
	flags = data[0];

	probe = palloc0(sizeof(Probe));
	strlcpy(probe->host, hosts[flags & 7], sizeof(probe->host));
	if (!dns_registrable_domain(probe->host, probe->registrable_domain,
								sizeof(probe->registrable_domain)))
		probe->registrable_domain[0] = '\0';
	for (int k = 0; k < QUERY_KIND_COUNT; k++)
		probe->results[k].outcome = QUERY_NOT_ASKED;
	for (int k = 0; k < QUERY_KIND_COUNT && off + 2 <= size; k++)
	{
		size_t		len = (data[off] << 8) | data[off + 1];

		off += 2;
		len = Min(len, size - off);
		take(&probe->results[k], data + off, len, ((flags >> (3 + k)) & 1) != 0);
		off += len;
	}
	/* the CAA set is "found" where the answer says, as caa_climb decides */
	for (int i = 0; i < probe->results[QUERY_CAA].nitems; i++)
		if (probe->results[QUERY_CAA].items[i].type == DNS_TYPE_CAA)
		{
			probe->caa_found = true;
			strlcpy(probe->caa_found_at, probe->host, sizeof(probe->caa_found_at));
		}

	jw_init(&jw);
	jw_begin_object(&jw, NULL);
	facts_dns(&jw, probe);
	jw_end_object(&jw);
	if (jw.depth != 0)
		fuzz_fail("unbalanced JSON writer depth %d", jw.depth);
	initStringInfo(&buf);
	jw_text(&buf, jw.result);
	check_json(buf.data, buf.len, "dns facts");
	shim_reset();
	return 0;
}
