-- appguard_consent_info: what the consent screen shows about an app
-- (domain always; organization and location only from a trusted OV or EV
-- certificate; ownership; level and label), what is recorded as shown,
-- and appguard_explain's "you were shown X, it is now Y".  No network:
-- snapshots are handcrafted facts (lifecycle_helpers.inc).  Everything
-- runs in one transaction that is rolled back, so the tests that share
-- this database afterwards see none of it.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
BEGIN;
SET LOCAL search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET LOCAL appguard.allowed_ports = '';

-- The consent screen's fields, without the snapshot id and time
CREATE FUNCTION public.consent(client text) RETURNS jsonb LANGUAGE sql AS $$
	SELECT appguard_consent_info(client) - ARRAY['snapshot_id', 'measured_at']
$$;

SELECT appguard_register_client('ov', 'Heart Tracker', ARRAY['https://app.heart.example.org/cb']) IS NOT NULL;
SELECT appguard_register_client('ev', 'Lung Diary', ARRAY['https://lung.example.co.uk:8443/cb']) IS NOT NULL;
SELECT appguard_register_client('dv', 'Step Counter', ARRAY['https://steps.example.net/cb']) IS NOT NULL;
SELECT appguard_register_client('bad', 'Shady Scanner', ARRAY['https://scan.example.com/cb']) IS NOT NULL;
SELECT appguard_register_client('none', 'Never Measured', ARRAY['https://never.example.org/cb']) IS NOT NULL;

-- trusted OV certificate with the ownership record: the organization,
-- its location, and level organization
SELECT snap('app.heart.example.org', 443, '{"dns.ownership_ids": ["ov"], "dns.registrable_domain": "example.org"}') IS NOT NULL;
SELECT jsonb_pretty(consent('ov'));
-- EV, location parts partly missing, a multi-label public suffix (the
-- domain comes from the redirect URI, not from the measured facts)
SELECT snap('lung.example.co.uk', 8443, '{"tls.leaf.validation": "EV", "tls.leaf.policies": ["2.23.140.1.1"],
	"tls.leaf.subject": {"CN": "lung.example.co.uk", "O": "Lung Diary Ltd", "C": "GB"}}') IS NOT NULL;
SELECT consent('ev') ->> 'domain' AS domain, consent('ev') ->> 'location' AS location,
	   consent('ev') ->> 'label' AS label;
-- DV: no organization even though the subject carries an O; ownership
-- verified gives level domain
SELECT snap('steps.example.net', 443, '{"tls.leaf.validation": "DV", "tls.leaf.policies": ["2.23.140.1.2.1"],
	"dns.ownership_ids": ["dv", "other"]}') IS NOT NULL;
SELECT jsonb_pretty(consent('dv'));
-- OV but untrusted: no organization; an ownership record for another
-- client does not count
SELECT snap('scan.example.com', 443, '{"tls.verified": false, "tls.verify_code": 20,
	"tls.verify_error": "unable to get local issuer certificate", "dns.ownership_ids": ["ov"]}') IS NOT NULL;
SELECT jsonb_pretty(consent('bad'));
-- never measured: the live snapshot fails (no port allowed here), so only
-- the domain and the name, and nothing is recorded as shown
SELECT consent('none');
SELECT appguard_consent_info('none') -> 'snapshot_id' AS snapshot_id;
SELECT status FROM snapshots WHERE host = 'never.example.org';

-- the snapshot shown is the one a grant issued now takes as baseline
SELECT (appguard_consent_info('ov') ->> 'snapshot_id')::bigint AS shown_snapshot \gset
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-ov', 'ov', 'patient-1');
SELECT baseline_snapshot_id = :shown_snapshot AS baseline_is_what_was_shown FROM public.tokens WHERE token_id = 't-ov';
SELECT c.client_id, c.snapshot_id = s.id AS latest, c.shown ->> 'label' AS label
FROM consent_shown c JOIN clients cl USING (client_id)
	 JOIN LATERAL (SELECT max(id) AS id FROM snapshots WHERE host = cl.host) s ON true
ORDER BY 1;
-- shown again: one row per client and snapshot
SELECT consent('ov') IS NOT NULL, count(*) AS rows FROM consent_shown WHERE client_id = 'ov';

-- bad input
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_consent_info(NULL)$$),
	($$SELECT appguard_consent_info('')$$),
	($$SELECT appguard_consent_info('nobody')$$)
) AS t(sql);

