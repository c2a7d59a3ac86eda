-- Upgrade case "hosts", after the release's database was upgraded
-- (output compared with hosts.out): every client's https redirect hosts
-- are watched, the new ones as hosts a re-registration adds (host_added,
-- their latest snapshot taken into the grants' baselines); a client with
-- a redirect URI appguard cannot watch keeps its primary host, with a
-- WARNING; the release's suspensions name their host; the new hosts are
-- evaluated from now on.
SET client_min_messages = warning;
ALTER EXTENSION appguard UPDATE;
SET search_path = public, appguard;
SELECT client_id, host, port, roles, is_primary FROM appguard.client_hosts ORDER BY 1, NOT is_primary, 2;
SELECT kind, client_id, detail FROM appguard.events WHERE kind IN ('host_added', 'host_baselines_taken') ORDER BY id;
SELECT b.client_id, b.host, b.how, s.host AS snapshot_of, g.token_key AS grant_of
FROM appguard.baseline_hosts b JOIN appguard.snapshots s ON s.id = b.snapshot_id
	 JOIN appguard.grants g ON g.baseline_snapshot_id = b.baseline_snapshot_id AND g.client_id = b.client_id
ORDER BY 1, 2;
SELECT client_id, host, port, roles, host_baseline_snapshot_id = baseline_snapshot_id AS own, reasons, state
FROM appguard.suspensions ORDER BY id;
SELECT snap('login.up.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS secondary_changed;
SELECT client_id, host, roles, reasons, state, tokens_suspended FROM appguard.suspensions ORDER BY id;
SELECT token_id, status FROM appguard.refresh_tokens ORDER BY 1;
