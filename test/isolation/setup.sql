-- Run once by test/isolation/run.sh in the isolation database, after
-- CREATE EXTENSION and sql/lifecycle_helpers.inc (public.facts and
-- public.snap, shared with the pg_regress tests): the helpers only the
-- specs use.

-- Every spec's setup starts from an empty appguard
CREATE OR REPLACE FUNCTION public.reset_appguard()
RETURNS void LANGUAGE sql AS $$
	TRUNCATE appguard.snapshots, appguard.clients, appguard.refresh_tokens, appguard.suspensions,
			 appguard.holds, appguard.sweeps, appguard.sweep_hosts, appguard.events, appguard.drifts,
			 appguard.baseline_state, appguard.grants, appguard.consents
		RESTART IDENTITY CASCADE;
	-- (appguard.refresh_tokens stays protected)
	DELETE FROM appguard.protected_tables WHERE tbl <> 'appguard.refresh_tokens'::regclass;
$$;

-- Grants in one line each: token, status, baseline as the n-th snapshot of the host
CREATE OR REPLACE FUNCTION public.grants_now()
RETURNS TABLE (token text, status text, baseline text)
LANGUAGE sql AS $$
	SELECT CASE WHEN g.token_table = 'appguard.refresh_tokens'::regclass THEN ''
				ELSE g.token_table::text || ':' END || g.token_key, g.state,
		   CASE WHEN g.baseline_snapshot_id IS NULL THEN 'pending'
				ELSE 'S' || (SELECT count(*) FROM appguard.snapshots s JOIN appguard.clients c
							 ON c.host = s.host AND c.port = s.port
							 WHERE c.client_id = g.client_id AND s.id <= g.baseline_snapshot_id) END
	FROM appguard.grant_states g ORDER BY 1
$$;
