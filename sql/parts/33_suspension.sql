---------------------------------------------------------------------------
-- Lifecycle, part 4: drift evaluation and suspension
--
-- When a snapshot of a host is stored, every client watching that host
-- (host and port) is evaluated (appguard.evaluate_client; for another
-- watched host than the primary, appguard.evaluate_client_host; steps 3
-- to 5 are appguard.evaluate_baselines, which both call):
--   1. the client's cached latest snapshot is updated; a snapshot older
--      than the client's latest one is stored but not evaluated;
--   2. if the snapshot succeeded, grants with a pending baseline get it;
--   3. the snapshot is compared (appguard_diff, with the client's policy)
--      with every DISTINCT baseline of the client's active grants
--      (appguard.grants, of every token table); the verdict per
--      (client, baseline) is kept in appguard.baseline_state;
--   4. appguard.confirmations: a baseline is confirmed drifted when that
--      many consecutive snapshots drift from it at suspend level.  A
--      successful snapshot without suspend-level drift resets the count;
--      a failed measurement neither confirms nor resets it (it is an
--      unknown: it yields no difference but dns_domain_gone, an
--      authoritative NXDOMAIN, which is a real answer and confirms);
--   5. each confirmed baseline gets one suspension record (reasons,
--      field-level diff, snapshot ids, error_uri); applied, it holds the
--      baseline (appguard.clients.held_baselines): every active grant on
--      it is suspended (appguard.grant_states), and their host rows are
--      written by one UPDATE per token table (set-based: 100,000 tokens
--      are one statement), then NOTIFY appguard_suspension, payload the
--      suspension id.  A held baseline is compared with new snapshots only
--      while the host has re-enabled one of its grants.
-- Differences that changed since the previous evaluation of a baseline
-- are recorded in appguard.drifts (warn ones included), so persisting
-- drift is not recorded again at every sweep.
--
-- Where suspensions go instead of being applied:
--   * during a sweep they are 'pending' and decided at the end of the
--     sweep by the mass-drift breaker (part 7);
--   * while a hold is open (the breaker tripped and no operator has
--     released or discarded it yet) every new suspension joins that hold:
--     the breaker stays open until an operator closes it.
--
-- Concurrency: every evaluation of a client first locks the client's row
-- (FOR NO KEY UPDATE), so evaluations, re-approvals and hold releases of
-- one client are serialised.  Locks are always taken in the order: the
-- open hold (if any) -> client rows (in client_id order) -> token rows
-- (host row -> appguard row for protected tables, which is also the order
-- of the host's own statements through the triggers).
-- Issuing a token takes no lock: a grant that commits while a drifting
-- snapshot is being evaluated may miss that evaluation; the refresh check
-- catches it (part 5: a grant is only allowed once its baseline has been
-- compared with the client's latest snapshot).
---------------------------------------------------------------------------

-- Verdict of the latest comparison of one baseline of a client.
-- Read by C (src/keyread.c, KT_BASELINE_STATE): index baseline_state_pkey
-- on (client_id, baseline_snapshot_id); columns evaluated_snapshot_id,
-- drifting, streak, suspension_applied.
CREATE TABLE appguard.baseline_state (
	client_id				text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	baseline_snapshot_id	bigint NOT NULL,
	evaluated_snapshot_id	bigint NOT NULL,
	evaluated_at			timestamptz NOT NULL,
	streak					integer NOT NULL,	-- consecutive snapshots drifting at suspend level
	drifting				boolean NOT NULL,	-- the latest known verdict
	first_drift_snapshot_id	bigint,				-- first snapshot of the current streak
	last_diff				jsonb NOT NULL,		-- warn and suspend differences of the latest verdict
	-- a suspension of this baseline was applied: the new rows of its
	-- consents join it even when the facts come back (consent_grant), so
	-- the consent trigger's C path leaves them to SQL (src/refresh.c)
	suspension_applied		boolean NOT NULL DEFAULT false,
	PRIMARY KEY (client_id, baseline_snapshot_id)
);
COMMENT ON TABLE appguard.baseline_state IS 'Latest comparison of each baseline of a client with the client''s snapshots; the confirmation count';
SELECT pg_catalog.pg_extension_config_dump('appguard.baseline_state', '');

-- The baseline of each other watched host of a client (appguard.client_hosts,
-- not the primary) for each baseline its grants hold: baseline_snapshot_id
-- is the grants' baseline (a snapshot of the primary host), snapshot_id
-- the snapshot of this host it stands for.  how: at_baseline (the host's
-- latest successful snapshot when the baseline was taken, found at the
-- host's first evaluation against it), first_facts (none was young
-- enough: the host's first successful snapshot after it; nobody approved
-- it, so its first facts cannot be a change), host_added (taken when a
-- re-registration added the host), reapproved, was_primary (the host was
-- the primary one, whose snapshot the baseline is).
CREATE TABLE appguard.baseline_hosts (
	client_id				text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	baseline_snapshot_id	bigint NOT NULL,
	host					text NOT NULL,
	port					integer NOT NULL,
	snapshot_id				bigint NOT NULL,
	how						text NOT NULL
							CHECK (how IN ('at_baseline', 'first_facts', 'host_added', 'reapproved', 'was_primary')),
	taken_at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	PRIMARY KEY (client_id, baseline_snapshot_id, host, port)
);
COMMENT ON TABLE appguard.baseline_hosts IS 'Per baseline of a client, the baseline snapshot of each of its other watched hosts';
SELECT pg_catalog.pg_extension_config_dump('appguard.baseline_hosts', '');

-- appguard.baseline_state for the other watched hosts: the latest
-- comparison of each host's baseline (appguard.baseline_hosts) with that
-- host's snapshots, and its confirmation count.
CREATE TABLE appguard.baseline_host_state (
	client_id				text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	baseline_snapshot_id	bigint NOT NULL,
	host					text NOT NULL,
	port					integer NOT NULL,
	evaluated_snapshot_id	bigint NOT NULL,
	evaluated_at			timestamptz NOT NULL,
	streak					integer NOT NULL,
	drifting				boolean NOT NULL,
	first_drift_snapshot_id	bigint,
	last_diff				jsonb NOT NULL,
	PRIMARY KEY (client_id, baseline_snapshot_id, host, port)
);
COMMENT ON TABLE appguard.baseline_host_state IS 'Latest comparison of each baseline of a client''s other watched hosts with their snapshots; the confirmation count';
SELECT pg_catalog.pg_extension_config_dump('appguard.baseline_host_state', '');

CREATE TABLE appguard.drifts (
	id						bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	detected_at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	client_id				text NOT NULL,
	baseline_snapshot_id	bigint NOT NULL,
	snapshot_id				bigint NOT NULL,
	reason					text NOT NULL,
	severity				text NOT NULL,
	field					text,
	old_value				jsonb,
	new_value				jsonb
);
COMMENT ON TABLE appguard.drifts IS 'Differences (warn and suspend) found between a baseline and a snapshot, recorded when they change';
CREATE INDEX drifts_client ON appguard.drifts (client_id, detected_at);
SELECT pg_catalog.pg_extension_config_dump('appguard.drifts', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.drifts_id_seq', '');

-- A hold: suspensions the mass-drift breaker kept from being applied.  At
-- most one hold is open at a time; new suspensions join it.
CREATE TABLE appguard.holds (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	opened_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	sweep_id		bigint,
	hosts_measured	integer NOT NULL,
	hosts_drifted	integer NOT NULL,
	threshold		double precision NOT NULL,
	min_hosts		integer NOT NULL,
	state			text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'released', 'discarded')),
	closed_at		timestamptz,
	closed_by		text
);
COMMENT ON TABLE appguard.holds IS 'Suspensions held by the mass-drift breaker until an operator releases or discards them';
CREATE UNIQUE INDEX holds_one_open ON appguard.holds ((true)) WHERE state = 'open';
SELECT pg_catalog.pg_extension_config_dump('appguard.holds', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.holds_id_seq', '');

-- One suspension = one drifted baseline of one client, confirmed by one
-- snapshot of one of its watched hosts (host, port, roles).  state: pending (found by a running sweep), held (by the
-- breaker), applied, discarded (an operator discarded the hold),
-- superseded (released after the drift had gone away), failed (its sweep
-- failed to close, part 7: nothing was applied; the refresh check refuses
-- the grants of its baseline while that baseline stays confirmed drifted,
-- and, being decided, it does not stop the next snapshot from suspending
-- them anew).
CREATE SEQUENCE appguard.suspensions_id_seq;
CREATE TABLE appguard.suspensions (
	id						bigint PRIMARY KEY DEFAULT pg_catalog.nextval('appguard.suspensions_id_seq'),
	client_id				text NOT NULL,
	baseline_snapshot_id	bigint NOT NULL REFERENCES appguard.snapshots (id),
	snapshot_id				bigint NOT NULL REFERENCES appguard.snapshots (id),
	first_drift_snapshot_id	bigint REFERENCES appguard.snapshots (id),
	reasons					text[] NOT NULL,
	diff					jsonb NOT NULL,
	state					text NOT NULL
							CHECK (state IN ('pending', 'held', 'applied', 'discarded', 'superseded', 'failed')),
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	applied_at				timestamptz,
	resolved_at				timestamptz,
	sweep_id				bigint,
	hold_id					bigint REFERENCES appguard.holds (id),
	error_uri				text NOT NULL,
	tokens_suspended		bigint NOT NULL DEFAULT 0,
	host					text NOT NULL,			-- the watched host that changed
	port					integer NOT NULL,
	roles					text[] NOT NULL,		-- its roles (appguard.client_hosts)
	host_baseline_snapshot_id bigint NOT NULL		-- that host's baseline (the grants' own for the primary)
);
ALTER SEQUENCE appguard.suspensions_id_seq OWNED BY appguard.suspensions.id;
COMMENT ON TABLE appguard.suspensions IS 'Suspensions: a client''s baseline confirmed drifted, with reasons, field-level diff and error_uri';
CREATE INDEX suspensions_client ON appguard.suspensions (client_id, created_at);
CREATE INDEX suspensions_baseline ON appguard.suspensions (baseline_snapshot_id);
CREATE INDEX suspensions_snapshot ON appguard.suspensions (snapshot_id);
CREATE INDEX suspensions_first_drift ON appguard.suspensions (first_drift_snapshot_id);
CREATE INDEX suspensions_hold ON appguard.suspensions (hold_id) WHERE hold_id IS NOT NULL;
CREATE INDEX suspensions_sweep ON appguard.suspensions (sweep_id) WHERE state = 'pending';
-- one undecided suspension per drifted baseline
CREATE UNIQUE INDEX suspensions_undecided ON appguard.suspensions (client_id, baseline_snapshot_id, host, port)
	WHERE state IN ('pending', 'held');
SELECT pg_catalog.pg_extension_config_dump('appguard.suspensions', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.suspensions_id_seq', '');

-- error_uri from appguard.error_uri_template, every value URL-encoded.
CREATE FUNCTION appguard.error_uri(p_suspension_id bigint, p_client_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.replace(
			   pg_catalog.replace(appguard.setting('appguard.error_uri_template'),
								  '{suspension_id}', appguard.url_encode($1::text)),
			   '{client_id}', appguard.url_encode($2))
$$;

-- The suspension that holds a client's baseline: its newest applied one
-- (of any of the client's watched hosts).  NULL if none.  Applied once, a
-- suspension holds every active grant on the baseline -- the tokens the
-- fan-out found, a rotated token, a remembered approval -- until the
-- patient approves again (which moves the grant or its consent to another
-- baseline), even if the facts come back or a later verdict of the
-- baseline is pending or discarded.  appguard.clients.held_baselines lists
-- the baselines that may have one, for the C fast paths and for
-- appguard.grant_states.
CREATE FUNCTION appguard.baseline_hold(p_client_id text, p_baseline bigint)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT s.id FROM appguard.suspensions s
	WHERE s.client_id = p_client_id AND s.baseline_snapshot_id = p_baseline AND s.state = 'applied'
	ORDER BY s.id DESC LIMIT 1
$$;

-- Whether a baseline of a client has an active grant its hold does not
-- suspend: it is not held (appguard.baseline_hold), or the host re-enabled
-- one of its grants after the suspension that holds it.  Evaluations
-- compare only such baselines with new snapshots: the grants of the others
-- are suspended until the patient approves again, whatever the facts say.
CREATE FUNCTION appguard.baseline_unheld(p_client_id text, p_baseline bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM appguard.clients c
				   WHERE c.client_id = p_client_id AND p_baseline = ANY (c.held_baselines)) THEN
		RETURN true;
	END IF;
	RETURN EXISTS (SELECT FROM appguard.grants r
				   WHERE r.client_id = p_client_id AND r.baseline_snapshot_id = p_baseline
					 AND r.state = 'active'
					 AND r.suspension_id = appguard.baseline_hold(p_client_id, p_baseline));
END
$$;

-- Every grant as its state is: appguard.grants, with an active grant on a
-- held baseline (appguard.baseline_hold) shown suspended under that
-- baseline's suspension (its id, error_uri, and when it held the grant),
-- unless the host re-enabled the grant after that very suspension (an
-- active grant's suspension_id: the suspension the host overrode,
-- appguard.grant_status).  The fan-out writes the host rows of a held
-- baseline's grants, not the grants: this is where their suspension is.
-- Read wherever a grant's state is read; written through appguard.grants.
CREATE VIEW appguard.grant_states AS
SELECT g.token_table, g.token_key, g.client_id,
	   CASE WHEN h.id IS NOT NULL THEN 'suspended' ELSE g.state END AS state,
	   g.baseline_snapshot_id,
	   coalesce(h.id, g.suspension_id) AS suspension_id,
	   CASE WHEN h.id IS NOT NULL THEN GREATEST(h.applied_at, g.created_at)
			ELSE g.suspended_at END AS suspended_at,
	   coalesce(h.error_uri, g.error_uri) AS error_uri,
	   g.created_at, g.reapproved_at, g.subject, g.grant_key
FROM appguard.grants g
	 LEFT JOIN appguard.clients c
		 ON g.state = 'active' AND c.client_id = g.client_id
		AND g.baseline_snapshot_id = ANY (c.held_baselines)
	 LEFT JOIN LATERAL (
		SELECT x.id, x.applied_at, x.error_uri
		FROM (SELECT s.id, s.applied_at, s.error_uri FROM appguard.suspensions s
			  WHERE s.client_id = g.client_id AND s.baseline_snapshot_id = g.baseline_snapshot_id
				AND s.state = 'applied'
			  ORDER BY s.id DESC LIMIT 1) x
		WHERE x.id IS DISTINCT FROM g.suspension_id) h ON c.client_id IS NOT NULL;
COMMENT ON VIEW appguard.grant_states IS 'Every grant as its state is: an active grant on a baseline held by an applied suspension is suspended';

-- One grant as appguard.grant_states shows it: g is a row of
-- appguard.grants as stored (its caller has just read it, usually FOR
-- UPDATE), read again through the view, so that the view alone says what
-- a held baseline does to a grant.
CREATE FUNCTION appguard.grant_effective(g appguard.grants)
RETURNS appguard.grants
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	shown appguard.grants;
BEGIN
	SELECT gs.* INTO shown FROM appguard.grant_states gs
	WHERE gs.token_table = g.token_table AND gs.token_key = g.token_key;
	IF NOT FOUND THEN
		RETURN g;				-- (no row under the key: nothing to show)
	END IF;
	RETURN shown;
END
$$;

-- Apply the given suspensions: mark them applied, hold their baselines
-- (appguard.clients.held_baselines: from then on every active grant on
-- them is suspended, appguard.grant_states), and write the host rows of
-- those grants, in every token table (appguard.refresh_tokens included).
-- The grants themselves are not written: a fan-out of 100,000 tokens
-- writes 100,000 host rows, as the auth server's own UPDATE would.  The
-- caller holds the clients' rows.  Returns the number of tokens
-- suspended.  Applying an applied suspension again writes the host rows
-- that were missed (see appguard.verify_grant).
CREATE FUNCTION appguard.apply_suspensions(p_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	total bigint := 0;
	pt record;
	rec record;
	already bigint[];
	keys text[];
	done text[];
	n bigint;
	written bigint;
	round integer;
BEGIN
	IF p_ids IS NULL OR pg_catalog.cardinality(p_ids) = 0 THEN
		RETURN 0;
	END IF;

	SELECT coalesce(pg_catalog.array_agg(s.id), '{}') INTO already FROM appguard.suspensions s
	WHERE s.id = ANY (p_ids) AND s.state = 'applied';
	UPDATE appguard.suspensions s
	SET state = 'applied', applied_at = coalesce(s.applied_at, pg_catalog.clock_timestamp()),
		resolved_at = coalesce(s.resolved_at, pg_catalog.clock_timestamp())
	WHERE s.id = ANY (p_ids);
	UPDATE appguard.baseline_state bs SET suspension_applied = true
	FROM appguard.suspensions s
	WHERE s.id = ANY (p_ids) AND bs.client_id = s.client_id
	  AND bs.baseline_snapshot_id = s.baseline_snapshot_id AND NOT bs.suspension_applied;
	UPDATE appguard.clients c
	SET held_baselines = ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(c.held_baselines || h.baselines) b
							   ORDER BY b)
	FROM (SELECT s.client_id, pg_catalog.array_agg(DISTINCT s.baseline_snapshot_id) AS baselines
		  FROM appguard.suspensions s WHERE s.id = ANY (p_ids) GROUP BY s.client_id) h
	WHERE c.client_id = h.client_id AND NOT c.held_baselines @> h.baselines;

	PERFORM appguard.set_applying(true);
	-- Per token table and suspension, the host rows of the grants its
	-- baseline's hold suspends, as the table's owner
	-- (write_host_suspensions: through the primary key, a row only if it
	-- still has the active value).  Repeated in new statements for grants
	-- not seen yet, until none is left: a rotation that committed while
	-- the fan-out waited for its rows is seen and written too (its grant
	-- is suspended already: its baseline is held).  A table appguard
	-- cannot write (its CHECK rejects the suspended value, its status
	-- column is gone, ...) keeps the failure to itself: it is recorded and
	-- reported (record_table_problem), its grants are suspended in
	-- appguard's state all the same, so that their refresh checks answer
	-- not allowed, and the other tables and the caller (a sweep) go on.
	-- Transient errors (a deadlock, a serialization failure, a lock not
	-- available, a cancel) are not the table's: they are raised.
	FOR pt IN
		-- (the token tables that have an active grant on the baseline: one
		-- probe of each protected table, not a read of every grant)
		SELECT t.tbl, s.id AS sid, s.error_uri, s.client_id, s.baseline_snapshot_id AS baseline,
			   appguard.baseline_hold(s.client_id, s.baseline_snapshot_id) AS hold
		FROM appguard.suspensions s CROSS JOIN appguard.protected_tables t
		WHERE s.id = ANY (p_ids)
		  AND EXISTS (SELECT FROM appguard.grants r
					  WHERE r.client_id = s.client_id AND r.baseline_snapshot_id = s.baseline_snapshot_id
						AND r.state = 'active' AND r.token_table = t.tbl)
		ORDER BY 1, 2
	LOOP
		done := '{}';
		n := 0;
		FOR round IN 1 .. 5 LOOP
			IF pt.sid = ANY (already) THEN
				-- Applied again (appguard.verify_grant): the suspension holds
				-- again the grants the host re-enabled after it
				-- (appguard.grant_status), at every round: one the host
				-- re-enables as the rows are written is held at the next
				-- (its write and ours serialise on its row)
				UPDATE appguard.grants r SET suspension_id = NULL
				WHERE r.client_id = pt.client_id AND r.baseline_snapshot_id = pt.baseline
				  AND r.state = 'active' AND r.token_table = pt.tbl AND r.suspension_id = ANY (already);
			END IF;
			-- (executed with its arrays as values: the grants not seen yet
			-- are found by hashing the keys seen, where a kept plan would
			-- compare each grant with each of them)
			EXECUTE 'SELECT pg_catalog.array_agg(r.token_key) FROM appguard.grants r '
					'WHERE r.client_id = $1 AND r.baseline_snapshot_id = $2 AND r.state = ''active'' '
					'AND r.token_table = $3 AND r.suspension_id IS DISTINCT FROM $4 '
					'AND NOT (r.token_key = ANY ($5))'
				INTO keys USING pt.client_id, pt.baseline, pt.tbl, pt.hold, done;
			EXIT WHEN keys IS NULL;
			written := (appguard.write_host_suspensions_or_record(pt.tbl, keys, pt.error_uri, true,
																  already))[1]::bigint;
			-- (counted: the grants it holds when first applied, whether or
			-- not their table could be written; applied again, the host
			-- rows it wrote -- the grants it held already are not counted
			-- twice)
			n := n + CASE WHEN pt.sid = ANY (already) THEN written
						  ELSE pg_catalog.cardinality(keys) END;
			done := done || keys;
		END LOOP;
		UPDATE appguard.suspensions s SET tokens_suspended = s.tokens_suspended + n
		WHERE s.id = pt.sid;
	END LOOP;
	PERFORM appguard.set_applying(false);

	FOR rec IN
		SELECT s.id, s.client_id, s.tokens_suspended, s.reasons, s.snapshot_id, s.sweep_id, s.hold_id
		FROM appguard.suspensions s WHERE s.id = ANY (p_ids) ORDER BY s.id
	LOOP
		total := total + rec.tokens_suspended;
		PERFORM appguard.log_event(CASE WHEN rec.id = ANY (already) THEN 'suspension_extended'
									   ELSE 'suspension_applied' END, rec.client_id,
			pg_catalog.jsonb_build_object('reasons', pg_catalog.to_jsonb(rec.reasons),
										  'tokens_suspended', rec.tokens_suspended),
			snapshot_id => rec.snapshot_id, suspension_id => rec.id,
			sweep_id => rec.sweep_id, hold_id => rec.hold_id);
		PERFORM pg_catalog.pg_notify('appguard_suspension', rec.id::text);
	END LOOP;
	RETURN total;
END
$$;

-- Steps 3 to 5 for one watched host of client p_client_id: compare
-- snapshot p_snapshot_id with p_compared[i], the host's own baseline for
-- the grants' baseline p_baselines[i] (the same snapshot for the primary
-- host, p_primary), keep the verdicts (appguard.baseline_state for the
-- primary host, appguard.baseline_host_state for another one), record the
-- differences that changed, and suspend the grants of each confirmed
-- baseline with a suspension that names the host (pending in a sweep,
-- held while a hold is open).  The caller locked the open hold (p_hold)
-- and the client's row.  Returns true when the snapshot drifts at suspend
-- level from at least one baseline (confirmed or not): the breaker counts
-- such hosts.
CREATE FUNCTION appguard.evaluate_baselines(p_client_id text, p_snapshot_id bigint, p_primary boolean,
											p_baselines bigint[], p_compared bigint[],
											p_sweep_id bigint, p_hold bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	confirmations integer;
	grace interval;
	last_ok timestamptz;
	unreachable text;
	confirmed jsonb;
	any_drift boolean;
	new_ids bigint[];
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	confirmations := appguard.setting('appguard.confirmations')::integer;
	grace := appguard.setting('appguard.unreachable_grace')::interval;
	-- appguard.unreachable_grace: a host that has not been measured
	-- successfully for longer than the grace counts as drifted (off by
	-- default), at the severity the policy gives host_unreachable (suspend
	-- by default), from every baseline.  Its last successful measurement:
	-- the client's record of it for the primary host (the caller has not
	-- moved it for a failed one), the newest successful snapshot for
	-- another.
	IF grace > interval '0' AND snap.status <> 'ok' THEN
		IF p_primary THEN
			SELECT c.last_ok_at INTO last_ok FROM appguard.clients c WHERE c.client_id = p_client_id;
		ELSE
			SELECT pg_catalog.max(s.taken_at) INTO last_ok FROM appguard.snapshots s
			WHERE s.host = snap.host AND s.port = snap.port AND s.status = 'ok';
		END IF;
		IF snap.taken_at - coalesce(last_ok, snap.taken_at) > grace THEN
			SELECT coalesce(cp.severity, p.severity, 'suspend') INTO unreachable
			FROM (SELECT) AS one
				 LEFT JOIN appguard.client_policy AS cp
					 ON cp.client_id = p_client_id AND cp.reason = 'host_unreachable'
				 LEFT JOIN appguard.policy AS p ON p.reason = 'host_unreachable';
		END IF;
	END IF;

	WITH d AS (
		-- (the pairs by subscript, not by unnest, whose row estimate is the
		-- arrays' length in a custom plan and 100 in a generic one: that made
		-- PL/pgSQL plan this statement again at every call)
		SELECT b.baseline, b.compared,
			   coalesce(x.diff, '[]') AS diff,
			   coalesce(x.drifting, false) AS drifting
		FROM (SELECT p_baselines[i] AS baseline, p_compared[i] AS compared
			  FROM pg_catalog.generate_subscripts(p_baselines, 1) AS i) b
			 LEFT JOIN LATERAL (
				SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
							'reason', r.reason, 'severity', r.severity, 'field', r.field,
							'old', pg_catalog.to_jsonb(r.old_value), 'new', pg_catalog.to_jsonb(r.new_value))
						ORDER BY r.severity = 'suspend' DESC, r.reason, r.field)
						FILTER (WHERE r.severity <> 'ignore') AS diff,
					   pg_catalog.bool_or(r.severity = 'suspend') AS drifting
				FROM (SELECT df.reason::text AS reason, df.severity::text AS severity, df.field::text AS field,
							 pg_catalog.to_jsonb(df.old_value) AS old_value, pg_catalog.to_jsonb(df.new_value) AS new_value
					  FROM @extschema@.appguard_diff(b.compared, snap.id, p_client_id) df
					  UNION ALL
					  SELECT 'host_unreachable', unreachable, 'status', '"ok"'::jsonb, pg_catalog.to_jsonb(snap.status)
					  WHERE unreachable IS NOT NULL) r
			 ) x ON true
	), o AS (
		SELECT bs.baseline_snapshot_id, bs.evaluated_snapshot_id, bs.streak, bs.drifting,
			   bs.first_drift_snapshot_id, bs.last_diff
		FROM appguard.baseline_state bs
		WHERE p_primary AND bs.client_id = p_client_id AND bs.baseline_snapshot_id = ANY (p_baselines)
		UNION ALL
		SELECT st.baseline_snapshot_id, st.evaluated_snapshot_id, st.streak, st.drifting,
			   st.first_drift_snapshot_id, st.last_diff
		FROM appguard.baseline_host_state st
		WHERE NOT p_primary AND st.client_id = p_client_id AND st.host = snap.host AND st.port = snap.port
		  AND st.baseline_snapshot_id = ANY (p_baselines)
	), n AS (
		-- (a baseline already compared with this snapshot keeps its verdict:
		-- the refresh check may evaluate a straggler's baseline again)
		SELECT d.baseline, d.compared, d.drifting,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.streak
					WHEN d.drifting THEN coalesce(o.streak, 0) + 1
					WHEN snap.status = 'ok' THEN 0
					ELSE coalesce(o.streak, 0) END AS streak,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.drifting
					WHEN d.drifting THEN true
					WHEN snap.status = 'ok' THEN false
					ELSE coalesce(o.drifting, false) END AS drifting_now,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.first_drift_snapshot_id
					WHEN d.drifting AND coalesce(o.streak, 0) = 0 THEN snap.id
					WHEN d.drifting THEN o.first_drift_snapshot_id
					WHEN snap.status = 'ok' THEN NULL
					ELSE o.first_drift_snapshot_id END AS first_drift,
			   CASE WHEN snap.status = 'ok' OR d.diff <> '[]' THEN d.diff
					ELSE coalesce(o.last_diff, '[]') END AS last_diff,
			   o.last_diff AS old_diff
		FROM d LEFT JOIN o ON o.baseline_snapshot_id = d.baseline
	), up AS (
		INSERT INTO appguard.baseline_state AS bs
			(client_id, baseline_snapshot_id, evaluated_snapshot_id, evaluated_at,
			 streak, drifting, first_drift_snapshot_id, last_diff)
		SELECT p_client_id, n.baseline, snap.id, pg_catalog.clock_timestamp(),
			   n.streak, n.drifting_now, n.first_drift, n.last_diff
		FROM n WHERE p_primary
		ON CONFLICT (client_id, baseline_snapshot_id) DO UPDATE
		SET evaluated_snapshot_id = EXCLUDED.evaluated_snapshot_id,
			evaluated_at = EXCLUDED.evaluated_at, streak = EXCLUDED.streak,
			drifting = EXCLUDED.drifting, first_drift_snapshot_id = EXCLUDED.first_drift_snapshot_id,
			last_diff = EXCLUDED.last_diff
	), up_host AS (
		INSERT INTO appguard.baseline_host_state AS st
			(client_id, baseline_snapshot_id, host, port, evaluated_snapshot_id, evaluated_at,
			 streak, drifting, first_drift_snapshot_id, last_diff)
		SELECT p_client_id, n.baseline, snap.host, snap.port, snap.id, pg_catalog.clock_timestamp(),
			   n.streak, n.drifting_now, n.first_drift, n.last_diff
		FROM n WHERE NOT p_primary
		ON CONFLICT (client_id, baseline_snapshot_id, host, port) DO UPDATE
		SET evaluated_snapshot_id = EXCLUDED.evaluated_snapshot_id,
			evaluated_at = EXCLUDED.evaluated_at, streak = EXCLUDED.streak,
			drifting = EXCLUDED.drifting, first_drift_snapshot_id = EXCLUDED.first_drift_snapshot_id,
			last_diff = EXCLUDED.last_diff
	), dr AS (
		INSERT INTO appguard.drifts (client_id, baseline_snapshot_id, snapshot_id,
									 reason, severity, field, old_value, new_value)
		SELECT p_client_id, n.baseline, snap.id, e ->> 'reason', e ->> 'severity', e ->> 'field',
			   e -> 'old', e -> 'new'
		FROM n, pg_catalog.jsonb_array_elements(n.last_diff) e
		WHERE n.last_diff IS DISTINCT FROM coalesce(n.old_diff, '[]')
	)
	-- the confirmed baselines' verdicts, as just kept
	SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
				'baseline', n.baseline, 'compared', n.compared,
				'first_drift', n.first_drift, 'last_diff', n.last_diff) ORDER BY n.baseline)
			   FILTER (WHERE n.drifting AND n.streak >= confirmations),
		   coalesce(pg_catalog.bool_or(n.drifting), false)
	INTO confirmed, any_drift
	FROM n;
	IF NOT p_primary THEN
		PERFORM appguard.note_hosts_drifted(p_client_id);
	END IF;

	IF confirmed IS NULL THEN
		RETURN any_drift;
	END IF;

	WITH ins AS (
		INSERT INTO appguard.suspensions (id, client_id, baseline_snapshot_id, snapshot_id,
										  first_drift_snapshot_id, reasons, diff, state,
										  sweep_id, hold_id, error_uri,
										  host, port, roles, host_baseline_snapshot_id)
		SELECT x.id, p_client_id, x.baseline, snap.id, x.first_drift,
			   ARRAY(SELECT DISTINCT e ->> 'reason'
					 FROM pg_catalog.jsonb_array_elements(x.last_diff) e
					 WHERE e ->> 'severity' = 'suspend' ORDER BY 1),
			   x.last_diff,
			   CASE WHEN p_hold IS NOT NULL AND p_sweep_id IS NULL THEN 'held' ELSE 'pending' END,
			   p_sweep_id,
			   CASE WHEN p_sweep_id IS NULL THEN p_hold END,
			   appguard.error_uri(x.id, p_client_id),
			   snap.host, snap.port,
			   coalesce((SELECT ch.roles FROM appguard.client_hosts ch
						 WHERE ch.client_id = p_client_id AND ch.host = snap.host AND ch.port = snap.port),
						'{primary_redirect}'),
			   x.compared
		FROM (SELECT pg_catalog.nextval('appguard.suspensions_id_seq') AS id, c.*
			  FROM pg_catalog.jsonb_to_recordset(confirmed)
				   AS c(baseline bigint, compared bigint, first_drift bigint, last_diff jsonb)
			  WHERE NOT EXISTS (SELECT FROM appguard.suspensions u
								WHERE u.client_id = p_client_id AND u.baseline_snapshot_id = c.baseline
								  AND u.host = snap.host AND u.port = snap.port
								  AND u.state IN ('pending', 'held'))
			  ORDER BY c.baseline) x
		RETURNING id
	)
	SELECT coalesce(pg_catalog.array_agg(ins.id ORDER BY ins.id), '{}') INTO new_ids FROM ins;

	IF pg_catalog.cardinality(new_ids) = 0 THEN
		RETURN any_drift;
	END IF;
	IF p_sweep_id IS NOT NULL THEN
		-- the end of the sweep decides; until then the refresh check of the
		-- grants takes the full path, which refuses them (its C path reads
		-- the primary host's verdicts, and for the other hosts this flag)
		IF NOT p_primary THEN
			UPDATE appguard.clients c SET hosts_undecided = true
			WHERE c.client_id = p_client_id AND NOT c.hosts_undecided;
		END IF;
		RETURN any_drift;
	END IF;
	IF p_hold IS NOT NULL THEN
		PERFORM appguard.log_event('suspension_held', p_client_id,
			pg_catalog.jsonb_build_object('detail', 'a hold is open: new suspensions join it',
										  'suspensions', pg_catalog.to_jsonb(new_ids)),
			snapshot_id => snap.id, hold_id => p_hold);
		PERFORM pg_catalog.pg_notify('appguard_hold', p_hold::text);
		RETURN any_drift;
	END IF;
	PERFORM appguard.apply_suspensions(new_ids);
	RETURN any_drift;
END
$$;

-- Compare snapshot p_snapshot_id with the baselines of client p_client_id
-- (all distinct baselines of its active grants, or only p_baselines) and
-- act on the verdicts, as described at the top of this part.
-- p_sweep_id: the running sweep this evaluation belongs to (suspensions
-- are left pending for the breaker), or NULL.
-- Returns true when the snapshot drifts at suspend level from at least
-- one baseline (confirmed or not): the breaker counts such hosts.
CREATE FUNCTION appguard.evaluate_client(p_client_id text, p_snapshot_id bigint,
										 p_sweep_id bigint DEFAULT NULL,
										 p_baselines bigint[] DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	cli record;
	baselines bigint[];
	filled bigint;
	hold bigint;
	drifted boolean := false;
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status, s.facts INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	-- An open hold takes this evaluation's suspensions.  Locked before the
	-- client (the order of appguard_release_hold and of a sweep's end), so
	-- that a hold being closed is not joined after its release.
	IF p_sweep_id IS NULL THEN
		SELECT h.id INTO hold FROM appguard.holds h WHERE h.state = 'open' FOR SHARE;
	END IF;
	SELECT * INTO cli FROM appguard.clients c WHERE c.client_id = p_client_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF cli.host <> snap.host OR cli.port <> snap.port THEN
		-- another watched host of the client, if it is one
		RETURN appguard.evaluate_client_host(p_client_id, p_snapshot_id, p_sweep_id, p_baselines, hold);
	END IF;

	IF p_baselines IS NULL THEN
		IF cli.last_snapshot_id IS NOT NULL AND cli.last_snapshot_id <> snap.id
		   AND (cli.last_snapshot_at, cli.last_snapshot_id) > (snap.taken_at, snap.id) THEN
			RETURN false;		-- older than what the client has seen: stored, not evaluated
		END IF;
		UPDATE appguard.clients c
		SET last_snapshot_id = snap.id, last_snapshot_at = snap.taken_at, last_status = snap.status,
			last_ok_snapshot_id = CASE WHEN snap.status = 'ok' THEN snap.id ELSE c.last_ok_snapshot_id END,
			last_ok_at = CASE WHEN snap.status = 'ok' THEN snap.taken_at ELSE c.last_ok_at END,
			registrable_domain = coalesce(c.registrable_domain,
										  snap.facts -> 'dns' ->> 'registrable_domain')
		WHERE c.client_id = p_client_id;

		baselines := ARRAY(
			SELECT DISTINCT r.baseline_snapshot_id FROM appguard.grants r
			WHERE r.client_id = p_client_id AND r.state = 'active'
			  AND r.baseline_snapshot_id IS NOT NULL AND r.baseline_snapshot_id <> snap.id
			  AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = r.baseline_snapshot_id)
			ORDER BY 1);
		-- (a statement of its own: once per baseline, not per grant)
		baselines := ARRAY(SELECT b FROM pg_catalog.unnest(baselines) b
						   WHERE appguard.baseline_unheld(p_client_id, b) ORDER BY b);
	ELSE
		baselines := ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(p_baselines) b
						   WHERE b IS NOT NULL AND b <> snap.id
							 AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = b)
						   ORDER BY b);
	END IF;
	-- (a baseline that names no snapshot -- written by hand, or restored
	-- without its snapshot -- cannot be compared with anything: it is
	-- skipped, so it cannot stop the evaluation of the client's others)
	IF pg_catalog.cardinality(baselines) > 0 THEN
		drifted := appguard.evaluate_baselines(p_client_id, snap.id, true, baselines, baselines, p_sweep_id, hold);
	END IF;

	-- Pending consents and grants take this snapshot, the client's next
	-- successful one, after the fan-out and without waiting: a row another
	-- transaction holds stays pending until the next.  Locked before the
	-- host's rows, or waited for while the fan-out holds some, they would
	-- break the lock order (a host revoking two rows would deadlock with it).
	IF p_baselines IS NULL AND snap.status = 'ok' THEN
		UPDATE appguard.consents k SET baseline_snapshot_id = snap.id
		WHERE (k.client_id, k.subject) IN (
			SELECT p.client_id, p.subject FROM appguard.consents p
			WHERE p.client_id = p_client_id AND p.baseline_snapshot_id IS NULL
			  AND EXISTS (SELECT FROM appguard.grants r
						  WHERE r.client_id = p.client_id AND r.subject = p.subject)
			FOR UPDATE OF p SKIP LOCKED);
		UPDATE appguard.grants r SET baseline_snapshot_id = snap.id
		WHERE (r.token_table, r.token_key) IN (
			SELECT p.token_table, p.token_key FROM appguard.grants p
			WHERE p.client_id = p_client_id AND p.state = 'active' AND p.baseline_snapshot_id IS NULL
			FOR UPDATE OF p SKIP LOCKED);
		GET DIAGNOSTICS filled = ROW_COUNT;
		IF filled > 0 THEN
			PERFORM appguard.log_event('baselines_assigned', p_client_id,
				pg_catalog.jsonb_build_object('grants', filled),
				snapshot_id => snap.id, sweep_id => p_sweep_id);
		END IF;
	END IF;
	RETURN drifted;
END
$$;

-- Take a host's snapshot into baselines of a client that have none for
-- it: every baseline the client's grants and consents hold (or only
-- p_baselines), with p_snapshot_id or else the host's latest successful
-- snapshot; p_replace: replace what is there (a re-approval).  Recorded
-- (host_baselines_taken).  Returns how many baselines took it.
CREATE FUNCTION appguard.take_host_baselines(p_client_id text, p_host text, p_port integer, p_how text,
											 p_snapshot_id bigint DEFAULT NULL,
											 p_baselines bigint[] DEFAULT NULL,
											 p_replace boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap bigint := p_snapshot_id;
	n bigint;
BEGIN
	IF snap IS NULL THEN
		SELECT s.id INTO snap FROM appguard.snapshots s
		WHERE s.host = p_host AND s.port = p_port AND s.status = 'ok'
		ORDER BY s.taken_at DESC, s.id DESC LIMIT 1;
		IF snap IS NULL THEN
			RETURN 0;		-- never measured: its first successful snapshot will be
		END IF;
	END IF;
	INSERT INTO appguard.baseline_hosts AS bh (client_id, baseline_snapshot_id, host, port, snapshot_id, how)
	SELECT p_client_id, b, p_host, p_port, snap, p_how
	FROM (SELECT b FROM appguard.client_baselines(p_client_id) b
		  WHERE p_baselines IS NULL
		  UNION SELECT b FROM pg_catalog.unnest(p_baselines) b WHERE b IS NOT NULL) q
	ON CONFLICT (client_id, baseline_snapshot_id, host, port) DO UPDATE
	SET snapshot_id = EXCLUDED.snapshot_id, how = EXCLUDED.how, taken_at = EXCLUDED.taken_at
	WHERE p_replace AND bh.snapshot_id <> EXCLUDED.snapshot_id;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		IF p_replace THEN
			-- a new baseline: the old verdicts are of no use
			DELETE FROM appguard.baseline_host_state st
			WHERE st.client_id = p_client_id AND st.host = p_host AND st.port = p_port
			  AND st.baseline_snapshot_id IN (SELECT bh.baseline_snapshot_id FROM appguard.baseline_hosts bh
											 WHERE bh.client_id = p_client_id AND bh.host = p_host
											   AND bh.port = p_port AND bh.snapshot_id = snap);
			PERFORM appguard.note_hosts_drifted(p_client_id);
		END IF;
		PERFORM appguard.log_event('host_baselines_taken', p_client_id,
			pg_catalog.jsonb_build_object('host', p_host, 'port', p_port, 'how', p_how, 'baselines', n),
			snapshot_id => snap);
	END IF;
	RETURN n;
END
$$;

-- appguard.evaluate_client for another watched host of the client (not
-- the primary): the same steps (appguard.evaluate_baselines), with the
-- host's own baseline for each baseline of the client's active grants
-- (appguard.baseline_hosts, taken at the host's first evaluation against
-- it when missing), its own verdicts (appguard.baseline_host_state) and
-- suspensions that name it.  The caller locked the open hold (p_hold) and
-- the client's row.
CREATE FUNCTION appguard.evaluate_client_host(p_client_id text, p_snapshot_id bigint,
											  p_sweep_id bigint, p_baselines bigint[], p_hold bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	ch record;
	baselines bigint[];
	compared bigint[];
	max_age interval;
	n bigint;
	hows text;
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	SELECT h.* INTO ch FROM appguard.client_hosts h
	WHERE h.client_id = p_client_id AND h.host = snap.host AND h.port = snap.port AND NOT h.is_primary;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF p_baselines IS NULL AND EXISTS (
		SELECT FROM appguard.snapshots s
		WHERE s.host = snap.host AND s.port = snap.port AND (s.taken_at, s.id) > (snap.taken_at, snap.id)) THEN
		RETURN false;		-- older than the host's latest snapshot: stored, not evaluated
	END IF;
	baselines := ARRAY(
		SELECT DISTINCT r.baseline_snapshot_id FROM appguard.grants r
		WHERE r.client_id = p_client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
		  AND (p_baselines IS NULL OR r.baseline_snapshot_id = ANY (p_baselines))
		ORDER BY 1);
	IF p_baselines IS NULL THEN
		-- (a statement of its own: once per baseline, not per grant)
		baselines := ARRAY(SELECT b FROM pg_catalog.unnest(baselines) b
						   WHERE appguard.baseline_unheld(p_client_id, b) ORDER BY b);
	END IF;
	IF pg_catalog.cardinality(baselines) = 0 THEN
		RETURN false;
	END IF;

	-- Baselines with no facts of this host yet: its latest successful
	-- snapshot when the baseline was taken (no older than
	-- appguard.baseline_max_age then, nor than the host's watching), else
	-- this snapshot if it succeeded.
	max_age := appguard.setting('appguard.baseline_max_age')::interval;
	WITH missing AS (
		SELECT b, greatest(bs.taken_at,
						   (SELECT pg_catalog.min(coalesce(g.reapproved_at, g.created_at)) FROM appguard.grants g
							WHERE g.client_id = p_client_id AND g.baseline_snapshot_id = b)) AS anchor
		FROM pg_catalog.unnest(baselines) b JOIN appguard.snapshots bs ON bs.id = b
		WHERE NOT EXISTS (SELECT FROM appguard.baseline_hosts bh
						  WHERE bh.client_id = p_client_id AND bh.baseline_snapshot_id = b
							AND bh.host = snap.host AND bh.port = snap.port)
	), pick AS (
		SELECT m.b, coalesce(c.id, CASE WHEN snap.status = 'ok' THEN snap.id END) AS sid,
			   CASE WHEN c.id IS NOT NULL THEN 'at_baseline' ELSE 'first_facts' END AS how
		FROM missing m
			 LEFT JOIN LATERAL (SELECT s.id FROM appguard.snapshots s
								WHERE s.host = snap.host AND s.port = snap.port AND s.status = 'ok'
								  AND s.taken_at <= m.anchor AND s.taken_at >= m.anchor - max_age
								  AND s.taken_at >= ch.added_at - max_age
								ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) c ON true
	), ins AS (
		INSERT INTO appguard.baseline_hosts (client_id, baseline_snapshot_id, host, port, snapshot_id, how)
		SELECT p_client_id, pick.b, snap.host, snap.port, pick.sid, pick.how
		FROM pick WHERE pick.sid IS NOT NULL
		RETURNING how
	)
	SELECT pg_catalog.count(*), pg_catalog.string_agg(DISTINCT ins.how, ', ') INTO n, hows FROM ins;
	IF n > 0 THEN
		PERFORM appguard.log_event('host_baselines_taken', p_client_id,
			pg_catalog.jsonb_build_object('host', snap.host, 'port', snap.port, 'how', hows, 'baselines', n),
			snapshot_id => snap.id, sweep_id => p_sweep_id);
	END IF;

	-- each baseline with the host's own that can be compared
	SELECT coalesce(pg_catalog.array_agg(bh.baseline_snapshot_id ORDER BY bh.baseline_snapshot_id), '{}'),
		   coalesce(pg_catalog.array_agg(bh.snapshot_id ORDER BY bh.baseline_snapshot_id), '{}')
	INTO baselines, compared
	FROM appguard.baseline_hosts bh
	WHERE bh.client_id = p_client_id AND bh.host = snap.host AND bh.port = snap.port
	  AND bh.baseline_snapshot_id = ANY (baselines) AND bh.snapshot_id <> snap.id
	  AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = bh.snapshot_id);
	RETURN appguard.evaluate_baselines(p_client_id, snap.id, false, baselines, compared, p_sweep_id, p_hold);
END
$$;

-- clients.hosts_drifted of a client, from its other hosts' verdicts: true
-- while one of them is drifting from any baseline (confirmed or not: it
-- only sends the client's grants to the SQL paths, which decide).  Called
-- wherever those verdicts change: an evaluation of another host, its
-- baselines taken again, a host removed, a prune.
CREATE FUNCTION appguard.note_hosts_drifted(p_client_id text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE appguard.clients c SET hosts_drifted = d.drifted
	FROM (SELECT EXISTS (SELECT FROM appguard.baseline_host_state st
						 WHERE st.client_id = p_client_id AND st.drifting) AS drifted) d
	WHERE c.client_id = p_client_id AND c.hosts_drifted IS DISTINCT FROM d.drifted
$$;

-- The suspension that holds the client's grants on baseline p_baseline
-- (any baseline when NULL) because another watched host than the primary
-- drifted: the newest suspension of some (baseline, host) in one of
-- p_states, whose host verdict is still confirmed drifted; the newest
-- such.  NULL if none.  With the default states, pending (its sweep has
-- not decided) or failed (its sweep could not), it refuses a refresh;
-- applied, a grant that came on the baseline after the fan-out joins it
-- (appguard.verify_grant).  The primary's own are verify_grant's.
-- VOLATILE: each call reads what has committed (appguard.sweep_close
-- clears hosts_undecided with it).
CREATE FUNCTION appguard.other_host_blocking(p_client_id text, p_baseline bigint,
											 p_states text[] DEFAULT '{pending,failed}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	blocking bigint;
BEGIN
	SELECT s.id INTO blocking
	FROM appguard.suspensions s
		 JOIN appguard.baseline_host_state bh
			 ON bh.client_id = s.client_id AND bh.baseline_snapshot_id = s.baseline_snapshot_id
			AND bh.host = s.host AND bh.port = s.port
	WHERE s.client_id = p_client_id
	  AND (p_baseline IS NULL OR s.baseline_snapshot_id = p_baseline)
	  AND s.state = ANY (p_states)
	  AND bh.drifting AND bh.streak >= appguard.setting('appguard.confirmations')::integer
	  AND NOT EXISTS (SELECT FROM appguard.suspensions u
					  WHERE u.client_id = s.client_id AND u.baseline_snapshot_id = s.baseline_snapshot_id
						AND u.host = s.host AND u.port = s.port AND u.id > s.id)
	ORDER BY s.id DESC
	LIMIT 1;
	RETURN blocking;
END
$$;

-- Evaluate a snapshot for every client watching its host (as its primary
-- host or another one).  Returns true
-- when it drifts at suspend level for any of them.
CREATE FUNCTION appguard.evaluate_snapshot(p_snapshot_id bigint, p_sweep_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	drifted boolean := false;
BEGIN
	FOR c IN
		SELECT ch.client_id
		FROM appguard.snapshots s JOIN appguard.client_hosts ch ON ch.host = s.host AND ch.port = s.port
		WHERE s.id = p_snapshot_id
		ORDER BY ch.client_id
	LOOP
		IF appguard.evaluate_client(c.client_id, p_snapshot_id, p_sweep_id) THEN
			drifted := true;
		END IF;
	END LOOP;
	RETURN drifted;
END
$$;

-- AFTER INSERT on appguard.snapshots, through appguard.snapshot_inserted_check
-- (below): evaluate now, or, inside a sweep, record the snapshot for the
-- sweep to evaluate after its batch.
CREATE FUNCTION appguard.snapshot_inserted()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sweep bigint;
BEGIN
	sweep := appguard.current_sweep();
	IF sweep IS NOT NULL THEN
		INSERT INTO appguard.sweep_hosts AS h (sweep_id, host, port, ord, planned,
											   snapshot_id, status, measured_at)
		VALUES (sweep, NEW.host, NEW.port, 2147483647, false, NEW.id, NEW.status,
				pg_catalog.clock_timestamp())
		ON CONFLICT (sweep_id, host, port) DO UPDATE
		SET snapshot_id = EXCLUDED.snapshot_id, status = EXCLUDED.status,
			measured_at = EXCLUDED.measured_at, error = NULL, evaluated = false;
		RETURN NULL;
	END IF;
	PERFORM appguard.evaluate_snapshot(NEW.id, NULL);
	RETURN NULL;
END
$$;
-- The trigger itself, in C (src/snapshot_trigger.c): outside a sweep
-- (appguard_lifecycle.sweep_id unset), a snapshot of a host no client
-- watches (no appguard.client_hosts row, by the index client_hosts_host)
-- has nothing to evaluate, and returns at once; every other row goes to
-- appguard.snapshot_inserted() as its trigger call.  Neither SECURITY
-- DEFINER nor SET (fmgr's wrapper would cost a snapshot more than the
-- lookup): it runs no SQL and names every object schema-qualified, and
-- only the extension's owner writes snapshots.
CREATE FUNCTION appguard.snapshot_inserted_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_snapshot_inserted_check'
LANGUAGE C;
CREATE TRIGGER appguard_evaluate AFTER INSERT ON appguard.snapshots
	FOR EACH ROW EXECUTE FUNCTION appguard.snapshot_inserted_check();

---------------------------------------------------------------------------
-- Asking about drift
---------------------------------------------------------------------------

-- Every warn and suspend difference between the client's latest snapshot
-- and each distinct baseline of its active grants (computed now, without
-- confirmations), with the number of active grants on that baseline; and
-- the same for each other watched host: its latest snapshot against its
-- baseline for each of those baselines (appguard.baseline_hosts).  host:
-- the watched host the difference is of.
CREATE FUNCTION @extschema@.appguard_drift(client_id text)
RETURNS TABLE (baseline_snapshot_id bigint, snapshot_id bigint, active_grants bigint,
			   reason text, severity text, field text, old_value jsonb, new_value jsonb, host text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cli record;
	latest bigint;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	SELECT c.client_id, c.host, c.port INTO cli FROM appguard.clients c
	WHERE c.client_id = appguard_drift.client_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'client "%" is not registered', client_id USING ERRCODE = 'P0002';
	END IF;
	-- the primary host
	SELECT s.id INTO latest FROM appguard.snapshots s
	WHERE s.host = cli.host AND s.port = cli.port
	ORDER BY s.taken_at DESC, s.id DESC LIMIT 1;
	IF latest IS NOT NULL THEN
		RETURN QUERY
		WITH b AS (
			SELECT r.baseline_snapshot_id AS baseline, pg_catalog.count(*) AS n
			FROM appguard.grant_states r
			WHERE r.client_id = cli.client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
			  AND r.baseline_snapshot_id <> latest
			GROUP BY r.baseline_snapshot_id
		)
		SELECT b.baseline, latest, b.n, d.reason::text, d.severity::text, d.field::text,
			   pg_catalog.to_jsonb(d.old_value), pg_catalog.to_jsonb(d.new_value), cli.host
		FROM b, @extschema@.appguard_diff(b.baseline, latest, cli.client_id) d
		WHERE d.severity <> 'ignore'
		ORDER BY b.baseline, d.severity = 'suspend' DESC, d.reason, d.field;
	END IF;
	RETURN QUERY
	WITH b AS (
		SELECT r.baseline_snapshot_id AS baseline, pg_catalog.count(*) AS n
		FROM appguard.grant_states r
		WHERE r.client_id = cli.client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
		GROUP BY r.baseline_snapshot_id
	)
	SELECT b.baseline, l.id, b.n, d.reason::text, d.severity::text, d.field::text,
		   pg_catalog.to_jsonb(d.old_value), pg_catalog.to_jsonb(d.new_value), h.host
	FROM appguard.client_hosts h
		 CROSS JOIN LATERAL (SELECT s.id FROM appguard.snapshots s
							 WHERE s.host = h.host AND s.port = h.port
							 ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) l
		 JOIN appguard.baseline_hosts bh ON bh.client_id = h.client_id AND bh.host = h.host
										AND bh.port = h.port AND bh.snapshot_id <> l.id
		 JOIN b ON b.baseline = bh.baseline_snapshot_id
		 CROSS JOIN LATERAL @extschema@.appguard_diff(bh.snapshot_id, l.id, cli.client_id) d
	WHERE h.client_id = cli.client_id AND NOT h.is_primary AND d.severity <> 'ignore'
	ORDER BY h.host, h.port, b.baseline, d.severity = 'suspend' DESC, d.reason, d.field;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_drift(text) IS
	'Differences between each watched host''s latest snapshot and its baseline for each baseline of the client''s active grants';

CREATE FUNCTION @extschema@.appguard_drifted(client_id text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT FROM @extschema@.appguard_drift($1) d WHERE d.severity = 'suspend')
$$;
COMMENT ON FUNCTION @extschema@.appguard_drifted(text) IS
	'True when a watched host''s latest snapshot drifts at suspend level from its baseline for any active grant';
