-- Sweeps and the mass-drift breaker without network: a sweep is driven
-- by hand (appguard_sweep_begin, snapshots stored inside it,
-- appguard_sweep_finish), and the real procedure runs with no port
-- allowed, so every measurement is 'blocked' at once.  Then holds
-- (release, discard), operators' views, retention, privileges, and a
-- hostile search_path.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET appguard.allowed_ports = '';

-- twelve apps, each with a baseline and a token
SELECT count(appguard_register_client(c, 'Breaker ' || c, ARRAY['https://' || c || '.breaker.test/cb'])) AS registered
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 12) i) s;
SELECT count(snap(c || '.breaker.test')) AS baselines
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 12) i) s;
INSERT INTO refresh_tokens (token_id, client_id, subject)
SELECT 'tok-' || c, c, 'patient' FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 12) i) s;

-- ---------------------------------------------------------------------
-- A sweep in which 4 of 12 hosts drift (more than 20%): held
-- ---------------------------------------------------------------------
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT planned, state FROM sweeps WHERE id = :sweep;
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT count(snap(c || '.breaker.test', 443,
				  CASE WHEN c <= 'b04' THEN '{"tls.verified": false}'::jsonb ELSE '{}' END)) AS measured
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 12) i) s;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
-- nothing is suspended before the sweep ends
SELECT count(*) FILTER (WHERE status = 'active') AS active FROM public.tokens WHERE client_id LIKE 'b%';
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
SELECT id = :sweep AS this_sweep, measured, failed, drifted, suspended, held, tokens_suspended, hold_id IS NOT NULL AS held_by
FROM sweeps WHERE id = :sweep;
SELECT hold_id AS hold FROM sweeps WHERE id = :sweep \gset
SELECT client_id, name, host, reasons, active_grants FROM held_suspensions ORDER BY client_id;
SELECT state, hosts_measured, hosts_drifted, threshold FROM holds WHERE id = :hold;
-- held grants keep working
SELECT appguard_check_refresh('tok-b01');
SELECT client_id, drift_state, held_suspensions FROM client_status WHERE client_id IN ('b01', 'b05') ORDER BY 1;
-- while the hold is open, a new suspension outside a sweep joins it
SELECT snap('b05.breaker.test', 443, '{"tls.leaf.validation": "DV"}') IS NOT NULL AS drifted_alone;
SELECT (tok('tok-b05')).status, (SELECT count(*) FROM held_suspensions WHERE hold_id = :hold) AS held;
-- bad input
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_release_hold(NULL)$$),
	($$SELECT appguard_release_hold(-1)$$),
	($$SELECT appguard_release_hold($$ || :hold || $$, 'b11')$$),
	($$SELECT appguard_discard_hold(NULL, 'b01')$$)
) AS t(sql);
-- release one client's suspension
SELECT appguard_release_hold(:hold, 'b01') - 'hold_id' AS released;
SELECT (tok('tok-b01')).status, (tok('tok-b02')).status;
-- b02's host is fine again before the operator decides: its suspension is superseded
SELECT snap('b02.breaker.test') IS NOT NULL AS fine_again;
SELECT appguard_release_hold(:hold) - 'hold_id' AS released;
SELECT t.client_id, t.status, s.state FROM public.tokens t
	JOIN suspensions s ON s.client_id = t.client_id AND s.hold_id = :hold
WHERE t.client_id BETWEEN 'b01' AND 'b05' ORDER BY 1;
SELECT state, closed_at IS NOT NULL AS closed FROM holds WHERE id = :hold;
SELECT try($$SELECT appguard_release_hold($$ || :hold || $$)$$);
SELECT kind, client_id, detail - 'hold_id' AS detail FROM events
WHERE hold_id = :hold AND kind LIKE 'hold_%' ORDER BY id;

