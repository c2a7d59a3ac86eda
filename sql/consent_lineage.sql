-- Consent, not tokens: a patient's baseline belongs to the patient's
-- consent (appguard.consents), and survives refresh-token rotation and
-- remembered approvals.  On appguard.refresh_tokens (protected with its
-- subject and grant_id columns) and on a host table with a subject column.
-- One transaction, rolled back: nothing is left for the tests after it.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
BEGIN;
SET LOCAL search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
-- live snapshots are refused at once (no port allowed): no network
SET LOCAL appguard.allowed_ports = '';

SELECT appguard_register_client('cl', 'Lineage App', ARRAY['https://cl.example.org/']) IS NOT NULL;
SELECT snap('cl.example.org') AS snap_a \gset
-- what the patient sees at consent, recorded for this patient
SELECT appguard_consent_info('cl', 'rose') ->> 'organization' AS shown_to_rose;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r1', 'cl', 'rose', 'g-rose');
SELECT (tok('r1')).*, (SELECT baseline_snapshot_id = :snap_a FROM consents
					   WHERE client_id = 'cl' AND subject = 'rose') AS consent_baseline_a;

-- ---- rotation between two drifting snapshots (confirmations = 2) ----
SET LOCAL appguard.confirmations = 2;
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS snap_b1 \gset
SELECT (tok('r1')).status AS r1_after_first_drift;
-- the rotation: before, the new token took the latest snapshot (the
-- changed facts) as its baseline and was never suspended
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r2', 'cl', 'rose', 'g-rose');
UPDATE refresh_tokens SET status = 'revoked' WHERE token_id = 'r1';
SELECT (tok('r2')).*;
-- with the cache older than appguard.baseline_max_age a rotation measures
-- nothing: the consent's baseline is what it takes
SET LOCAL appguard.baseline_max_age = 0;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r3', 'cl', 'rose', 'g-rose');
UPDATE refresh_tokens SET status = 'revoked' WHERE token_id = 'r2';
SELECT (tok('r3')).*,
	   (SELECT count(*) FROM events WHERE kind = 'live_snapshot_failed' AND client_id = 'cl') AS live_attempts;
RESET appguard.baseline_max_age;
-- the second drifting snapshot confirms: the rotated token is suspended
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS snap_b2 \gset
SELECT token_id, status, state, error_uri IS NOT NULL AS has_error_uri
FROM tokens WHERE client_id = 'cl' ORDER BY token_id;
SELECT appguard_check_refresh('r3') -> 'error' ->> 'error' AS r3_refresh;
RESET appguard.confirmations;

-- ---- a rotation of a suspended grant is inserted suspended ----
-- (a host that rotates without asking appguard first)
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r4', 'cl', 'rose', 'g-rose');
SELECT token_id, status, state, error_uri = (SELECT error_uri FROM tokens WHERE token_id = 'r3') AS same_error_uri,
	   suspension_id = (SELECT suspension_id FROM tokens WHERE token_id = 'r3') AS same_suspension
FROM tokens WHERE token_id = 'r4';
SELECT tokens_suspended FROM suspensions WHERE client_id = 'cl' AND state = 'applied';
SELECT kind, token_key FROM events WHERE kind = 'grant_joined_suspension' AND client_id = 'cl' ORDER BY id;

-- ---- a remembered approval after the change: suspended at once ----
-- (a new grant, no consent screen: Glewlwyd's remembered grant, a
-- consent "remember" box)
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r5', 'cl', 'rose', 'g-rose-2');
SELECT (tok('r5')).*, appguard_check_refresh('r5') -> 'error' ->> 'error' AS r5_refresh;

-- ---- a consent screen shown long ago is no consent now ----
SET LOCAL appguard.consent_window = 0;
SELECT appguard_consent_info('cl', 'rose') ->> 'organization' AS shown_expired;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r6', 'cl', 'rose', 'g-rose-3');
SELECT (tok('r6')).status AS shown_too_long_ago;
RESET appguard.consent_window;

-- ---- a fresh consent screen after the change takes the new facts ----
SELECT appguard_consent_info('cl', 'rose') ->> 'organization' AS shown_now;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r7', 'cl', 'rose', 'g-rose-4');
SELECT (tok('r7')).*, appguard_check_refresh('r7') AS r7_refresh,
	   (SELECT baseline_snapshot_id = :snap_b2 FROM consents
		WHERE client_id = 'cl' AND subject = 'rose') AS consent_baseline_now;
-- and the patient's next rotations keep it
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('r8', 'cl', 'rose', 'g-rose-4');
SELECT (tok('r8')).*;

