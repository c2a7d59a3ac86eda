-- The rows test/upgrade.sh adds, after test/upgrade/fixture.sql, to every
-- database it compares once it runs the working tree's version (the
-- upgraded database A, the fresh B): rows of tables and columns the last
-- release does not have, made through the working tree's API.  Keep it
-- deterministic, as fixture.sql.
\set ON_ERROR_STOP 1
SELECT pg_catalog.set_config('search_path',
	pg_catalog.quote_ident(n.nspname) || ', appguard, public', false) IS NOT NULL AS search_path_set
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'appguard';
SET appguard.allowed_ports = '';

-- hosts of a client (0.2.0): client_hosts, baseline_hosts,
-- baseline_host_state, a suspension naming a secondary host
SELECT appguard_register_client('fx-hosts', '{"client_name": "Hosts App",
	"redirect_uris": ["https://app.hosts.fixture.test/cb", "https://login.hosts.fixture.test/cb"],
	"jwks_uri": "https://keys.hosts.fixture.test/jwks"}') IS NOT NULL AS registered;
SELECT snap('app.hosts.fixture.test') IS NOT NULL AS measured, snap('login.hosts.fixture.test') IS NOT NULL AS measured,
	   snap('keys.hosts.fixture.test') IS NOT NULL AS measured;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('fx-tok-hosts', 'fx-hosts', 'patient-3');
SELECT snap('login.hosts.fixture.test', 443, '{"tls.leaf.subject.O": "Other Org"}') IS NOT NULL AS drifted;
SELECT snap('keys.hosts.fixture.test') IS NOT NULL AS measured, snap('new.hosts.fixture.test') IS NOT NULL AS measured;
SELECT appguard_reregister_client('fx-hosts', '{"redirect_uris": ["https://app.hosts.fixture.test/cb",
	"https://login.hosts.fixture.test/cb", "https://new.hosts.fixture.test/cb"],
	"jwks_uri": "https://keys.hosts.fixture.test/jwks"}') IS NOT NULL AS reregistered;
