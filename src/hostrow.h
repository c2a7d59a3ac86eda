/*-------------------------------------------------------------------------
 *
 * hostrow.h
 *	  A protected table's rows, seen from appguard (hostrow.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_HOSTROW_H
#define APPGUARD_HOSTROW_H

#include "postgres.h"

extern void hostrow_require_select(Oid relid, Datum row_key, const char *what);

#endif							/* APPGUARD_HOSTROW_H */
