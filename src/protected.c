/*-------------------------------------------------------------------------
 *
 * protected.c
 *	  Which protected table a row of a relation belongs to, and how appguard
 *	  reads it: the record appguard_protect wrote, kept per backend.
 *
 * The consent trigger and the status trigger of every protected table ask
 * this at every token INSERT and every rotation.  Reading
 * appguard.protected_tables each time, through its index with a fresh
 * snapshot, was a tenth of the consent trigger's work; the answer is kept
 * instead, per relation that fired a trigger.
 *
 * What is kept never changes while the protection lasts: the columns the
 * triggers read and the active value are written once, by appguard_protect
 * (the problem columns, which do change, are not kept).  A protection
 * begins and ends with DDL on the table itself -- appguard_protect creates
 * its triggers, appguard_unprotect drops them, a dropped table takes its
 * record with it, attaching or detaching a partition alters both tables --
 * and each of those invalidates the table's relcache entry, at commit for
 * other backends and at the next command for this one (an abort too).
 * Any relcache invalidation naming a kept relation, its protected table,
 * appguard.protected_tables, or all relations, forgets everything.  That
 * DDL cannot commit while a trigger of the table runs: the INSERT or
 * UPDATE that fired it holds the table (or the partition and its root).
 * A generation count keeps a read that an invalidation overtook from
 * being kept.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/partition.h"
#include "keyread.h"
#include "nodes/pg_list.h"
#include "protected.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

typedef struct ProtectionEntry
{
	Oid			relid;			/* hash key: the relation that fired */
	Oid			root;			/* its protected table */
	Datum		pt[PT_NCOLUMNS];	/* the active value copied into kept_cxt */
	bool		pt_null[PT_NCOLUMNS];
} ProtectionEntry;

/* The table and the values it points to live in kept_cxt */
static HTAB *kept = NULL;
static MemoryContext kept_cxt = NULL;
static uint64 generation = 0;
static Oid	protected_tables_relid = InvalidOid;

/* Forget every kept protection: the table goes with its memory */
static void
forget_all(void)
{
	generation++;
	if (kept == NULL)
		return;
	kept = NULL;
	MemoryContextReset(kept_cxt);
}

static void
relcache_changed(Datum arg pg_attribute_unused(), Oid relid)
{
	HASH_SEQ_STATUS scan;
	ProtectionEntry *entry;

	if (kept == NULL)
		return;
	if (relid == InvalidOid || relid == protected_tables_relid)
	{
		forget_all();
		return;
	}
	hash_seq_init(&scan, kept);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (entry->relid == relid || entry->root == relid)
		{
			hash_seq_term(&scan);
			forget_all();
			return;
		}
	}
}

static void
init_kept(void)
{
	HASHCTL		ctl;

	if (kept_cxt == NULL)
	{
		kept_cxt = AllocSetContextCreate(CacheMemoryContext, "appguard protected tables",
										 ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	}
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(ProtectionEntry);
	ctl.hcxt = kept_cxt;
	kept = hash_create("appguard protected tables", 16, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The protection of the table whose row fired a trigger on rel: rel's own
 * record in appguard.protected_tables, or, for a partition (PostgreSQL
 * clones the row triggers of a partitioned table to its partitions), its
 * nearest protected ancestor's (sql/parts/32_protect.sql, "Partitioned
 * token tables").  Fills pt[] and pt_null[] and returns the protected
 * table's OID, or InvalidOid when none is protected.  The attribute
 * numbers are rel's: a partition may number the same columns otherwise
 * (a column dropped from its root, a table attached), so they are looked
 * up by name.  Reads with the active snapshot.
 */
static Oid
read_protection(Relation rel, Datum *pt, bool *pt_null)
{
	static const int attnum_columns[] = {PT_KEY_ATTNUM, PT_CLIENT_ATTNUM, PT_STATUS_ATTNUM,
	PT_SUBJECT_ATTNUM, PT_GRANT_ATTNUM};
	Oid			relid = RelationGetRelid(rel);
	Datum		key = ObjectIdGetDatum(relid);
	Oid			root = InvalidOid;
	List	   *ancestors;
	ListCell   *lc;

	if (keyread_row(KT_PROTECTED_TABLES, &key, GetActiveSnapshot(), pt, pt_null))
		return relid;
	if (!rel->rd_rel->relispartition)
		return InvalidOid;
	ancestors = get_partition_ancestors(relid);	/* nearest first */
	foreach(lc, ancestors)
	{
		key = ObjectIdGetDatum(lfirst_oid(lc));
		if (keyread_row(KT_PROTECTED_TABLES, &key, GetActiveSnapshot(), pt, pt_null))
		{
			root = lfirst_oid(lc);
			break;
		}
	}
	list_free(ancestors);
	if (!OidIsValid(root))
		return InvalidOid;
	for (int i = 0; i < (int) lengthof(attnum_columns); i++)
	{
		int			c = attnum_columns[i];
		char	   *name;
		AttrNumber	attnum;

		if (pt_null[c])
			continue;
		name = get_attname(root, DatumGetInt16(pt[c]), true);
		attnum = name ? get_attnum(relid, name) : InvalidAttrNumber;
		if (attnum == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("partition \"%s\" lacks a column appguard reads in protected table \"%s\"",
							RelationGetRelationName(rel), get_rel_name(root))));
		pt[c] = Int16GetDatum(attnum);
	}
	return root;
}


Oid
protected_table_of(Relation rel, Datum *pt, bool *pt_null)
{
	Oid			relid = RelationGetRelid(rel);
	ProtectionEntry *entry;
	uint64		read_generation;
	Oid			root;

	if (kept == NULL)
		init_kept();
	entry = hash_search(kept, &relid, HASH_FIND, NULL);
	if (entry != NULL)
	{
		memcpy(pt, entry->pt, sizeof(entry->pt));
		memcpy(pt_null, entry->pt_null, sizeof(entry->pt_null));
		/* the caller's copy: an invalidation may forget the kept one at any lock */
		if (!pt_null[PT_ACTIVE_VALUE])
			pt[PT_ACTIVE_VALUE] = datumCopy(pt[PT_ACTIVE_VALUE], false, -1);
		return entry->root;
	}

	read_generation = generation;
	keyread_begin_fresh();
	root = read_protection(rel, pt, pt_null);
	keyread_end_fresh();
	{
		AttrNumber	keyattnums[INDEX_MAX_KEYS];
		AttrNumber	attnums[KEYREAD_MAX_COLUMNS];

		protected_tables_relid = keyread_layout(KT_PROTECTED_TABLES, keyattnums, attnums);
	}
	if (!OidIsValid(root) || generation != read_generation)
		return root;			/* not protected, or overtaken (kept is gone too): not kept */

	entry = hash_search(kept, &relid, HASH_ENTER, NULL);
	entry->root = root;
	memcpy(entry->pt_null, pt_null, sizeof(entry->pt_null));
	memcpy(entry->pt, pt, sizeof(entry->pt));
	if (!pt_null[PT_ACTIVE_VALUE])
	{
		MemoryContext old = MemoryContextSwitchTo(kept_cxt);

		entry->pt[PT_ACTIVE_VALUE] = datumCopy(pt[PT_ACTIVE_VALUE], false, -1);
		MemoryContextSwitchTo(old);
	}
	return root;
}
