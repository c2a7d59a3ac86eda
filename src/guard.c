/*-------------------------------------------------------------------------
 *
 * guard.c
 *	  Host-name validation, port allow-list and address classification.
 *
 * Everything here is a pure function of its arguments (no PostgreSQL calls,
 * no allocation visible to the caller), so the same code runs inside the
 * backend, in the pg_regress tests through thin SQL wrappers, and under the
 * fuzzers.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"

static const char *const address_class_names[ADDR_CLASS_COUNT] = {
	[ADDR_PUBLIC] = "public",
	[ADDR_LOOPBACK] = "loopback",
	[ADDR_PRIVATE] = "private",
	[ADDR_LINK_LOCAL] = "link_local",
	[ADDR_CGNAT] = "cgnat",
	[ADDR_UNIQUE_LOCAL] = "unique_local",
	[ADDR_SITE_LOCAL] = "site_local",
	[ADDR_METADATA] = "metadata",
	[ADDR_THIS_NETWORK] = "this_network",
	[ADDR_MULTICAST] = "multicast",
	[ADDR_BROADCAST] = "broadcast",
	[ADDR_RESERVED] = "reserved",
	[ADDR_DOCUMENTATION] = "documentation",
	[ADDR_BENCHMARK] = "benchmark",
};

const char *
guard_address_class_name(AddressClass cls)
{
	if (cls < 0 || cls >= ADDR_CLASS_COUNT)
		return "unknown";
	return address_class_names[cls];
}

bool
guard_class_allowed(AddressClass cls, bool allow_private)
{
	switch (cls)
	{
		case ADDR_PUBLIC:
			return true;
		case ADDR_LOOPBACK:
		case ADDR_PRIVATE:
		case ADDR_LINK_LOCAL:
		case ADDR_CGNAT:
		case ADDR_UNIQUE_LOCAL:
		case ADDR_SITE_LOCAL:
			return allow_private;
		default:
			/* no real app lives on these: never connect */
			return false;
	}
}

/* Does the 32-bit host-order address a lie in prefix/len? */
static bool
in4(uint32_t a, uint32_t prefix, int len)
{
	uint32_t	mask = len == 0 ? 0 : 0xffffffffu << (32 - len);

	return (a & mask) == (prefix & mask);
}

#define IP4(a, b, c, d) (((uint32_t) (a) << 24) | ((b) << 16) | ((c) << 8) | (d))

static AddressClass
classify_ipv4(uint32_t a)
{
	if (a == IP4(169, 254, 169, 254) || a == IP4(100, 100, 100, 200) ||
		a == IP4(192, 0, 0, 192))
		return ADDR_METADATA;	/* AWS/GCP/Azure, Alibaba, Oracle */
	if (in4(a, IP4(0, 0, 0, 0), 8))
		return ADDR_THIS_NETWORK;
	if (in4(a, IP4(127, 0, 0, 0), 8))
		return ADDR_LOOPBACK;
	if (in4(a, IP4(10, 0, 0, 0), 8) || in4(a, IP4(172, 16, 0, 0), 12) ||
		in4(a, IP4(192, 168, 0, 0), 16))
		return ADDR_PRIVATE;
	if (in4(a, IP4(169, 254, 0, 0), 16))
		return ADDR_LINK_LOCAL;
	if (in4(a, IP4(100, 64, 0, 0), 10))
		return ADDR_CGNAT;
	if (a == IP4(255, 255, 255, 255))
		return ADDR_BROADCAST;
	if (in4(a, IP4(224, 0, 0, 0), 4))
		return ADDR_MULTICAST;
	if (in4(a, IP4(240, 0, 0, 0), 4) || in4(a, IP4(192, 0, 0, 0), 24) ||
		in4(a, IP4(192, 88, 99, 0), 24))
		return ADDR_RESERVED;
	if (in4(a, IP4(192, 0, 2, 0), 24) || in4(a, IP4(198, 51, 100, 0), 24) ||
		in4(a, IP4(203, 0, 113, 0), 24))
		return ADDR_DOCUMENTATION;
	if (in4(a, IP4(198, 18, 0, 0), 15))
		return ADDR_BENCHMARK;
	return ADDR_PUBLIC;
}

static uint32_t
ipv4_at(const uint8_t *p)
{
	return IP4(p[0], p[1], p[2], p[3]);
}

