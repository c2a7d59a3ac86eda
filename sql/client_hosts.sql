-- Hosts of a client: registration from RFC 7591 client metadata (every
-- redirect URI's host, jwks_uri and other metadata URLs, each distinct
-- (host, port) watched with its roles), bad input, duplicate hosts; drift
-- per host with suspensions that name the host; the explanation in plain
-- words; re-registration that adds and removes hosts; re-approval; the
-- sweep's plan.  No network: snapshots are handcrafted facts
-- (lifecycle_helpers.inc).  It runs last (Makefile, LAST_REGRESS): its
-- rows and ids are seen by no other test.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET appguard.allowed_ports = '';

-- ---------------------------------------------------------------------
-- Registration from client metadata
-- ---------------------------------------------------------------------
SELECT appguard_register_client('multi', '{
	"client_name": "Multi Host App",
	"redirect_uris": ["https://App.multi.test/cb", "https://login.multi.test/cb", "https://app.multi.test/other",
					  "https://eu.multi.test:8443/cb", "com.multi.app:/oauth", "http://localhost:8080/cb"],
	"jwks_uri": "https://keys.multi.test/jwks.json",
	"logo_uri": "https://login.multi.test/logo.png",
	"token_endpoint_auth_method": "private_key_jwt",
	"grant_types": ["authorization_code", "refresh_token"]
}') - ARRAY['registered_at', 'updated_at'] AS registered;
SELECT host, port, roles, is_primary FROM client_hosts WHERE client_id = 'multi'
ORDER BY NOT is_primary, host;
-- the old signature watches every https redirect host too
SELECT appguard_register_client('two', 'Two Hosts', ARRAY['https://a.two.test/cb', 'https://b.two.test/cb'])
	-> 'hosts' AS hosts;

-- bad input: a clear error with an SQLSTATE, and nothing stored changes
SELECT count(*) AS clients, (SELECT count(*) FROM events) AS events,
	   (SELECT count(*) FROM client_hosts) AS hosts FROM clients \gset before_
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_register_client('x1', NULL::jsonb)$$),
	($$SELECT appguard_register_client('x1', '[]')$$),
	($$SELECT appguard_register_client('x1', '"https://a.x.test/"')$$),
	($$SELECT appguard_register_client('x1', '{}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": "https://a.x.test/"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": []}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": [1]}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": [null]}')$$),
	($$SELECT appguard_register_client('x1', '{"client_name": 7, "redirect_uris": ["https://a.x.test/"]}')$$),
	($$SELECT appguard_register_client('x1', '{"client_name": " ", "redirect_uris": ["https://a.x.test/"]}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": 5}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": "http://k.x.test/jwks"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": "https://192.0.2.1/jwks"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": "https://u@k.x.test/jwks"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": "https://k.x.test:99999/"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/"], "tos_uri": "https://bad_host!/tos"}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/", "https://[2001:db8::1]/cb"]}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/", "https://b.x.test:0/cb"]}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/", "https://localhost/cb"]}')$$),
	($$SELECT appguard_register_client('x1', '{"redirect_uris": ["https://a.x.test/cb", "https://a.x.test/cb"]}')$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.x.test/', 'https://127.0.0.1/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.x.test/', 'https://a.x.test/'])$$),
	($$SELECT appguard_register_client('x1', 'x', (SELECT array_agg('https://h' || i || '.x.test/') FROM generate_series(1, 21) i))$$),
	($$SELECT appguard_register_client('multi', '{"redirect_uris": ["https://a.x.test/"]}')$$),
	($$SELECT appguard_reregister_client('nobody', '{"redirect_uris": ["https://a.x.test/"]}')$$),
	($$SELECT appguard_reregister_client('multi', '{"redirect_uris": ["https://a.x.test/"], "jwks_uri": "ftp://k.x.test/"}')$$),
	($$SELECT appguard_update_client('multi', NULL, ARRAY['https://a.x.test/', 'https://b.x.test:/cb'])$$)
) AS t(sql);
SELECT count(*) = :before_clients AS clients_unchanged,
	   (SELECT count(*) FROM events) = :before_events AS events_unchanged,
	   (SELECT count(*) FROM client_hosts) = :before_hosts AS hosts_unchanged
