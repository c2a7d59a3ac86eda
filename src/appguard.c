/*-------------------------------------------------------------------------
 *
 * appguard.c
 *	  Module load: library initialisation and every appguard.* setting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ares.h>
#include <limits.h>

#include "appguard.h"
#include "fmgr.h"
#include "guard.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

char	   *appguard_dns_servers = NULL;
int			appguard_timeout_ms = 5000;
int			appguard_connect_timeout_ms = 1000;
int			appguard_dns_timeout_ms = 2000;
char	   *appguard_ca_file = NULL;
char	   *appguard_allowed_ports = NULL;
bool		appguard_allow_private_addresses = false;
char	   *appguard_ownership_prefix = NULL;
int			appguard_sweep_concurrency = 128;

void		_PG_init(void);

static bool
check_allowed_ports(char **newval, void **extra, GucSource source)
{
	if (guard_port_list_valid(*newval))
		return true;
	GUC_check_errdetail("Give a comma-separated list of ports or ranges from 1 to 65535, e.g. \"443, 8443-8450\".");
	return false;
}

static bool
check_ownership_prefix(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || p[0] == '\0')
	{
		GUC_check_errdetail("The ownership prefix must not be empty.");
		return false;
	}
	for (; *p; p++)
		if (*p == '=' || *p <= ' ')
		{
			GUC_check_errdetail("The ownership prefix must not contain \"=\", spaces or control characters.");
			return false;
		}
	return true;
}

static void
define_settings(void)
{
	DefineCustomStringVariable("appguard.dns_servers",
							   "DNS servers appguard asks, as a comma-separated list of ip or ip:port.",
							   "Empty means the servers of the system resolver configuration.",
							   &appguard_dns_servers, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.timeout_ms",
							"Deadline of a whole probe: DNS, connect and TLS handshake.",
							NULL, &appguard_timeout_ms, 5000, 100, 600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.connect_timeout_ms",
							"Deadline of the TCP connect of a probe.",
							NULL, &appguard_connect_timeout_ms, 1000, 50, 600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.dns_timeout_ms",
							"How long a DNS question may take, retries included.",
							NULL, &appguard_dns_timeout_ms, 2000, 30, 600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("appguard.ca_file",
							   "PEM file of the certificate authorities appguard trusts.",
							   "Empty means the system default trust store.",
							   &appguard_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("appguard.allowed_ports",
							   "Ports appguard may connect to: a comma-separated list of ports and ranges.",
							   NULL, &appguard_allowed_ports, "443",
							   PGC_SUSET, 0, check_allowed_ports, NULL, NULL);
	DefineCustomBoolVariable("appguard.allow_private_addresses",
							 "Allow connections to loopback, private, link-local, CGNAT and unique-local addresses.",
							 "Metadata, multicast, broadcast, reserved and 0.0.0.0/8 addresses stay refused.",
							 &appguard_allow_private_addresses, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("appguard.ownership_prefix",
							   "Prefix of the ownership TXT record: <prefix>=<client_id>.",
							   NULL, &appguard_ownership_prefix, "appguard-client-id",
							   PGC_SUSET, 0, check_ownership_prefix, NULL, NULL);
	DefineCustomIntVariable("appguard.sweep_concurrency",
							"How many hosts a sweep or appguard_snapshot_many measures at once.",
							NULL, &appguard_sweep_concurrency, 128, 1, 1024,
							PGC_USERSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("appguard");
}

void
_PG_init(void)
{
	int			rc = ares_library_init(ARES_LIB_INIT_ALL);

	if (rc != ARES_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise c-ares: %s", ares_strerror(rc))));
	define_settings();
}
