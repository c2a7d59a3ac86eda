/*-------------------------------------------------------------------------
 *
 * dnswire.c
 *	  Bounds-checked DNS message reader.  See dnswire.h.
 *
 * Every read is checked against the message length; compression pointers
 * are followed a bounded number of times, so a hostile answer can neither
 * read outside the buffer nor loop.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include "dnswire.h"

#define DNS_HEADER_LEN 12
#define DNS_MAX_POINTERS 64
#define DNS_MAX_WIRE_NAME 255
#define DNS_CLASS_IN 1

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t) ((p[0] << 8) | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

/* Append one label byte in presentation form, escaping what is not LDH */
static size_t
put_label_byte(char *out, size_t pos, size_t outsize, uint8_t c)
{
	bool		plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*';

	if (plain)
	{
		if (pos + 1 < outsize)
			out[pos++] = (char) c;
		return pos;
	}
	if (pos + 4 < outsize)
	{
		snprintf(out + pos, 5, "\\%03u", (unsigned) c);
		pos += 4;
	}
	return pos;
}

/*
 * Read a possibly compressed name starting at *offset.  On success *offset
 * moves past the name as it stands at that place in the message.
 */
static const char *
read_name(const uint8_t *msg, size_t len, size_t *offset,
		  char *out, size_t outsize)
{
	size_t		pos = *offset;
	size_t		outpos = 0;
	size_t		wire_len = 0;
	int			pointers = 0;
	bool		jumped = false;

	for (;;)
	{
		uint8_t		labellen;

		if (pos >= len)
			return "name runs past the end of the message";
		labellen = msg[pos];
		if ((labellen & 0xc0) == 0xc0)
		{
			size_t		target;

			if (pos + 1 >= len)
				return "compression pointer runs past the end of the message";
			if (++pointers > DNS_MAX_POINTERS)
				return "too many compression pointers";
			target = ((size_t) (labellen & 0x3f) << 8) | msg[pos + 1];
			if (target >= len)
				return "compression pointer points outside the message";
			if (!jumped)
				*offset = pos + 2;
			jumped = true;
			pos = target;
			continue;
		}
		if ((labellen & 0xc0) != 0)
			return "unsupported label type";
		if (labellen == 0)
		{
			if (!jumped)
				*offset = pos + 1;
			break;
		}
		wire_len += labellen + 1;
		if (wire_len > DNS_MAX_WIRE_NAME)
			return "name longer than 255 octets";
		if (pos + 1 + labellen > len)
			return "label runs past the end of the message";
		if (outpos > 0 && outpos + 1 < outsize)
			out[outpos++] = '.';
		for (int i = 0; i < labellen; i++)
			outpos = put_label_byte(out, outpos, outsize, msg[pos + 1 + i]);
		pos += 1 + labellen;
	}
	if (outpos == 0 && outsize > 1)
		out[outpos++] = '.';	/* the root */
	out[outpos] = '\0';
	return NULL;
}

static const char *
decode_rdata(const uint8_t *msg, size_t len, size_t rdstart, DnsRecord *rec)
{
	size_t		off = rdstart;

	switch (rec->type)
	{
		case DNS_TYPE_A:
			if (rec->rdlen != 4)
				return "A record with rdata length other than 4";
			memcpy(rec->addr, rec->rdata, 4);
			break;
		case DNS_TYPE_AAAA:
			if (rec->rdlen != 16)
				return "AAAA record with rdata length other than 16";
			memcpy(rec->addr, rec->rdata, 16);
			break;
		case DNS_TYPE_CNAME:
		case DNS_TYPE_NS:
			{
				const char *err = read_name(msg, len, &off, rec->target,
											sizeof(rec->target));

				if (err)
					return err;
				if (off > rdstart + rec->rdlen)
					return "name runs past the end of its record";
				break;
			}
		case DNS_TYPE_TXT:
			if (dns_txt_join(rec->rdata, rec->rdlen, NULL, 0) < 0)
				return "malformed TXT record";
			break;
		case DNS_TYPE_CAA:
			{
				int			taglen;

				if (rec->rdlen < 2)
					return "CAA record too short";
				rec->caa_flags = rec->rdata[0];
				taglen = rec->rdata[1];
				if (taglen == 0 || 2 + taglen > rec->rdlen)
					return "CAA record with a bad tag length";
				memcpy(rec->caa_tag, rec->rdata + 2, taglen);
				rec->caa_tag[taglen] = '\0';
				rec->caa_tag_len = taglen;
				rec->caa_value = rec->rdata + 2 + taglen;
				rec->caa_value_len = rec->rdlen - 2 - taglen;
				break;
			}
		default:
			break;
	}
	return NULL;
}

