/*-------------------------------------------------------------------------
 *
 * appguard.c
 *	  Module load: library initialisation and every appguard.* setting.
 *
 * The supported set-up preloads the library (shared_preload_libraries), so
 * that the settings are defined in the postmaster before any session
 * starts, and PostgreSQL refuses a non-superuser's value for a
 * superuser-only setting when it is given (SET, or PGOPTIONS at connect).
 *
 * Loaded late instead (by the first call of one of its functions), the
 * library meets placeholders: values PostgreSQL kept as text for names it
 * did not know yet.  Defining a setting applies the placeholder's values
 * again, now with the setting's rules.  A value a non-superuser gave a
 * superuser-only setting in its connection options (PGOPTIONS) had become
 * the placeholder's reset value, replacing the configuration file's; it is
 * now refused, and the setting falls back to its built-in default: the
 * configured value is lost for the session.  _PG_init notices that (a
 * placeholder had a reset value, the defined setting has none from the
 * same source) and appguard_require_settings() then refuses to measure or
 * suspend in that session.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ares.h>
#include <limits.h>

#include "appguard.h"
#include "fmgr.h"
#include "guard.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

char	   *appguard_dns_servers = NULL;
int			appguard_timeout_ms = 5000;
int			appguard_connect_timeout_ms = 1000;
int			appguard_dns_timeout_ms = 2000;
char	   *appguard_ca_file = NULL;
char	   *appguard_allowed_ports = NULL;
char	   *appguard_allowed_networks = NULL;
bool		appguard_allow_private_addresses = false;
int			appguard_max_addresses_per_family = 4;
char	   *appguard_ownership_prefix = NULL;
int			appguard_sweep_concurrency = 128;
int			appguard_baseline_max_age_s = 3600;
int			appguard_consent_window_s = 600;
int			appguard_baseline_timeout_ms = 500;
int			appguard_confirmations = 1;
char	   *appguard_error_uri_template = NULL;
/* read by SQL only (appguard.setting), so not in appguard.h */
static char *appguard_reapprove_uri_template = NULL;
double		appguard_mass_drift_threshold = 0.2;
int			appguard_mass_drift_min_hosts = 10;
int			appguard_unreachable_grace_s = 0;
int			appguard_refresh_max_age_s = 0;

void		_PG_init(void);

/*
 * Placeholders of appguard.* names found at load, with the source of their
 * reset value, and the superuser-only settings whose configured value was
 * lost at load (names point into the settings' definitions; only defined
 * settings are noted, so there are fewer than MAX_LOST_SETTINGS).
 */
typedef struct PlaceholderReset
{
	char	   *name;
	GucSource	reset_source;
} PlaceholderReset;

#define MAX_LOST_SETTINGS 32

static const char *lost_settings[MAX_LOST_SETTINGS];
static int	nlost_settings = 0;

static bool
check_allowed_ports(char **newval,
					void **extra pg_attribute_unused(),
					GucSource source pg_attribute_unused())
{
	if (guard_port_list_valid(*newval))
		return true;
	GUC_check_errdetail("Give a comma-separated list of ports or ranges from 1 to 65535, e.g. \"443, 8443-8450\".");
	return false;
}

/*
 * appguard.dns_servers is checked here rather than at the first probe:
 * c-ares would take a port past 65535 modulo 65536 and "127.1" as
 * 127.1.0.0.  The value kept is the list as c-ares reads it (no spaces).
 */
