/*-------------------------------------------------------------------------
 *
 * probe_addresses.c
 *	  Which of a host's addresses a probe measures.
 *
 * A stale A record that points at an address now owned by someone else
 * serves another certificate on that address only, so a probe measures
 * every address DNS gave, each with its own connection and handshake
 * (probe.c), up to appguard.max_addresses_per_family IPv4 addresses and
 * as many IPv6 ones.  Each family is taken in sorted order, so that two
 * probes of an unchanged host measure the same addresses; the addresses
 * beyond the cap are counted, not measured.
 *
 * An address the address policy refuses (guard.c) is listed as blocked:
 * a fact about the host, not a failure of the probe, as long as one
 * address was allowed.  The first allowed address, IPv4 before IPv6, is
 * the one the facts' "tls" object describes, as when a probe measured one
 * address only; it is listed even beyond the cap (when every address
 * before it is blocked), so that adding the list changed no "tls" object.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "appguard.h"
#include "dns.h"
#include "dnswire.h"
#include "guard.h"
#include "probe.h"

static int
cmp_addr4(const void *a, const void *b)
{
	return memcmp(((const DnsItem *) a)->addr, ((const DnsItem *) b)->addr, 4);
}

static int
cmp_addr16(const void *a, const void *b)
{
	return memcmp(((const DnsItem *) a)->addr, ((const DnsItem *) b)->addr, 16);
}

static void
fill_sockaddr(ProbeAddress *address, const DnsItem *item, int port)
{
	memset(&address->addr, 0, sizeof(address->addr));
	if (item->type == DNS_TYPE_A)
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) &address->addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, item->addr, 4);
		address->addrlen = sizeof(*sin);
		inet_ntop(AF_INET, item->addr, address->text, sizeof(address->text));
	}
	else
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &address->addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, item->addr, 16);
		address->addrlen = sizeof(*sin6);
		inet_ntop(AF_INET6, item->addr, address->text, sizeof(address->text));
	}
}

bool
probe_list_addresses(Probe *probe)
{
	static const struct
	{
		QueryKind	kind;
		uint16		type;
		int			addrlen;
		int			(*cmp) (const void *, const void *);
	}			families[] = {
		{QUERY_A, DNS_TYPE_A, 4, cmp_addr4},
		{QUERY_AAAA, DNS_TYPE_AAAA, 16, cmp_addr16},
	};
	int			room = 0;
	bool		any = false;

	for (int f = 0; f < (int) lengthof(families); f++)
		room += probe->results[families[f].kind].nitems;
	probe->addresses = palloc0(Max(room, 1) * sizeof(ProbeAddress));
	probe->naddresses = 0;
	probe->addresses_skipped = 0;
	probe->first = -1;
	probe->current = -1;
	probe->addresses_listed = true;

	for (int f = 0; f < (int) lengthof(families); f++)
	{
		QueryResult *r = &probe->results[families[f].kind];
		const DnsItem *previous = NULL;
		int			listed = 0;

		qsort(r->items, r->nitems, sizeof(DnsItem), families[f].cmp);
		for (int i = 0; i < r->nitems; i++)
		{
			const DnsItem *item = &r->items[i];
			ProbeAddress *address = &probe->addresses[probe->naddresses];
			AddressClass cls;
			bool		allowed;

			if (item->type != families[f].type)
				continue;
			if (previous != NULL &&
				memcmp(previous->addr, item->addr, families[f].addrlen) == 0)
				continue;		/* the same address twice */
			previous = item;
			any = true;
			fill_sockaddr(address, item, probe->port);
			allowed = guard_address_allowed((struct sockaddr *) &address->addr,
											appguard_allow_private_addresses,
											appguard_allowed_networks, &cls);
			if (listed >= appguard_max_addresses_per_family &&
				!(allowed && probe->first < 0))
			{
				probe->addresses_skipped++;
				continue;
			}
			listed++;
			if (allowed)
			{
				address->state = ADDRESS_PENDING;
				if (probe->first < 0)
					probe->first = probe->naddresses;
			}
			else
			{
				address->state = ADDRESS_BLOCKED;
				address->blocked = guard_address_class_name(cls);
			}
			probe->naddresses++;
		}
	}
	return any;
}

int
probe_next_address(Probe *probe, int after)
{
	for (int i = after + 1; i < probe->naddresses; i++)
		if (probe->addresses[i].state == ADDRESS_PENDING)
			return i;
	return -1;
}

void
probe_addresses_abandon(Probe *probe)
{
	for (int i = 0; i < probe->naddresses; i++)
		if (probe->addresses[i].state == ADDRESS_PENDING)
			probe->addresses[i].state = ADDRESS_NOT_MEASURED;
}
