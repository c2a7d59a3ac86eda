-- A suspension holds its baseline (appguard.clients.held_baselines,
-- appguard.baseline_hold): the fan-out writes the host rows of the
-- baseline's grants, not the grants, and appguard.grant_states shows them
-- suspended.  What is stored and what is shown, the host re-enabling a row
-- and a later suspension holding it again, a token joining a held consent,
-- the C fast paths on a held baseline, and appguard_prune letting a
-- baseline go.  One transaction, rolled back.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
BEGIN;
SET LOCAL search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET LOCAL appguard.allowed_ports = '';

SELECT appguard_register_client('hb', 'Held App', ARRAY['https://hb.example.org/']) IS NOT NULL AS registered;
SELECT snap('hb.example.org') AS snap_a \gset
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('h1', 'hb', 'ann'), ('h2', 'hb', 'bob');
CREATE TABLE public.hb_rows (id int PRIMARY KEY, client text, enabled int NOT NULL DEFAULT 1);
SELECT appguard_protect('public.hb_rows', 'client', 'enabled', NULL, '1', '0') ->> 'rows' AS adopted;
INSERT INTO public.hb_rows (id, client) VALUES (1, 'hb'), (2, 'hb');
SELECT held_baselines AS held_before FROM clients WHERE client_id = 'hb';

-- the drift: the baseline is held; the host rows say suspended, the grants
-- as stored stay active, and grant_states shows them suspended under the
-- suspension, with its error_uri
SELECT snap('hb.example.org', changes => '{"tls.leaf.subject.O": "Other Org"}') AS snap_b \gset
SELECT id AS suspension, error_uri AS uri, tokens_suspended FROM suspensions WHERE client_id = 'hb' \gset
SELECT :tokens_suspended AS tokens_suspended,
	   (SELECT held_baselines = ARRAY[:snap_a]::bigint[] FROM clients WHERE client_id = 'hb') AS baseline_held,
	   baseline_hold('hb', :snap_a) = :suspension AS hold_is_the_suspension;
SELECT g.token_key, g.state AS stored, s.state AS shown, s.suspension_id = :suspension AS its_suspension,
	   s.error_uri = :'uri' AS its_uri, s.suspended_at IS NOT NULL AS has_time
FROM grants g JOIN grant_states s USING (token_table, token_key)
WHERE g.client_id = 'hb' ORDER BY g.token_table::text, g.token_key;
SELECT token_id, status, error_uri = :'uri' AS its_uri FROM refresh_tokens WHERE client_id = 'hb' ORDER BY 1;
SELECT id, enabled FROM public.hb_rows ORDER BY id;
-- the check refuses with the suspension's error_uri; the views count them
SELECT appguard_check_refresh('h1') -> 'error' ->> 'error_uri' = :'uri' AS h1_refused,
	   appguard_check_refresh('public.hb_rows', '1') -> 'error' ->> 'error_uri' = :'uri' AS row1_refused;
SELECT active_grants, suspended_grants FROM client_status WHERE client_id = 'hb';
SELECT still_suspended FROM open_suspensions WHERE suspension_id = :suspension;

-- a rotation of ann's consent joins the hold: stored active, shown
-- suspended, its row written suspended
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('h3', 'hb', 'ann');
SELECT t.status, g.state AS stored, s.state AS shown
FROM refresh_tokens t JOIN grants g ON g.token_key = t.token_id JOIN grant_states s USING (token_table, token_key)
WHERE t.token_id = 'h3';
SELECT appguard_check_refresh('h3') -> 'error' ->> 'error_uri' = :'uri' AS h3_refused;

