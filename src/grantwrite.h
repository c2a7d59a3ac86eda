/*-------------------------------------------------------------------------
 *
 * grantwrite.h
 *	  Writing a new grant into appguard.grants, retiring one, and starting
 *	  a consent in appguard.consents, without the planner and the
 *	  executor's per-statement work: the consent trigger (refresh.c)
 *	  inserts at every token INSERT of the auth server and starts a consent
 *	  at a patient's first, the status trigger retires at every rotation
 *	  and revocation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_GRANTWRITE_H
#define APPGUARD_GRANTWRITE_H

#include "postgres.h"

typedef enum GrantWriteResult
{
	GW_INSERTED,				/* the row is written */
	GW_DUPLICATE,				/* the key has a row already: nothing written */
	GW_RETIRED,					/* the grant went inactive */
	GW_NOT_ACTIVE,				/* no active grant under the key: nothing written */
	GW_NOT_DIRECT				/* not a plain case: nothing written */
} GrantWriteResult;

/*
 * Insert the row (token_table, token_key, client_id, state,
 * baseline_snapshot_id, subject, grant_key, created_at = now(), every other
 * column NULL) into appguard.grants, as INSERT INTO appguard.grants
 * (token_table, token_key, client_id, state, baseline_snapshot_id, subject,
 * grant_key) VALUES (...) ON CONFLICT (token_table, token_key) DO NOTHING
 * would: constraints checked, every index maintained.  GW_DUPLICATE when
 * the primary key holds the key already, committed or not (another
 * transaction's INSERT still running, this transaction's own row, a row
 * whose deletion is not committed): nothing is left of the new row, and
 * the caller's upsert decides (waiting for that transaction).
 * GW_NOT_DIRECT, having written nothing, where the direct insert would not
 * be exactly what the statement does (a trigger or row security on the
 * table, a default the C code does not know, a privilege missing): the
 * caller runs the statement then.
 */
extern GrantWriteResult grantwrite_insert(Oid token_table, Datum token_key,
										  Datum client_id, bool client_null,
										  Datum state,
										  Datum baseline, bool baseline_null,
										  Datum subject, bool subject_null,
										  Datum grant_key, bool grant_key_null);

/*
 * The host retired a row (its status no longer the active value): its
 * grant goes inactive, as UPDATE appguard.grants SET state = 'inactive'
 * WHERE token_table = ... AND token_key = ... AND state = 'active' would
 * under READ COMMITTED: the grant's current version is locked first,
 * waiting for a transaction writing it (a suspension committing
 * meanwhile), then re-read.  GW_RETIRED, or GW_NOT_ACTIVE when there is no
 * active grant under the key (nothing written: the caller's SQL decides),
 * or GW_NOT_DIRECT as for grantwrite_insert.
 */
extern GrantWriteResult grantwrite_retire(Oid token_table, Datum token_key);

/*
 * Start a patient's consent: the row (client_id, subject,
 * baseline_snapshot_id, approved_at = clock_timestamp(), created_at =
 * now(), every other column NULL) into appguard.consents, as INSERT INTO
 * appguard.consents (client_id, subject, baseline_snapshot_id,
 * approved_at) VALUES (...) ON CONFLICT (client_id, subject) DO NOTHING
 * would.  GW_INSERTED, GW_DUPLICATE (a consent is there already, committed
 * or not: nothing written) or GW_NOT_DIRECT, as for grantwrite_insert.
 */
extern GrantWriteResult grantwrite_start_consent(Datum client_id, Datum subject, Datum baseline);

#endif							/* APPGUARD_GRANTWRITE_H */