FROM clients;
-- duplicate hosts are one watched host with every role: the same host in
-- two redirect URIs (any case), as a redirect host and as jwks_uri
SELECT appguard_register_client('dup', '{"redirect_uris": ["https://DUP.x.test/a", "https://dup.x.test/b",
	"https://dup.x.test:443/c"], "jwks_uri": "https://dup.x.test/jwks", "client_uri": "https://dup.x.test/"}')
	-> 'hosts' AS hosts;
-- 20 hosts are allowed
SELECT jsonb_array_length(appguard_register_client('twenty', 'Twenty',
	(SELECT array_agg('https://h' || i || '.x.test/') FROM generate_series(1, 20) i)) -> 'hosts') AS hosts;
SELECT appguard_unregister_client(c) FROM unnest(ARRAY['dup', 'twenty', 'two']) c;
SELECT count(*) AS hosts_left FROM client_hosts WHERE client_id IN ('dup', 'twenty', 'two');

-- ---------------------------------------------------------------------
-- Drift per host
-- ---------------------------------------------------------------------
-- every host measured, then a patient consents: the baseline is the
-- primary's snapshot, each other host's facts hang off it
SELECT snap('app.multi.test') AS s_app, snap('login.multi.test') AS s_login,
	   snap('eu.multi.test', 8443) AS s_eu, snap('keys.multi.test') AS s_keys \gset
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('m1', 'multi', 'alice'), ('m2', 'multi', 'bob');
SELECT token_id, baseline_snapshot_id = :s_app AS primary_baseline FROM tokens WHERE client_id = 'multi' ORDER BY 1;
-- the sweep plans every watched host
SELECT appguard_sweep_begin('0', '1 hour') AS sw \gset
SELECT host, port FROM sweep_hosts WHERE sweep_id = :sw AND host LIKE '%multi.test' ORDER BY host;
SELECT appguard_sweep_finish(:sw) ->> 'state' AS sweep_state;
-- a renewal of a secondary host changes nothing; its baseline is the
-- snapshot it had when the patients consented
SELECT snap('login.multi.test', 443, '{"tls.leaf.serial": "09", "tls.leaf.sha256": "ff"}') IS NOT NULL AS renewed;
SELECT host, how, snapshot_id = :s_login AS at_consent FROM baseline_hosts WHERE client_id = 'multi' ORDER BY host;
SELECT kind, detail FROM events WHERE client_id = 'multi' AND kind = 'host_baselines_taken' ORDER BY id;
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'multi';
-- a warn-level change of a secondary host: recorded, visible, suspends nothing
SELECT snap('eu.multi.test', 8443, '{"tls.leaf.issuer.O": "Other CA"}') IS NOT NULL AS issuer_changed;
SELECT host, reason, severity, field, old_value, new_value, active_grants FROM appguard_drift('multi');
SELECT appguard_drifted('multi') AS drifted, (SELECT drift_state FROM client_status WHERE client_id = 'multi');
SELECT reason, severity, snapshot_id IN (SELECT id FROM snapshots WHERE host = 'eu.multi.test') AS of_eu
FROM drifts WHERE client_id = 'multi';
-- a secondary redirect host changes organization: suspended, naming it
SELECT snap('login.multi.test', 443, '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') AS s_login2 \gset
SELECT token_id, status FROM tokens WHERE client_id = 'multi' ORDER BY 1;
SELECT host, port, roles, reasons, state, tokens_suspended, snapshot_id = :s_login2 AS by_that_snapshot,
	   host_baseline_snapshot_id = :s_login AS host_baseline, baseline_snapshot_id = :s_app AS grants_baseline