static bool
bytes_zero(const uint8_t *p, int n)
{
	for (int i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/*
 * How much a class is refused: metadata most, then the classes that are
 * never reachable, then those that allow_private opens, then public.
 */
static int
refusal_rank(AddressClass cls)
{
	if (cls == ADDR_METADATA)
		return 3;
	if (!guard_class_allowed(cls, true))
		return 2;
	if (!guard_class_allowed(cls, false))
		return 1;
	return 0;
}

/*
 * An address in the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215).  A
 * network may deploy a translator on any RFC 6052 prefix inside it, of
 * length 48, 56, 64 or 96, and where the IPv4 address sits depends on that
 * length, which we cannot see.  RFC 6052 section 2.2 puts it in bits 48-63
 * and 72-87 for a /48 (around the reserved "u" octet, bits 64-71), in bits
 * 56-63 and 72-95 for a /56, in bits 72-103 for a /64 and in bits 96-127
 * for a /96.  Every reading is classified and the most refused class wins,
 * so an address is public only when it is public whatever the prefix
 * length.  A reading in 0.0.0.0/8 names no destination a translator can
 * reach, so it counts only when every reading is in 0.0.0.0/8: otherwise
 * 64:ff9b:1::5db8:d822 (93.184.216.34 behind a /96), whose /48 reading is
 * 0.0.0.0, could never be public.  The u octet and the suffix are not
 * checked, because a translator need not check them either.
 */
static AddressClass
classify_nat64_local(const uint8_t *b)
{
	static const uint8_t positions[4][4] = {
		{12, 13, 14, 15},		/* /96 */
		{9, 10, 11, 12},		/* /64 */
		{7, 9, 10, 11},			/* /56 */
		{6, 7, 9, 10},			/* /48 */
	};
	AddressClass result = ADDR_THIS_NETWORK;
	bool		found = false;

	for (int i = 0; i < 4; i++)
	{
		const uint8_t *pos = positions[i];
		uint32_t	a = IP4(b[pos[0]], b[pos[1]], b[pos[2]], b[pos[3]]);
		AddressClass cls;

		if (in4(a, IP4(0, 0, 0, 0), 8))
			continue;
		cls = classify_ipv4(a);
		if (!found || refusal_rank(cls) > refusal_rank(result))
			result = cls;
		found = true;
	}
	return result;
}

static AddressClass
classify_ipv6(const uint8_t *b)
{
	static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	static const uint8_t aws_metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0x02, 0x54};	/* fd00:ec2::254 */

	/* ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated) */
	if (bytes_zero(b, 10) && b[10] == 0xff && b[11] == 0xff)
		return classify_ipv4(ipv4_at(b + 12));
	if (bytes_zero(b, 12))
	{
		if (bytes_zero(b + 12, 3) && b[15] <= 1)
			return b[15] == 1 ? ADDR_LOOPBACK : ADDR_THIS_NETWORK;
		return classify_ipv4(ipv4_at(b + 12));
	}
	/* NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48 */
	if (memcmp(b, nat64, 12) == 0)
		return classify_ipv4(ipv4_at(b + 12));
	if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b &&
		b[4] == 0x00 && b[5] == 0x01)
		return classify_nat64_local(b);
	/* 6to4 2002::/16 carries an IPv4 address in bits 16..47 */
	if (b[0] == 0x20 && b[1] == 0x02)
		return classify_ipv4(ipv4_at(b + 2));
	if (memcmp(b, aws_metadata, 16) == 0)
		return ADDR_METADATA;
	if (b[0] == 0xff)
		return ADDR_MULTICAST;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return ADDR_LINK_LOCAL;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
		return ADDR_SITE_LOCAL;
	if ((b[0] & 0xfe) == 0xfc)
		return ADDR_UNIQUE_LOCAL;
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
		return ADDR_DOCUMENTATION;
	if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0x00)
		return ADDR_DOCUMENTATION;	/* 3fff::/20 (RFC 9637) */
	/* 2001::/23 IETF protocol assignments, Teredo among them */
	if (b[0] == 0x20 && b[1] == 0x01 && (b[2] & 0xfe) == 0x00)
		return ADDR_RESERVED;
	if (b[0] == 0x01 && bytes_zero(b + 1, 7))
		return ADDR_RESERVED;	/* discard-only 100::/64 */
	if ((b[0] & 0xe0) != 0x20)
		return ADDR_RESERVED;	/* outside global unicast 2000::/3 */
	return ADDR_PUBLIC;
}

