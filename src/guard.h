/*-------------------------------------------------------------------------
 *
 * guard.h
 *	  What appguard is allowed to connect to: host-name validation, the
 *	  port allow-list and the address classification behind the SSRF guard.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_GUARD_H
#define APPGUARD_GUARD_H

#include <sys/socket.h>
#include <stdbool.h>

/* Maximum length of a host name in presentation form, without final dot */
#define GUARD_MAX_HOST_LEN 253
#define GUARD_MAX_LABEL_LEN 63

typedef enum AddressClass
{
	ADDR_PUBLIC = 0,
	ADDR_LOOPBACK,				/* 127/8, ::1 */
	ADDR_PRIVATE,				/* RFC 1918 */
	ADDR_LINK_LOCAL,			/* 169.254/16, fe80::/10 */
	ADDR_CGNAT,					/* 100.64/10 */
	ADDR_UNIQUE_LOCAL,			/* fc00::/7 */
	ADDR_SITE_LOCAL,			/* fec0::/10 (deprecated) */
	ADDR_METADATA,				/* cloud metadata endpoints */
	ADDR_THIS_NETWORK,			/* 0/8, :: */
	ADDR_MULTICAST,				/* 224/4, ff00::/8 */
	ADDR_BROADCAST,				/* 255.255.255.255 */
	ADDR_RESERVED,				/* 240/4 and IETF special-purpose blocks */
	ADDR_DOCUMENTATION,			/* TEST-NET-1/2/3, 2001:db8::/32 */
	ADDR_BENCHMARK,				/* 198.18/15 */
	ADDR_CLASS_COUNT
} AddressClass;

/*
 * Classify an address.  IPv6 forms that embed an IPv4 address (mapped,
 * compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4) are classified
 * by the embedded address, so ::ffff:127.0.0.1 is loopback.  In the
 * local-use prefix 64:ff9b:1::/48 the embedded address is read at every
 * place RFC 6052 allows and the most refused class is returned.
 */
extern AddressClass guard_classify_address(const struct sockaddr *sa);
extern const char *guard_address_class_name(AddressClass cls);

/*
 * Whether a connection to an address of this class may be made.
 * allow_private widens the guard to loopback, RFC 1918, link-local, CGNAT
 * and unique-local addresses; metadata, multicast, broadcast, "this network"
 * and reserved addresses are never reachable.
 */
extern bool guard_class_allowed(AddressClass cls, bool allow_private);

/*
 * Whether a connection to sa may be made, its class stored in *cls: its
 * class is allowed (guard_class_allowed), or it is one allow_private would
 * open and it lies in a network of networks (appguard.allowed_networks: a
 * comma-separated list of addresses and CIDR networks, IPv4 or IPv6,
 * matched against the address as given, never widening the classes that
 * are never reachable).  NULL or empty networks lists none.
 */
extern bool guard_address_allowed(const struct sockaddr *sa, bool allow_private,
								  const char *networks, AddressClass *cls);
extern bool guard_network_list_valid(const char *list);

/*
 * appguard.dns_servers: a comma-separated list of "ipv4", "ipv4:port",
 * "ipv6", "[ipv6]" or "[ipv6]:port" (ports 1 to 65535), spaces allowed
 * around the commas.  Writes into out (outsize at least the list's length
 * plus one) the list as c-ares reads it, and returns true; false for a
 * malformed list.  An empty list stays empty (the system's resolvers).
 */
extern bool guard_dns_server_list_normalize(const char *list, char *out, size_t outsize);

/*
 * Validate and normalise a host name into out (lower-case A-labels, no final
 * dot).  Returns NULL on success, else a static message saying what is wrong.
 * Pure function: no PostgreSQL calls, so the fuzzers can use it.
 */
extern const char *guard_normalize_host(const char *input, size_t input_len,
										char *out, size_t outsize);

/* Whether text looks like an IPv4 or IPv6 address in any spelling. */
extern bool guard_is_ip_literal(const char *text);

/*
 * Whether port appears in list, a comma-separated list of ports and ranges
 * ("443, 8443-8450").  Returns false for a malformed list.
 */
extern bool guard_port_in_list(int port, const char *list);
extern bool guard_port_list_valid(const char *list);

#endif							/* APPGUARD_GUARD_H */
