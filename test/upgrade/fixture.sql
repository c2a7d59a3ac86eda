-- The rows test/upgrade.sh gives every database it compares: run by psql
-- right after CREATE EXTENSION appguard and sql/lifecycle_helpers.inc
-- (public.snap stores a handcrafted snapshot, no network).
--
-- It MUST put at least one row in every table of the extension: the test
-- fails, naming the table, when one stays empty.  A new table needs a line
-- here.
--
-- It runs against the previous release (the database that is then
-- upgraded) and against the working tree (the fresh install), so it calls
-- the API by unqualified names (the search_path below finds them in the
-- extension's schema or in appguard) and touches tables only where the API
-- is a table.  Keep it deterministic: the same statements must give the
-- same rows (test/upgrade/rows.sql masks times and backend pids only).
\set ON_ERROR_STOP 1
SELECT pg_catalog.set_config('search_path',
	pg_catalog.quote_ident(n.nspname) || ', appguard, public', false) IS NOT NULL AS search_path_set
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'appguard';
-- no network: a live measurement is stored as 'blocked' at once
SET appguard.allowed_ports = '';
-- the breaker trips on one host (below)
SET appguard.mass_drift_min_hosts = 1;

-- clients (and events), a per-client policy (policy has its rows from the install)
SELECT appguard_register_client('fx-app', 'Fixture App', ARRAY['https://app.fixture.test/cb']) IS NOT NULL AS registered;
SELECT appguard_register_client('fx-held', 'Held App', ARRAY['https://held.fixture.test/cb']) IS NOT NULL AS registered;
INSERT INTO appguard.client_policy (client_id, reason, severity)
SELECT 'fx-app', r.reason, 'warn' FROM appguard_drift_reasons() r ORDER BY r.reason LIMIT 1;

-- baselines (snapshots), what the consent screen showed
SELECT snap('app.fixture.test') IS NOT NULL AS baseline, snap('held.fixture.test') IS NOT NULL AS baseline;
SELECT appguard_consent_info('fx-app') IS NOT NULL AS shown;

-- grants: appguard's own token table and a protected table of the host's
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
VALUES ('fx-tok-app', 'fx-app', 'patient-1'), ('fx-tok-held', 'fx-held', 'patient-2');
CREATE TABLE public.fixture_tokens (
	id			integer PRIMARY KEY,
	client_id	text NOT NULL,
	status		text NOT NULL DEFAULT 'active',
	error_uri	text
);
SELECT appguard_protect('public.fixture_tokens', 'client_id', 'status', 'error_uri') IS NOT NULL AS protected;
INSERT INTO public.fixture_tokens (id, client_id) VALUES (1, 'fx-app'), (2, 'fx-held');

-- a drift outside a sweep: drifts, baseline state, a suspension applied
SELECT snap('app.fixture.test', 443, '{"tls.verified": false}') IS NOT NULL AS drifted;

-- a sweep in which the other host drifts: the breaker holds its suspension
SELECT appguard_sweep_begin('0', '1 hour') AS fixture_sweep \gset
SELECT pg_catalog.set_config('appguard_lifecycle.sweep_id', :'fixture_sweep', false) IS NOT NULL AS in_sweep;
SELECT snap('held.fixture.test', 443, '{"tls.leaf.validation": "DV"}') IS NOT NULL AS drifted;
SELECT pg_catalog.set_config('appguard_lifecycle.sweep_id', '', false) IS NOT NULL AS out_of_sweep;
SELECT appguard_sweep_finish(:fixture_sweep) IS NOT NULL AS finished;
