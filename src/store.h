/*-------------------------------------------------------------------------
 *
 * store.h
 *	  Storing a probe's measurement as a row of appguard.snapshots.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_STORE_H
#define APPGUARD_STORE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "probe.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

/* What a snapshot row holds, independent of the probe that measured it */
typedef struct SnapshotRow
{
	char	   *host;
	int			port;
	TimestampTz taken_at;		/* when the probe started */
	const char *status;
	Jsonb	   *facts;
	ArrayType  *chain;			/* bytea[]: DER of each certificate as sent */
} SnapshotRow;

/* Copy what is to be stored of a finished probe, in CurrentMemoryContext */
extern void snapshot_row_from_probe(SnapshotRow *row, Probe *probe, Jsonb *facts);

/* Copy a row, in CurrentMemoryContext */
extern void snapshot_row_copy(SnapshotRow *dst, const SnapshotRow *src);

/*
 * Insert the row (the triggers on appguard.snapshots fire) and return its
 * id.  Runs as the current user with the current search_path: callers
 * are SECURITY DEFINER functions with a pinned search_path, or the sweep,
 * which switches to the owner itself.
 */
/* The columns of appguard.snapshots the store writes */
enum
{
	SS_ID, SS_HOST, SS_PORT, SS_TAKEN_AT, SS_STATUS, SS_FACTS, SS_CHAIN, SS_NCOLUMNS
};

/*
 * Storing rows, one after another, in the caller's transaction: each row's
 * AFTER INSERT triggers fire before snapshot_store_row returns, as after
 * an INSERT statement of that row.  Open, store, close, in one memory
 * context that lasts as long (store.c says why an ERROR needs no close).
 */
typedef struct SnapshotStore
{
	Relation	rel;			/* NULL: each row through an INSERT statement */
	struct EState *estate;
	struct ResultRelInfo *rri;
	struct TupleTableSlot *slot;
	Oid			id_sequence;
	AttrNumber	attnums[SS_NCOLUMNS];
} SnapshotStore;

extern SnapshotStore *snapshot_store_open(void);
extern int64 snapshot_store_row(SnapshotStore *store, const SnapshotRow *row);
extern void snapshot_store_close(SnapshotStore *store);

/* open, store one row, close */
extern int64 store_snapshot_row(const SnapshotRow *row);

/* facts with "id" added */
extern Jsonb *facts_with_id(Jsonb *facts, int64 id);

#endif							/* APPGUARD_STORE_H */
