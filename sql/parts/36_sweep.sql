---------------------------------------------------------------------------
-- Lifecycle, part 7: sweeps
--
--   CALL appguard_sweep(max_age interval, budget interval
--                                [, batch_size integer DEFAULT 32]);
-- measures every watched host (the primary redirect host and port of each
-- registered client) whose latest snapshot is older than max_age, oldest
-- first, until the hosts or the budget run out.  pg_cron can CALL it; it
-- must not be called inside a transaction block.
--
-- The hosts are measured by one event loop (src/engine.c, src/sweep.c):
-- appguard.sweep_concurrency hosts in flight at once, each with its own
-- deadline (appguard.timeout_ms); when the budget is spent no host is
-- started any more, and those in flight finish within their deadline.
-- The loop never stops between batches: a finished host's snapshot waits
-- in memory until batch_size of them are ready or the oldest has waited a
-- second, then the batch is inserted, evaluated and committed while the
-- other hosts stay in flight.  No transaction is open while the loop waits
-- for the network, and a cancelled sweep keeps every batch it committed.
-- The loop pauses while a batch is stored and evaluated (about a
-- millisecond a host), so small batches keep every host's deadline tight
-- and the progress fresh, and large ones commit less often.
--
-- A sweep is one row of appguard.sweeps (counts updated with every batch,
-- readable from any session while it runs) and one row per host in
-- appguard.sweep_hosts.  Its snapshots are recorded there by the snapshot
-- trigger and evaluated with their batch; the suspensions they confirm
-- stay pending until the end of the sweep, when the mass-drift breaker
-- (part 6) applies them or holds them all.  Deferring costs at most one
-- budget of delay and is what lets the breaker see the whole sweep before
-- anything is suspended.  The end of a sweep is logged (LOG) with its
-- counts.
--
-- The procedure is appguard_sweep_begin, COMMIT, CALL sweep_run, then
-- appguard_sweep_finish.  The functions are callable on their own (tests
-- drive a sweep without network that way; an operator may finish an
-- interrupted sweep with the third):
--   appguard_sweep_begin(max_age, budget, batch_size) -> sweep id
--   appguard_sweep_step(sweep_id) -> measures the next batch_size hosts
--       together (appguard_snapshot_many) in the caller's transaction;
--       true while hosts and budget remain
--   appguard_sweep_finish(sweep_id) -> the sweep's counts, as jsonb
-- Inside a session, the placeholder setting appguard_lifecycle.sweep_id
-- names the running sweep a stored snapshot belongs to; it only counts
-- for a running sweep started by the same backend.  A sweep whose backend
-- is gone or idle (a cancelled CALL) is finished ('aborted') by the next
-- sweep_begin.
--
-- A sweep never stays running because it cannot be closed.  When closing
-- raises (a table appguard must write rejects the write, a bug), the close
-- is rolled back and the sweep ends 'failed' instead (appguard.sweep_fail):
-- the error and its SQLSTATE are recorded in appguard.sweeps, the sweep's
-- pending suspensions become 'failed' (nothing was applied; the refresh
-- check refuses their grants while the baseline stays confirmed drifted,
-- part 5, and the next snapshot suspends them anew), and operators are
-- told by a WARNING, a 'sweep_failed' event (and a 'suspension_failed' one
-- per suspension) and NOTIFY appguard_sweep_failed (payload: the sweep
-- id).  Where:
--   * appguard_sweep_finish records the failure and returns the counts
--     with state 'failed', 'error' and 'sqlstate' (a function cannot
--     commit the failure and raise too);
--   * appguard_sweep commits that, then raises the error again (same
--     SQLSTATE), so that pg_cron records the run as failed;
--   * appguard_sweep_begin closing a stale sweep records the failure and
--     starts the new sweep all the same.
-- Cancel and statement_timeout (57014) are never caught: a sweep
-- cancelled while closing stays running until the next begin closes it.
---------------------------------------------------------------------------