-- ---------------------------------------------------------------------
-- Another mass drift, discarded: nothing is suspended; if the drift
-- persists, the next evaluation (no hold open) suspends
-- ---------------------------------------------------------------------
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT count(snap(c || '.breaker.test', 443,
				  CASE WHEN c >= 'b09' THEN '{"dns.ns": ["ns.other.test"], "tls.leaf.subject.O": "Mass Corp"}'::jsonb ELSE '{}' END))
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(6, 12) i) s;
SELECT count(snap(c || '.breaker.test', 443, '{}'))
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 5) i) s;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
SELECT hold_id AS hold FROM sweeps WHERE id = :sweep \gset
SELECT appguard_discard_hold(:hold) - 'hold_id' AS discarded;
SELECT count(*) FILTER (WHERE status = 'active') AS active FROM public.tokens WHERE client_id >= 'b09';
SELECT state FROM holds WHERE id = :hold;
SELECT snap('b09.breaker.test', 443, '{"dns.ns": ["ns.other.test"], "tls.leaf.subject.O": "Mass Corp"}') IS NOT NULL AS persists;
SELECT client_id, (tok(token_id)).status FROM public.tokens WHERE client_id >= 'b09' ORDER BY 1;

-- ---------------------------------------------------------------------
-- Below the threshold, or fewer hosts than mass_drift_min_hosts:
-- applied when the sweep ends
-- ---------------------------------------------------------------------
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT count(snap(c || '.breaker.test', 443,
				  CASE WHEN c = 'b10' THEN '{"tls.leaf.subject.C": "KP"}'::jsonb ELSE '{}' END))
FROM (SELECT 'b' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 12) i) s;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
SELECT (tok('tok-b10')).status;
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT count(snap(c || '.breaker.test', 443, '{"tls.verified": false}'))
FROM (VALUES ('b06'), ('b07'), ('b08')) s(c);
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
SELECT client_id, (tok(token_id)).status FROM public.tokens WHERE client_id IN ('b06', 'b07', 'b08') ORDER BY 1;

-- with confirmations = 2 a first mass drift is only a warning
SET appguard.confirmations = 2;
SELECT appguard_register_client(c, 'Confirm ' || c, ARRAY['https://' || c || '.c2.test/']) IS NOT NULL
FROM (SELECT 'k' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 10) i) s;
SELECT count(snap(c || '.c2.test')) FROM (SELECT 'k' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 10) i) s;
INSERT INTO refresh_tokens (token_id, client_id, subject)
SELECT 'tok-' || c, c, 'patient' FROM (SELECT 'k' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 10) i) s;
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT count(snap(c || '.c2.test', 443, '{"tls.verified": false}'))
FROM (SELECT 'k' || lpad(i::text, 2, '0') AS c FROM generate_series(1, 10) i) s;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
RESET appguard.confirmations;

-- ---------------------------------------------------------------------
-- The procedure itself, as pg_cron calls it
-- ---------------------------------------------------------------------
-- every watched host is due (max_age 0); no port is allowed, so every
-- measurement is stored as 'blocked' at once: failed, never drift.  The
-- hosts are measured by the event loop of appguard.sweep_run, 32 snapshots
-- per commit by default.
SELECT count(DISTINCT (host, port)) AS hosts FROM clients \gset
CALL appguard_sweep('0', '1 minute');
SELECT state, planned = :hosts AS all_planned, measured = planned AS all_measured,
	   failed = measured AS all_failed, drifted, suspended, held, batch_size
FROM sweeps ORDER BY id DESC LIMIT 1;
SELECT count(*) FILTER (WHERE evaluated) = count(*) AS evaluated,
	   count(*) FILTER (WHERE status = 'blocked') = count(*) AS blocked,
	   count(*) FILTER (WHERE snapshot_id IS NOT NULL) = count(*) AS stored
FROM sweep_hosts WHERE sweep_id = (SELECT max(id) FROM sweeps);
-- in batches of 5
CALL appguard_sweep('0', '1 minute', 5);
SELECT state, measured = planned AS all_measured, failed = measured AS all_failed, batch_size
FROM sweeps ORDER BY id DESC LIMIT 1;
-- a batch that cannot be stored costs its own hosts, recorded with the
-- error, not the sweep
CREATE FUNCTION public.refuse_b03() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.host = 'b03.breaker.test' THEN
		RAISE EXCEPTION 'refused by a test trigger';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER refuse_b03 BEFORE INSERT ON appguard.snapshots
	FOR EACH ROW EXECUTE FUNCTION public.refuse_b03();
