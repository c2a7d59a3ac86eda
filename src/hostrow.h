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

#include "access/htup.h"
#include "access/tupdesc.h"

extern char *hostrow_column_text(HeapTuple tuple, TupleDesc desc, int attnum);
extern void hostrow_require_select(Oid relid, Datum row_key, const char *what);

#endif							/* APPGUARD_HOSTROW_H */