CREATE TABLE appguard.sweeps (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	started_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	finished_at		timestamptz,
	state			text NOT NULL DEFAULT 'running'
					CHECK (state IN ('running', 'finished', 'budget_exhausted', 'aborted', 'failed')),
	pid				integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
	run_by			text NOT NULL DEFAULT session_user,
	max_age			interval NOT NULL,
	budget			interval NOT NULL,
	batch_size		integer NOT NULL,
	deadline		timestamptz NOT NULL,
	planned			integer NOT NULL DEFAULT 0,		-- hosts due
	measured		integer NOT NULL DEFAULT 0,		-- hosts measured (failures included)
	failed			integer NOT NULL DEFAULT 0,		-- measurements that failed
	drifted			integer NOT NULL DEFAULT 0,		-- hosts drifting at suspend level
	suspended		integer NOT NULL DEFAULT 0,		-- suspensions applied at the end
	held			integer NOT NULL DEFAULT 0,		-- suspensions held by the breaker
	tokens_suspended bigint NOT NULL DEFAULT 0,
	hold_id			bigint,
	error			text,							-- state failed: why closing failed
	error_sqlstate	text
);
COMMENT ON TABLE appguard.sweeps IS 'One row per sweep run, with its counts (updated while it runs)';
SELECT pg_catalog.pg_extension_config_dump('appguard.sweeps', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.sweeps_id_seq', '');

CREATE TABLE appguard.sweep_hosts (
	sweep_id		bigint NOT NULL REFERENCES appguard.sweeps ON DELETE CASCADE,
	host			text NOT NULL,
	port			integer NOT NULL,
	ord				integer NOT NULL,			-- measuring order, oldest snapshot first
	planned			boolean NOT NULL DEFAULT true,
	snapshot_id		bigint,
	status			text,
	error			text,						-- the measurement raised an error
	measured_at		timestamptz,
	evaluated		boolean NOT NULL DEFAULT false,
	drifted			boolean NOT NULL DEFAULT false,
	PRIMARY KEY (sweep_id, host, port)
);
COMMENT ON TABLE appguard.sweep_hosts IS 'Hosts of a sweep: planned, measured, drifted';
CREATE INDEX sweep_hosts_snapshot ON appguard.sweep_hosts (snapshot_id) WHERE snapshot_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('appguard.sweep_hosts', '');

-- The running sweep of this backend that stored snapshots belong to, or NULL.
CREATE FUNCTION appguard.current_sweep()
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := pg_catalog.current_setting('appguard_lifecycle.sweep_id', true);
BEGIN
	IF v IS NULL OR v !~ '^[0-9]{1,18}$' THEN
		RETURN NULL;
	END IF;
	RETURN (SELECT w.id FROM appguard.sweeps w
			WHERE w.id = v::bigint AND w.state = 'running' AND w.pid = pg_catalog.pg_backend_pid());
END
$$;

CREATE FUNCTION appguard.running_sweep(p_sweep_id bigint)
RETURNS appguard.sweeps
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
BEGIN
	IF p_sweep_id IS NULL THEN
		RAISE EXCEPTION 'sweep_id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT * INTO w FROM appguard.sweeps s WHERE s.id = p_sweep_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'sweep % does not exist', p_sweep_id USING ERRCODE = 'P0002';
	END IF;
	RETURN w;
END
$$;

-- Evaluate the snapshots a sweep recorded and refresh its counts.
CREATE FUNCTION appguard.sweep_evaluate(p_sweep_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h record;
	hosts text[] := '{}';
	ports integer[] := '{}';
	verdicts boolean[] := '{}';
BEGIN
	FOR h IN
		SELECT sh.host, sh.port, sh.snapshot_id FROM appguard.sweep_hosts sh
		WHERE sh.sweep_id = p_sweep_id AND sh.snapshot_id IS NOT NULL AND NOT sh.evaluated
		ORDER BY sh.ord, sh.host, sh.port
	LOOP
		hosts := pg_catalog.array_append(hosts, h.host);
		ports := pg_catalog.array_append(ports, h.port);
		verdicts := pg_catalog.array_append(verdicts,
											appguard.evaluate_snapshot(h.snapshot_id, p_sweep_id));
	END LOOP;
	-- one statement for the batch: a sweep evaluates thousands of hosts
	UPDATE appguard.sweep_hosts sh
	SET evaluated = true, drifted = v.drifted
	FROM ROWS FROM (pg_catalog.unnest(hosts), pg_catalog.unnest(ports), pg_catalog.unnest(verdicts))
		 AS v(host, port, drifted)
	WHERE sh.sweep_id = p_sweep_id AND sh.host = v.host AND sh.port = v.port;
	UPDATE appguard.sweeps w
	SET measured = c.measured, failed = c.failed, drifted = c.drifted
	FROM (SELECT pg_catalog.count(*) FILTER (WHERE sh.snapshot_id IS NOT NULL OR sh.error IS NOT NULL) AS measured,
				 pg_catalog.count(*) FILTER (WHERE sh.error IS NOT NULL OR sh.status <> 'ok') AS failed,
				 pg_catalog.count(*) FILTER (WHERE sh.drifted) AS drifted
		  FROM appguard.sweep_hosts sh WHERE sh.sweep_id = p_sweep_id) c
	WHERE w.id = p_sweep_id;
END
$$;

-- End a sweep: evaluate what is left, then the breaker decides whether
-- the sweep's pending suspensions are applied or held.
CREATE FUNCTION appguard.sweep_close(p_sweep_id bigint, p_state text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
	pending bigint[];
	threshold double precision;
	min_hosts integer;
	tripped boolean;
	hold bigint;
	n_applied integer := 0;
	n_held integer := 0;
	n_tokens bigint := 0;
	summary jsonb;
BEGIN
	w := appguard.running_sweep(p_sweep_id);
	IF w.state <> 'running' THEN
		RETURN appguard.sweep_summary(p_sweep_id);
	END IF;
	-- the open hold before any client row (see part 4)
	SELECT h.id INTO hold FROM appguard.holds h WHERE h.state = 'open' FOR UPDATE;
	PERFORM appguard.sweep_evaluate(p_sweep_id);
	SELECT * INTO w FROM appguard.sweeps s WHERE s.id = p_sweep_id;

	threshold := appguard.setting('appguard.mass_drift_threshold')::double precision;
	min_hosts := appguard.setting('appguard.mass_drift_min_hosts')::integer;
	tripped := w.measured >= min_hosts AND w.drifted > threshold * w.measured;
	pending := ARRAY(SELECT s.id FROM appguard.suspensions s
					 WHERE s.sweep_id = p_sweep_id AND s.state = 'pending' ORDER BY s.id);

	IF pg_catalog.cardinality(pending) > 0 THEN
		IF tripped OR hold IS NOT NULL THEN
			IF hold IS NULL THEN
				INSERT INTO appguard.holds (sweep_id, hosts_measured, hosts_drifted, threshold, min_hosts)
				VALUES (p_sweep_id, w.measured, w.drifted, threshold, min_hosts)
				RETURNING id INTO hold;
				PERFORM appguard.log_event('hold_opened', detail => pg_catalog.jsonb_build_object(
					'hosts_measured', w.measured, 'hosts_drifted', w.drifted,
					'threshold', threshold, 'min_hosts', min_hosts), hold_id => hold, sweep_id => p_sweep_id);
			END IF;
			UPDATE appguard.suspensions s SET state = 'held', hold_id = hold
			WHERE s.id = ANY (pending);
			n_held := pg_catalog.cardinality(pending);
			PERFORM appguard.log_event('suspensions_held',
				detail => pg_catalog.jsonb_build_object('suspensions', pg_catalog.to_jsonb(pending),
														'breaker_tripped', tripped),
				hold_id => hold, sweep_id => p_sweep_id);
			RAISE WARNING 'appguard: % suspension(s) found by sweep % are held (hold %)', n_held, p_sweep_id, hold
				USING DETAIL = CASE WHEN tripped
					THEN pg_catalog.format('%s of the %s hosts measured drifted, more than the mass-drift threshold of %s.',
										   w.drifted, w.measured, threshold)
					ELSE 'An earlier hold is still open; new suspensions join it.' END,
					  HINT = pg_catalog.format('Inspect appguard.held_suspensions, then call appguard_release_hold(%s) to apply them or appguard_discard_hold(%s) to drop them.', hold, hold);
			PERFORM pg_catalog.pg_notify('appguard_hold', hold::text);
		ELSE
			PERFORM FROM appguard.clients c
			WHERE c.client_id IN (SELECT s.client_id FROM appguard.suspensions s WHERE s.id = ANY (pending))
			ORDER BY c.client_id FOR NO KEY UPDATE;
			n_tokens := appguard.apply_suspensions(pending);
			n_applied := pg_catalog.cardinality(pending);
		END IF;
	ELSIF tripped THEN
		RAISE WARNING 'appguard: % of the % hosts measured by sweep % drifted', w.drifted, w.measured, p_sweep_id
			USING DETAIL = 'Nothing is confirmed yet (appguard.confirmations); the next sweep may hold suspensions.';
	END IF;
	-- Decided: the refresh check's fast path may serve these clients again
	-- unless another host's suspension still refuses (a failed one, one
	-- of a sweep still running).  The rows are locked first, so that the
	-- UPDATE's own reads see the evaluations that committed meanwhile.
	PERFORM FROM appguard.clients c WHERE c.hosts_undecided ORDER BY c.client_id FOR NO KEY UPDATE;
	UPDATE appguard.clients c SET hosts_undecided = false
	WHERE c.hosts_undecided AND appguard.other_host_blocking(c.client_id, NULL) IS NULL;

	UPDATE appguard.sweeps s
	SET state = p_state, finished_at = pg_catalog.clock_timestamp(),
		suspended = n_applied, held = n_held, tokens_suspended = n_tokens,
		hold_id = CASE WHEN n_held > 0 THEN hold END
	WHERE s.id = p_sweep_id;
	summary := appguard.sweep_summary(p_sweep_id);
	PERFORM appguard.log_event('sweep_finished', detail => summary,
							   sweep_id => p_sweep_id, hold_id => CASE WHEN n_held > 0 THEN hold END);
	RAISE LOG 'appguard: sweep % %: % of % hosts measured (% failed, % drifted), % skipped, % suspension(s) applied, % held, in % s',
		p_sweep_id, p_state, summary ->> 'measured', summary ->> 'planned', summary ->> 'failed',
		summary ->> 'drifted', summary ->> 'skipped', n_applied, n_held,
		pg_catalog.round(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) w.started_at)::numeric, 3);
	RETURN summary;