CALL appguard_sweep('0', '1 minute', 5);
SELECT state, measured = planned AS all_measured FROM sweeps ORDER BY id DESC LIMIT 1;
SELECT count(*) FILTER (WHERE error = 'refused by a test trigger') AS batch_failed,
	   bool_or(host = 'b03.breaker.test' AND error IS NOT NULL) AS with_b03,
	   count(*) FILTER (WHERE snapshot_id IS NOT NULL) AS stored, count(*) AS hosts
FROM sweep_hosts WHERE sweep_id = (SELECT max(id) FROM sweeps);
DROP TRIGGER refuse_b03 ON appguard.snapshots;
DROP FUNCTION public.refuse_b03();
-- the measuring procedure on its own: only with CALL outside a
-- transaction block, for a running sweep of this backend
SELECT max(id) AS done_sweep FROM sweeps \gset
\set VERBOSITY terse
BEGIN;
CALL appguard.sweep_run(:done_sweep);
ROLLBACK;
CALL appguard.sweep_run(NULL);
CALL appguard.sweep_run(-1);
\set VERBOSITY default
-- a finished sweep: nothing to do
CALL appguard.sweep_run(:done_sweep);
SELECT id = :done_sweep AS same, state, measured = planned AS all_measured FROM sweeps ORDER BY id DESC LIMIT 1;
-- step by step: each step measures batch_size hosts together, in the
-- caller's transaction
SELECT appguard_sweep_begin('0', '1 minute', 7) AS sweep \gset
SELECT appguard_sweep_step(:sweep) AS more;
SELECT count(*) AS stored FROM sweep_hosts WHERE sweep_id = :sweep AND snapshot_id IS NOT NULL;
-- a host that cannot be measured (here planted by hand: registration
-- refuses such names) fails its whole step, which is recorded
INSERT INTO sweep_hosts (sweep_id, host, port, ord) VALUES (:sweep, 'not a host', 443, 0);
SELECT appguard_sweep_step(:sweep) AS more;
SELECT host = 'not a host' AS planted, error FROM sweep_hosts
WHERE sweep_id = :sweep AND error IS NOT NULL ORDER BY ord, host LIMIT 2;
SELECT count(*) FILTER (WHERE error IS NOT NULL) AS failed_step, count(*) FILTER (WHERE snapshot_id IS NOT NULL) AS stored
FROM sweep_hosts WHERE sweep_id = :sweep;
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' - 'hold_id' AS sweep;
-- the measuring loop records such a host alone, and measures the others
SELECT appguard_sweep_begin('0', '1 minute') AS sweep \gset
INSERT INTO sweep_hosts (sweep_id, host, port, ord) VALUES (:sweep, 'not a host', 443, 0);
CALL appguard.sweep_run(:sweep);
SELECT host, error FROM sweep_hosts WHERE sweep_id = :sweep AND error IS NOT NULL;
SELECT count(*) FILTER (WHERE snapshot_id IS NOT NULL) = count(*) - 1 AS others_stored
FROM sweep_hosts WHERE sweep_id = :sweep;
SELECT appguard_sweep_finish(:sweep) ->> 'state' AS state;
-- nothing is due
CALL appguard_sweep('1 hour', '1 minute');
SELECT state, planned, measured FROM sweeps ORDER BY id DESC LIMIT 1;
-- the budget runs out: the rest waits for the next run, oldest first
CALL appguard_sweep('0', '1 microsecond');
SELECT state, measured, planned = :hosts AS all_planned FROM sweeps ORDER BY id DESC LIMIT 1;
-- a sweep left running by this backend is finished as aborted by the next one
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep2 \gset
SELECT id = :sweep AS first, state FROM sweeps WHERE id IN (:sweep, :sweep2) ORDER BY id;
SELECT appguard_sweep_finish(:sweep2) ->> 'state' AS state;
SELECT try(sql) FROM (VALUES
	($$CALL appguard_sweep(NULL, '1 minute')$$),
	($$SELECT appguard_sweep_begin('-1 hour', '1 minute')$$),
	($$SELECT appguard_sweep_begin('1 hour', '0')$$),
	($$SELECT appguard_sweep_begin('178000000 years', '1 minute')$$),
	($$SELECT appguard_sweep_begin('1 hour', '178000000 years')$$),
	($$SELECT appguard_sweep_begin('1 hour', '1 minute', 0)$$),
	($$SELECT appguard_sweep_step(NULL)$$),
	($$SELECT appguard_sweep_step(-1)$$),
	($$SELECT appguard_sweep_finish(-1)$$)
) AS t(sql);
SELECT kind, count(*) FROM events WHERE kind LIKE 'sweep_%' GROUP BY kind ORDER BY kind;

