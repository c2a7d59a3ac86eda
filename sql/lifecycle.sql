-- The drift and suspension lifecycle without network: snapshots are
-- handcrafted facts inserted into appguard.snapshots, which fires the same
-- triggers as appguard_snapshot does.  Clients, baselines, each suspend
-- reason, warn reasons, renewals, failed measurements, per-grant
-- baselines, confirmations, the refresh check, the explanation,
-- re-approval, bad input.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
-- Live snapshots (baselines) must not reach the network in this test:
-- with no port allowed they are stored as 'blocked' at once.
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET appguard.allowed_ports = '';

-- ---------------------------------------------------------------------
-- Clients
-- ---------------------------------------------------------------------
SELECT appguard_register_client('app1', 'Health App',
	ARRAY['https://App.Example.ORG/callback', 'com.example.app:/oauth', 'http://localhost:8080/cb'])
	- ARRAY['registered_at', 'updated_at'] AS registered;
SELECT appguard_register_client('app2', 'Port App', ARRAY['https://app2.example.org:8443/cb'])
	->> 'port' AS port;
-- bad input: a clear error with an SQLSTATE, and nothing stored changes
SELECT count(*) AS clients, (SELECT count(*) FROM events) AS events FROM clients \gset before_
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_register_client(NULL, 'x', ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client('', 'x', ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client(E'bad\nid', 'x', ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client('app1', 'Again', ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client('x1', NULL, ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client('x1', '   ', ARRAY['https://a.example.org/'])$$),
	($$SELECT appguard_register_client('x1', 'x', NULL)$$),
	($$SELECT appguard_register_client('x1', 'x', '{}')$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY[NULL, 'https://a.example.org/'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org/', NULL])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['http://a.example.org/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['com.example.app:/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://127.0.0.1/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://[::1]/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://user@a.example.org/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org/cb#frag'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org:0/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org:99999/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org:/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.exa mple.org/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https:///cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['a.example.org/cb'])$$),
	($$SELECT appguard_register_client('x1', 'x', ARRAY['https://a.example.org/', 'http:/x'])$$),
	($$SELECT appguard_update_client('nobody', 'x')$$),
	($$SELECT appguard_update_client('app1')$$),
	($$SELECT appguard_update_client('app1', NULL, ARRAY['ftp://a.example.org/'])$$),
	($$SELECT appguard_unregister_client('nobody')$$)
) AS t(sql);
SELECT count(*) = :before_clients AS clients_unchanged,
	   (SELECT count(*) FROM events) = :before_events AS events_unchanged
FROM clients;
SELECT client_id, name, host, port, redirect_uris FROM clients ORDER BY client_id;

-- the update path: a new name keeps the watched host
SELECT appguard_update_client('app2', 'Port App 2') ->> 'name' AS renamed;
SELECT appguard_unregister_client('app2');
SELECT kind, client_id FROM events ORDER BY id;

-- ---------------------------------------------------------------------
-- Baselines
-- ---------------------------------------------------------------------
SELECT snap('app.example.org') AS s1 \gset
-- the registrable domain comes from the facts until a C function gives it
SELECT registrable_domain, last_status, last_ok_snapshot_id = :s1 AS cached FROM clients
WHERE client_id = 'app1';
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('a1', 'app1', 'alice');
SELECT * FROM tok('a1');
-- a token of an unregistered client is left alone, and counted
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('u1', 'unknown-app', 'ulla');
SELECT * FROM tok('u1');
SELECT * FROM unregistered_grants;
SELECT appguard_check_refresh('u1');
-- a token cannot be created suspended
SELECT try($$INSERT INTO appguard.refresh_tokens (token_id, client_id, subject, status)
			 VALUES ('x', 'app1', 'x', 'suspended')$$);

-- no recent snapshot: a live one within appguard.baseline_timeout_ms; it
-- fails here (no port allowed), so the baseline is pending and the INSERT
-- goes through
SELECT appguard_register_client('pend', 'Pending App', ARRAY['https://pend.example.org/']) IS NOT NULL;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('p1', 'pend', 'pat');
SELECT * FROM tok('p1');
SELECT status, facts ->> 'error' AS error FROM snapshots WHERE host = 'pend.example.org';
-- a failed live attempt less than a minute ago is not repeated
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('p2', 'pend', 'pia');
SELECT count(*) AS live_attempts FROM snapshots WHERE host = 'pend.example.org';
SELECT pending_baselines, drift_state FROM client_status WHERE client_id = 'pend';
SELECT appguard_check_refresh('p1');
-- the client's next successful snapshot becomes their baseline
SELECT snap('pend.example.org') AS p_ok \gset
SELECT * FROM tok('p1') UNION ALL SELECT * FROM tok('p2');
SELECT kind, detail - ARRAY['registered_at', 'updated_at'] AS detail FROM events
WHERE client_id = 'pend' ORDER BY id;
-- appguard.baseline_max_age: an older snapshot is not a baseline
SET appguard.baseline_max_age = 0;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('p3', 'pend', 'pol');
SELECT * FROM tok('p3');
RESET appguard.baseline_max_age;
SELECT snap('pend.example.org') IS NOT NULL AS measured;
SELECT * FROM tok('p3');

-- ---------------------------------------------------------------------
-- Renewals, warnings and failed measurements suspend nothing
-- ---------------------------------------------------------------------
-- renewal with the same identity: new key, serial, intermediate, dates
SELECT snap('app.example.org', 443, '{"tls.leaf.serial": "02", "tls.leaf.sha256": "ee00", "tls.leaf.spki_sha256": "ee01",
	"tls.leaf.tbs_sha256": "ee02", "tls.leaf.not_before": "2026-11-01T00:00:00Z", "tls.leaf.not_after": "2027-11-01T00:00:00Z",
	"tls.chain": [{"subject": "CN=app", "issuer": "CN=Test CA R2", "sha256": "ee00"}, {"subject": "CN=Test CA R2", "issuer": "CN=Test Root", "sha256": "ee03"}],
	"tls.leaf.subject.O": "EXAMPLE HEALTH LLC", "dns.a": ["192.0.2.99"]}') IS NOT NULL AS renewed;
SELECT * FROM tok('a1');
SELECT count(*) AS drifts_recorded FROM drifts WHERE client_id = 'app1';
SELECT streak, drifting, last_diff FROM baseline_state WHERE client_id = 'app1';
-- a resolver outage and a refused connection: unknowns, never changes
SELECT snap('app.example.org', 443, '{"dns.rcode": "TIMEOUT", "dns.queries": {"A": "TIMEOUT", "AAAA": "TIMEOUT", "NS": "TIMEOUT", "TXT": "TIMEOUT", "CAA": "TIMEOUT"}, "dns.a": [], "dns.ns": []}', 'dns_failed') IS NOT NULL AS outage;
SELECT snap('app.example.org', 443, '{}', 'connect_failed') IS NOT NULL AS refused;
SELECT * FROM tok('a1');
SELECT latest_status, drift_state, active_grants, suspended_grants FROM client_status WHERE client_id = 'app1';
-- each warn reason is recorded and suspends nothing
SELECT snap('app.example.org', 443, '{"tls.leaf.issuer.O": "Other CA", "dns.ns": ["ns1.other.net"],
	"dns.cname": ["edge.cdn.example.net"], "dns.caa": [{"flags": 0, "tag": "issue", "value": "other-ca.example"}],
	"tls.version": "TLSv1.1", "dns.ad": false}') IS NOT NULL AS warned;
SELECT * FROM tok('a1');
SELECT reason, severity, field, old_value, new_value FROM drifts
WHERE client_id = 'app1' ORDER BY reason, field;
SELECT drift_state FROM client_status WHERE client_id = 'app1';
-- the same differences again are not recorded again
SELECT snap('app.example.org', 443, '{"tls.leaf.issuer.O": "Other CA", "dns.ns": ["ns1.other.net"],
	"dns.cname": ["edge.cdn.example.net"], "dns.caa": [{"flags": 0, "tag": "issue", "value": "other-ca.example"}],
	"tls.version": "TLSv1.1", "dns.ad": false}') IS NOT NULL AS warned_again;
SELECT count(*) AS drifts_recorded FROM drifts WHERE client_id = 'app1';
SELECT appguard_drifted('app1');
SELECT reason, severity, active_grants FROM appguard_drift('app1') ORDER BY reason;

-- ---------------------------------------------------------------------
-- Each suspend reason suspends, with its reason code and diff
-- ---------------------------------------------------------------------
CREATE TABLE reason_cases (client_id text, baseline jsonb, drifted jsonb, status text);
INSERT INTO reason_cases VALUES
	('c-trust', '{}', '{"tls.verified": false, "tls.verify_code": 10, "tls.verify_error": "certificate has expired"}', 'ok'),
	('c-class', '{}', '{"tls.leaf.validation": "DV", "tls.leaf.policies": ["2.23.140.1.2.1"]}', 'ok'),
	('c-identity', '{}', '{"tls.leaf.subject.O": "Acme Data Brokers", "tls.leaf.subject.L": "Reno"}', 'ok'),
	('c-owner', '{"dns.txt": ["appguard-client-id=c-owner"], "dns.ownership_ids": ["c-owner"]}', '{}', 'ok'),
	('c-gone', '{}', '{"dns.rcode": "NXDOMAIN", "dns.queries": {"A": "NXDOMAIN", "AAAA": "NXDOMAIN", "NS": "NXDOMAIN", "TXT": "NXDOMAIN", "CAA": "NXDOMAIN"}, "dns.a": [], "dns.ns": []}', 'dns_failed');
SELECT count(appguard_register_client(client_id, 'App ' || client_id,
									  ARRAY['https://' || client_id || '.example.com/cb'])) AS registered
FROM reason_cases;
SELECT count(snap(client_id || '.example.com', 443, baseline)) AS baselines FROM reason_cases;
INSERT INTO refresh_tokens (token_id, client_id, subject)
SELECT client_id || '-token', client_id, 'someone' FROM reason_cases;
-- (NOTIFY appguard_suspension is checked by the isolation specs)
SELECT count(snap(client_id || '.example.com', 443, drifted, status)) AS drifted FROM reason_cases;
SELECT t.client_id, t.status, s.reasons, s.state, s.tokens_suspended,
	   t.error_uri = error_uri(s.id, t.client_id) AS error_uri_ok
FROM public.tokens t JOIN suspensions s ON s.id = t.suspension_id
WHERE t.client_id LIKE 'c-%' ORDER BY t.client_id;
SELECT s.client_id, e ->> 'reason' AS reason, e ->> 'field' AS field, e -> 'old' AS old, e -> 'new' AS new
FROM suspensions s, jsonb_array_elements(s.diff) e
WHERE s.client_id LIKE 'c-%' ORDER BY 1, 2, 3;
SELECT regexp_replace(appguard_check_refresh('c-identity-token')::text, 'suspensions/[0-9]+', 'suspensions/N')::jsonb
	AS refused;
SELECT jsonb_pretty(explained(suspension_id)) FROM public.tokens WHERE token_id = 'c-identity-token';
SELECT explained(suspension_id) -> 'changes' -> 0 ->> 'text' AS change FROM public.tokens
WHERE client_id LIKE 'c-%' ORDER BY client_id;
SELECT kind, count(*) FROM events WHERE client_id LIKE 'c-%' GROUP BY kind ORDER BY kind;
SELECT suspension_id IS NOT NULL AS listed, name, reasons, still_suspended FROM open_suspensions
WHERE client_id LIKE 'c-%' ORDER BY client_id;
-- a suspended token's later snapshots do not suspend it again
SELECT snap('c-trust.example.com', 443, '{"tls.verified": false}') IS NOT NULL AS again;
SELECT count(*) AS suspensions FROM suspensions WHERE client_id = 'c-trust';

-- error_uri: every value URL-encoded
SET appguard.error_uri_template = 'https://auth.example.org/why/{suspension_id}?client={client_id}&lang=en';
SELECT replace(error_uri(42, 'app 1/é&x=y'), '42', 'N') AS error_uri;
RESET appguard.error_uri_template;

-- ---------------------------------------------------------------------
-- Per-grant baselines and re-approval
-- ---------------------------------------------------------------------
SELECT appguard_register_client('pg', 'Per Grant', ARRAY['https://pg.example.org/']) IS NOT NULL;
SELECT snap('pg.example.org') IS NOT NULL AS first;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('old', 'pg', 'olga');
-- the organization changes: the older grant is suspended
SELECT snap('pg.example.org', 443, '{"tls.leaf.subject.O": "New Owner GmbH"}') IS NOT NULL AS changed;
-- a patient who consents now consents to the new organization
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('new', 'pg', 'nina');
SELECT snap('pg.example.org', 443, '{"tls.leaf.subject.O": "New Owner GmbH"}') IS NOT NULL AS next_sweep;
SELECT token_id, (tok(token_id)).* FROM (VALUES ('old'), ('new')) v(token_id);
SELECT appguard_check_refresh('old') -> 'error' ->> 'error' AS old, appguard_check_refresh('new') AS new;
-- re-approval: a new baseline (the current snapshot), recorded
SELECT appguard_reapprove('old') - ARRAY['suspension_id', 'baseline_snapshot_id'] AS reapproved;
SELECT * FROM tok('old');
SELECT appguard_check_refresh('old');
SELECT kind, token_key, detail ? 'baseline_snapshot_id' AS recorded FROM events
WHERE client_id = 'pg' AND kind = 'reapproved';
-- the next sweep leaves it alone
SELECT snap('pg.example.org', 443, '{"tls.leaf.subject.O": "New Owner GmbH", "tls.leaf.serial": "77"}') IS NOT NULL AS later;
SELECT token_id, (tok(token_id)).* FROM (VALUES ('old'), ('new')) v(token_id);
-- re-approving an active token changes nothing
SELECT appguard_reapprove('new') - 'baseline_snapshot_id' AS unchanged;

-- ---------------------------------------------------------------------
-- appguard.confirmations = 2
-- ---------------------------------------------------------------------
SET appguard.confirmations = 2;
SELECT appguard_register_client('conf', 'Confirm App', ARRAY['https://conf.example.org/']) IS NOT NULL;
SELECT snap('conf.example.org') IS NOT NULL AS first;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('k1', 'conf', 'kim');
-- drift, then a successful snapshot without drift: the count starts over
SELECT snap('conf.example.org', 443, '{"tls.verified": false}') IS NOT NULL AS drift_1;
SELECT streak, drifting FROM baseline_state WHERE client_id = 'conf';
SELECT snap('conf.example.org') IS NOT NULL AS fine_again;
SELECT streak, drifting FROM baseline_state WHERE client_id = 'conf';
SELECT snap('conf.example.org', 443, '{"tls.verified": false}') IS NOT NULL AS drift_1_again;
SELECT (tok('k1')).status, streak FROM baseline_state WHERE client_id = 'conf';
-- a failed measurement neither confirms nor resets
SELECT snap('conf.example.org', 443, '{}', 'timeout') IS NOT NULL AS timed_out;
SELECT (tok('k1')).status, streak, drifting FROM baseline_state WHERE client_id = 'conf';
SELECT snap('conf.example.org', 443, '{"tls.verified": false}') IS NOT NULL AS drift_2;
SELECT (tok('k1')).status, streak FROM baseline_state WHERE client_id = 'conf';
SELECT explained(suspension_id) -> 'reasons' AS reasons FROM public.tokens WHERE token_id = 'k1';
RESET appguard.confirmations;

-- ---------------------------------------------------------------------
-- The refresh check and re-approval: bodies, states, bad input
-- ---------------------------------------------------------------------
-- the auth server revokes a token: refused, and re-approval does not revive it
UPDATE refresh_tokens SET status = 'revoked' WHERE token_id = 'new';
SELECT appguard_check_refresh('new');
SELECT try($$SELECT appguard_reapprove('new')$$);
-- only appguard suspends, and only re-approval reactivates
SELECT try($$UPDATE appguard.refresh_tokens SET status = 'suspended' WHERE token_id = 'a1'$$);
SELECT try($$UPDATE appguard.refresh_tokens SET status = 'active' WHERE token_id = 'k1'$$);
-- revoking a suspended token is the auth server's right
SELECT try($$UPDATE appguard.refresh_tokens SET status = 'revoked' WHERE token_id = 'c-gone-token'$$);
SELECT appguard_check_refresh('c-gone-token');
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_check_refresh(NULL::text)$$),
	($$SELECT appguard_check_refresh('no-such-token')$$),
	($$SELECT appguard_reapprove(NULL::text)$$),
	($$SELECT appguard_reapprove('no-such-token')$$),
	($$SELECT appguard_explain(NULL)$$),
	($$SELECT appguard_explain(-1)$$),
	($$SELECT appguard_drift('nobody')$$),
	($$SELECT appguard_drifted(NULL)$$)
) AS t(sql);
-- a refresh is recorded
SELECT appguard_check_refresh('a1');
SELECT last_refreshed_at IS NOT NULL AS recorded FROM public.tokens WHERE token_id = 'a1';

-- ---------------------------------------------------------------------
-- Snapshots out of order, and grants the fan-out missed
-- ---------------------------------------------------------------------
SELECT appguard_register_client('ooo', 'Out Of Order', ARRAY['https://ooo.example.org/']) IS NOT NULL;
SELECT snap('ooo.example.org') AS ooo_first \gset
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('o1', 'ooo', 'otto');
-- a snapshot older than the client's latest is stored but not evaluated
INSERT INTO snapshots (host, port, taken_at, status, facts)
VALUES ('ooo.example.org', 443, now() - interval '1 day', 'ok',
		facts('ooo.example.org', 443, '{"tls.verified": false}'));
SELECT * FROM tok('o1');
-- A grant issued while a drifting snapshot was being evaluated is not
-- seen by that evaluation's fan-out (simulated here by giving it the old
-- baseline after the fact): its refresh check compares it and suspends it.
SELECT snap('ooo.example.org', 443, '{"tls.leaf.subject.O": "Somebody Else"}') IS NOT NULL AS drifted;
SELECT * FROM tok('o1');
SELECT restore_token('o2', 'ooo', 'oda', :ooo_first);
SELECT * FROM tok('o2');
SELECT appguard_check_refresh('o2') -> 'error' ->> 'error' AS refused;
SELECT * FROM tok('o2');
SELECT count(*) AS suspensions, sum(tokens_suspended) AS tokens FROM suspensions WHERE client_id = 'ooo';
-- likewise a baseline that no evaluation has seen at all
SELECT appguard_register_client('late', 'Late App', ARRAY['https://late.example.org/']) IS NOT NULL;
SELECT snap('late.example.org') AS late_first \gset
SELECT snap('late.example.org', 443, '{"tls.leaf.validation": null, "tls.leaf.policies": []}') IS NOT NULL AS drifted;
SELECT restore_token('l1', 'late', 'lea', :late_first);
SELECT count(*) AS verdicts FROM baseline_state WHERE client_id = 'late';
SELECT appguard_check_refresh('l1') -> 'error' ->> 'error' AS refused;
SELECT (tok('l1')).status, s.reasons FROM public.tokens t JOIN suspensions s ON s.id = t.suspension_id
WHERE t.token_id = 'l1';

-- every table of the lifecycle is readable by operators only
SELECT count(*) AS public_grants FROM information_schema.role_table_grants
WHERE table_schema = 'appguard' AND grantee = 'PUBLIC';
