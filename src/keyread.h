/*-------------------------------------------------------------------------
 *
 * keyread.h
 *	  Reading one row of an appguard table by its primary key, without the
 *	  executor: the refresh check and the consent trigger (refresh.c) run
 *	  on every refresh and every consent of the auth server.  Also whether
 *	  a row exists by a plain index's key (the snapshots trigger,
 *	  snapshot_trigger.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_KEYREAD_H
#define APPGUARD_KEYREAD_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/*
 * The appguard tables C reads by name.  Their names, indexes and columns
 * are declared once, in keyread.c (table_defs); each table says so in a
 * comment in sql/parts/, and appguard.keyread_contract() lists them for the
 * regression test that checks the SQL and the C agree (sql/c_contract.sql).
 */
typedef enum KeyedTable
{
	KT_GRANTS,					/* key (token_table, token_key) */
	KT_PROTECTED_TABLES,		/* key (tbl) */
	KT_CLIENTS,					/* key (client_id) */
	KT_BASELINE_STATE,			/* key (client_id, baseline_snapshot_id) */
	KT_CONSENTS,				/* key (client_id, subject) */
	KT_CLIENT_HOSTS,			/* (host, port): a plain index, not the
								 * primary key; read by keyread_exists_fresh */
	KT_COUNT
} KeyedTable;

/* The columns read, per table, in the order of the values returned. */
enum
{
	GRANT_STATE, GRANT_CLIENT_ID, GRANT_BASELINE_SNAPSHOT_ID, GRANT_CREATED_AT,
	GRANT_SUBJECT, GRANT_GRANT_KEY, GRANT_SUSPENSION_ID,
	GRANT_NCOLUMNS
};
enum
{
	PT_KEY_ATTNUM, PT_CLIENT_ATTNUM, PT_STATUS_ATTNUM, PT_ACTIVE_VALUE,
	PT_SUBJECT_ATTNUM, PT_GRANT_ATTNUM,
	PT_NCOLUMNS
};
enum
{
	CL_LAST_SNAPSHOT_ID, CL_LAST_SNAPSHOT_AT, CL_LAST_OK_SNAPSHOT_ID, CL_LAST_OK_AT,
	CL_HOSTS_UNDECIDED, CL_HOSTS_DRIFTED, CL_HELD_BASELINES,
	CL_NCOLUMNS
};
enum
{
	BS_EVALUATED_SNAPSHOT_ID, BS_DRIFTING, BS_STREAK, BS_SUSPENSION_APPLIED, BS_NCOLUMNS
};
enum
{
	CS_BASELINE_SNAPSHOT_ID, CS_SHOWN_SNAPSHOT_ID, CS_SHOWN_AT, CS_APPROVED_AT, CS_CREATED_AT,
	CS_NCOLUMNS
};

/* The key columns of KT_GRANTS, in the order of keyread_layout's keyattnums */
enum
{
	GRANT_KEY_TOKEN_TABLE, GRANT_KEY_TOKEN_KEY, GRANT_NKEYS
};

/* The key columns of KT_CONSENTS, in the order of keyread_layout's keyattnums */
enum
{
	CONSENT_KEY_CLIENT_ID, CONSENT_KEY_SUBJECT, CONSENT_NKEYS
};

#define KEYREAD_MAX_COLUMNS 7
#define KEYREAD_MAX_KEYS 2

/*
 * Read the row of table whose primary key is key[] (as many values as the
 * key has columns), as seen by snapshot.  Returns false if there is none;
 * else fills values[] and nulls[] with the table's columns listed above,
 * copied into the current memory context.
 */
extern bool keyread_row(KeyedTable table, const Datum *key, Snapshot snapshot,
						Datum *values, bool *nulls);

/*
 * Whether table has a row whose index key is key[], read as a volatile
 * PL/pgSQL statement reads: the table and index locked first, then a fresh
 * snapshot (keyread_begin_fresh) for the scan.  For any table, its index
 * primary key or not.
 */
extern bool keyread_exists_fresh(KeyedTable table, const Datum *key);

/*
 * The key of table from the columns of the same names in tuple (of rel,
 * another table): false if rel lacks one of them or it is NULL in tuple.
 * The values point into tuple.
 */
extern bool keyread_key_from_tuple(KeyedTable table, Relation rel, HeapTuple tuple,
								   Datum *key);

/*
 * The OID of relation name in schema appguard (nsp); an ERROR that says
 * the library and the SQL objects do not match if there is none.
 */
extern Oid	keyread_relation(Oid nsp, const char *name);

/*
 * The table's OID, and the attribute numbers of its key columns and of its
 * columns above (the arrays are filled in the orders above).  Valid until
 * the next relcache invalidation of the table or its index.
 */
extern Oid	keyread_layout(KeyedTable table, AttrNumber *keyattnums, AttrNumber *attnums);

/*
 * A fresh read, as a volatile PL/pgSQL function's statement sees: after a
 * command counter increment, with a new snapshot made active until
 * keyread_end_fresh.  Read with GetActiveSnapshot() between the two.
 */
extern void keyread_begin_fresh(void);
extern void keyread_end_fresh(void);

#endif							/* APPGUARD_KEYREAD_H */