FROM suspensions WHERE client_id = 'multi';
SELECT su.id AS su_login FROM suspensions su WHERE client_id = 'multi' \gset
SELECT explained(:su_login) - 'changes' - 'consent' AS explained;
SELECT explained(:su_login) -> 'consent' AS consent;
SELECT regexp_replace(appguard_explain_html(:su_login, 'multi'), '.*(<p>The address that changed: [^\n]*</p>).*', '\1')
	AS page_names_the_address;
-- the primary and the other hosts are still compared: nothing more
SELECT snap('app.multi.test') IS NOT NULL AS primary_same, snap('keys.multi.test') IS NOT NULL AS keys_same;
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'multi';
SELECT drift_state FROM client_status WHERE client_id = 'multi';
-- persisting: no new suspension
SELECT snap('login.multi.test', 443, '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') IS NOT NULL AS again;
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'multi';

-- re-approval takes every host as it is now
SELECT appguard_reapprove('m1') ->> 'status' AS reapproved;
SELECT host, how FROM baseline_hosts bh JOIN tokens t ON t.baseline_snapshot_id = bh.baseline_snapshot_id
WHERE t.token_id = 'm1' ORDER BY host;
SELECT snap('login.multi.test', 443, '{"tls.leaf.subject.O": "Northwind Data Brokers LLC"}') IS NOT NULL AS same_again;
SELECT token_id, status FROM tokens WHERE client_id = 'multi' ORDER BY 1;

-- the jwks_uri host loses trust: suspended, in plain words
SELECT snap('keys.multi.test', 443, '{"tls.verified": false, "tls.verify_code": 10,
	"tls.verify_error": "certificate has expired"}') IS NOT NULL AS keys_untrusted;
SELECT host, roles, reasons, state FROM suspensions WHERE client_id = 'multi' ORDER BY id;
SELECT max(id) AS su_keys FROM suspensions WHERE client_id = 'multi' \gset
SELECT appguard_explain(:su_keys) -> 'address' AS address, appguard_explain(:su_keys) ->> 'summary' AS summary;
-- a primary host's suspension reads as before
SELECT appguard_reapprove('m1') ->> 'status' AS reapproved;
SELECT snap('app.multi.test', 443, '{"tls.leaf.validation": "DV", "tls.leaf.policies": ["2.23.140.1.2.1"]}')
	IS NOT NULL AS primary_dv;
SELECT max(id) AS su_primary FROM suspensions WHERE client_id = 'multi' \gset
SELECT host, roles, reasons FROM suspensions WHERE id = :su_primary;
SELECT appguard_explain(:su_primary) -> 'address' AS address, appguard_explain(:su_primary) ->> 'summary' AS summary;
SELECT appguard_explain_html(:su_primary, 'multi') LIKE '%The address that changed%' AS page_names_an_address;

-- ---------------------------------------------------------------------
-- Re-registration that adds and removes hosts
-- ---------------------------------------------------------------------
SELECT appguard_reapprove('m1') ->> 'status' AS m1, appguard_reapprove('m2') ->> 'status' AS m2;
-- new.multi.test was measured before it is added; later.multi.test never
SELECT snap('new.multi.test', 443, '{"tls.leaf.subject.O": "Other Org"}') AS s_new \gset
SELECT max(id) AS ev FROM events \gset
SELECT appguard_reregister_client('multi', '{"redirect_uris": ["https://app.multi.test/cb", "https://new.multi.test/cb",
	"https://later.multi.test/cb"], "jwks_uri": "https://keys.multi.test/jwks.json"}') -> 'hosts' AS hosts;
