-- The refresh check's fast path and the consent trigger (src/refresh.c):
-- every case the C code answers itself ("allowed" after primary-key
-- lookups), and every case it must leave to the full check in SQL, which
-- may measure, compare and suspend -- shown by what the full check did.
-- One transaction, rolled back: nothing is left for the tests after it.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
BEGIN;
SET LOCAL search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
-- live snapshots are refused at once (no port allowed): no network
SET LOCAL appguard.allowed_ports = '';

SELECT appguard_register_client('fp', 'Fast App', ARRAY['https://fp.example.org/']) IS NOT NULL;
SELECT snap('fp.example.org') AS snap_a \gset
CREATE TABLE public.host_grants (id integer PRIMARY KEY, client text, status text NOT NULL DEFAULT 'active',
								 error_uri text, last_used timestamptz);
SELECT appguard_protect('public.host_grants', 'client', 'status', 'error_uri') ->> 'table' AS protected;

-- ---- the consent trigger ----
-- the client's latest successful snapshot is recent: it is the baseline
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-a', 'fp', 'ann');
SELECT baseline_snapshot_id = :snap_a AS baseline_is_latest FROM public.tokens WHERE token_id = 't-a';
INSERT INTO public.host_grants (id, client) VALUES (1, 'fp');
SELECT baseline_snapshot_id = :snap_a AS row_baseline_is_latest FROM grant_states WHERE token_key = '1';
-- too old (baseline_max_age = 0): a live snapshot, refused here, so the
-- baseline is pending and the failure is an event
SET LOCAL appguard.baseline_max_age = 0;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-pending', 'fp', 'pat');
SELECT (tok('t-pending')).baseline,
	   (SELECT count(*) FROM events WHERE kind = 'live_snapshot_failed' AND client_id = 'fp'
		AND detail ->> 'purpose' = 'baseline') AS live_attempts;
RESET appguard.baseline_max_age;
-- a baseline given (as a restored dump gives it) is kept, even one that
-- names no snapshot (later evaluations skip it); a revoked row gets none
SELECT restore_token('t-given', 'fp', 'gus', :snap_a - 1000);
SELECT baseline_snapshot_id = :snap_a - 1000 AS kept FROM public.tokens WHERE token_id = 't-given';
INSERT INTO refresh_tokens (token_id, client_id, subject, status) VALUES ('t-revoked', 'fp', 'rev', 'revoked');
SELECT (tok('t-revoked')).*;
-- unregistered client: no baseline, left alone
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-ghost', 'ghost', 'gho');
SELECT (tok('t-ghost')).*;
-- bad input: a clear error, nothing stored
SELECT count(*) AS tokens FROM public.tokens \gset before_
SELECT try($$INSERT INTO refresh_tokens (token_id, client_id, subject, status) VALUES ('t-bad', 'fp', 'x', 'suspended')$$);
-- an empty token id or subject (one consent for every such token of a client)
SELECT try($$INSERT INTO refresh_tokens (token_id, client_id, subject, created_at) VALUES ('t-bad', 'fp', '', '2026-01-01')$$)
UNION ALL SELECT try($$INSERT INTO refresh_tokens (token_id, client_id, subject, created_at) VALUES ('', 'fp', 'x', '2026-01-01')$$);
SELECT count(*) = :before_tokens AS nothing_stored FROM public.tokens;
-- the trigger function fired any other way
CREATE TABLE public.not_tokens (x integer);
CREATE TRIGGER wrong BEFORE INSERT ON public.not_tokens FOR EACH ROW EXECUTE FUNCTION appguard.grant_insert();
SELECT try($$INSERT INTO public.not_tokens VALUES (1)$$);
DROP TABLE public.not_tokens;

-- ---- the refresh check: answered by the fast path ----
-- baseline = the latest snapshot; pending; unregistered client
SELECT appguard_check_refresh('t-a') AS latest, appguard_check_refresh('t-pending') AS pending,
	   appguard_check_refresh('t-ghost') AS unregistered;
SELECT appguard_check_refresh('public.host_grants', '1') AS row_latest;
-- an allowed refresh is recorded
SELECT last_refreshed_at IS NOT NULL AS recorded FROM public.tokens WHERE token_id = 't-a';
-- a renewal with the same identity: the baseline is compared with it and
-- clean, so the check is answered without the full check acting
SELECT snap('fp.example.org', 443, '{"tls.leaf.serial": "02"}') AS snap_b \gset
SELECT count(*) AS events FROM events \gset before_
SELECT appguard_check_refresh('t-a') AS renewed, appguard_check_refresh('public.host_grants', '1') AS row_renewed;
SELECT count(*) - :before_events AS new_events FROM events;

