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

---------------------------------------------------------------------------
-- appguard's own refresh-token table, for auth servers that start fresh
---------------------------------------------------------------------------

-- token_id identifies the grant (use an id or a hash, not the token
-- itself: it appears in events and error messages never show it).
-- status: active, suspended (only appguard sets it), revoked (the auth
-- server's decision, final as far as appguard is concerned).
CREATE TABLE appguard.refresh_tokens (
	token_id				text PRIMARY KEY,
	client_id				text NOT NULL,
	subject					text NOT NULL,
	scope					text,
	status					text NOT NULL DEFAULT 'active'
							CHECK (status IN ('active', 'suspended', 'revoked')),
	error_uri				text,
	baseline_snapshot_id	bigint,
	suspended_at			timestamptz,
	suspension_id			bigint,
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	last_refreshed_at		timestamptz,
	reapproved_at			timestamptz
);
COMMENT ON TABLE appguard.refresh_tokens IS 'Refresh tokens guarded by appguard: each active token has the baseline snapshot its patient consented against';
COMMENT ON COLUMN appguard.refresh_tokens.baseline_snapshot_id IS 'Snapshot the grant consented against; NULL = pending (the client''s next successful snapshot becomes it)';
-- Drift evaluation reads the distinct baselines of a client's active
-- tokens and suspends the tokens of drifted baselines through this index.
CREATE INDEX refresh_tokens_client_baseline
	ON appguard.refresh_tokens (client_id, baseline_snapshot_id) WHERE status = 'active';
SELECT pg_catalog.pg_extension_config_dump('appguard.refresh_tokens', '');

-- BEFORE INSERT: give a new active token its baseline -- the client's
-- latest successful snapshot when younger than appguard.baseline_max_age,
-- else appguard.baseline_for -- and refuse a suspended row that names no
-- suspension.  Never fails the INSERT because a measurement failed (the
-- baseline stays pending then).  In C (src/refresh.c): it runs on every
-- consent.
CREATE FUNCTION appguard.refresh_token_issue()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_refresh_token_issue'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER appguard_baseline BEFORE INSERT ON appguard.refresh_tokens
	FOR EACH ROW EXECUTE FUNCTION appguard.refresh_token_issue();

-- Only appguard moves a token into 'suspended' or back to 'active' from
-- a suspension: a suspension needs its record and error_uri, a
-- reactivation a new baseline (appguard_reapprove).  Revoking a suspended
-- token is the auth server's right; the token keeps its suspension_id
-- then, which marks it as suspended by appguard: the auth server may not
-- make it active again (revoked -> active), nor may it any token whose
-- suspension_id is set.  appguard's own writes are told from the auth
-- server's by appguard.applying() (26_applying), a flag only appguard's
-- code can raise; the auth server's role may not write suspension_id at
-- all (column privileges, part 8).  The WHEN clause keeps ordinary
-- updates free of any call (it runs with the updating role's rights, so
-- it calls nothing of appguard's).
CREATE FUNCTION appguard.refresh_token_status_guard()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF appguard.applying() THEN
		RETURN NEW;			-- a suspension or a re-approval by appguard
	END IF;
	IF NEW.status = 'suspended' THEN
		RAISE EXCEPTION 'only appguard suspends refresh tokens'
			USING ERRCODE = '55000',
				  HINT = 'Set status to ''revoked'' to revoke a token.';
	END IF;
	RAISE EXCEPTION 'refresh token was suspended by appguard'
		USING ERRCODE = '55000',
			  DETAIL = pg_catalog.format('It is %s under suspension %s; only appguard_reapprove makes it active again.',
										 OLD.status, OLD.suspension_id),
			  HINT = 'Reactivate a suspended token with appguard_reapprove(token_id), which takes a new baseline; a token revoked while suspended stays revoked.';
END
$$;
CREATE TRIGGER appguard_status_guard BEFORE UPDATE OF status ON appguard.refresh_tokens
	FOR EACH ROW
	WHEN ((NEW.status = 'suspended' AND OLD.status <> 'suspended')
		  OR (NEW.status = 'active' AND OLD.status <> 'active'
			  AND (OLD.status = 'suspended' OR OLD.suspension_id IS NOT NULL)))
	EXECUTE FUNCTION appguard.refresh_token_status_guard();
