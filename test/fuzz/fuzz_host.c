/*-------------------------------------------------------------------------
 *
 * fuzz_host.c
 *	  libFuzzer harness: host-name validation and IDN conversion
 *	  (guard_normalize_host), IP-literal detection, the port list parser,
 *	  the address classifier and the allowed_networks list.
 *
 * Invariants checked on every input:
 *	- an accepted name is at most 253 characters of lower-case LDH labels
 *	  of 1..63 characters, at least two of them, no label starting or
 *	  ending with a hyphen, and no spelling of an IP address: neither
 *	  inet_aton() nor inet_pton() reads it, and its last label is not a
 *	  number (decimal or 0x-hexadecimal);
 *	- normalizing is idempotent: an accepted name normalizes to itself;
 *	- a refusal comes with a message;
 *	- an IPv6 address that carries an IPv4 address (mapped ::ffff:a.b.c.d,
 *	  NAT64 64:ff9b::a.b.c.d) is classified as that IPv4 address, and
 *	  loopback or private classes are never allowed with the guard on;
 *	- appguard.allowed_networks never opens more than allow_private would,
 *	  a malformed list opens nothing (check_network_list).
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"

static void
fail(const char *what, const char *input, size_t len, const char *out)
{
	fprintf(stderr, "invariant broken: %s (input %zu bytes, output \"%s\")\n",
			what, len, out ? out : "");
	abort();
}

static int
last_label_numeric(const char *name)
{
	const char *last = strrchr(name, '.');

	last = last ? last + 1 : name;
	if (last[0] == '0' && last[1] == 'x')
		return strspn(last + 2, "0123456789abcdef") == strlen(last + 2);
	return strspn(last, "0123456789") == strlen(last);
}

static void
check_accepted(const char *out, const uint8_t *data, size_t size)
{
	size_t		len = strlen(out);
	size_t		label = 0;
	int			labels = 1;
	struct in_addr a4;
	struct in6_addr a6;
	char		again[GUARD_MAX_HOST_LEN + 2];
	const char *problem;

	if (len == 0 || len > GUARD_MAX_HOST_LEN)
		fail("accepted name of bad length", (const char *) data, size, out);
	for (size_t i = 0; i < len; i++)
	{
		char		c = out[i];

		if (c == '.')
		{
			if (label == 0 || out[i - 1] == '-')
				fail("empty label or label ending in a hyphen", (const char *) data, size, out);
			label = 0;
			labels++;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			fail("character outside lower-case LDH", (const char *) data, size, out);
		if (label == 0 && c == '-')
			fail("label starting with a hyphen", (const char *) data, size, out);
		if (++label > GUARD_MAX_LABEL_LEN)
			fail("label longer than 63", (const char *) data, size, out);
	}
	if (label == 0 || out[len - 1] == '-')
		fail("empty last label or hyphen at the end", (const char *) data, size, out);
	if (labels < 2)
		fail("accepted a single-label name", (const char *) data, size, out);
	if (inet_aton(out, &a4) || inet_pton(AF_INET6, out, &a6) == 1 ||
		guard_is_ip_literal(out) || last_label_numeric(out))
		fail("accepted an IP address spelling", (const char *) data, size, out);
	problem = guard_normalize_host(out, len, again, sizeof(again));
	if (problem != NULL || strcmp(again, out) != 0)
		fail("normalizing is not idempotent", (const char *) data, size, out);
}

static void
check_addresses(const uint8_t *data, size_t size)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	AddressClass v4,
				v6;

	if (size < 4)
		return;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	memcpy(&sin.sin_addr, data, 4);
	v4 = guard_classify_address((struct sockaddr *) &sin);
	if (v4 < 0 || v4 >= ADDR_CLASS_COUNT)
		fail("IPv4 class out of range", NULL, size, NULL);

	/* ::ffff:a.b.c.d and 64:ff9b::a.b.c.d are judged as a.b.c.d */
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr.s6_addr[10] = 0xff;
	sin6.sin6_addr.s6_addr[11] = 0xff;
	memcpy(sin6.sin6_addr.s6_addr + 12, data, 4);
	v6 = guard_classify_address((struct sockaddr *) &sin6);
	if (v6 != v4)
		fail("IPv4-mapped address classified unlike its IPv4 address", NULL, size, NULL);
	memset(sin6.sin6_addr.s6_addr, 0, 12);
	sin6.sin6_addr.s6_addr[1] = 0x64;
	sin6.sin6_addr.s6_addr[2] = 0xff;
	sin6.sin6_addr.s6_addr[3] = 0x9b;
	v6 = guard_classify_address((struct sockaddr *) &sin6);
	if (v6 != v4)
		fail("NAT64 address classified unlike its IPv4 address", NULL, size, NULL);
	if (v4 != ADDR_PUBLIC && guard_class_allowed(v4, false))
		fail("a non-public class allowed with the guard on", NULL, size, NULL);

	if (size >= 16)
	{
		memcpy(sin6.sin6_addr.s6_addr, data, 16);
		v6 = guard_classify_address((struct sockaddr *) &sin6);
		if (v6 < 0 || v6 >= ADDR_CLASS_COUNT)
			fail("IPv6 class out of range", NULL, size, NULL);
		if (data[0] == 0xff && v6 != ADDR_MULTICAST)
			fail("ff00::/8 not multicast", NULL, size, NULL);
		if (v6 != ADDR_PUBLIC && guard_class_allowed(v6, false))
			fail("a non-public IPv6 class allowed with the guard on", NULL, size, NULL);
	}
}

