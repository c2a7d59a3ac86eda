/*-------------------------------------------------------------------------
 *
 * appguard.h
 *	  Settings (GUCs) and small helpers shared by every appguard module.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_H
#define APPGUARD_H

#include "postgres.h"

/*
 * The facts document's version.  2 (0.2.0) added dns.cname_target_domain,
 * dns.cname_cross_domain, tls_addresses and tls_addresses_skipped to 1; the drift rules read every version
 * from 1 on, a key a document lacks being an unknown fact.
 */
#define APPGUARD_FACTS_SCHEMA 2
#define APPGUARD_FACTS_SCHEMA_OLDEST 1
#define APPGUARD_DEFAULT_PORT 443

/* GUC variables, defined in appguard.c */
extern char *appguard_dns_servers;
extern int	appguard_timeout_ms;
extern int	appguard_connect_timeout_ms;
extern int	appguard_dns_timeout_ms;
extern char *appguard_ca_file;
extern char *appguard_allowed_ports;
extern bool appguard_allow_private_addresses;
extern char *appguard_allowed_networks;
extern int	appguard_max_addresses_per_family;
extern char *appguard_ownership_prefix;
extern int	appguard_sweep_concurrency;
extern int	appguard_consent_window_s;
extern int	appguard_baseline_max_age_s;
extern int	appguard_baseline_timeout_ms;
extern int	appguard_confirmations;
extern char *appguard_error_uri_template;
extern double appguard_mass_drift_threshold;
extern int	appguard_mass_drift_min_hosts;
extern int	appguard_unreachable_grace_s;
extern int	appguard_refresh_max_age_s;

/*
 * ERROR (55000) when superuser-only settings lost their configured values
 * as the library was loaded into this session (see appguard.c).  Every
 * entry point that measures or suspends calls it first.
 */
extern void appguard_require_settings(void);

#endif							/* APPGUARD_H */