-- ---- left to the full check ----
-- never compared with the latest snapshot (its verdict is gone): the full
-- check compares now, and the verdict is there again
DELETE FROM baseline_state WHERE client_id = 'fp' AND baseline_snapshot_id = :snap_a;
SELECT appguard_check_refresh('t-a') AS compared_now;
SELECT evaluated_snapshot_id = :snap_b AS verdict_again, drifting FROM baseline_state
WHERE client_id = 'fp' AND baseline_snapshot_id = :snap_a;
DELETE FROM baseline_state WHERE client_id = 'fp' AND baseline_snapshot_id = :snap_a;
SELECT appguard_check_refresh('public.host_grants', '1') AS row_compared_now;
SELECT count(*) AS verdicts FROM baseline_state WHERE client_id = 'fp' AND baseline_snapshot_id = :snap_a;
-- appguard.refresh_max_age: the latest snapshot is older, so a live one
-- is due (refused here: an event, and the answer stands on the verdict)
SET LOCAL appguard.refresh_max_age = 60;
UPDATE clients SET last_snapshot_at = last_snapshot_at - interval '1 hour' WHERE client_id = 'fp';
SELECT appguard_check_refresh('t-a') AS stale, appguard_check_refresh('public.host_grants', '1') AS row_stale;
SELECT count(*) AS live_attempts FROM events WHERE kind = 'live_snapshot_failed' AND client_id = 'fp'
	AND detail ->> 'purpose' = 'refresh';
UPDATE clients SET last_snapshot_at = clock_timestamp() WHERE client_id = 'fp';
SELECT appguard_check_refresh('t-a') AS fresh_again;
RESET appguard.refresh_max_age;
-- drifting but not confirmed (confirmations = 2): allowed, nothing suspended
SET LOCAL appguard.confirmations = 2;
SELECT snap('fp.example.org', 443, '{"tls.leaf.subject.O": "Other Org"}') AS snap_c \gset
SELECT streak, drifting FROM baseline_state WHERE client_id = 'fp' AND baseline_snapshot_id = :snap_a;
SELECT appguard_check_refresh('t-a') AS unconfirmed, appguard_check_refresh('public.host_grants', '1') AS row_unconfirmed;
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'fp';
-- the same verdict, now confirmed (confirmations = 1): the full check
-- compares and suspends; the answer is the suspension's body
SET LOCAL appguard.confirmations = 1;
SELECT appguard_check_refresh('t-a') -> 'error' ->> 'error' AS confirmed,
	   appguard_check_refresh('public.host_grants', '1') -> 'error' ->> 'error' AS row_confirmed;
SELECT (tok('t-a')).status, (SELECT status FROM public.host_grants WHERE id = 1) AS row_status,
	   (SELECT count(*) FROM suspensions WHERE client_id = 'fp' AND state = 'applied') AS applied;
SELECT appguard_check_refresh('t-a') -> 'error' ->> 'error_uri' = error_uri AS same_error_uri
FROM public.tokens WHERE token_id = 't-a';
-- revoked
SELECT appguard_check_refresh('t-revoked');
-- a grant left under a key whose row went while appguard's triggers were
-- off: a new row under that key is a new grant, with the new row's status
SET session_replication_role = replica;
DELETE FROM refresh_tokens WHERE token_id = 't-a';
SET session_replication_role = origin;
SELECT state FROM grant_states WHERE token_key = 't-a' AND token_table = 'refresh_tokens'::regclass;
INSERT INTO refresh_tokens (token_id, client_id, subject, status) VALUES ('t-a', 'fp', 'again', 'revoked');
SELECT state, suspension_id IS NULL AS no_suspension FROM grant_states
WHERE token_key = 't-a' AND token_table = 'refresh_tokens'::regclass;
SELECT appguard_check_refresh('t-a') ->> 'allowed' AS allowed;

-- ---- bad input ----
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_check_refresh(NULL::text)$$),
	($$SELECT appguard_check_refresh('no-such-token')$$),
	($$SELECT appguard_check_refresh(NULL::regclass, '1')$$),
	($$SELECT appguard_check_refresh('public.host_grants', NULL)$$),
	($$SELECT appguard_check_refresh('public.host_grants', '99')$$),
	($$SELECT appguard_check_refresh('appguard.clients', '1')$$)
) AS t(sql);
ROLLBACK;