AddressClass
guard_classify_address(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;

		return classify_ipv4(ntohl(sin->sin_addr.s_addr));
	}
	if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;

		return classify_ipv6(sin6->sin6_addr.s6_addr);
	}
	return ADDR_RESERVED;
}

bool
guard_is_ip_literal(const char *text)
{
	struct in_addr a4;
	struct in6_addr a6;
	char		buf[64];
	size_t		len = strlen(text);

	/* inet_aton also accepts 2130706433, 0x7f.1 and 0177.0.0.1 */
	if (inet_aton(text, &a4) || inet_pton(AF_INET6, text, &a6) == 1)
		return true;
	if (len >= 2 && len < sizeof(buf) && text[0] == '[' && text[len - 1] == ']')
	{
		memcpy(buf, text + 1, len - 2);
		buf[len - 2] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) == 1)
			return true;
	}
	return false;
}

/*
 * Whether a label is a number as IPv4 parsers read one: decimal, or "0x"
 * and hexadecimal digits (WHATWG URL's "ends in a number").  A name whose
 * last label is one of these is an address spelling to inet_aton() and to
 * browsers ("0x7f.0x1" is 127.0.0.1), whatever the other labels hold.
 */
static bool
numeric_label(const char *label)
{
	if (label[0] == '0' && label[1] == 'x')
		return strspn(label + 2, "0123456789abcdef") == strlen(label + 2);
	return strspn(label, "0123456789") == strlen(label);
}

/* Check LDH syntax of an ASCII name already lower-cased, without final dot */
static const char *
check_ldh_labels(const char *name)
{
	const char *label = name;
	const char *last_label = name;

	for (;;)
	{
		const char *end = strchr(label, '.');
		size_t		len = end ? (size_t) (end - label) : strlen(label);

		if (len == 0)
			return "host name has an empty label";
		if (len > GUARD_MAX_LABEL_LEN)
			return "host name has a label longer than 63 characters";
		if (label[0] == '-' || label[len - 1] == '-')
			return "host name label starts or ends with a hyphen";
		for (size_t i = 0; i < len; i++)
		{
			unsigned char c = (unsigned char) label[i];

			if (!(isdigit(c) || (c >= 'a' && c <= 'z') || c == '-'))
				return "host name contains a character that is not a letter, digit, hyphen or dot";
		}
		last_label = label;
		if (!end)
			break;
		label = end + 1;
	}
	if (numeric_label(last_label))
		return "host name ends in a numeric label, which looks like an IP address";
	if (last_label == name)
		return "host name must have at least two labels";
	return NULL;
}

const char *
guard_normalize_host(const char *input, size_t input_len,
					 char *out, size_t outsize)
{
	char		work[1024];
	bool		ascii = true;
	size_t		len = input_len;

	if (len == 0)
		return "host name is empty";
	if (memchr(input, '\0', len) != NULL)
		return "host name contains a NUL byte";
	if (len >= sizeof(work))
		return "host name is longer than 253 characters";
	memcpy(work, input, len);
	work[len] = '\0';
	if (guard_is_ip_literal(work))
		return "an IP address is not accepted where a host name is needed";
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) work[i];

		if (c <= ' ' || c == 0x7f)
			return "host name contains white space or a control character";
		if (c >= 0x80)
			ascii = false;
		else
			work[i] = (char) tolower(c);
	}
	if (len > 1 && work[len - 1] == '.')
		work[--len] = '\0';

	if (!ascii)
	{
		char	   *alabels = NULL;

		/* IDNA 2008 with UTS#46 mapping: Unicode -> lower-case A-labels */
		if (idn2_to_ascii_8z(work, &alabels,
							 IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK)
			return "host name is not a valid internationalized domain name";
		len = strlen(alabels);
		if (len >= sizeof(work))
		{
			idn2_free(alabels);
			return "host name is longer than 253 characters";
		}
		memcpy(work, alabels, len + 1);
		idn2_free(alabels);
		if (len > 1 && work[len - 1] == '.')
			work[--len] = '\0';
	}
	if (len > GUARD_MAX_HOST_LEN)
		return "host name is longer than 253 characters";
	{
		const char *problem = check_ldh_labels(work);

		if (problem)
			return problem;
	}
	if (len + 1 > outsize)
		return "host name is longer than 253 characters";
	memcpy(out, work, len + 1);
	return NULL;
}

