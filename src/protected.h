/*-------------------------------------------------------------------------
 *
 * protected.h
 *	  Which protected table a row of a relation belongs to, and how appguard
 *	  reads it: the record appguard_protect wrote, kept per backend.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_PROTECTED_H
#define APPGUARD_PROTECTED_H

#include "postgres.h"

#include "utils/relcache.h"

/*
 * The protection of rel (its own, or for a partition its nearest protected
 * ancestor's): fills pt[] and pt_null[] (keyread.h's PT_ columns, the
 * attribute numbers rel's) and returns the protected table's OID, or
 * InvalidOid when none is protected.  Pass-by-reference values are
 * allocated in the current memory context.
 */
extern Oid	protected_table_of(Relation rel, Datum *pt, bool *pt_null);

#endif							/* APPGUARD_PROTECTED_H */
