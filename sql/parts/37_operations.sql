---------------------------------------------------------------------------
-- Lifecycle, part 8: operators' views, retention, privileges
---------------------------------------------------------------------------

-- Per client: the latest snapshot, trust, certificate expiry, drift state
-- and grant counts.  drift_state: unmeasured (no successful snapshot
-- yet), ok,
-- warn (warn-level differences only), drifting (active grants drift at
-- suspend level: awaiting confirmation, pending in a sweep or held).
CREATE VIEW appguard.client_status AS
	SELECT c.client_id, c.name, c.host, c.port, c.registrable_domain,
		   c.last_snapshot_id AS latest_snapshot_id, c.last_snapshot_at AS latest_snapshot_at,
		   c.last_status AS latest_status,
		   c.last_ok_snapshot_id AS latest_ok_snapshot_id, c.last_ok_at AS latest_ok_at,
		   (o.facts -> 'tls' ->> 'verified')::boolean AS verified,
		   (o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz AS certificate_expires_at,
		   pg_catalog.floor(pg_catalog.date_part('epoch',
				(o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz - pg_catalog.now()) / 86400)::integer
				AS days_until_expiry,
		   CASE WHEN c.last_ok_snapshot_id IS NULL THEN 'unmeasured'
				WHEN d.drifting THEN 'drifting'
				WHEN d.warn THEN 'warn'
				ELSE 'ok' END AS drift_state,
		   coalesce(g.active, 0) AS active_grants,
		   coalesce(g.suspended, 0) AS suspended_grants,
		   coalesce(g.pending, 0) AS pending_baselines,
		   (SELECT pg_catalog.count(*) FROM appguard.suspensions s
			WHERE s.client_id = c.client_id AND s.state = 'held') AS held_suspensions
	FROM appguard.clients c
		 LEFT JOIN appguard.snapshots o ON o.id = c.last_ok_snapshot_id
		 LEFT JOIN LATERAL (
			-- (every watched host's verdicts)
			SELECT pg_catalog.bool_or(bs.drifting) AS drifting,
				   pg_catalog.bool_or(bs.last_diff @> '[{"severity": "warn"}]') AS warn
			FROM (SELECT bs.client_id, bs.baseline_snapshot_id, bs.drifting, bs.last_diff
				  FROM appguard.baseline_state bs
				  UNION ALL
				  SELECT bh.client_id, bh.baseline_snapshot_id, bh.drifting, bh.last_diff
				  FROM appguard.baseline_host_state bh) bs
			WHERE bs.client_id = c.client_id
			  AND bs.baseline_snapshot_id IN (SELECT gr.baseline_snapshot_id FROM appguard.grant_states gr
											  WHERE gr.client_id = c.client_id AND gr.state = 'active')
		 ) d ON true
		 LEFT JOIN LATERAL (
			SELECT pg_catalog.count(*) FILTER (WHERE gr.state = 'active') AS active,
				   pg_catalog.count(*) FILTER (WHERE gr.state = 'suspended') AS suspended,
				   pg_catalog.count(*) FILTER (WHERE gr.state = 'active' AND gr.baseline_snapshot_id IS NULL) AS pending
			FROM appguard.grant_states gr WHERE gr.client_id = c.client_id
		 ) g ON true;
COMMENT ON VIEW appguard.client_status IS 'Per client: latest snapshot, trust, days until the certificate expires, drift state, grant counts';

-- Certificates that expire within the given number of days, soonest
-- first, expired ones included: of every host a client's grants trust
-- (appguard.client_hosts: the primary redirect host, the other redirect
-- hosts, jwks_uri, ...), at every address its latest successful snapshot
-- measured (tls_addresses; a snapshot taken before 0.2.0 lists no
-- not_after there, and its tls keys, the first address's, stand in).
CREATE FUNCTION @extschema@.appguard_expiring_certificates(within_days integer DEFAULT 30)
RETURNS TABLE (client_id text, name text, host text, port integer, snapshot_id bigint,
			   not_after timestamptz, days_left integer, verified boolean, address text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF within_days IS NULL OR within_days NOT BETWEEN 0 AND 3650000 THEN
		RAISE EXCEPTION 'within_days must be from 0 to 3650000 (10000 years)' USING ERRCODE = '22023';
	END IF;
	RETURN QUERY
	SELECT h.client_id, c.name, h.host, h.port, o.id, a.not_after,
		   pg_catalog.floor(pg_catalog.date_part('epoch', a.not_after - pg_catalog.now()) / 86400)::integer,
		   a.verified, a.address
	FROM appguard.client_hosts h
		 JOIN appguard.clients c ON c.client_id = h.client_id
		 CROSS JOIN LATERAL (
			SELECT s.id, s.facts
			FROM appguard.snapshots s
			WHERE s.host = h.host AND s.port = h.port AND s.status = 'ok'
			ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) o
		 CROSS JOIN LATERAL (
			SELECT e ->> 'address' AS address, (e ->> 'not_after')::timestamptz AS not_after,
				   (e ->> 'verified')::boolean AS verified
			FROM pg_catalog.jsonb_array_elements(
					 CASE WHEN pg_catalog.jsonb_typeof(o.facts -> 'tls_addresses') = 'array'
						  THEN o.facts -> 'tls_addresses' ELSE '[]' END) e
			WHERE e ->> 'status' = 'ok' AND e ? 'not_after'
			UNION ALL
			SELECT o.facts -> 'tls' ->> 'address', (o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz,
				   (o.facts -> 'tls' ->> 'verified')::boolean
			WHERE NOT pg_catalog.jsonb_path_exists(o.facts, '$.tls_addresses[*] ? (@.status == "ok" && exists(@.not_after))')) a
	WHERE a.not_after < pg_catalog.now() + pg_catalog.make_interval(days => within_days)
	ORDER BY a.not_after, h.client_id, h.host, h.port, a.address;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_expiring_certificates(integer) IS
	'Certificates of the hosts clients'' grants trust, at each address measured, that expire within N days (default 30)';

CREATE VIEW appguard.expiring_certificates AS
	SELECT * FROM @extschema@.appguard_expiring_certificates(30);
COMMENT ON VIEW appguard.expiring_certificates IS 'Certificates of watched hosts expiring within 30 days (appguard_expiring_certificates(N) for another horizon)';

-- Applied suspensions that still keep grants suspended.
CREATE VIEW appguard.open_suspensions AS
	SELECT s.id AS suspension_id, s.client_id, c.name, s.reasons, s.applied_at AS suspended_at,
		   s.baseline_snapshot_id, s.snapshot_id, s.error_uri, s.tokens_suspended,
		   n.still_suspended
	FROM appguard.suspensions s
		 JOIN (SELECT gr.suspension_id, pg_catalog.count(*) AS still_suspended
			   FROM appguard.grant_states gr
			   WHERE gr.state = 'suspended' AND gr.suspension_id IS NOT NULL
			   GROUP BY gr.suspension_id) n ON n.suspension_id = s.id
		 LEFT JOIN appguard.clients c ON c.client_id = s.client_id
	WHERE s.state = 'applied';
COMMENT ON VIEW appguard.open_suspensions IS 'Suspensions whose grants are still suspended';

-- Suspensions the mass-drift breaker holds, with the grants they would suspend.
CREATE VIEW appguard.held_suspensions AS
	SELECT h.id AS hold_id, h.opened_at, h.hosts_measured, h.hosts_drifted, h.threshold,
		   s.id AS suspension_id, s.client_id, c.name, c.host, s.reasons, s.diff,
		   s.created_at AS detected_at, s.sweep_id,
		   (SELECT pg_catalog.count(*) FROM appguard.grant_states gr
			WHERE gr.client_id = s.client_id AND gr.state = 'active'
			  AND gr.baseline_snapshot_id = s.baseline_snapshot_id) AS active_grants
	FROM appguard.suspensions s
		 JOIN appguard.holds h ON h.id = s.hold_id
		 LEFT JOIN appguard.clients c ON c.client_id = s.client_id
	WHERE s.state = 'held';
COMMENT ON VIEW appguard.held_suspensions IS 'Suspensions held by the mass-drift breaker, awaiting release or discard';

-- Active grants appguard leaves alone because their client is not registered.
CREATE VIEW appguard.unregistered_grants AS
	SELECT gr.token_table, gr.client_id,
		   pg_catalog.count(*) AS active_grants
	FROM appguard.grants gr
	WHERE gr.state = 'active'
	  AND NOT EXISTS (SELECT FROM appguard.clients c WHERE c.client_id = gr.client_id)
	GROUP BY 1, 2;
COMMENT ON VIEW appguard.unregistered_grants IS 'Active grants of clients that are not registered: not guarded';

-- Protected tables appguard cannot write now (32_protect), with the rows it
-- holds suspended in its own state meanwhile.
CREATE VIEW appguard.table_problems AS
	SELECT pt.tbl AS token_table, pt.problem, pt.problem_sqlstate, pt.problem_at,
		   (SELECT pg_catalog.count(*) FROM appguard.grant_states r
			WHERE r.token_table = pt.tbl AND r.state = 'suspended') AS rows_suspended
	FROM appguard.protected_tables pt
	WHERE pt.problem IS NOT NULL;
COMMENT ON VIEW appguard.table_problems IS 'Protected tables appguard cannot suspend rows of now: their refresh checks answer not allowed for the rows it suspended';

-- Retention: delete history older than keep, but never a baseline of any
-- grant or consent, anything a suspension or an undecided suspension
-- points to, the latest snapshots of the clients, or what a kept sweep
-- refers to.  A consent goes when no grant of its patient is left.
-- First, partitioned token tables are reconciled with their partitions
-- (32_protect): grants whose row a partition took with it while the event
-- triggers were idle (DDL under session_replication_role = replica) are
-- forgotten, and partitions they did not cover are covered; one read of
-- each such table.
CREATE FUNCTION @extschema@.appguard_prune(keep interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cutoff timestamptz;
	n_state bigint;
	n_drifts bigint;
	n_sweeps bigint;
	n_suspensions bigint;
	n_holds bigint;
	n_events bigint;
	n_snapshots bigint;
	n_consents bigint;
	n_gone bigint := 0;
	t regclass;
	result jsonb;
BEGIN
	IF keep IS NULL OR keep < interval '0' OR keep > interval '10000 years' THEN
		RAISE EXCEPTION 'keep must be an interval from zero to 10000 years' USING ERRCODE = '22023';
	END IF;
	cutoff := pg_catalog.now() - keep;

	FOR t IN
		SELECT pt.tbl FROM appguard.protected_tables pt JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
		WHERE c.relkind = 'p' ORDER BY pt.tbl
	LOOP
		PERFORM appguard.partitions_changed(t, 'appguard_prune');
		n_gone := n_gone + appguard.forget_gone_rows(t);
	END LOOP;

	-- Before the lock below, what writes clients' rows (a fan-out waiting
	-- for that lock may hold one): a consent deleted under it keeps its
	-- baseline's verdicts, other hosts' baselines and hold until the next
	-- prune.
	-- verdicts of baselines no grant uses any more
	DELETE FROM appguard.baseline_state bs
	WHERE bs.evaluated_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bs.client_id AND gr.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bs.client_id AND k.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bs.client_id AND s.baseline_snapshot_id = bs.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	GET DIAGNOSTICS n_state = ROW_COUNT;
	-- the other hosts' baselines and verdicts of baselines no grant uses
	DELETE FROM appguard.baseline_host_state bs
	WHERE bs.evaluated_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bs.client_id AND gr.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bs.client_id AND k.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bs.client_id AND s.baseline_snapshot_id = bs.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	DELETE FROM appguard.baseline_hosts bh
	WHERE bh.taken_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bh.client_id AND gr.baseline_snapshot_id = bh.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bh.client_id AND k.baseline_snapshot_id = bh.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bh.client_id AND s.baseline_snapshot_id = bh.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	PERFORM appguard.note_hosts_drifted(c.client_id) FROM appguard.clients c WHERE c.hosts_drifted;
	-- held baselines no active grant and no consent holds any more
	-- (only the rows that change are written: a client's row is what its
	-- evaluations and re-approvals lock)
	UPDATE appguard.clients c SET held_baselines = n.kept
	FROM (SELECT h.client_id, ARRAY(
				 SELECT b FROM pg_catalog.unnest(h.held_baselines) b
				 WHERE EXISTS (SELECT FROM appguard.grants gr
							   WHERE gr.client_id = h.client_id AND gr.baseline_snapshot_id = b
								 AND gr.state = 'active')
					OR EXISTS (SELECT FROM appguard.consents k
							   WHERE k.client_id = h.client_id AND k.baseline_snapshot_id = b)
				 ORDER BY b) AS kept
		  FROM appguard.clients h WHERE h.held_baselines <> '{}') n
	WHERE c.client_id = n.client_id AND c.held_baselines IS DISTINCT FROM n.kept;
	-- what no grant or consent refers to
	DELETE FROM appguard.drifts d WHERE d.detected_at < cutoff;
	GET DIAGNOSTICS n_drifts = ROW_COUNT;
	DELETE FROM appguard.sweeps w WHERE w.state <> 'running' AND w.finished_at < cutoff;
	GET DIAGNOSTICS n_sweeps = ROW_COUNT;
	DELETE FROM appguard.events e WHERE e.at < cutoff;
	GET DIAGNOSTICS n_events = ROW_COUNT;

	-- Token writes in flight commit first, and new ones wait until this
	-- commits: a token joining a consent takes ROW EXCLUSIVE on
	-- appguard.grants before it reads the consent (src/refresh.c), so no
	-- consent, or baseline, a new grant joins is pruned under it.
	LOCK TABLE appguard.grants IN SHARE MODE;
	-- consents none of whose grants is left
	DELETE FROM appguard.consents k
	WHERE k.approved_at < cutoff AND (k.shown_at IS NULL OR k.shown_at < cutoff)
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = k.client_id AND gr.subject = k.subject);
	GET DIAGNOSTICS n_consents = ROW_COUNT;

	-- decided suspensions no grant points to any more, neither by its own
	-- suspension_id nor as its baseline's hold
	DELETE FROM appguard.suspensions s
	WHERE s.created_at < cutoff AND s.state IN ('applied', 'discarded', 'superseded', 'failed')
	  AND NOT EXISTS (SELECT FROM appguard.grants gr WHERE gr.suspension_id = s.id)
	  AND NOT (s.state = 'applied'
			   AND EXISTS (SELECT FROM appguard.clients c
						   WHERE c.client_id = s.client_id AND s.baseline_snapshot_id = ANY (c.held_baselines)))
	  -- (the suspension of a consent's baseline holds the consent's next tokens)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = s.client_id AND k.baseline_snapshot_id = s.baseline_snapshot_id);
	GET DIAGNOSTICS n_suspensions = ROW_COUNT;
	DELETE FROM appguard.holds h
	WHERE h.state <> 'open' AND h.closed_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s WHERE s.hold_id = h.id);
	GET DIAGNOSTICS n_holds = ROW_COUNT;
	DELETE FROM appguard.snapshots s
	WHERE s.taken_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants r WHERE r.baseline_snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE s.id IN (k.baseline_snapshot_id, k.shown_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.suspensions u
					  WHERE s.id IN (u.baseline_snapshot_id, u.snapshot_id, u.first_drift_snapshot_id,
									 u.host_baseline_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.baseline_hosts bh WHERE bh.snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.baseline_host_state bs
					  WHERE s.id IN (bs.evaluated_snapshot_id, bs.first_drift_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.baseline_state bs
					  WHERE s.id IN (bs.baseline_snapshot_id, bs.evaluated_snapshot_id, bs.first_drift_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.clients c
					  WHERE s.id IN (c.last_snapshot_id, c.last_ok_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.sweep_hosts sh WHERE sh.snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.drifts d
					  WHERE s.id IN (d.baseline_snapshot_id, d.snapshot_id));
	GET DIAGNOSTICS n_snapshots = ROW_COUNT;

	result := pg_catalog.jsonb_build_object(
		'keep', keep, 'snapshots', n_snapshots, 'drifts', n_drifts, 'baseline_states', n_state,
		'suspensions', n_suspensions, 'holds', n_holds, 'sweeps', n_sweeps, 'events', n_events,
		'consents', n_consents, 'grants_of_gone_rows', n_gone);
	PERFORM appguard.log_event('pruned', detail => result);
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_prune(interval) IS
	'Delete history older than keep; baselines and everything a suspension points to are kept';

