---------------------------------------------------------------------------
-- Lifecycle, part 2: grants and their baselines
--
-- A grant's baseline is the snapshot of its client's host the patient
-- consented against.  Baselines are per grant, and many grants share one
-- baseline snapshot (every grant issued while the same snapshot is the
-- client's latest successful one).  A grant whose baseline is NULL has its
-- baseline *pending*: the client's next successful snapshot becomes it.
---------------------------------------------------------------------------

-- Measure a client's host now, for a baseline or a refresh check, within
-- appguard.baseline_timeout_ms: the probe deadline (appguard.timeout_ms)
-- and the lock waits of the drift evaluation the new snapshot triggers
-- (lock_timeout) are both bounded by it.  Never raises: a failure (the
-- measurement failed, or an error such as a lock timeout, which rolls back
-- the snapshot and its evaluation) returns NULL and is recorded as an
-- event.  Returns the snapshot id when the measurement succeeded.
CREATE FUNCTION appguard.live_snapshot(p_client_id text, p_purpose text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target record;
	timeout_ms integer;
	old_timeout text;
	old_lock_timeout text;
	facts jsonb;
BEGIN
	SELECT c.host, c.port INTO target FROM appguard.clients c WHERE c.client_id = p_client_id;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	timeout_ms := pg_catalog.ceil(pg_catalog.date_part('epoch',
		appguard.setting('appguard.baseline_timeout_ms')::interval) * 1000)::integer;
	old_timeout := pg_catalog.current_setting('appguard.timeout_ms');
	old_lock_timeout := pg_catalog.current_setting('lock_timeout');
	BEGIN
		PERFORM pg_catalog.set_config('appguard.timeout_ms', GREATEST(timeout_ms, 100)::text, true);
		PERFORM pg_catalog.set_config('lock_timeout', timeout_ms::text, true);
		facts := @extschema@.appguard_snapshot(target.host, target.port);
		PERFORM pg_catalog.set_config('appguard.timeout_ms', old_timeout, true);
		PERFORM pg_catalog.set_config('lock_timeout', old_lock_timeout, true);
	EXCEPTION WHEN OTHERS THEN
		-- the subtransaction's setting changes are undone with it
		PERFORM appguard.log_event('live_snapshot_failed', p_client_id,
			pg_catalog.jsonb_build_object('purpose', p_purpose, 'host', target.host,
										  'port', target.port, 'sqlstate', SQLSTATE,
										  'error', SQLERRM));
		RETURN NULL;
	END;
	IF facts ->> 'status' = 'ok' THEN
		RETURN (facts ->> 'id')::bigint;
	END IF;
	PERFORM appguard.log_event('live_snapshot_failed', p_client_id,
		pg_catalog.jsonb_build_object('purpose', p_purpose, 'host', target.host, 'port', target.port,
									  'status', facts ->> 'status', 'error', facts ->> 'error'),
		snapshot_id => (facts ->> 'id')::bigint);
	RETURN NULL;
END
$$;

-- The baseline of a grant created now: the client's latest successful
-- snapshot when it is younger than appguard.baseline_max_age; else a live
-- snapshot (appguard.live_snapshot); NULL (pending) when that fails, when
-- a live attempt failed less than a minute ago (so a burst of consents to
-- an unreachable app does not wait once per token), or when the client is
-- not registered (its tokens are left alone).
CREATE FUNCTION appguard.baseline_for(p_client_id text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
BEGIN
	SELECT cl.last_ok_snapshot_id, cl.last_ok_at, cl.last_snapshot_at, cl.last_status
	INTO c FROM appguard.clients cl WHERE cl.client_id = p_client_id;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF c.last_ok_snapshot_id IS NOT NULL
	   AND c.last_ok_at >= pg_catalog.clock_timestamp()
			- appguard.setting('appguard.baseline_max_age')::interval THEN
		RETURN c.last_ok_snapshot_id;
	END IF;
	IF c.last_status IS DISTINCT FROM 'ok'
	   AND c.last_snapshot_at >= pg_catalog.clock_timestamp() - interval '1 minute' THEN
		RETURN NULL;
	END IF;
	RETURN appguard.live_snapshot(p_client_id, 'baseline');
END
$$;