-- ---- another patient: re-approval of a rotated chain ----
-- sam consented at snapshot A; re-approval restores the grant's newest
-- live token, and sam's consent takes the facts of now
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('s1', 'cl', 'sam', 'g-sam');
UPDATE grants SET baseline_snapshot_id = :snap_a
WHERE token_table = 'appguard.refresh_tokens'::regclass AND token_key = 's1';
UPDATE consents SET baseline_snapshot_id = :snap_a WHERE client_id = 'cl' AND subject = 'sam';
UPDATE grants SET created_at = created_at - interval '1 minute'
WHERE token_table = 'appguard.refresh_tokens'::regclass AND token_key = 's1';
-- (a suspension of snapshot A was applied before s1 was moved onto
-- it: s1 is suspended by that baseline's hold, and its row, which no
-- fan-out wrote, says so at its first refresh check)
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS snap_b3 \gset
SELECT (tok('s1')).status AS s1_row, state AS s1_suspended FROM tokens WHERE token_id = 's1';
-- a second token of sam's grant, rotated while suspended (inserted
-- suspended), the first revoked by the host as it rotates
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('s2', 'cl', 'sam', 'g-sam');
SELECT (tok('s2')).status AS s2_inserted;
-- re-approving with the old token restores the newest one
SELECT appguard_reapprove('s1') - 'suspension_id' - 'baseline_snapshot_id' AS reapproved;
SELECT token_id, status, state FROM tokens WHERE token_id IN ('s1', 's2') ORDER BY token_id;
SELECT baseline_snapshot_id = :snap_b3 AS sam_consent_now FROM consents WHERE client_id = 'cl' AND subject = 'sam';
SELECT appguard_check_refresh('s2') AS s2_refresh;

-- ---- the host's own refusal is kept ----
-- tia's chain breaks (a reused token): the host disables its newest
-- token; appguard never re-enables it
SELECT appguard_consent_info('cl', 'tia') IS NOT NULL AS shown;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('t1', 'cl', 'tia', 'g-tia');
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('t2', 'cl', 'tia', 'g-tia');
UPDATE grants SET created_at = created_at - interval '1 minute'
WHERE token_table = 'appguard.refresh_tokens'::regclass AND token_key = 't1';
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Contoso Ltd"}') AS snap_c \gset
SELECT token_id, status FROM tokens WHERE token_id IN ('t1', 't2') ORDER BY token_id;
UPDATE refresh_tokens SET status = 'revoked' WHERE token_id = 't2';
SELECT token_id, status, state FROM tokens WHERE token_id IN ('t1', 't2') ORDER BY token_id;
SELECT try($$SELECT appguard_reapprove('t2')$$) AS reapprove_newest;
SELECT try($$SELECT appguard_reapprove('t1')$$) AS reapprove_older;
SELECT kind FROM events WHERE token_key = 't2' AND kind = 'host_took_over';
-- and the error_uri page says whose decision that was
SELECT appguard_explain(suspension_id) -> 'host_decisions' AS whose FROM tokens WHERE token_id = 't1';

-- ---- a re-approval spends the consent screen shown before it ----
SELECT appguard_consent_info('cl', 'vic') IS NOT NULL AS shown;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('v1', 'cl', 'vic', 'g-vic');
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Litware Inc"}') AS snap_e \gset
SELECT (tok('v1')).status AS v1_suspended;
SELECT appguard_reapprove('v1') ->> 'reapproved' AS v1_reapproved;
-- the rotation right after keeps the re-approved baseline, not the
-- snapshot the earlier screen showed (whose suspension is applied)
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('v2', 'cl', 'vic', 'g-vic');
SELECT (tok('v2')).*, baseline_snapshot_id = :snap_e AS re_approved_baseline FROM tokens WHERE token_id = 'v2';

-- ---- a host's table with a subject column (Glewlwyd's shape) ----
CREATE TABLE public.gl_tokens (id bigint PRIMARY KEY, client text NOT NULL, username text,
							   enabled smallint NOT NULL DEFAULT 1);
INSERT INTO public.gl_tokens VALUES (1, 'cl', 'uma', 1), (2, 'cl', 'uma', 0), (3, 'cl', NULL, 1);
SELECT appguard_protect('public.gl_tokens', 'client', 'enabled', NULL, '1', '0',
						subject_column => 'username') - 'table' AS protected;
