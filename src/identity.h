/*-------------------------------------------------------------------------
 *
 * identity.h
 *	  Running part of a function as another role, the way a SECURITY
 *	  DEFINER function runs, with search_path pinned where SQL is run.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_IDENTITY_H
#define APPGUARD_IDENTITY_H

#include "postgres.h"

/* The caller's identity and settings, while code runs as another role */
typedef struct SavedIdentity
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;	/* -1: no setting was changed */
	bool		roll_back_settings;	/* a security-restricted operation: settings
									 * its code changed are undone */
} SavedIdentity;

/* The owner of a function or procedure */
extern Oid	routine_owner(Oid routine);

/*
 * Become role (adding sec_flags to the security context); with
 * pin_search_path, search_path is pg_catalog, pg_temp until
 * identity_restore.  An error undoes both, as it does for a SECURITY
 * DEFINER function: the aborting (sub)transaction restores the user id
 * and the settings.
 */
extern void identity_become(Oid role, int sec_flags, bool pin_search_path,
							SavedIdentity *saved);
extern void identity_restore(SavedIdentity *saved);

/* search_path pinned to pg_catalog, pg_temp; returns the nest level to undo */
extern int	identity_pin_search_path(void);
extern void identity_unpin(int nestlevel);

#endif							/* APPGUARD_IDENTITY_H */
