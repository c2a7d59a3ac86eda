/*-------------------------------------------------------------------------
 *
 * facts_addresses.c
 *	  The facts document's "tls_addresses" list: what each address of the
 *	  host served (probe_addresses.c says which addresses are listed).
 *
 *	  "tls_addresses": [
 *	    {"address", "status": "ok", "verified", "verify_code",
 *	     "verify_error", "leaf_sha256", "spki_sha256", "subject_o",
 *	     "validation", "not_after"},
 *	    {"address", "status": "blocked", "blocked": "loopback"},
 *	    {"address", "status": "connect_failed" | "tls_failed" | "timeout",
 *	     "error"},
 *	    {"address", "status": "not_measured"}, ...],
 *	  "tls_addresses_skipped": 0
 *
 * IPv4 then IPv6, each in sorted order.  The first address the "tls"
 * object describes is listed too, with the same values.  The drift rule
 * tls_address_mismatch (drift_rules.c) reads the list.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "facts.h"

static const char *
address_status(const ProbeAddress *address)
{
	switch (address->state)
	{
		case ADDRESS_MEASURED:
			return "ok";
		case ADDRESS_BLOCKED:
			return "blocked";
		case ADDRESS_FAILED:
			return probe_status_name(address->status);
		case ADDRESS_PENDING:
		case ADDRESS_NOT_MEASURED:
			break;
	}
	return "not_measured";
}

static void
write_address(JsonWriter *jw, const ProbeAddress *address)
{
	const TlsSummary *tls = address->tls;

	jw_begin_object(jw, NULL);
	jw_string(jw, "address", address->text);
	jw_string(jw, "status", address_status(address));
	if (address->state == ADDRESS_BLOCKED)
		jw_string(jw, "blocked", address->blocked);
	else if (address->state == ADDRESS_FAILED)
		jw_string(jw, "error", address->error);
	else if (address->state == ADDRESS_MEASURED && tls != NULL)
	{
		jw_bool(jw, "verified", tls->verified);
		jw_int(jw, "verify_code", tls->verify_code);
		jw_string(jw, "verify_error", tls->verify_error);
		jw_string(jw, "leaf_sha256", tls->leaf_sha256);
		jw_string(jw, "spki_sha256", tls->spki_sha256);
		if (tls->subject_o != NULL)
			jw_string_bytes(jw, "subject_o", tls->subject_o, tls->subject_o_len);
		else
			jw_null(jw, "subject_o");
		jw_string(jw, "validation", tls->validation);
		jw_string(jw, "not_after", tls->not_after);
	}
	jw_end_object(jw);
}

void
facts_addresses(JsonWriter *jw, Probe *probe)
{
	jw_begin_array(jw, "tls_addresses");
	for (int i = 0; i < probe->naddresses; i++)
		write_address(jw, &probe->addresses[i]);
	jw_end_array(jw);
	jw_int(jw, "tls_addresses_skipped", probe->addresses_skipped);
}