-- The organization behind the app changes: the grant is suspended and the
-- explanation says what the patient was shown and what it is now
SELECT appguard_update_client('ov', 'Heart Tracker Pro') ->> 'name' AS renamed;
SELECT snap('app.heart.example.org', 443, '{"dns.ownership_ids": ["ov"], "dns.registrable_domain": "example.org",
	"tls.leaf.subject.O": "Data Harvest Ltd", "tls.leaf.subject.L": "Road Town", "tls.leaf.subject.ST": null,
	"tls.leaf.subject.C": "VG"}') IS NOT NULL AS drifted;
SELECT status FROM public.tokens WHERE token_id = 't-ov';
SELECT jsonb_pretty(explained(suspension_id) -> 'consent') FROM public.tokens WHERE token_id = 't-ov';
SELECT explained(suspension_id) #>> '{consent,text}' AS text FROM public.tokens WHERE token_id = 't-ov';
-- what the screen shows now
SELECT consent('ov') ->> 'label' AS label_now;
-- re-approval: the new baseline is what is shown now
SELECT appguard_reapprove('t-ov') ->> 'reapproved' AS reapproved;

-- A baseline nobody was shown is described from its snapshot: trust lost
-- on the DV app (nothing the screen shows changes) ...
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-dv', 'dv', 'patient-2');
DELETE FROM consent_shown WHERE client_id = 'dv';
SELECT snap('steps.example.net', 443, '{"tls.leaf.validation": "DV", "tls.leaf.policies": ["2.23.140.1.2.1"],
	"dns.ownership_ids": ["dv", "other"], "tls.verified": false, "tls.verify_code": 10,
	"tls.verify_error": "certificate has expired"}') IS NOT NULL AS expired;
SELECT explained(suspension_id) -> 'reasons' AS reasons,
	   explained(suspension_id) -> 'consent' -> 'changes' AS consent_changes,
	   explained(suspension_id) #>> '{consent,text}' AS text
FROM public.tokens WHERE token_id = 't-dv';
-- ... and the ownership record vanishing on the EV app: the screen's
-- organization stays, the ownership goes
SELECT snap('lung.example.co.uk', 8443, '{"tls.leaf.validation": "EV", "tls.leaf.policies": ["2.23.140.1.1"],
	"tls.leaf.subject": {"CN": "lung.example.co.uk", "O": "Lung Diary Ltd", "C": "GB"}, "dns.ownership_ids": ["ev"]}') IS NOT NULL;
SELECT appguard_consent_info('ev') ->> 'label' AS label;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-ev', 'ev', 'patient-3');
SELECT snap('lung.example.co.uk', 8443, '{"tls.leaf.validation": "EV", "tls.leaf.policies": ["2.23.140.1.1"],
	"tls.leaf.subject": {"CN": "lung.example.co.uk", "O": "Lung Diary Ltd", "C": "GB"}}') IS NOT NULL AS record_gone;
SELECT status FROM public.tokens WHERE token_id = 't-ev';
SELECT explained(suspension_id) -> 'reasons' AS reasons,
	   explained(suspension_id) -> 'consent' -> 'changes' AS consent_changes,
	   explained(suspension_id) #>> '{consent,text}' AS text
FROM public.tokens WHERE token_id = 't-ev';

-- Retention: shown rows go with their client, and with their snapshots
-- (deleted here by hand: those appguard_prune would delete, which no
-- grant, suspension or client needs)
SELECT appguard_unregister_client('bad');
SELECT count(*) AS bad_rows FROM consent_shown WHERE client_id = 'bad';
SELECT count(*) AS shown_rows FROM consent_shown;
DELETE FROM snapshots s
WHERE s.id IN (SELECT c.snapshot_id FROM consent_shown c)
  AND NOT EXISTS (SELECT FROM suspensions u WHERE s.id IN (u.baseline_snapshot_id, u.snapshot_id, u.first_drift_snapshot_id))
  AND NOT EXISTS (SELECT FROM grants g WHERE g.baseline_snapshot_id = s.id)
  AND NOT EXISTS (SELECT FROM clients c WHERE s.id IN (c.last_snapshot_id, c.last_ok_snapshot_id));
SELECT c.client_id, EXISTS (SELECT FROM grants g WHERE g.client_id = c.client_id
								 AND g.baseline_snapshot_id = c.snapshot_id) AS a_grants_baseline
FROM consent_shown c ORDER BY 1, 2;

-- Privileges: the auth server's role may call it; PUBLIC may not
SELECT has_function_privilege('appguard_auth_server', 'appguard_consent_info(text)', 'EXECUTE') AS auth_server,
	   has_function_privilege('public', 'appguard_consent_info(text)', 'EXECUTE') AS public,
	   has_table_privilege('appguard_operator', 'appguard.consent_shown', 'SELECT') AS operator_reads;

ROLLBACK;