/*
 * The next element of a comma-separated settings list ("443, 8443-8450",
 * "10.20.0.0/16, fd00:1::/48"): spaces and tabs around elements are
 * skipped, an element ends at a comma, space or tab.  Returns 1 with the
 * element in *item and *len and *p past it and its comma, 0 at the end of
 * the list, -1 when the list is malformed (an empty element, two elements
 * without a comma between them).
 */
static int
next_list_item(const char **p, const char **item, size_t *len)
{
	const char *s = *p;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0')
	{
		*p = s;
		return 0;
	}
	if (*s == ',')
		return -1;				/* an empty element */
	*item = s;
	*len = strcspn(s, ", \t");
	s += *len;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == ',')
	{
		s++;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == ',')
			return -1;			/* an empty element */
	}
	else if (*s != '\0')
		return -1;
	*p = s;
	return 1;
}

/* A port or a range of ports, digits only: "443", "8443-8450" */
static bool
parse_port_range(const char *item, size_t len, long *lo, long *hi)
{
	const char *end = item + len;
	char	   *stop;

	if (!isdigit((unsigned char) *item))
		return false;
	*lo = strtol(item, &stop, 10);
	*hi = *lo;
	if (stop < end && *stop == '-')
	{
		if (!isdigit((unsigned char) stop[1]))
			return false;
		*hi = strtol(stop + 1, &stop, 10);
	}
	return stop == end && *lo >= 1 && *hi <= 65535 && *lo <= *hi;
}

/*
 * Walk a port list; with port < 0 only validate it.  Returns 1 when port is
 * listed, 0 when not, -1 when the list is malformed.
 */
static int
scan_port_list(int port, const char *list)
{
	const char *p = list;
	const char *item;
	size_t		len;
	int			found = 0;
	int			more;

	while ((more = next_list_item(&p, &item, &len)) == 1)
	{
		long		lo,
					hi;

		if (!parse_port_range(item, len, &lo, &hi))
			return -1;
		if (port >= lo && port <= hi)
			found = 1;
	}
	return more < 0 ? -1 : found;
}

bool
guard_port_in_list(int port, const char *list)
{
	return list != NULL && scan_port_list(port, list) == 1;
}

bool
guard_port_list_valid(const char *list)
{
	return list != NULL && scan_port_list(-1, list) >= 0;
}

/* ---- appguard.allowed_networks ---- */

/*
 * One network of the list, "address" or "address/prefix", in its own
 * family's bytes.  Host bits right of the prefix must be zero, as in
 * PostgreSQL's cidr type, so that a typo cannot silently widen a network.
 */
typedef struct Network
{
	int			family;			/* AF_INET or AF_INET6 */
	uint8_t		bytes[16];
	int			prefix;
} Network;

static bool
parse_network(const char *text, size_t len, Network *net)
{
	char		buf[INET6_ADDRSTRLEN + 8];
	char	   *slash;
	int			bits;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, buf, net->bytes) == 1)
		net->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, net->bytes) == 1)
		net->family = AF_INET6;
	else
		return false;
	bits = net->family == AF_INET ? 32 : 128;
	net->prefix = bits;
	if (slash != NULL)
	{
		char	   *end;
		long		prefix;

		if (!isdigit((unsigned char) slash[1]))
			return false;
		prefix = strtol(slash + 1, &end, 10);
		if (*end != '\0' || prefix < 0 || prefix > bits)
			return false;
		net->prefix = (int) prefix;
	}
	for (int bit = net->prefix; bit < bits; bit++)
		if (net->bytes[bit / 8] & (0x80 >> (bit % 8)))
			return false;
	return true;
}

static bool
network_contains(const Network *net, int family, const uint8_t *bytes)
{
	int			whole = net->prefix / 8;
	int			rest = net->prefix % 8;

	if (family != net->family || memcmp(net->bytes, bytes, whole) != 0)
		return false;
	return rest == 0 || ((net->bytes[whole] ^ bytes[whole]) & (0xff << (8 - rest))) == 0;
}