-- ---------------------------------------------------------------------
-- Operators' views
-- ---------------------------------------------------------------------
SELECT appguard_register_client('exp', 'Expiring App', ARRAY['https://exp.breaker.test/']) IS NOT NULL;
SELECT snap('exp.breaker.test', 443, jsonb_build_object('tls.leaf.not_after', now() + interval '5 days 1 hour')) IS NOT NULL;
SELECT client_id, name, host, days_left, verified FROM appguard_expiring_certificates(30)
WHERE client_id IN ('exp', 'b01');
SELECT client_id, days_left FROM expiring_certificates WHERE client_id = 'exp';
SELECT count(*) AS none FROM appguard_expiring_certificates(3) WHERE client_id = 'exp';
-- every host the grants trust: a second redirect host whose certificate
-- expires soon is listed, the primary host (years left) is not
SELECT appguard_register_client('exp2', 'Two Hosts App',
	ARRAY['https://one.exp.breaker.test/', 'https://two.exp.breaker.test/cb']) IS NOT NULL;
SELECT snap('one.exp.breaker.test') IS NOT NULL;
SELECT snap('two.exp.breaker.test', 443, jsonb_build_object('tls.leaf.not_after', now() + interval '9 days 1 hour')) IS NOT NULL;
SELECT client_id, host, port, days_left, verified FROM appguard_expiring_certificates(30)
WHERE client_id = 'exp2';
SELECT count(*) AS none FROM appguard_expiring_certificates(8) WHERE client_id = 'exp2';
SELECT try($$SELECT appguard_expiring_certificates(-1)$$), try($$SELECT appguard_expiring_certificates(2147483647)$$),
	try($$SELECT appguard_expiring_certificates(NULL)$$);
SELECT client_id, latest_status, verified,
	   CASE WHEN days_until_expiry > 365 THEN 'years' ELSE days_until_expiry::text END AS expires_in,
	   drift_state, active_grants, suspended_grants,
	   pending_baselines, held_suspensions
FROM client_status WHERE client_id IN ('exp', 'b01', 'b03', 'b06', 'b11') ORDER BY client_id;
SELECT client_id, reasons, still_suspended FROM open_suspensions WHERE client_id LIKE 'b%' ORDER BY client_id, reasons;
SELECT count(*) AS held FROM held_suspensions;

-- ---------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------
SELECT try($$SELECT appguard_prune(NULL)$$), try($$SELECT appguard_prune('-1 day')$$),
	try($$SELECT appguard_prune('1000000 years')$$);
SELECT (appguard_prune('1 day') ->> 'snapshots')::int AS nothing_old_enough;
SELECT (appguard_prune('0') ->> 'snapshots')::int > 0 AS pruned;
-- every baseline, everything a suspension points to, every client's latest
-- snapshot is still there
SELECT count(*) AS missing FROM (
	SELECT baseline_snapshot_id AS id FROM grant_states WHERE baseline_snapshot_id IS NOT NULL
	UNION SELECT baseline_snapshot_id FROM suspensions
	UNION SELECT snapshot_id FROM suspensions
	UNION SELECT first_drift_snapshot_id FROM suspensions WHERE first_drift_snapshot_id IS NOT NULL
	UNION SELECT last_snapshot_id FROM clients WHERE last_snapshot_id IS NOT NULL
	UNION SELECT last_ok_snapshot_id FROM clients WHERE last_ok_snapshot_id IS NOT NULL) r
WHERE NOT EXISTS (SELECT FROM snapshots s WHERE s.id = r.id);
SELECT count(*) AS events_left, bool_and(kind = 'pruned') AS only_the_prune FROM events;
SELECT appguard_explain(suspension_id) ->> 'app_name' AS still_explained FROM public.tokens
WHERE token_id = 'tok-b01';

