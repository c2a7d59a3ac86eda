/*-------------------------------------------------------------------------
 *
 * dns.h
 *	  DNS queries through c-ares, and the DNS part of the facts document.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_DNS_H
#define APPGUARD_DNS_H

#include <ares.h>

#include "jsonw.h"
#include "probe.h"

/*
 * A channel that asks only the servers in appguard.dns_servers (or the
 * system's resolvers when that is empty), never applies search domains and
 * reports its sockets through sock_state_cb.  ereports on failure.
 */
extern ares_channel dns_channel_create(ares_sock_state_cb sock_state_cb,
									   void *cb_data);

/* Send one question; on failure the slot completes at once with an error */
extern void dns_send(ares_channel channel, QuerySlot *slot,
					 const char *name, int type);

/* Parse a completed slot's answer into result (palloc) and free the copy */
extern void dns_take_answer(QuerySlot *slot, QueryResult *result);

/* Forget the malloc'd answer of a slot nobody will read */
extern void dns_slot_discard(QuerySlot *slot);

/* The registrable domain (eTLD+1) of host by the public suffix list */
extern bool dns_registrable_domain(const char *host, char *out, size_t outsize);

#endif							/* APPGUARD_DNS_H */