static bool
check_dns_servers(char **newval,
				  void **extra pg_attribute_unused(),
				  GucSource source pg_attribute_unused())
{
	size_t		size;
	char	   *normal;

	if (*newval == NULL)
		return true;
	size = strlen(*newval) + 1;
	normal = malloc(size);		/* PostgreSQL 15 keeps string settings in malloc'd memory */
	if (normal == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	if (!guard_dns_server_list_normalize(*newval, normal, size))
	{
		free(normal);
		GUC_check_errdetail("Give a comma-separated list of ip, ip:port, [ipv6] or [ipv6]:port, ports from 1 to 65535, e.g. \"192.0.2.53, [2001:db8::53]:5353\".");
		return false;
	}
	free(*newval);
	*newval = normal;
	return true;
}

static bool
check_allowed_networks(char **newval,
					   void **extra pg_attribute_unused(),
					   GucSource source pg_attribute_unused())
{
	if (guard_network_list_valid(*newval))
		return true;
	GUC_check_errdetail("Give a comma-separated list of addresses and CIDR networks with no bits set right of the prefix, e.g. \"10.20.0.0/16, fd00:1::/48\".");
	return false;
}

static bool
check_ownership_prefix(char **newval,
					   void **extra pg_attribute_unused(),
					   GucSource source pg_attribute_unused())
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
check_error_uri_template(char **newval,
						 void **extra pg_attribute_unused(),
						 GucSource source pg_attribute_unused())
{
	if (*newval != NULL && strstr(*newval, "{suspension_id}") != NULL)
		return true;
	GUC_check_errdetail("The template must contain {suspension_id}.");
	return false;
}

/*
 * The re-approval link of the error_uri page (appguard_explain_html) is
 * written into an href: only an http(s) URL or a path on the auth server,
 * never a javascript: or data: URL, and nothing that would end the
 * attribute or the URL (the page escapes it too).  Empty means no link.
 */
static bool
check_reapprove_uri_template(char **newval,
							 void **extra pg_attribute_unused(),
							 GucSource source pg_attribute_unused())
{
	const char *p = *newval;

	if (p == NULL || p[0] == '\0')
		return true;
	/* "//host" and "/\host" would lead browsers to another host */
	if (pg_strncasecmp(p, "https://", 8) != 0 && pg_strncasecmp(p, "http://", 7) != 0 &&
		(p[0] != '/' || p[1] == '/' || p[1] == '\\'))
	{
		GUC_check_errdetail("The template must start with https://, http:// or a path (one /), or be empty.");
		return false;
	}
	for (; *p; p++)
		if ((unsigned char) *p <= ' ' || *p == 0x7f || *p == '"' || *p == '<' || *p == '>' || *p == '\\')
		{
			GUC_check_errdetail("The template must not contain spaces, control characters, quotes, angle brackets or backslashes.");
			return false;
		}
	return true;
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
	DefineCustomIntVariable("appguard.consent_window",
							"How long after appguard_consent_info(client_id, subject) a new token of that patient takes the snapshot shown as its consent's baseline.",
							"After it, a new token keeps the consent's baseline (a remembered approval).",
							&appguard_consent_window_s, 600, 0, 86400,
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
	DefineCustomStringVariable("appguard.reapprove_uri_template",
							   "Template of the re-approval link on the error_uri page (appguard_explain_html).",
							   "{suspension_id} and {client_id} are replaced, URL-encoded; empty means no link.",
							   &appguard_reapprove_uri_template, "",
							   PGC_SUSET, 0, check_reapprove_uri_template, NULL, NULL);
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

/*
 * Settings of measuring.  Those that widen what appguard connects to, and
 * the deadlines, which decide whether a stored snapshot fails (a failed
 * snapshot still counts as fresh for sweeps), are superuser-only.
 */
static void
define_settings(void)
{
	DefineCustomStringVariable("appguard.dns_servers",
							   "DNS servers appguard asks, as a comma-separated list of ip, ip:port, [ipv6] or [ipv6]:port.",
							   "Empty means the servers of the system resolver configuration.",
							   &appguard_dns_servers, "",
							   PGC_SUSET, 0, check_dns_servers, NULL, NULL);
	DefineCustomIntVariable("appguard.timeout_ms",
							"Deadline of a whole probe: DNS, connect and TLS handshake.",
							NULL, &appguard_timeout_ms, 5000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.connect_timeout_ms",
							"Deadline of the TCP connect of a probe.",
							NULL, &appguard_connect_timeout_ms, 1000, 50, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("appguard.dns_timeout_ms",
							"How long a DNS question may take, retries included.",
							NULL, &appguard_dns_timeout_ms, 2000, 30, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
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
	DefineCustomStringVariable("appguard.allowed_networks",
							   "Networks appguard may connect to although their addresses are private: a comma-separated list of CIDR networks.",
							   "Loopback, private, link-local, CGNAT and unique-local addresses inside them are allowed with appguard.allow_private_addresses off; metadata, multicast, broadcast, reserved and 0.0.0.0/8 addresses stay refused.",
							   &appguard_allowed_networks, "",
							   PGC_SUSET, 0, check_allowed_networks, NULL, NULL);
	DefineCustomIntVariable("appguard.max_addresses_per_family",
							"How many of a host's IPv4 addresses, and of its IPv6 addresses, a probe measures.",
							"Each further address costs one more connection and TLS handshake within the probe's deadline; addresses beyond are counted, not measured.",
							&appguard_max_addresses_per_family, 4, 1, 64,
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

static struct config_generic *
find_setting(const char *name)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
		if (pg_strcasecmp(vars[i]->name, name) == 0)
			return vars[i];
	return NULL;
}

/*
 * The appguard.* placeholders that hold a reset value (one set with the
 * configuration file, ALTER SYSTEM, ALTER ROLE/DATABASE or connection
 * options), all of them: a session may create any number of placeholders,
 * so a fixed bound would let made-up names hide real ones.  Reads the GUC
 * table only: no transaction or database needed.
 */
static int
remember_placeholders(PlaceholderReset **result)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();
	PlaceholderReset *out = palloc(sizeof(PlaceholderReset) * Max(n, 1));
	int			found = 0;

	*result = out;
	for (int i = 0; i < n; i++)
	{
		struct config_generic *gconf = vars[i];

		if ((gconf->flags & GUC_CUSTOM_PLACEHOLDER) == 0 ||
			gconf->vartype != PGC_STRING ||
			pg_strncasecmp(gconf->name, "appguard.", 9) != 0 ||
			((struct config_string *) gconf)->reset_val == NULL)
			continue;
		out[found].name = pstrdup(gconf->name);
		out[found].reset_source = gconf->reset_source;
		found++;
	}
	return found;
}

/*
 * After the definitions: a superuser-only setting whose reset value does
 * not come from where its placeholder's came from had that value refused
 * (guc.c's define_custom_variable applies it with the context and role
 * that set it, and on failure keeps the built-in default).
 */
static void
note_lost_settings(const PlaceholderReset *held, int nheld)
{
	for (int i = 0; i < nheld; i++)
	{
		struct config_generic *gconf = find_setting(held[i].name);

		if (gconf == NULL || (gconf->flags & GUC_CUSTOM_PLACEHOLDER) != 0 ||
			gconf->context != PGC_SUSET ||
			gconf->reset_source == held[i].reset_source)
			continue;
		if (nlost_settings < MAX_LOST_SETTINGS)
			lost_settings[nlost_settings++] = gconf->name;
	}
}

void
appguard_require_settings(void)
{
	StringInfoData names;

	/* the install script refuses such a database; an older one may hold it */
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("appguard needs a UTF8 database; this one is %s", GetDatabaseEncodingName()),
				 errdetail("appguard stores certificate names, DNS records and the texts patients read as UTF-8.")));
	if (nlost_settings == 0)
		return;
	initStringInfo(&names);
	for (int i = 0; i < nlost_settings; i++)
		appendStringInfo(&names, "%s%s", i > 0 ? ", " : "", lost_settings[i]);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("appguard refuses to measure or suspend in this session: superuser-only settings lost their configured values: %s",
					names.data),
			 errdetail("PostgreSQL refused the values configured for these settings when appguard was loaded, so they fell back to their built-in defaults: an invalid value (the server log says which), or, appguard loaded after the session started, a value this session's connection options gave."),
			 errhint("Fix the configured values, preload appguard (shared_preload_libraries = 'appguard'), and do not set superuser-only appguard settings in a non-superuser's connection options (PGOPTIONS); then reconnect.")));
}

void
_PG_init(void)
{
	int			rc = ares_library_init(ARES_LIB_INIT_ALL);
	PlaceholderReset *held;
	int			nheld;

	if (rc != ARES_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise c-ares: %s", ares_strerror(rc))));
	nheld = remember_placeholders(&held);
	define_settings();
	note_lost_settings(held, nheld);
	for (int i = 0; i < nheld; i++)
		pfree(held[i].name);
	pfree(held);
}
