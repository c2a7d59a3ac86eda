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
extern int64 store_snapshot_row(const SnapshotRow *row);

/* facts with "id" added */
extern Jsonb *facts_with_id(Jsonb *facts, int64 id);

#endif							/* APPGUARD_STORE_H */