-- a grant on the held baseline whose row no fan-out wrote (as one that
-- commits while the fan-out runs): suspended all the same; its refresh
-- check refuses it, writes its row and counts it
SET LOCAL session_replication_role = replica;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('h4', 'hb', 'cy');
SET LOCAL session_replication_role = origin;
INSERT INTO grants (token_table, token_key, client_id, state, baseline_snapshot_id, subject)
VALUES ('refresh_tokens', 'h4', 'hb', 'active', :snap_a, 'cy');
SELECT t.status, s.state AS shown FROM refresh_tokens t JOIN grant_states s ON s.token_key = t.token_id
WHERE t.token_id = 'h4';
SELECT appguard_check_refresh('h4') -> 'error' ->> 'error_uri' = :'uri' AS h4_refused;
SELECT status AS h4_row_now FROM refresh_tokens WHERE token_id = 'h4';
SELECT tokens_suspended - :tokens_suspended AS counted_since FROM suspensions WHERE id = :suspension;

-- the host re-enables row 1 itself: active again, marked as let go by the
-- suspension (its suspension_id); row 2 stays suspended; the re-enabled
-- row is allowed at its check only while no later verdict holds it: the
-- baseline is compared again with the next snapshot (baseline_unheld),
-- which still drifts, so a new suspension holds row 1 again
UPDATE public.hb_rows SET enabled = 1 WHERE id = 1;
SELECT g.token_key, g.state AS stored, g.suspension_id = :suspension AS let_go_by_it, s.state AS shown
FROM grants g JOIN grant_states s USING (token_table, token_key)
WHERE g.token_table = 'public.hb_rows'::regclass ORDER BY 1;
SELECT baseline_unheld('hb', :snap_a) AS compared_again;
-- the facts come back: row 1, let go, is allowed; row 2 stays held (the
-- C fast path sees the held baseline and leaves it to SQL)
SELECT snap('hb.example.org') IS NOT NULL AS facts_back;
SELECT appguard_check_refresh('public.hb_rows', '1') ->> 'allowed' AS row1_allowed,
	   appguard_check_refresh('public.hb_rows', '2') -> 'error' ->> 'error_uri' = :'uri' AS row2_refused;
SELECT snap('hb.example.org', changes => '{"tls.leaf.subject.O": "Other Org"}') IS NOT NULL AS drifting_again;
SELECT count(*) AS suspensions, max(id) > :suspension AS a_new_one FROM suspensions WHERE client_id = 'hb';
SELECT id, enabled FROM public.hb_rows ORDER BY id;
SELECT token_key, state FROM grant_states WHERE token_table = 'public.hb_rows'::regclass ORDER BY 1;
SELECT baseline_unheld('hb', :snap_a) AS compared_again_now;

-- the consent trigger's C path leaves a rotation of a held consent to
-- SQL, which writes its row suspended and records it
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('h5', 'hb', 'bob');
SELECT status AS h5_row FROM refresh_tokens WHERE token_id = 'h5';
SELECT count(*) AS joined_events FROM events WHERE kind = 'grant_joined_suspension' AND client_id = 'hb';

-- re-approval with h2 restores bob's newest row, h5, on the app as it is
-- now (bob's consent with it); h2 stays on the held baseline, suspended
SELECT appguard_reapprove('h2') ->> 'reapproved' AS reapproved;
SELECT s.token_key, s.state, s.baseline_snapshot_id = :snap_a AS on_held_baseline, t.status
FROM grant_states s JOIN refresh_tokens t ON t.token_id = s.token_key
WHERE s.token_key IN ('h2', 'h5') ORDER BY 1;
SELECT baseline_snapshot_id = :snap_a AS bob_on_held_baseline FROM consents WHERE client_id = 'hb' AND subject = 'bob';

-- prune: a held baseline stays while an active grant or a consent is on
-- it; with none left it is let go
SELECT appguard_prune('0 seconds') IS NOT NULL AS pruned;
SELECT held_baselines = ARRAY[:snap_a]::bigint[] AS still_held FROM clients WHERE client_id = 'hb';
DELETE FROM refresh_tokens WHERE client_id = 'hb';
DELETE FROM public.hb_rows;
DELETE FROM consents WHERE client_id = 'hb';
SELECT appguard_prune('0 seconds') IS NOT NULL AS pruned;
SELECT held_baselines AS held_after FROM clients WHERE client_id = 'hb';
ROLLBACK;