-- ---------------------------------------------------------------------
-- Privileges: the auth server's role and the operators' role
-- ---------------------------------------------------------------------
DO $$
BEGIN
	IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'lc_test_auth') THEN
		DROP OWNED BY lc_test_auth; DROP ROLE lc_test_auth;
	END IF;
	IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'lc_test_operator') THEN
		DROP OWNED BY lc_test_operator; DROP ROLE lc_test_operator;
	END IF;
END
$$;
CREATE TABLE public.grants_x (id int PRIMARY KEY, c text, s text);
CREATE ROLE lc_test_auth IN ROLE appguard_auth_server;
CREATE ROLE lc_test_operator IN ROLE appguard_operator;
GRANT USAGE ON SCHEMA public TO lc_test_auth, lc_test_operator;
SELECT suspension_id AS b01_suspension FROM public.tokens WHERE token_id = 'tok-b01' \gset
SET ROLE lc_test_auth;
SELECT appguard_register_client('authapp', 'Auth App', ARRAY['https://authapp.breaker.test/']) ->> 'host' AS host;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('auth-1', 'authapp', 'amy');
SELECT appguard_check_refresh('auth-1');
UPDATE appguard.refresh_tokens SET status = 'revoked' WHERE token_id = 'auth-1';
SELECT appguard_explain(:b01_suspension) ->> 'app_name' AS app;
SELECT try(sql) FROM (VALUES
	($$UPDATE appguard.refresh_tokens SET error_uri = 'https://x.test/' WHERE token_id = 'auth-1'$$),
	($$SELECT count(*) FROM appguard.grants$$),
	($$SELECT count(*) FROM appguard.events$$),
	($$SELECT count(*) FROM appguard.snapshots$$),
	($$INSERT INTO appguard.snapshots (host, port, taken_at, status, facts) VALUES ('x.test', 443, now(), 'ok', '{}')$$),
	($$SELECT appguard_prune('1 day')$$),
	($$SELECT appguard_release_hold(1)$$),
	($$SELECT appguard_snapshot('authapp.breaker.test')$$),
	($$SELECT appguard_protect('public.grants_x', 'c', 's')$$),
	($$CALL appguard_sweep('1 hour', '1 minute')$$)
) AS t(sql);
RESET ROLE;
SET ROLE lc_test_operator;
SELECT count(*) > 0 AS sees_clients FROM appguard.client_status;
SELECT count(*) > 0 AS sees_events FROM appguard.events;
SELECT (appguard_prune('100 years') ->> 'snapshots')::int AS pruned;
CALL appguard_sweep('100 years', '1 minute');
SELECT try(sql) FROM (VALUES
	($$INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('op', 'authapp', 'x')$$),
	($$SELECT appguard_protect('public.grants_x', 'c', 's')$$),
	($$SELECT appguard_unprotect('public.grants_x')$$),
	($$DELETE FROM appguard.suspensions$$)
) AS t(sql);
RESET ROLE;
DROP OWNED BY lc_test_auth;
DROP OWNED BY lc_test_operator;
DROP TABLE public.grants_x;
DROP ROLE lc_test_auth;
DROP ROLE lc_test_operator;

