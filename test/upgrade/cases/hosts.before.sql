-- Upgrade case "hosts", run on the last release (test/upgrade.sh): clients
-- whose other redirect URIs the release recorded without watching them,
-- one of them an address appguard cannot watch; baselines and a
-- suspension taken by the release.
\set ON_ERROR_STOP 1
SET search_path = public, appguard;
SET appguard.allowed_ports = '';
SELECT appguard_register_client('up-multi', 'Multi', ARRAY['https://app.up.test/cb', 'https://login.up.test/cb',
	'https://app.up.test/other', 'com.up.app:/cb']) IS NOT NULL AS registered;
SELECT appguard_register_client('up-ip', 'Address', ARRAY['https://app.ip.test/cb', 'https://192.0.2.7/cb'])
	IS NOT NULL AS registered;
SELECT snap('app.up.test') IS NOT NULL AS m, snap('login.up.test') IS NOT NULL AS m, snap('app.ip.test') IS NOT NULL AS m;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('up-t1', 'up-multi', 'p1'), ('up-t2', 'up-ip', 'p2');
SELECT snap('app.ip.test', 443, '{"tls.verified": false}') IS NOT NULL AS drifted;