const char *
dns_parse_message(const uint8_t *msg, size_t len, DnsHeader *header,
				  DnsRecordCallback on_record, void *arg)
{
	size_t		off = DNS_HEADER_LEN;
	char		scratch[DNS_NAME_BUFSIZE];
	DnsRecord	rec;
	uint16_t	flags;
	uint16_t	rclass;

	memset(header, 0, sizeof(*header));
	if (msg == NULL || len < DNS_HEADER_LEN)
		return "message shorter than a DNS header";
	flags = get16(msg + 2);
	header->id = get16(msg);
	header->rcode = flags & 0x000f;
	header->aa = (flags & 0x0400) != 0;
	header->tc = (flags & 0x0200) != 0;
	header->ad = (flags & 0x0020) != 0;
	header->qdcount = get16(msg + 4);
	header->ancount = get16(msg + 6);

	for (int q = 0; q < header->qdcount; q++)
	{
		const char *err = read_name(msg, len, &off, scratch, sizeof(scratch));

		if (err)
			return err;
		if (off + 4 > len)
			return "question runs past the end of the message";
		off += 4;
	}

	for (int a = 0; a < header->ancount; a++)
	{
		const char *err;

		memset(&rec, 0, sizeof(rec));
		err = read_name(msg, len, &off, rec.owner, sizeof(rec.owner));
		if (err)
			return err;
		if (off + 10 > len)
			return "record header runs past the end of the message";
		rec.type = get16(msg + off);
		rclass = get16(msg + off + 2);
		rec.ttl = get32(msg + off + 4);
		rec.rdlen = get16(msg + off + 8);
		off += 10;
		if (off + rec.rdlen > len)
			return "record data runs past the end of the message";
		rec.rdata = msg + off;
		err = decode_rdata(msg, len, off, &rec);
		if (err)
			return err;
		off += rec.rdlen;
		if (rclass == DNS_CLASS_IN)
			on_record(&rec, arg);
	}
	return NULL;
}

int
dns_txt_join(const uint8_t *rdata, int rdlen, char *out, size_t outsize)
{
	int			pos = 0;
	int			needed = 0;

	while (pos < rdlen)
	{
		int			slen = rdata[pos];

		if (pos + 1 + slen > rdlen)
			return -1;
		for (int i = 0; i < slen; i++)
		{
			if (out && (size_t) needed + 1 < outsize)
				out[needed] = (char) rdata[pos + 1 + i];
			needed++;
		}
		pos += 1 + slen;
	}
	if (out && outsize > 0)
		out[(size_t) needed < outsize ? (size_t) needed : outsize - 1] = '\0';
	return needed;
}

const char *
dns_rcode_name(int rcode)
{
	switch (rcode)
	{
		case DNS_RCODE_NOERROR:
			return "NOERROR";
		case DNS_RCODE_FORMERR:
			return "FORMERR";
		case DNS_RCODE_SERVFAIL:
			return "SERVFAIL";
		case DNS_RCODE_NXDOMAIN:
			return "NXDOMAIN";
		case DNS_RCODE_NOTIMP:
			return "NOTIMP";
		case DNS_RCODE_REFUSED:
			return "REFUSED";
		default:
			return NULL;
	}
}
