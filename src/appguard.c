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
int			appguard_baseline_max_age_s = 3600;
int			appguard_baseline_timeout_ms = 500;
int			appguard_confirmations = 1;
char	   *appguard_error_uri_template = NULL;
double		appguard_mass_drift_threshold = 0.2;
int			appguard_mass_drift_min_hosts = 10;
int			appguard_unreachable_grace_s = 0;
int			appguard_refresh_max_age_s = 0;

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

static bool
check_error_uri_template(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && strstr(*newval, "{suspension_id}") != NULL)
		return true;
	GUC_check_errdetail("The template must contain {suspension_id}.");
	return false;
}

/*
 * Settings of the drift and suspension lifecycle.  They decide whether
 * patients' tokens keep working, so only superusers change them.
 */
static void
define_lifecycle_settings(void)
{
	DefineCustomIntVariable("appguard.baseline_max_age",
							"How old the client's latest successful snapshot may be to serve as a new grant's baseline.",
							"Older than this, the baseline is measured live.",
							&appguard_baseline_max_age_s, 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.baseline_timeout_ms",
							"Deadline of the live snapshot taken when a grant is created.",
							"If it fails, the grant is created with its baseline pending.",
							&appguard_baseline_timeout_ms, 500, 50, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.confirmations",
							"How many consecutive drifting snapshots suspend a grant.",
							NULL, &appguard_confirmations, 1, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("appguard.error_uri_template",
							   "Template of the error_uri given to suspended grants.",
							   "{suspension_id} and {client_id} are replaced, URL-encoded.",
							   &appguard_error_uri_template,
							   "https://auth.example.org/appguard/suspensions/{suspension_id}?client={client_id}",
							   PGC_SUSET, 0, check_error_uri_template, NULL, NULL);
	DefineCustomRealVariable("appguard.mass_drift_threshold",
							 "Share of a sweep's hosts drifting at suspend level above which suspensions are held.",
							 NULL, &appguard_mass_drift_threshold, 0.2, 0.0, 1.0,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.mass_drift_min_hosts",
							"Fewest hosts a sweep must measure before the mass-drift breaker can trip.",
							NULL, &appguard_mass_drift_min_hosts, 10, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.unreachable_grace",
							"How long a host may stay unmeasurable before that counts as drift (0 = never).",
							NULL, &appguard_unreachable_grace_s, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.refresh_max_age",
							"How old the client's latest snapshot may be at a refresh check before a live one is taken (0 = never).",
							NULL, &appguard_refresh_max_age_s, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
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
	define_lifecycle_settings();
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