END
$$;

CREATE FUNCTION appguard.sweep_summary(p_sweep_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.jsonb_build_object(
		'sweep_id', w.id, 'state', w.state, 'planned', w.planned, 'measured', w.measured,
		'failed', w.failed, 'drifted', w.drifted, 'suspended', w.suspended, 'held', w.held,
		'tokens_suspended', w.tokens_suspended, 'hold_id', w.hold_id,
		'skipped', (SELECT pg_catalog.count(*) FROM appguard.sweep_hosts sh
					WHERE sh.sweep_id = w.id AND sh.planned AND sh.snapshot_id IS NULL AND sh.error IS NULL))
		|| CASE WHEN w.state = 'failed'
				THEN pg_catalog.jsonb_build_object('error', w.error, 'sqlstate', w.error_sqlstate)
				ELSE '{}' END
	FROM appguard.sweeps w WHERE w.id = $1
$$;

-- End a running sweep as 'failed' after closing it (as p_closing: aborted,
-- finished or budget_exhausted) raised, in the caller's transaction, where
-- the close has been rolled back (see the top of this part).  Its pending
-- suspensions become failed.  Returns the sweep's counts.
CREATE FUNCTION appguard.sweep_fail(p_sweep_id bigint, p_closing text, p_sqlstate text,
									p_message text, p_detail text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	failed bigint[];
	rec record;
	summary jsonb;
BEGIN
	UPDATE appguard.sweeps w
	SET state = 'failed', finished_at = pg_catalog.clock_timestamp(),
		error = coalesce(p_message, 'unknown error'), error_sqlstate = p_sqlstate
	WHERE w.id = p_sweep_id AND w.state = 'running';
	IF NOT FOUND THEN
		RETURN appguard.sweep_summary(p_sweep_id);
	END IF;
	failed := ARRAY(SELECT s.id FROM appguard.suspensions s
					WHERE s.sweep_id = p_sweep_id AND s.state = 'pending' ORDER BY s.id);
	UPDATE appguard.suspensions s SET state = 'failed', resolved_at = pg_catalog.clock_timestamp()
	WHERE s.id = ANY (failed);
	summary := appguard.sweep_summary(p_sweep_id);
	PERFORM appguard.log_event('sweep_failed',
		detail => summary || pg_catalog.jsonb_build_object(
			'closing', p_closing, 'error_detail', p_detail, 'suspensions', pg_catalog.to_jsonb(failed)),
		sweep_id => p_sweep_id);
	FOR rec IN
		SELECT s.id, s.client_id, s.snapshot_id, s.reasons FROM appguard.suspensions s
		WHERE s.id = ANY (failed) ORDER BY s.id
	LOOP
		PERFORM appguard.log_event('suspension_failed', rec.client_id,
			pg_catalog.jsonb_build_object('reasons', pg_catalog.to_jsonb(rec.reasons),
										  'detail', 'its sweep failed to close'),
			snapshot_id => rec.snapshot_id, suspension_id => rec.id, sweep_id => p_sweep_id);
	END LOOP;
	RAISE WARNING 'appguard: sweep % failed: %', p_sweep_id, coalesce(p_message, 'unknown error')
		USING DETAIL = pg_catalog.format(
				'Closing it (%s) raised SQLSTATE %s and was rolled back. The sweep is recorded as failed, '
				'and its %s pending suspension(s) as failed: their grants are refused at refresh while the drift lasts.',
				p_closing, coalesce(p_sqlstate, '?'), pg_catalog.cardinality(failed)),
			  HINT = 'See appguard.sweeps and appguard.events (kind sweep_failed), and fix the cause. '
					 'The next sweep runs normally; the next snapshot of a drifted app suspends its grants again.';
	PERFORM pg_catalog.pg_notify('appguard_sweep_failed', p_sweep_id::text);
	RETURN summary;
END
$$;

CREATE FUNCTION @extschema@.appguard_sweep_begin(max_age interval, budget interval, batch_size integer DEFAULT 32)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stale record;
	orphan record;
	sweep bigint;
	n integer;
	err_state text;
	err_message text;
	err_detail text;
BEGIN
	-- 55000 when this session's settings did not hold (src/appguard.c)
	PERFORM appguard.setting('appguard.mass_drift_threshold');
	IF max_age IS NULL OR max_age < interval '0' OR max_age > interval '10000 years' THEN
		RAISE EXCEPTION 'max_age must be an interval from zero to 10000 years' USING ERRCODE = '22023';
	END IF;
	IF budget IS NULL OR budget <= interval '0' OR budget > interval '10000 years' THEN
		RAISE EXCEPTION 'budget must be a positive interval of at most 10000 years' USING ERRCODE = '22023';
	END IF;
	IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 1024 THEN
		RAISE EXCEPTION 'batch_size must be between 1 and 1024' USING ERRCODE = '22023';
	END IF;
	-- One sweep at a time.  A running sweep whose backend is gone, idle
	-- (its CALL ended without finishing it) or this one is finished as
	-- 'aborted': its pending suspensions go through the breaker with the
	-- counts it reached.  If that close raises, the stale sweep ends
	-- 'failed' (sweep_fail) and this one starts all the same.
	LOCK TABLE appguard.sweeps IN SHARE ROW EXCLUSIVE MODE;
	FOR stale IN
		SELECT w.id FROM appguard.sweeps w
		WHERE w.state = 'running'
		  AND (w.pid = pg_catalog.pg_backend_pid()
			   OR NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
							  WHERE a.pid = w.pid AND a.backend_start <= w.started_at
								AND a.state IS DISTINCT FROM 'idle'))
		ORDER BY w.id
	LOOP
		BEGIN
			PERFORM appguard.sweep_close(stale.id, 'aborted');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
									err_detail = PG_EXCEPTION_DETAIL;
			PERFORM appguard.sweep_fail(stale.id, 'aborted', err_state, err_message, err_detail);
		END;
	END LOOP;
	-- A suspension left pending for a sweep that has ended (a refresh
	-- check's evaluation that raced the sweep's close) would never be
	-- decided, and would keep its baseline from being suspended: failed.
	FOR orphan IN
		UPDATE appguard.suspensions s SET state = 'failed', resolved_at = pg_catalog.clock_timestamp()
		WHERE s.state = 'pending'
		  AND NOT EXISTS (SELECT FROM appguard.sweeps w WHERE w.id = s.sweep_id AND w.state = 'running')
		RETURNING s.id, s.client_id, s.snapshot_id, s.sweep_id, s.reasons
	LOOP
		PERFORM appguard.log_event('suspension_failed', orphan.client_id,
			pg_catalog.jsonb_build_object('reasons', pg_catalog.to_jsonb(orphan.reasons),
										  'detail', 'left pending after its sweep had ended'),
			snapshot_id => orphan.snapshot_id, suspension_id => orphan.id, sweep_id => orphan.sweep_id);
		RAISE WARNING 'appguard: suspension % of client "%" was left pending after sweep % ended; it is marked failed',
			orphan.id, orphan.client_id, orphan.sweep_id
			USING DETAIL = 'Its grants are refused at refresh while the drift lasts; the next snapshot suspends them.';
	END LOOP;
	SELECT w.id, w.pid INTO stale FROM appguard.sweeps w WHERE w.state = 'running' LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'sweep % is still running (backend pid %)', stale.id, stale.pid
			USING ERRCODE = '55000',
				  HINT = 'Let it finish; schedule sweeps further apart than their budget.';
	END IF;

	INSERT INTO appguard.sweeps (max_age, budget, batch_size, deadline)
	VALUES (max_age, budget, batch_size, pg_catalog.clock_timestamp() + budget)
	RETURNING id INTO sweep;
	INSERT INTO appguard.sweep_hosts (sweep_id, host, port, ord)
	SELECT sweep, t.host, t.port,
		   pg_catalog.row_number() OVER (ORDER BY l.taken_at NULLS FIRST, t.host, t.port)
	FROM (SELECT DISTINCT h.host, h.port FROM appguard.client_hosts h) t
		 LEFT JOIN LATERAL (SELECT s.taken_at FROM appguard.snapshots s
							WHERE s.host = t.host AND s.port = t.port
							ORDER BY s.taken_at DESC LIMIT 1) l ON true
	WHERE l.taken_at IS NULL OR l.taken_at < pg_catalog.clock_timestamp() - max_age;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE appguard.sweeps w SET planned = n WHERE w.id = sweep;
	PERFORM appguard.log_event('sweep_started',
		detail => pg_catalog.jsonb_build_object('max_age', max_age, 'budget', budget,
												'batch_size', batch_size, 'planned', n),
		sweep_id => sweep);
	RETURN sweep;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_sweep_begin(interval, interval, integer) IS
	'Start a sweep: plan the hosts whose latest snapshot is older than max_age';

CREATE FUNCTION @extschema@.appguard_sweep_step(sweep_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
	hosts text[];
	ports integer[];
	problem text;
BEGIN
	w := appguard.running_sweep(sweep_id);
	IF w.state <> 'running' THEN
		RETURN false;
	END IF;
	IF w.pid <> pg_catalog.pg_backend_pid() THEN
		RAISE EXCEPTION 'sweep % is run by another backend (pid %)', sweep_id, w.pid
			USING ERRCODE = '55000';
	END IF;
	IF pg_catalog.clock_timestamp() >= w.deadline THEN
		RETURN false;
	END IF;
	SELECT pg_catalog.array_agg(b.host ORDER BY b.ord), pg_catalog.array_agg(b.port ORDER BY b.ord)
	INTO hosts, ports
	FROM (SELECT sh.host, sh.port, sh.ord FROM appguard.sweep_hosts sh
		  WHERE sh.sweep_id = appguard_sweep_step.sweep_id AND sh.planned
			AND sh.snapshot_id IS NULL AND sh.error IS NULL
		  ORDER BY sh.ord LIMIT w.batch_size) b;
	IF hosts IS NULL THEN
		RETURN false;
	END IF;

	PERFORM pg_catalog.set_config('appguard_lifecycle.sweep_id', sweep_id::text, true);
	BEGIN
		IF pg_catalog.cardinality(hosts) = 1 THEN
			PERFORM @extschema@.appguard_snapshot(hosts[1], ports[1]);
		ELSE
			PERFORM @extschema@.appguard_snapshot_many(hosts, ports);
		END IF;
	EXCEPTION WHEN OTHERS THEN
		problem := SQLERRM;
	END;
	PERFORM pg_catalog.set_config('appguard_lifecycle.sweep_id', '', true);
	IF problem IS NOT NULL THEN
		UPDATE appguard.sweep_hosts sh
		SET error = problem, measured_at = pg_catalog.clock_timestamp()
		WHERE sh.sweep_id = appguard_sweep_step.sweep_id AND sh.snapshot_id IS NULL
		  AND (sh.host, sh.port) IN (SELECT * FROM ROWS FROM (pg_catalog.unnest(hosts), pg_catalog.unnest(ports)));
	END IF;
	PERFORM appguard.sweep_evaluate(sweep_id);

	RETURN pg_catalog.clock_timestamp() < w.deadline
		AND EXISTS (SELECT FROM appguard.sweep_hosts sh
					WHERE sh.sweep_id = appguard_sweep_step.sweep_id AND sh.planned
					  AND sh.snapshot_id IS NULL AND sh.error IS NULL);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_sweep_step(bigint) IS
	'Measure and evaluate the next batch of a sweep''s hosts; false when done or out of budget';

CREATE FUNCTION @extschema@.appguard_sweep_finish(sweep_id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
	closing text;
	err_state text;
	err_message text;
	err_detail text;
BEGIN
	w := appguard.running_sweep(sweep_id);
	IF w.state <> 'running' THEN
		RETURN appguard.sweep_summary(sweep_id);
	END IF;
	closing := CASE WHEN EXISTS (SELECT FROM appguard.sweep_hosts sh
								 WHERE sh.sweep_id = appguard_sweep_finish.sweep_id AND sh.planned
								   AND sh.snapshot_id IS NULL AND sh.error IS NULL)
					THEN 'budget_exhausted' ELSE 'finished' END;
	-- (the sweep's row stays locked by running_sweep: it is taken outside
	-- the block that a failure rolls back)
	BEGIN
		RETURN appguard.sweep_close(sweep_id, closing);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
								err_detail = PG_EXCEPTION_DETAIL;
	END;
	RETURN appguard.sweep_fail(sweep_id, closing, err_state, err_message, err_detail);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_sweep_finish(bigint) IS
	'End a sweep: the mass-drift breaker applies or holds its suspensions; returns its counts (state failed, with the error, if closing it raised)';

-- Raise the error of a sweep that failed to close (after the procedure
-- committed the failure), with its SQLSTATE; nothing for any other sweep.
CREATE FUNCTION appguard.sweep_raise_failure(p_sweep_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
BEGIN
	SELECT * INTO w FROM appguard.sweeps s WHERE s.id = p_sweep_id;
	IF FOUND AND w.state = 'failed' THEN
		RAISE EXCEPTION 'appguard sweep % failed: %', w.id, w.error
			USING ERRCODE = coalesce(w.error_sqlstate, 'XX000'),
				  DETAIL = pg_catalog.format('Closing the sweep raised this error. It is recorded as failed in appguard.sweeps, '
											 'with its pending suspensions (%s); their grants are refused at refresh while the drift lasts.',
											 (SELECT pg_catalog.count(*) FROM appguard.suspensions su
											  WHERE su.sweep_id = w.id AND su.state = 'failed')),
				  HINT = 'See appguard.events (kind sweep_failed) and fix the cause; the next sweep runs normally.';
	END IF;
END
$$;

-- The measuring loop of a running sweep started by this backend: probes
-- its hosts not measured yet and commits their snapshots in batches (see
-- the top of this part).  A procedure in C that commits, so neither
-- SECURITY DEFINER nor with a SET clause: it runs its SQL as its owner
-- with search_path pinned by itself, and only between its commits.
CREATE PROCEDURE appguard.sweep_run(sweep_id bigint)
AS 'MODULE_PATHNAME', 'appguard_sweep_run'
LANGUAGE C;
COMMENT ON PROCEDURE appguard.sweep_run(bigint) IS
	'Measure the hosts of a running sweep in one event loop, committing snapshots in batches';

-- Not SECURITY DEFINER and without a SET clause: PostgreSQL allows
-- COMMIT only in such procedures.  It calls nothing but the routines
-- above (SECURITY DEFINER or switching to the owner themselves, search_path
-- pinned), schema-qualified, and uses no operator, so the caller's
-- search_path cannot reach into it.
CREATE PROCEDURE @extschema@.appguard_sweep(max_age interval, budget interval, batch_size integer DEFAULT 32)
LANGUAGE plpgsql
AS $$
DECLARE
	sweep bigint;
BEGIN
	sweep := @extschema@.appguard_sweep_begin(max_age, budget, batch_size);
	COMMIT;
	CALL appguard.sweep_run(sweep);
	PERFORM @extschema@.appguard_sweep_finish(sweep);
	COMMIT;
	-- a sweep that failed to close is committed as failed; then the
	-- error reaches the caller (pg_cron records the run as failed)
	PERFORM appguard.sweep_raise_failure(sweep);
END
$$;
COMMENT ON PROCEDURE @extschema@.appguard_sweep(interval, interval, integer) IS
	'Snapshot every watched host older than max_age within budget, concurrently, committing in batches (pg_cron: CALL it)';