/*
 * Walk a network list; with sa NULL only validate it.  Returns 1 when sa is
 * in a listed network, 0 when not, -1 when the list is malformed.
 */
static int
scan_network_list(const struct sockaddr *sa, const char *list)
{
	const char *p = list;
	const char *item;
	size_t		len;
	int			found = 0;
	int			more;
	int			family = 0;
	const uint8_t *bytes = NULL;

	if (sa != NULL && sa->sa_family == AF_INET)
	{
		family = AF_INET;
		bytes = (const uint8_t *) &((const struct sockaddr_in *) sa)->sin_addr;
	}
	else if (sa != NULL && sa->sa_family == AF_INET6)
	{
		family = AF_INET6;
		bytes = (const uint8_t *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
	}
	while ((more = next_list_item(&p, &item, &len)) == 1)
	{
		Network		net;

		if (!parse_network(item, len, &net))
			return -1;
		if (bytes != NULL && network_contains(&net, family, bytes))
			found = 1;
	}
	return more < 0 ? -1 : found;
}

bool
guard_network_list_valid(const char *list)
{
	return list != NULL && scan_network_list(NULL, list) >= 0;
}

bool
guard_address_allowed(const struct sockaddr *sa, bool allow_private, const char *networks,
					  AddressClass *cls)
{
	*cls = guard_classify_address(sa);
	if (guard_class_allowed(*cls, allow_private))
		return true;
	/* only the classes allow_private would open may be listed open */
	return guard_class_allowed(*cls, true) && networks != NULL
		&& scan_network_list(sa, networks) == 1;
}

/* ---- appguard.dns_servers ---- */

/* Whether text[0..len) is a port from 1 to 65535, in decimal digits only */
static bool
parse_dns_port(const char *text, size_t len)
{
	long		port = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (!isdigit((unsigned char) text[i]))
			return false;
		port = port * 10 + (text[i] - '0');
	}
	return port >= 1 && port <= 65535;
}

/* Whether text[0..len) is an address of family af (inet_pton's spelling) */
static bool
is_address(int af, const char *text, size_t len)
{
	char		buf[INET6_ADDRSTRLEN + 1];
	uint8_t		bytes[16];

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	return inet_pton(af, buf, bytes) == 1;
}

/*
 * One DNS server, "ipv4", "ipv4:port", "ipv6", "[ipv6]" or "[ipv6]:port",
 * appended to out as c-ares reads it (c-ares wants no brackets around an
 * IPv6 address without a port).  c-ares itself would take a port past
 * 65535 modulo 65536, port 0 as its default, and "127.1" as 127.1.0.0.
 */
static bool
append_dns_server(const char *item, size_t len, char *out, size_t *used, size_t outsize)
{
	const char *copy = item;
	size_t		copy_len = len;

	if (item[0] == '[')
	{
		const char *close = memchr(item, ']', len);

		if (close == NULL || !is_address(AF_INET6, item + 1, close - item - 1))
			return false;
		if (close == item + len - 1)
		{
			copy = item + 1;	/* "[ipv6]": the address alone */
			copy_len = len - 2;
		}
		else if (close[1] != ':' || !parse_dns_port(close + 2, item + len - close - 2))
			return false;
	}
	else if (!is_address(AF_INET6, item, len))
	{
		const char *colon = memchr(item, ':', len);
		size_t		addr_len = colon != NULL ? (size_t) (colon - item) : len;

		if (!is_address(AF_INET, item, addr_len))
			return false;
		if (colon != NULL && !parse_dns_port(colon + 1, len - addr_len - 1))
			return false;
	}
	if (*used + (*used > 0) + copy_len + 1 > outsize)
		return false;
	if (*used > 0)
		out[(*used)++] = ',';
	memcpy(out + *used, copy, copy_len);
	*used += copy_len;
	out[*used] = '\0';
	return true;
}

bool
guard_dns_server_list_normalize(const char *list, char *out, size_t outsize)
{
	const char *p = list;
	const char *item;
	size_t		len;
	size_t		used = 0;
	int			more;

	if (list == NULL || outsize == 0)
		return false;
	out[0] = '\0';
	while ((more = next_list_item(&p, &item, &len)) == 1)
		if (!append_dns_server(item, len, out, &used, outsize))
			return false;
	return more == 0;
}