SELECT token_key, state, subject, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM grant_states WHERE token_table = 'public.gl_tokens'::regclass ORDER BY token_key;
SELECT baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM clients WHERE client_id = 'cl') AS uma_consent_latest
FROM consents WHERE client_id = 'cl' AND subject = 'uma';
-- the next drift suspends uma's token; her rotation is inserted suspended
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Fabrikam Inc"}') AS snap_d \gset
INSERT INTO public.gl_tokens VALUES (4, 'cl', 'uma', 1);
SELECT id, enabled FROM public.gl_tokens ORDER BY id;
-- the host disables uma's newest token itself (a chain broken by reuse);
-- without a grant column, re-approval restores her newest token appguard
-- suspended, and never the one the host disabled
UPDATE public.gl_tokens SET enabled = 0 WHERE id = 4;
SELECT try($$SELECT appguard_reapprove('public.gl_tokens', '4')$$) AS reapprove_disabled;
SELECT appguard_reapprove('public.gl_tokens', '1') - 'suspension_id' - 'baseline_snapshot_id' AS reapproved_1;
SELECT id, enabled FROM public.gl_tokens ORDER BY id;
SELECT appguard_explain(s.id) -> 'host_decisions' ->> 'tokens_disabled_by_host' AS by_host
FROM suspensions s WHERE s.client_id = 'cl' AND s.snapshot_id = :snap_d;

-- ---- the facts come back: the suspended consent still holds ----
-- wes consented at A; the organization changed (suspended), then changed
-- back.  Until wes approves again, a rotation and a remembered approval
-- join the applied suspension: what wes approved was found changed once,
-- and nobody showed wes that it is back (before, the consent trigger's C
-- path inserted them active, the verdict being clean again).
SELECT appguard_register_client('rv', 'Revert App', ARRAY['https://rv.example.org/']) IS NOT NULL;
SELECT snap('rv.example.org') AS snap_ra \gset
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('w1', 'rv', 'wes', 'g-wes');
SELECT snap('rv.example.org', changes => '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS snap_rb \gset
SELECT snap('rv.example.org') AS snap_rc \gset
-- (A has no active grant left, so the new snapshot is compared with it
-- only when one shows up: here as the refresh check of a straggler on A
-- would compare it)
SELECT appguard.evaluate_client('rv', :snap_rc, NULL, ARRAY[:snap_ra]::bigint[]) IS NOT NULL AS compared;
SELECT (tok('w1')).status AS w1_after_revert,
	   (SELECT drifting FROM baseline_state WHERE client_id = 'rv' AND baseline_snapshot_id = :snap_ra) AS a_drifting_now,
	   (SELECT suspension_applied FROM baseline_state WHERE client_id = 'rv' AND baseline_snapshot_id = :snap_ra) AS a_suspension_applied;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('w2', 'rv', 'wes', 'g-wes');
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('w3', 'rv', 'wes', 'g-wes-2');
SELECT token_id, status, state, suspension_id = (SELECT suspension_id FROM tokens WHERE token_id = 'w1') AS same_suspension
FROM tokens WHERE token_id IN ('w2', 'w3') ORDER BY token_id;
SELECT appguard_check_refresh('w2') -> 'error' ->> 'error' AS w2_refresh;
-- a new patient consents to the app as it is now: active
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('x1', 'rv', 'xia', 'g-xia');
SELECT (tok('x1')).status AS x1_new_patient;
-- wes approves again on a fresh consent screen: a re-approval, recorded
SELECT appguard_consent_info('rv', 'wes') ->> 'organization' IS NOT NULL AS shown_to_wes;
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('w4', 'rv', 'wes', 'g-wes-3');
SELECT (tok('w4')).status AS w4_after_consent_screen,
	   (SELECT baseline_snapshot_id = :snap_rc FROM consents WHERE client_id = 'rv' AND subject = 'wes') AS wes_consent_now;
SELECT kind, detail ->> 'detail' AS detail, (detail ->> 'old_baseline_snapshot_id')::bigint = :snap_ra AS from_a,
	   suspension_id = (SELECT suspension_id FROM tokens WHERE token_id = 'w1') AS its_suspension, token_key
FROM events WHERE client_id = 'rv' AND kind = 'reapproved';
-- and the rotations after it are active
INSERT INTO refresh_tokens (token_id, client_id, subject, grant_id) VALUES ('w5', 'rv', 'wes', 'g-wes-3');
SELECT (tok('w5')).status AS w5_rotation;

-- ---- bad input ----
CREATE TABLE public.gl2 (id bigint PRIMARY KEY, client text, username text, enabled smallint);
SELECT try($$SELECT appguard_protect('public.gl2', 'client', 'enabled', NULL, '1', '0', grant_column => 'username')$$);
SELECT try($$SELECT appguard_protect('public.gl2', 'client', 'enabled', NULL, '1', '0', subject_column => 'nope')$$);
SELECT try($$SELECT appguard_protect('public.gl2', 'client', 'enabled', NULL, '1', '0', subject_column => 'client')$$);
SELECT try($$SELECT appguard_protect('public.gl2', 'client', 'enabled', NULL, '1', '0', subject_column => 'username', grant_column => 'username')$$);
SELECT try($$SELECT appguard_consent_info('cl', NULL)$$);
SELECT try($$SELECT appguard_consent_info('cl', '')$$);
SELECT try($$SELECT appguard_consent_info('nobody', 'rose')$$);
ROLLBACK;