SELECT kind, detail - 'old' - 'new' AS detail FROM events WHERE id > :ev ORDER BY id;
SELECT host, how, snapshot_id = :s_new AS current_snapshot FROM baseline_hosts
WHERE client_id = 'multi' AND host IN ('new.multi.test', 'later.multi.test', 'login.multi.test', 'eu.multi.test')
ORDER BY host;
-- its first facts are the baseline: nobody approved them, so they are no change
SELECT snap('new.multi.test', 443, '{"tls.leaf.subject.O": "Other Org"}') IS NOT NULL AS new_same;
SELECT snap('later.multi.test', 443, '{"tls.leaf.subject.O": "Later Org"}') IS NOT NULL AS later_first;
SELECT DISTINCT host, how FROM baseline_hosts WHERE client_id = 'multi' AND host = 'later.multi.test';
SELECT token_id, status FROM tokens WHERE client_id = 'multi' ORDER BY 1;
-- a removed host is no longer evaluated
SELECT snap('login.multi.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS removed_host_changed;
SELECT token_id, status FROM tokens WHERE client_id = 'multi' ORDER BY 1;
-- the primary moves to a host that was a secondary one: grants keep their
-- baselines (a snapshot of the old primary), which the old primary, still
-- watched, keeps as its own
SELECT appguard_update_client('multi', NULL, ARRAY['https://new.multi.test/cb', 'https://app.multi.test/cb'])
	-> 'hosts' AS hosts;
SELECT host, how, snapshot_id = baseline_snapshot_id AS own FROM baseline_hosts
WHERE client_id = 'multi' AND host IN ('app.multi.test', 'new.multi.test') ORDER BY host;
SELECT count(*) AS grants_without_baseline FROM grant_states WHERE client_id = 'multi' AND baseline_snapshot_id IS NULL;
SELECT kind, detail FROM events WHERE id > :ev AND kind IN ('host_added', 'host_removed') ORDER BY id;
SELECT appguard_unregister_client('multi');

-- ---------------------------------------------------------------------
-- During a sweep: another host's suspension is pending until the sweep
-- ends, and the refresh check refuses its grants meanwhile (C fast path
-- and full check alike), as it does for the primary host's
-- ---------------------------------------------------------------------
SELECT appguard_register_client('pendhost', 'Pending Host', ARRAY['https://app.pendhost.test/cb', 'https://login.pendhost.test/cb'])
	IS NOT NULL AS registered;
SELECT snap('app.pendhost.test') IS NOT NULL AS s_app, snap('login.pendhost.test') IS NOT NULL AS s_login;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('ph1', 'pendhost', 'carol');
CREATE TABLE public.pendhost_grants (id int PRIMARY KEY, client text, status text NOT NULL DEFAULT 'active');
SELECT appguard_protect('public.pendhost_grants', 'client', 'status') IS NOT NULL AS protected;
INSERT INTO public.pendhost_grants (id, client) VALUES (1, 'pendhost');
SELECT appguard_check_refresh('ph1') AS before_sweep, hosts_undecided FROM clients WHERE client_id = 'pendhost';
SELECT appguard_sweep_begin('100 years', '1 hour') AS psweep \gset
SELECT set_config('appguard_lifecycle.sweep_id', :'psweep', false) IS NOT NULL AS in_sweep;
SELECT snap('login.pendhost.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS login_changed;
SELECT set_config('appguard_lifecycle.sweep_id', '', false) = '' AS out_of_sweep;
SELECT sweep_evaluate(:psweep);
SELECT error_uri AS pend_uri FROM suspensions WHERE client_id = 'pendhost' \gset
SELECT su.host, su.state, c.hosts_undecided
FROM suspensions su JOIN clients c USING (client_id) WHERE client_id = 'pendhost';
-- refused with the pending suspension's error_uri; the grants stay active
SELECT appguard_check_refresh('ph1') -> 'error' ->> 'error' AS p1,
	   appguard_check_refresh('ph1') -> 'error' ->> 'error_uri' = :'pend_uri' AS p1_its_uri,
	   appguard_check_refresh('public.pendhost_grants', '1') -> 'error' ->> 'error_uri' = :'pend_uri' AS row_its_uri;
SELECT token_key, state FROM grant_states WHERE client_id = 'pendhost' ORDER BY 1;
-- the full check refuses on its own (it returns the suspension that
-- refuses); the flag is what sends the fast path to it: lowered by hand,
-- the fast path (the primary unchanged) would allow
SELECT verify_grant('pendhost', g.baseline_snapshot_id) = su.id AS full_check_refuses
FROM grant_states g, suspensions su WHERE g.token_key = 'ph1' AND su.client_id = 'pendhost';
UPDATE clients SET hosts_undecided = false, hosts_drifted = false WHERE client_id = 'pendhost';
SELECT appguard_check_refresh('ph1') ->> 'allowed' AS fast_path_without_flag;
UPDATE clients SET hosts_undecided = true, hosts_drifted = true WHERE client_id = 'pendhost';
-- the sweep ends: applied, the flag lowered, the grants suspended
SELECT appguard_sweep_finish(:psweep) ->> 'suspended' AS suspended;
SELECT state FROM suspensions WHERE client_id = 'pendhost';
SELECT hosts_undecided FROM clients WHERE client_id = 'pendhost';
SELECT token_key, state FROM grant_states WHERE client_id = 'pendhost' ORDER BY 1;
SELECT appguard_check_refresh('ph1') -> 'error' ->> 'error_uri' = :'pend_uri' AS suspended_refused;
-- re-approved: allowed again
SELECT appguard_reapprove('ph1') ->> 'status' AS reapproved;
SELECT appguard_check_refresh('ph1') AS after_reapproval;
SELECT appguard_unprotect('public.pendhost_grants') IS NOT NULL AS unprotected;
DROP TABLE public.pendhost_grants;

-- ---------------------------------------------------------------------
-- After another host's suspension is applied: a rotated token of a
-- suspended consent, a new patient's first token, and a new row of a
-- table without subjects, all on the suspended baseline, join the
-- suspension: none of them refreshes (clients.hosts_drifted sends them
-- from the C fast paths to SQL, which holds them)
-- ---------------------------------------------------------------------
SELECT appguard_register_client('drifthost', 'Drift Host', ARRAY['https://app.drifthost.test/cb', 'https://login.drifthost.test/cb'])
	IS NOT NULL AS registered;
SELECT snap('app.drifthost.test') IS NOT NULL AS s_app, snap('login.drifthost.test') IS NOT NULL AS s_login;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('dh1', 'drifthost', 'dave');
CREATE TABLE public.drifthost_grants (id int PRIMARY KEY, client text, status text NOT NULL DEFAULT 'active');
SELECT appguard_protect('public.drifthost_grants', 'client', 'status') IS NOT NULL AS protected;
INSERT INTO public.drifthost_grants (id, client) VALUES (1, 'drifthost');
SELECT hosts_drifted FROM clients WHERE client_id = 'drifthost';
SELECT snap('login.drifthost.test', 443, '{"tls.leaf.subject.O": "Someone Else"}') IS NOT NULL AS login_changed;
SELECT su.host, su.state, su.tokens_suspended, c.hosts_drifted
FROM suspensions su JOIN clients c USING (client_id) WHERE client_id = 'drifthost';
SELECT error_uri AS drift_uri FROM suspensions WHERE client_id = 'drifthost' \gset
-- dave's token rotates; erin, a new patient, gets her first token; the
-- table without subjects gets a new row
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('dh2', 'drifthost', 'dave');
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('dh3', 'drifthost', 'erin');
INSERT INTO public.drifthost_grants (id, client) VALUES (2, 'drifthost');
SELECT token_id, status, error_uri = :'drift_uri' AS its_uri FROM refresh_tokens
WHERE client_id = 'drifthost' ORDER BY 1;
-- every one is refused with the suspension's error_uri; the table's new
-- row joins the suspension at its first check
SELECT k, appguard_check_refresh(k) -> 'error' ->> 'error_uri' = :'drift_uri' AS refused_with_its_uri
FROM unnest(ARRAY['dh1', 'dh2', 'dh3']) k;
SELECT appguard_check_refresh('public.drifthost_grants', '2') -> 'error' ->> 'error_uri' = :'drift_uri' AS row2_refused;
SELECT id, status FROM public.drifthost_grants ORDER BY id;
SELECT token_key, state, suspension_id IS NOT NULL AS held FROM grant_states WHERE client_id = 'drifthost' ORDER BY 1;
-- the flag and the held baseline (clients.held_baselines) are what send
-- the fast paths to SQL: either one is enough; both lowered by hand, a
-- rotation of erin's consent would be inserted active
UPDATE clients SET hosts_drifted = false WHERE client_id = 'drifthost';
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('dh4', 'drifthost', 'erin');
SELECT status AS without_flag FROM refresh_tokens WHERE token_id = 'dh4';
DELETE FROM refresh_tokens WHERE token_id = 'dh4';
SELECT held_baselines AS held FROM clients WHERE client_id = 'drifthost' \gset
UPDATE clients SET held_baselines = '{}' WHERE client_id = 'drifthost';
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('dh4', 'drifthost', 'erin');
SELECT status AS without_flag_or_held FROM refresh_tokens WHERE token_id = 'dh4';
DELETE FROM refresh_tokens WHERE token_id = 'dh4';
UPDATE clients SET held_baselines = :'held' WHERE client_id = 'drifthost';
SELECT note_hosts_drifted('drifthost');
SELECT hosts_drifted AS flag_again FROM clients WHERE client_id = 'drifthost';
-- the other host's facts come back: the drifted baseline has no active
-- grant left to compare, so its verdict, and the flag, stand (the SQL
-- paths decide this client's grants) until appguard_prune drops verdicts
-- no grant or consent uses
SELECT snap('login.drifthost.test') IS NOT NULL AS login_back;
SELECT hosts_drifted FROM clients WHERE client_id = 'drifthost';
SELECT appguard_unprotect('public.drifthost_grants') IS NOT NULL AS unprotected;
DROP TABLE public.drifthost_grants;

-- ---------------------------------------------------------------------
-- appguard.unreachable_grace: another watched host that stays
-- unmeasurable past the grace drifts as host_unreachable, counted from
-- its own newest successful snapshot (test/t/030 shows the primary's)
-- ---------------------------------------------------------------------
BEGIN;
SET LOCAL appguard.unreachable_grace = '1h';
SELECT appguard_register_client('gracehost', 'Grace Host', ARRAY['https://app.gracehost.test/cb', 'https://login.gracehost.test/cb'])
	IS NOT NULL AS registered;
SELECT snap('login.gracehost.test') IS NOT NULL AS s_login, snap('app.gracehost.test') IS NOT NULL AS s_app;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('gh1', 'gracehost', 'fay');
-- unreachable within the grace: an unknown, nothing happens
INSERT INTO snapshots (host, port, taken_at, status, facts)
VALUES ('login.gracehost.test', 443, clock_timestamp() + interval '30 minutes', 'connect_failed',
		facts('login.gracehost.test', 443, '{}', 'connect_failed'));
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'gracehost';
-- still unreachable past it: suspended, naming the host
INSERT INTO snapshots (host, port, taken_at, status, facts)
VALUES ('login.gracehost.test', 443, clock_timestamp() + interval '2 hours', 'connect_failed',
		facts('login.gracehost.test', 443, '{}', 'connect_failed'));
SELECT host, roles, reasons, state, diff FROM suspensions WHERE client_id = 'gracehost';
SELECT token_id, status FROM tokens WHERE client_id = 'gracehost';
ROLLBACK;
