/*-------------------------------------------------------------------------
 *
 * dnswire.h
 *	  A small, bounds-checked reader for DNS messages (RFC 1035 wire format).
 *
 * Pure C with no allocation: it hands each answer record to a callback.
 * c-ares sends the queries; this module reads what came back, so one
 * parser serves every record type appguard records and the fuzzers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_DNSWIRE_H
#define APPGUARD_DNSWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_TYPE_A		1
#define DNS_TYPE_NS		2
#define DNS_TYPE_CNAME	5
#define DNS_TYPE_TXT	16
#define DNS_TYPE_AAAA	28
#define DNS_TYPE_CAA	257

#define DNS_RCODE_NOERROR	0
#define DNS_RCODE_FORMERR	1
#define DNS_RCODE_SERVFAIL	2
#define DNS_RCODE_NXDOMAIN	3
#define DNS_RCODE_NOTIMP	4
#define DNS_RCODE_REFUSED	5

/* Presentation form of a name: 255 octets of wire data can expand to 4x */
#define DNS_NAME_BUFSIZE 1024

typedef struct DnsHeader
{
	uint16_t	id;
	int			rcode;
	bool		aa;				/* authoritative answer */
	bool		tc;				/* truncated */
	bool		ad;				/* authentic data (DNSSEC validated) */
	int			qdcount;
	int			ancount;
} DnsHeader;

typedef struct DnsRecord
{
	char		owner[DNS_NAME_BUFSIZE];
	uint16_t	type;
	uint32_t	ttl;
	const uint8_t *rdata;		/* points into the message */
	int			rdlen;
	char		target[DNS_NAME_BUFSIZE];	/* CNAME and NS */
	uint8_t		addr[16];		/* A (4 bytes) and AAAA (16 bytes) */
	int			caa_flags;		/* CAA */
	char		caa_tag[256];	/* taglen bytes, NUL-terminated (a byte of it may be NUL) */
	int			caa_tag_len;
	const uint8_t *caa_value;
	int			caa_value_len;
} DnsRecord;

typedef void (*DnsRecordCallback) (const DnsRecord *rec, void *arg);

/*
 * Parse msg; fill header; call on_record for each well-formed record of the
 * answer section (records of unknown types included, with rdata only).
 * Returns NULL on success or a static message describing the first problem;
 * records seen before the problem have been delivered.
 */
extern const char *dns_parse_message(const uint8_t *msg, size_t len,
									 DnsHeader *header,
									 DnsRecordCallback on_record, void *arg);

/*
 * Join the character-strings of a TXT record's rdata into out (truncated
 * to outsize - 1 bytes).  Returns the number of bytes the whole record
 * needs, or -1 when the rdata is malformed.
 */
extern int	dns_txt_join(const uint8_t *rdata, int rdlen, char *out, size_t outsize);

/* "NOERROR", "NXDOMAIN", ...; NULL for codes without a name */
extern const char *dns_rcode_name(int rcode);

#endif							/* APPGUARD_DNSWIRE_H */
