---------------------------------------------------------------------------
-- Lifecycle, part 6: the mass-drift breaker's holds
--
-- A hold opens when a sweep's suspend-level drift covers more than
-- appguard.mass_drift_threshold of the hosts it measured (and it measured
-- at least appguard.mass_drift_min_hosts): a resolver outage, a CA
-- incident or a trust-store update must not suspend every app at once.
-- The sweep's suspensions are recorded as held instead of applied, with a
-- WARNING and NOTIFY appguard_hold (payload: the hold id).  While a hold is
-- open, every new suspension joins it.  An operator closes it:
--   appguard_release_hold(hold_id [, client_id])  applies the held
--       suspensions whose drift is still current (a suspension whose
--       baseline has since been measured without suspend-level drift is
--       marked superseded instead);
--   appguard_discard_hold(hold_id [, client_id])  drops them.  If the
--       drift persists, a later evaluation suspends again (unless the
--       breaker trips again): discarding says "this batch was a false
--       alarm", not "ignore this app forever".
-- With client_id only that client's held suspensions are handled; the
-- hold closes when none is left.
---------------------------------------------------------------------------

CREATE FUNCTION appguard.hold_for_update(p_hold_id bigint, p_client_id text)
RETURNS appguard.holds
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h appguard.holds;
BEGIN
	IF p_hold_id IS NULL THEN
		RAISE EXCEPTION 'hold_id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT * INTO h FROM appguard.holds ho WHERE ho.id = p_hold_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'hold % does not exist', p_hold_id
			USING ERRCODE = 'P0002',
				  HINT = 'Open holds are listed in appguard.held_suspensions.';
	END IF;
	IF h.state <> 'open' THEN
		RAISE EXCEPTION 'hold % is already %', p_hold_id, h.state USING ERRCODE = '55000';
	END IF;
	IF p_client_id IS NOT NULL AND NOT EXISTS (
		SELECT FROM appguard.suspensions s
		WHERE s.hold_id = p_hold_id AND s.state = 'held' AND s.client_id = p_client_id) THEN
		RAISE EXCEPTION 'hold % holds no suspension of client "%"', p_hold_id, p_client_id
			USING ERRCODE = '22023';
	END IF;
	RETURN h;
END
$$;

-- Close the hold when nothing is held in it any more.
CREATE FUNCTION appguard.close_hold_if_empty(p_hold_id bigint, p_state text)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE appguard.holds h
	SET state = $2, closed_at = pg_catalog.clock_timestamp(), closed_by = session_user
	WHERE h.id = $1 AND h.state = 'open'
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s WHERE s.hold_id = $1 AND s.state = 'held');
	SELECT h.state FROM appguard.holds h WHERE h.id = $1;
$$;

CREATE FUNCTION @extschema@.appguard_release_hold(hold_id bigint, client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	to_apply bigint[];
	superseded bigint[];
	tokens bigint;
	hold_state text;
	result jsonb;
BEGIN
	PERFORM appguard.hold_for_update(hold_id, client_id);
	-- the clients' rows first, in order, as every evaluation does
	PERFORM FROM appguard.clients c
	WHERE c.client_id IN (SELECT s.client_id FROM appguard.suspensions s
						  WHERE s.hold_id = appguard_release_hold.hold_id AND s.state = 'held'
							AND (appguard_release_hold.client_id IS NULL
								 OR s.client_id = appguard_release_hold.client_id))
	ORDER BY c.client_id FOR NO KEY UPDATE;
	-- (still drifting: by the verdict of the host the suspension names)
	SELECT coalesce(pg_catalog.array_agg(s.id ORDER BY s.id) FILTER (WHERE coalesce(bh.drifting, bs.drifting)), '{}'),
		   coalesce(pg_catalog.array_agg(s.id ORDER BY s.id)
						FILTER (WHERE NOT coalesce(bh.drifting, bs.drifting, false)), '{}')
	INTO to_apply, superseded
	FROM appguard.suspensions s
		 LEFT JOIN appguard.baseline_state bs ON bs.client_id = s.client_id
											 AND bs.baseline_snapshot_id = s.baseline_snapshot_id
		 LEFT JOIN appguard.baseline_host_state bh ON bh.client_id = s.client_id
												  AND bh.baseline_snapshot_id = s.baseline_snapshot_id
												  AND bh.host = s.host AND bh.port = s.port
	WHERE s.hold_id = appguard_release_hold.hold_id AND s.state = 'held'
	  AND (appguard_release_hold.client_id IS NULL OR s.client_id = appguard_release_hold.client_id);
	UPDATE appguard.suspensions s SET state = 'superseded', resolved_at = pg_catalog.now()
	WHERE s.id = ANY (superseded);
	tokens := appguard.apply_suspensions(to_apply);
	hold_state := appguard.close_hold_if_empty(hold_id, 'released');
	result := pg_catalog.jsonb_build_object(
		'hold_id', hold_id, 'client_id', client_id,
		'applied', pg_catalog.cardinality(to_apply), 'superseded', pg_catalog.cardinality(superseded),
		'tokens_suspended', tokens, 'hold_state', hold_state);
	PERFORM appguard.log_event('hold_released', client_id, result, hold_id => hold_id);
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_release_hold(bigint, text) IS
	'Apply the suspensions a hold of the mass-drift breaker keeps (all, or one client''s)';

CREATE FUNCTION @extschema@.appguard_discard_hold(hold_id bigint, client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	discarded bigint;
	hold_state text;
	result jsonb;
BEGIN
	PERFORM appguard.hold_for_update(hold_id, client_id);
	UPDATE appguard.suspensions s SET state = 'discarded', resolved_at = pg_catalog.now()
	WHERE s.hold_id = appguard_discard_hold.hold_id AND s.state = 'held'
	  AND (appguard_discard_hold.client_id IS NULL OR s.client_id = appguard_discard_hold.client_id);
	GET DIAGNOSTICS discarded = ROW_COUNT;
	hold_state := appguard.close_hold_if_empty(hold_id, 'discarded');
	result := pg_catalog.jsonb_build_object('hold_id', hold_id, 'client_id', client_id,
											'discarded', discarded, 'hold_state', hold_state);
	PERFORM appguard.log_event('hold_discarded', client_id, result, hold_id => hold_id);
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_discard_hold(bigint, text) IS
	'Drop the suspensions a hold of the mass-drift breaker keeps (all, or one client''s)';
