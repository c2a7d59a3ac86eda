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
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS snap_b3 \gset
SELECT (tok('s1')).status AS s1_suspended;
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

-- ---- a host's table with a subject column (Glewlwyd's shape) ----
CREATE TABLE public.gl_tokens (id bigint PRIMARY KEY, client text NOT NULL, username text,
							   enabled smallint NOT NULL DEFAULT 1);
INSERT INTO public.gl_tokens VALUES (1, 'cl', 'uma', 1), (2, 'cl', 'uma', 0), (3, 'cl', NULL, 1);
SELECT appguard_protect('public.gl_tokens', 'client', 'enabled', NULL, '1', '0',
						subject_column => 'username') - 'table' AS protected;
SELECT token_key, state, subject, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM grants WHERE token_table = 'public.gl_tokens'::regclass ORDER BY token_key;
SELECT baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM clients WHERE client_id = 'cl') AS uma_consent_latest
FROM consents WHERE client_id = 'cl' AND subject = 'uma';
-- the next drift suspends uma's token; her rotation is inserted suspended
SELECT snap('cl.example.org', changes => '{"tls.leaf.subject.O": "Fabrikam Inc"}') AS snap_d \gset
INSERT INTO public.gl_tokens VALUES (4, 'cl', 'uma', 1);
SELECT id, enabled FROM public.gl_tokens ORDER BY id;

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