/*
 * appguard.allowed_networks: whatever the list, it never opens more than
 * allow_private_addresses would (so never a metadata, multicast or other
 * never-reachable address), a malformed list opens nothing, and a public
 * address is allowed whatever it says.
 */
static void
check_network_list(const char *list, const uint8_t *data, size_t size)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const struct sockaddr *addrs[3];
	bool		valid = guard_network_list_valid(list);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	memcpy(&sin.sin_addr, size >= 4 ? data : (const uint8_t *) "\x0a\0\0\x01", 4);
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	if (size >= 16)
		memcpy(&sin6.sin6_addr, data + size - 16, 16);
	addrs[0] = (struct sockaddr *) &sin;
	addrs[1] = (struct sockaddr *) &sin6;
	addrs[2] = NULL;
	for (int i = 0; addrs[i] != NULL; i++)
	{
		AddressClass cls;
		bool		allowed = guard_address_allowed(addrs[i], false, list, &cls);

		if (allowed && !guard_class_allowed(cls, true))
			fail("allowed_networks opens a never-reachable address", list, size, NULL);
		if (allowed && !valid && cls != ADDR_PUBLIC)
			fail("a malformed network list opens an address", list, size, NULL);
		if (cls == ADDR_PUBLIC && !allowed)
			fail("a public address refused", list, size, NULL);
		if (guard_address_allowed(addrs[i], false, "", &cls) && cls != ADDR_PUBLIC)
			fail("an empty network list opens an address", list, size, NULL);
	}
}

/*
 * appguard.dns_servers: a list taken is written as c-ares reads it (no
 * spaces, no longer than the input), and that form is taken again
 * unchanged; every port in it is from 1 to 65535.
 */
static void
check_dns_server_list(const char *list, size_t size)
{
	size_t		cap = strlen(list) + 1;
	char	   *out = malloc(cap);
	char	   *again = malloc(cap);

	if (guard_dns_server_list_normalize(list, out, cap))
	{
		if (strlen(out) >= cap || strpbrk(out, " \t") != NULL)
			fail("a DNS server list kept with spaces or grown", list, size, NULL);
		if (!guard_dns_server_list_normalize(out, again, cap) || strcmp(out, again) != 0)
			fail("a normalised DNS server list is not taken unchanged", list, size, NULL);
		for (char *entry = strtok(out, ","); entry != NULL; entry = strtok(NULL, ","))
		{
			const char *port = NULL;

			if (entry[0] == '[')
				port = strstr(entry, "]:") ? strstr(entry, "]:") + 2 : NULL;
			else if (strchr(entry, '.') != NULL && strchr(entry, ':') != NULL
					 && strchr(entry, ':') == strrchr(entry, ':'))
				port = strchr(entry, ':') + 1;	/* ipv4:port */
			if (port != NULL && (strtol(port, NULL, 10) < 1 || strtol(port, NULL, 10) > 65535))
				fail("a DNS server port outside 1..65535 taken", list, size, NULL);
		}
	}
	free(out);
	free(again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		out[GUARD_MAX_HOST_LEN + 2];
	char	   *text;
	const char *problem;

	memset(out, 0, sizeof(out));
	problem = guard_normalize_host((const char *) data, size, out, sizeof(out));
	if (problem != NULL && problem[0] == '\0')
		fail("refusal without a message", (const char *) data, size, NULL);
	if (problem == NULL)
		check_accepted(out, data, size);

	/* the NUL-terminated helpers get the input up to its first NUL */
	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	(void) guard_is_ip_literal(text);
	if (guard_port_list_valid(text))
	{
		for (int port = 0; port <= 65536; port += 4099)
			if (guard_port_in_list(port, text) && (port < 1 || port > 65535))
				fail("port list admits a port outside 1..65535", text, size, NULL);
	}
	else if (guard_port_in_list(443, text))
		fail("malformed port list admits a port", text, size, NULL);
	check_network_list(text, data, size);
	check_dns_server_list(text, size);
	free(text);

	check_addresses(data, size);
	return 0;
}
