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

#define APPGUARD_FACTS_SCHEMA 1
#define APPGUARD_DEFAULT_PORT 443

/* GUC variables, defined in appguard.c */
extern char *appguard_dns_servers;
extern int	appguard_timeout_ms;
extern int	appguard_connect_timeout_ms;
extern int	appguard_dns_timeout_ms;
extern char *appguard_ca_file;
extern char *appguard_allowed_ports;
extern bool appguard_allow_private_addresses;
extern char *appguard_ownership_prefix;
extern int	appguard_sweep_concurrency;

#endif							/* APPGUARD_H */