-- ---------------------------------------------------------------------
-- A hostile search_path: objects planted before pg_catalog are never called
-- ---------------------------------------------------------------------
CREATE SCHEMA evil;
CREATE FUNCTION evil.boom(text, text) RETURNS boolean LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil operator called'; END$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.boom);
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.boom);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil now() called'; END$$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil clock_timestamp() called'; END$$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil lower() called'; END$$;
CREATE FUNCTION evil.setting(text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil setting() called'; END$$;
CREATE FUNCTION evil.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil jsonb_build_object() called'; END$$;
CREATE FUNCTION evil.log_event(text) RETURNS bigint LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'evil log_event() called'; END$$;
SET search_path = evil, appguard, public, pg_catalog;
SELECT appguard_register_client('evil-app', 'Evil Test', ARRAY['https://evil.breaker.test/']) ->> 'host';
SELECT public.snap('evil.breaker.test') IS NOT NULL;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('ev1', 'evil-app', 'eve');
SELECT appguard_check_refresh('ev1');
SELECT public.snap('evil.breaker.test', 443, '{"tls.leaf.subject.ST": "Nevada"}') IS NOT NULL;
SELECT appguard_check_refresh('ev1') -> 'error' ->> 'error';
SELECT appguard_explain((SELECT t.suspension_id FROM public.tokens t
								  WHERE t.token_id OPERATOR(pg_catalog.=) 'ev1')) ->> 'app_name';
SELECT appguard_reapprove('ev1') ->> 'reapproved';
SELECT count(*) FROM appguard_drift('evil-app');
SELECT appguard_update_client('evil-app', 'Evil Test 2') ->> 'name';
CALL appguard_sweep('100 years', '1 minute');
SELECT appguard_prune('100 years') IS NOT NULL;
SELECT count(*) FROM appguard_expiring_certificates(1);
RESET search_path;
DROP SCHEMA evil CASCADE;

-- ---------------------------------------------------------------------
-- A sweep that fails to close ends 'failed', never stays running: its
-- pending suspensions fail, operators are told, the next sweep runs.
-- The refresh check never allows a confirmed-drifted grant whose
-- suspension is pending (the sweep has not decided) or failed, in
-- appguard.refresh_tokens and in a protected table.
-- ---------------------------------------------------------------------
SET search_path = appguard, public;
SELECT appguard_register_client(c, 'Failclose ' || c, ARRAY['https://' || c || '.failclose.test/']) IS NOT NULL AS registered
FROM (VALUES ('fc1'), ('fc2')) s(c);
SELECT snap('fc1.failclose.test') IS NOT NULL AS baseline1, snap('fc2.failclose.test') IS NOT NULL AS baseline2;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('tok-fc1', 'fc1', 'p'), ('tok-fc2', 'fc2', 'p');
CREATE TABLE public.fc_grants (id int PRIMARY KEY, client text, status text NOT NULL DEFAULT 'active');
SELECT appguard_protect('public.fc_grants', 'client', 'status') IS NOT NULL AS protected;
INSERT INTO public.fc_grants (id, client) VALUES (1, 'fc1');
-- the failure, injected for the test: closing a sweep is refused by a
-- trigger on a table appguard writes when it closes one
CREATE FUNCTION public.refuse_close() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'closing sweeps is refused by a test trigger' USING ERRCODE = '23514';
END
$$;
CREATE TRIGGER refuse_close BEFORE UPDATE OF state ON appguard.sweeps FOR EACH ROW
	WHEN (OLD.state = 'running' AND NEW.state IN ('finished', 'budget_exhausted', 'aborted'))
	EXECUTE FUNCTION public.refuse_close();
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT snap('fc1.failclose.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS drifted,
	   snap('fc2.failclose.test') IS NOT NULL AS same;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
-- evaluated while the sweep runs (as sweep_run does after each batch):
-- the suspension waits for the sweep's end
SELECT sweep_evaluate(:sweep);
SELECT client_id, state FROM suspensions WHERE sweep_id = :sweep;
SELECT error_uri AS pending_uri FROM suspensions WHERE sweep_id = :sweep \gset
-- checks while it is pending: refused with its error_uri, grants unchanged
SELECT appguard_check_refresh('tok-fc1') -> 'error' ->> 'error' AS tok_fc1,
	   appguard_check_refresh('tok-fc1') -> 'error' ->> 'error_uri' = :'pending_uri' AS its_error_uri,
	   appguard_check_refresh('public.fc_grants', '1') -> 'error' ->> 'error_uri' = :'pending_uri' AS row_refused,
	   appguard_check_refresh('tok-fc2') AS tok_fc2;
SELECT token, status FROM (SELECT token_key AS token, state AS status FROM grant_states WHERE client_id = 'fc1') g ORDER BY 1;
-- the close fails: the sweep ends failed, its suspension too (WARNING)
SELECT appguard_sweep_finish(:sweep) - 'sweep_id' AS sweep;
SELECT state, error, error_sqlstate, finished_at IS NOT NULL AS finished FROM sweeps WHERE id = :sweep;
SELECT client_id, state, resolved_at IS NOT NULL AS resolved FROM suspensions WHERE sweep_id = :sweep;
SELECT kind, client_id, detail ->> 'closing' AS closing, detail ->> 'error' AS error,
	   jsonb_array_length(detail -> 'suspensions') AS suspensions
FROM events WHERE sweep_id = :sweep AND kind LIKE '%failed' ORDER BY id;
-- nothing was applied; the grants stay active but are refused while the
-- drift lasts (appguard_drifted agrees), by the C fast path's caller too
SELECT token_key, state FROM grant_states WHERE client_id = 'fc1' ORDER BY 1;
SELECT appguard_drifted('fc1') AS drifted,
	   appguard_check_refresh('tok-fc1') -> 'error' ->> 'error_uri' = :'pending_uri' AS tok_refused,
	   appguard_check_refresh('public.fc_grants', '1') -> 'error' ->> 'error_uri' = :'pending_uri' AS row_refused,
	   appguard_check_refresh('tok-fc2') AS tok_fc2;
-- a grant issued now on the same baseline is refused too
SELECT restore_token('tok-fc1b', 'fc1', 'p', baseline_snapshot_id) FROM public.tokens WHERE token_id = 'tok-fc1';
SELECT appguard_check_refresh('tok-fc1b') -> 'error' ->> 'error_uri' = :'pending_uri' AS new_grant_refused;
-- the procedure, as pg_cron calls it: the failure is committed, then
-- raised with the close's SQLSTATE
\set VERBOSITY sqlstate
CALL appguard_sweep('100 years', '1 minute');
\set VERBOSITY default
SELECT state, error, error_sqlstate FROM sweeps ORDER BY id DESC LIMIT 1;
-- a sweep left running whose close fails when the next one begins: the
-- stale one ends failed, the new one starts
SELECT appguard_sweep_begin('100 years', '1 hour') AS stale \gset
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep2 \gset
SELECT id = :stale AS stale, state, error FROM sweeps WHERE id IN (:stale, :sweep2) ORDER BY id;
SELECT detail ->> 'closing' AS closing FROM events WHERE sweep_id = :stale AND kind = 'sweep_failed';
DROP TRIGGER refuse_close ON appguard.sweeps;
DROP FUNCTION public.refuse_close();
SELECT appguard_sweep_finish(:sweep2) ->> 'state' AS state;
-- the next sweep runs normally
CALL appguard_sweep('100 years', '1 minute');
SELECT state FROM sweeps ORDER BY id DESC LIMIT 1;
SELECT count(*) AS running FROM sweeps WHERE state = 'running';
-- a failed suspension does not stop the next snapshot from suspending:
-- the drift persists, the grants are suspended by a new suspension
SELECT snap('fc1.failclose.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS persists;
SELECT state, count(*) FROM suspensions WHERE client_id = 'fc1' GROUP BY state ORDER BY state;
SELECT token_key, state, error_uri = (SELECT error_uri FROM suspensions WHERE client_id = 'fc1' AND state = 'applied') AS new_uri
FROM grant_states WHERE client_id = 'fc1' ORDER BY 1;
SELECT appguard_check_refresh('tok-fc1') -> 'error' ->> 'error' AS refused,
	   appguard_check_refresh('public.fc_grants', '1') -> 'error' ->> 'error' AS row_refused;
-- a suspension left pending by a sweep that ended without deciding it
-- (here: the sweep's row set to aborted by hand, as a refresh check's
-- evaluation racing the close could leave one) is failed by the next
-- sweep_begin, instead of blocking its baseline for ever
SELECT appguard_reapprove('tok-fc1') ->> 'reapproved' AS reapproved;
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'sweep', false) IS NOT NULL AS in_sweep;
SELECT snap('fc1.failclose.test', 443, '{"tls.leaf.subject.C": "KP"}') IS NOT NULL AS drifted;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT sweep_evaluate(:sweep);
UPDATE sweeps SET state = 'aborted', finished_at = clock_timestamp() WHERE id = :sweep;
SELECT state FROM suspensions WHERE sweep_id = :sweep;
SELECT appguard_sweep_begin('100 years', '1 hour') AS sweep2 \gset
SELECT state FROM suspensions WHERE sweep_id = :sweep;
SELECT kind, detail ->> 'detail' AS detail FROM events WHERE sweep_id = :sweep AND kind = 'suspension_failed';
SELECT appguard_check_refresh('tok-fc1') -> 'error' ->> 'error' AS refused;
SELECT appguard_sweep_finish(:sweep2) ->> 'state' AS state;
SELECT appguard_unprotect('public.fc_grants') IS NOT NULL AS unprotected;
DROP TABLE public.fc_grants;
