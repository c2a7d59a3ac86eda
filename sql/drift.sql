-- Drift: what counts as a change between two facts documents
-- (appguard_facts_diff), the severity policy, and appguard_diff on stored
-- snapshots.  No network traffic: every document is written here.
SET search_path = appguard, public;
\pset null '(null)'

CREATE TEMP TABLE facts (name text PRIMARY KEY, doc jsonb NOT NULL);

-- A document as appguard_snapshot() wrote it in the smoke test (a
-- self-signed certificate without a validation policy)
INSERT INTO facts VALUES ('sample', $json$
{"id": 1, "dns": {"a": ["127.90.0.2"], "ad": true, "ns": ["ns.smoke.test"],
 "caa": [{"tag": "issue", "flags": 0, "value": "ca.test"}],
 "txt": ["appguard-client-id=app1"], "aaaa": [], "cname": [], "rcode": "NOERROR",
 "queries": {"A": "NOERROR", "NS": "NOERROR", "CAA": "NOERROR", "TXT": "NOERROR", "AAAA": "NXDOMAIN"},
 "caa_domain": "smoke.test", "ownership_ids": ["app1"], "registrable_domain": "smoke.test"},
 "tls": {"sni": "app.smoke.test",
  "leaf": {"issuer": {"O": "Smoke Org", "CN": "app.smoke.test"},
   "serial": "56072ECF90FEC19335B29556E108A91A20632CEC",
   "sha256": "2d229f1c2284be739a3e748fb9b5da7e16b59f483d032bd94a8205be516d821d",
   "san_dns": ["app.smoke.test"], "subject": {"O": "Smoke Org", "CN": "app.smoke.test"},
   "key_bits": 2048, "key_type": "RSA", "policies": [],
   "not_after": "2026-12-02T10:28:42Z", "not_before": "2026-11-29T10:28:42Z",
   "tbs_sha256": "04e56d7a00782bf49133e62a0028dd6cb4113d992770900e9429e196fe07d3a9",
   "validation": null,
   "spki_sha256": "61eddcf7f5f6f6247669725448e4add503f23b5503e71e0068fa18ad8c4daa1b",
   "signature_algorithm": "sha256WithRSAEncryption"},
  "ocsp": null,
  "chain": [{"issuer": "O=Smoke Org,CN=app.smoke.test",
   "sha256": "2d229f1c2284be739a3e748fb9b5da7e16b59f483d032bd94a8205be516d821d",
   "subject": "O=Smoke Org,CN=app.smoke.test"}],
  "cipher": "TLS_AES_256_GCM_SHA384", "address": "127.90.0.2", "version": "TLSv1.3",
  "verified": true, "ocsp_error": null, "verify_code": 0, "verify_depth": 0,
  "verify_error": null, "chain_in_order": true, "hostname_match": true},
 "host": "app.smoke.test", "port": 8443, "error": null, "schema": 1, "status": "ok",
 "taken_at": "2026-11-29T10:29:29.997309+00:00", "elapsed_ms": 6}
$json$);

-- The baseline of most cases: the same shape, with an OV certificate, an
-- intermediate, a CNAME, two name servers and two ownership records
INSERT INTO facts VALUES ('base', $json$
{"schema": 1, "host": "app.example-health.test", "port": 443,
 "taken_at": "2026-11-01T09:00:00+00:00", "status": "ok", "error": null, "elapsed_ms": 41,
 "dns": {"rcode": "NOERROR",
  "queries": {"A": "NOERROR", "AAAA": "NOERROR", "NS": "NOERROR", "TXT": "NOERROR", "CAA": "NOERROR"},
  "ad": true, "cname": ["edge.cdn.test"],
  "a": ["192.0.2.10", "192.0.2.11"], "aaaa": ["2001:db8::10"],
  "registrable_domain": "example-health.test",
  "ns": ["ns1.dns.test", "ns2.dns.test"],
  "caa": [{"flags": 0, "tag": "iodef", "value": "mailto:sec@example-health.test"},
          {"flags": 0, "tag": "issue", "value": "ca.test"}],
  "caa_domain": "example-health.test",
  "txt": ["appguard-client-id=health-app", "appguard-client-id=health-portal", "v=spf1 -all"],
  "ownership_ids": ["health-app", "health-portal"]},
 "tls": {"address": "192.0.2.10", "sni": "app.example-health.test",
  "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
  "verified": true, "verify_code": 0, "verify_error": null, "verify_depth": 0,
  "hostname_match": true, "ocsp": "good", "ocsp_error": null, "chain_in_order": true,
  "chain": [
   {"subject": "CN=app.example-health.test,O=Example Health\\, Inc.,L=San Francisco,ST=California,C=US",
    "issuer": "CN=Test CA R1,O=Test CA Inc,C=US", "sha256": "1eaf0001"},
   {"subject": "CN=Test CA R1,O=Test CA Inc,C=US",
    "issuer": "CN=Test Root,O=Test CA Inc,C=US", "sha256": "17e40001"}],
  "leaf": {
   "subject": {"CN": "app.example-health.test", "O": "Example Health, Inc.",
               "C": "US", "ST": "California", "L": "San Francisco"},
   "issuer": {"CN": "Test CA R1", "O": "Test CA Inc", "C": "US"},
   "san_dns": ["app.example-health.test"],
   "serial": "0A1B2C3D", "not_before": "2026-09-01T00:00:00Z", "not_after": "2026-12-01T00:00:00Z",
   "sha256": "1eaf0001", "spki_sha256": "5b140001", "tbs_sha256": "7b500001",
   "key_type": "RSA", "key_bits": 2048, "signature_algorithm": "sha256WithRSAEncryption",
   "policies": ["2.23.140.1.2.2"], "validation": "OV"}}}
$json$);

-- Deep merge: objects key by key, anything else replaced
CREATE FUNCTION pg_temp.merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN jsonb_typeof(a) = 'object' AND jsonb_typeof(b) = 'object' THEN
			coalesce((SELECT jsonb_object_agg(k, CASE WHEN b ? k THEN pg_temp.merge(a -> k, b -> k)
												 ELSE a -> k END)
					  FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) AS keys(k)),
					 '{}')
		ELSE b
	END
$$;

-- The differences between two variants of a stored document
CREATE FUNCTION pg_temp.drift(baseline_patch jsonb, current_patch jsonb,
							  client text DEFAULT NULL, from_doc text DEFAULT 'base')
RETURNS TABLE (reason text, field text, old_value text, new_value text)
LANGUAGE sql AS $$
	SELECT d.reason, d.field, d.old_value, d.new_value
	FROM facts AS f,
		 appguard_facts_diff(pg_temp.merge(f.doc, baseline_patch),
									  pg_temp.merge(f.doc, current_patch), client)
			WITH ORDINALITY AS d
	WHERE f.name = from_doc
	ORDER BY d.ordinality
$$;

---------------------------------------------------------------------------
-- No change
---------------------------------------------------------------------------

-- A real document against itself, and the baseline against itself
SELECT * FROM pg_temp.drift('{}', '{}', from_doc => 'sample');
SELECT * FROM pg_temp.drift('{}', '{}');

-- Sets in another order, names and hexadecimal in another case
SELECT * FROM pg_temp.drift('{}', $${
	"dns": {"a": ["192.0.2.11", "192.0.2.10"], "ns": ["NS2.dns.test", "ns1.DNS.test"],
			"cname": ["EDGE.cdn.test"],
			"caa": [{"flags": 0, "tag": "issue", "value": "ca.test"},
					{"flags": 0, "tag": "iodef", "value": "mailto:sec@example-health.test"}],
			"ownership_ids": ["health-portal", "health-app"]},
	"tls": {"leaf": {"serial": "0a1b2c3d", "sha256": "1EAF0001"}}}$$);

-- Facts the rules do not read: cipher, address, OCSP status, SAN, TXT
-- strings other than ownership, elapsed time
SELECT * FROM pg_temp.drift('{}', $${
	"elapsed_ms": 900, "taken_at": "2026-11-29T09:00:00+00:00",
	"dns": {"txt": ["appguard-client-id=health-app", "appguard-client-id=health-portal"]},
	"tls": {"cipher": "TLS_CHACHA20_POLY1305_SHA256", "address": "192.0.2.11", "ocsp": null,
			"leaf": {"san_dns": ["app.example-health.test", "www.example-health.test"]}}}$$);

---------------------------------------------------------------------------
-- Renewals: only reasons of severity "ignore"
---------------------------------------------------------------------------

-- Same key, same intermediate
SELECT * FROM pg_temp.drift('{}', $${"tls": {
	"chain": [{"subject": "CN=app.example-health.test,O=Example Health\\, Inc.,L=San Francisco,ST=California,C=US",
			   "issuer": "CN=Test CA R1,O=Test CA Inc,C=US", "sha256": "1eaf0002"},
			  {"subject": "CN=Test CA R1,O=Test CA Inc,C=US",
			   "issuer": "CN=Test Root,O=Test CA Inc,C=US", "sha256": "17e40001"}],
	"leaf": {"serial": "0A1B2C3E", "sha256": "1eaf0002", "tbs_sha256": "7b500002",
			 "not_before": "2026-11-01T00:00:00Z", "not_after": "2027-01-30T00:00:00Z"}}}$$);

-- New key, new intermediate, EV instead of OV, issuer O spelt otherwise,
-- new addresses behind the same CNAME
SELECT * FROM pg_temp.drift('{}', $${
	"dns": {"a": ["198.51.100.7"], "aaaa": []},
	"tls": {
	"chain": [{"subject": "CN=app.example-health.test,O=Example Health\\, Inc.,L=San Francisco,ST=California,C=US",
			   "issuer": "CN=Test CA R2,O=Test CA Inc,C=US", "sha256": "1eaf0003"},
			  {"subject": "CN=Test CA R2,O=Test CA Inc,C=US",
			   "issuer": "CN=Test Root,O=Test CA Inc,C=US", "sha256": "17e40002"}],
	"leaf": {"serial": "77", "sha256": "1eaf0003", "spki_sha256": "5b140002",
			 "tbs_sha256": "7b500003", "issuer": {"CN": "Test CA R2", "O": "TEST CA, INC.", "C": "US"},
			 "not_before": "2026-11-01T00:00:00Z", "not_after": "2027-11-01T00:00:00Z",
			 "policies": ["2.23.140.1.1"], "validation": "EV"}}}$$);

---------------------------------------------------------------------------
-- tls_trust_lost: the verification state, never the dates
---------------------------------------------------------------------------

SELECT * FROM pg_temp.drift('{}', $${"tls": {"verified": false, "verify_code": 10,
	"verify_error": "certificate has expired"}}$$);
SELECT * FROM pg_temp.drift('{}', $${"tls": {"verified": false, "verify_code": 62,
	"verify_error": "hostname mismatch", "hostname_match": false}}$$);
-- revoked by a stapled OCSP response
SELECT * FROM pg_temp.drift('{}', $${"tls": {"verified": false, "verify_code": 23,
	"verify_error": "certificate revoked", "ocsp": "revoked"}}$$);
-- a document that gives the code only
SELECT * FROM pg_temp.drift('{}', $${"tls": {"verified": false, "verify_code": 20,
	"verify_error": null}}$$);
-- dates alone are not trust: a certificate past its not_after that still
-- verifies (say, a clock far off) changes only its validity
SELECT * FROM pg_temp.drift('{}', $${"tls": {"leaf": {"not_after": "2026-10-01T00:00:00Z"}}}$$);
-- a baseline that was not trusted cannot lose trust; regaining it is no loss
SELECT * FROM pg_temp.drift($${"tls": {"verified": false, "verify_code": 18,
	"verify_error": "self-signed certificate"}}$$,
							$${"tls": {"verified": false, "verify_code": 10,
	"verify_error": "certificate has expired"}}$$);
SELECT * FROM pg_temp.drift($${"tls": {"verified": false, "verify_code": 18,
	"verify_error": "self-signed certificate"}}$$, '{}');

-- The server sends no certificate at all: facts_tls.c writes no leaf
SELECT d.*
FROM facts AS f,
	 appguard_facts_diff(f.doc, jsonb_set(f.doc, '{tls}', $${"address": "192.0.2.10",
		"sni": "app.example-health.test", "version": "TLSv1.3",
		"cipher": "TLS_AES_256_GCM_SHA384", "verified": false, "verify_code": 1,
		"verify_error": "the server sent no certificate"}$$)) AS d
WHERE f.name = 'base';

-- The real document: verification now fails
SELECT * FROM pg_temp.drift('{}', $${"tls": {"verified": false, "verify_code": 18,
	"verify_error": "self-signed certificate", "verify_depth": 0}}$$, from_doc => 'sample');

---------------------------------------------------------------------------
-- tls_class_downgraded: OV, EV, IV -> DV or none
---------------------------------------------------------------------------

SELECT b.v AS baseline, c.v AS current, d.reason, d.field, d.old_value, d.new_value
FROM (VALUES (1, 'OV'), (2, 'EV'), (3, 'IV'), (4, 'DV'), (5, NULL), (6, 'XV')) AS b(i, v)
CROSS JOIN (VALUES (1, 'OV'), (2, 'EV'), (3, 'IV'), (4, 'DV'), (5, NULL), (6, 'XV')) AS c(i, v)
LEFT JOIN LATERAL pg_temp.drift(jsonb_build_object('tls', jsonb_build_object('leaf',
									jsonb_build_object('validation', b.v))),
								jsonb_build_object('tls', jsonb_build_object('leaf',
									jsonb_build_object('validation', c.v)))) AS d ON true
WHERE b.i <> c.i
ORDER BY b.i, c.i;

---------------------------------------------------------------------------
-- tls_identity_changed: subject O, C, ST, L of an OV/EV/IV baseline
---------------------------------------------------------------------------

SELECT * FROM pg_temp.drift('{}', $${"tls": {"leaf": {"subject": {"O": "Other Health, Inc."}}}}$$);
SELECT * FROM pg_temp.drift('{}', $${"tls": {"leaf": {"subject":
	{"C": "CA", "ST": "Ontario", "L": "Toronto"}}}}$$);
-- CN and OU are not identity
SELECT * FROM pg_temp.drift('{}', $${"tls": {"leaf": {"subject":
	{"CN": "www.example-health.test", "OU": "Patient Apps"}}}}$$);

-- Organization names: case, white space, punctuation, legal suffixes
SELECT n.o AS current_o, d.reason, d.new_value
FROM (VALUES (1, 'Example Health, Inc.'), (2, 'EXAMPLE HEALTH INC'), (3, 'Example Health LLC'),
			 (4, 'Example  Health, L.L.C.'), (5, 'Example-Health Incorporated'),
			 (6, ' example health '), (7, 'ExampleHealth Ltd.'), (8, 'Example Health Co., Ltd.'),
			 (9, 'Example Health GmbH & Co. KG'), (10, 'Example Health Corp'),
			 (11, 'Example Health Holdings, Inc.'), (12, 'Example Wealth, Inc.'),
			 (13, 'Example'), (14, 'Inc. Example Health'), (15, ''), (16, NULL)) AS n(i, o)
LEFT JOIN LATERAL pg_temp.drift('{}', jsonb_build_object('tls', jsonb_build_object('leaf',
	jsonb_build_object('subject', jsonb_build_object('O', n.o))))) AS d ON true
ORDER BY n.i;

-- Places: the same, without legal suffixes; abbreviations are not expanded
SELECT n.part, n.old, n.new, d.reason
FROM (VALUES (1, 'L', 'St. Louis', 'ST LOUIS'), (2, 'L', 'St. Louis', 'St.Louis'),
			 (3, 'L', 'St. Louis', 'Saint Louis'), (4, 'ST', 'California', 'CALIFORNIA'),
			 (5, 'ST', 'California', 'CA'), (6, 'C', 'US', 'us'), (7, 'L', 'Example Co', 'Example')) AS n(i, part, old, new)
LEFT JOIN LATERAL pg_temp.drift(
	jsonb_build_object('tls', jsonb_build_object('leaf', jsonb_build_object('subject',
		jsonb_build_object(n.part, n.old)))),
	jsonb_build_object('tls', jsonb_build_object('leaf', jsonb_build_object('subject',
		jsonb_build_object(n.part, n.new))))) AS d ON true
ORDER BY n.i;

-- No organization and one that normalizes to nothing are the same
SELECT * FROM pg_temp.drift($${"tls": {"leaf": {"subject": {"O": null}}}}$$,
							$${"tls": {"leaf": {"subject": {"O": " , . "}}}}$$);

-- Apostrophes, typographic or not, join the letters
SELECT * FROM pg_temp.drift($${"tls": {"leaf": {"subject": {"O": "Children’s Health"}}}}$$,
							$${"tls": {"leaf": {"subject": {"O": "CHILDRENS HEALTH, INC."}}}}$$);
SELECT * FROM pg_temp.drift($${"tls": {"leaf": {"subject": {"O": "Children's Health"}}}}$$,
							$${"tls": {"leaf": {"subject": {"O": "Children’s Health"}}}}$$);

-- A DV baseline's subject was never validated: no identity to change
SELECT * FROM pg_temp.drift($${"tls": {"leaf": {"validation": "DV"}}}$$,
							$${"tls": {"leaf": {"validation": "DV",
								"subject": {"O": "Other Health", "L": "Reno"}}}}$$);
-- an IV baseline's is
SELECT * FROM pg_temp.drift($${"tls": {"leaf": {"validation": "IV"}}}$$,
							$${"tls": {"leaf": {"validation": "IV", "subject": {"L": "Reno"}}}}$$);

-- A DV replacement without organization or location
SELECT d.*
FROM facts AS f,
	 appguard_facts_diff(f.doc,
		jsonb_set(jsonb_set(f.doc, '{tls,leaf,subject}', '{"CN": "app.example-health.test"}'),
				  '{tls,leaf,validation}', '"DV"')) AS d
WHERE f.name = 'base';

---------------------------------------------------------------------------
-- dns_ownership_lost
---------------------------------------------------------------------------

-- health-app's record is gone, health-portal's stays
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": ["appguard-client-id=health-portal"],
	"ownership_ids": ["health-portal"]}}$$, 'health-app');
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": ["appguard-client-id=health-portal"],
	"ownership_ids": ["health-portal"]}}$$, 'health-portal');
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": ["appguard-client-id=health-portal"],
	"ownership_ids": ["health-portal"]}}$$);
-- every record gone: one row per id without a client, one with
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": [], "ownership_ids": []}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": [], "ownership_ids": []}}$$, 'health-portal');
-- a client that had no record at baseline has none to lose
SELECT * FROM pg_temp.drift('{}', $${"dns": {"txt": [], "ownership_ids": []}}$$, 'other-app');
-- a record that appears is no loss
SELECT * FROM pg_temp.drift($${"dns": {"ownership_ids": []}}$$, '{}', 'health-app');
-- NXDOMAIN for the registrable domain is an answer: no records
SELECT * FROM pg_temp.drift('{}', $${"dns": {"queries": {"TXT": "NXDOMAIN"}, "txt": [],
	"ownership_ids": []}}$$, 'health-app');
-- any other TXT outcome, now or at baseline, is no answer
SELECT q.rcode, d.reason
FROM (VALUES (1, 'TIMEOUT'), (2, 'SERVFAIL'), (3, 'REFUSED'), (4, 'ERROR'), (5, 'RCODE9'), (6, NULL)) AS q(i, rcode)
LEFT JOIN LATERAL pg_temp.drift('{}', jsonb_build_object('dns', jsonb_build_object(
	'queries', jsonb_build_object('TXT', q.rcode), 'txt', '[]'::jsonb,
	'ownership_ids', '[]'::jsonb)), 'health-app') AS d ON true
ORDER BY q.i;
SELECT * FROM pg_temp.drift($${"dns": {"queries": {"TXT": "TIMEOUT"}}}$$,
							$${"dns": {"txt": [], "ownership_ids": []}}$$, 'health-app');

---------------------------------------------------------------------------
-- dns_domain_gone: NXDOMAIN now for a name that resolved
---------------------------------------------------------------------------

-- How the probe writes a name that does not exist (status dns_failed, no
-- TLS): only dns_domain_gone, although NS, TXT and CAA are gone too
INSERT INTO facts
SELECT 'nxdomain', pg_temp.merge(f.doc, $${
	"status": "dns_failed", "error": "app.example-health.test has no IPv4 or IPv6 address",
	"tls": null,
	"dns": {"rcode": "NXDOMAIN", "ad": false,
			"queries": {"A": "NXDOMAIN", "AAAA": "NXDOMAIN", "NS": "NXDOMAIN",
						"TXT": "NXDOMAIN", "CAA": "NXDOMAIN"},
			"cname": [], "a": [], "aaaa": [], "ns": [], "caa": [], "caa_domain": null,
			"txt": [], "ownership_ids": []}}$$)
FROM facts AS f WHERE f.name = 'base';
SELECT d.* FROM facts AS b, facts AS c, appguard_facts_diff(b.doc, c.doc, 'health-app') AS d
WHERE b.name = 'base' AND c.name = 'nxdomain';
-- a dangling CNAME (the alias exists, its target does not) is not the
-- host's name gone: dns_dangling_cname, below; a document without a chain
-- (an older or handcrafted one) is read as the host's own NXDOMAIN
SELECT d.* FROM facts AS f,
	appguard_facts_diff(f.doc, pg_temp.merge((SELECT doc FROM facts WHERE name = 'nxdomain'),
		'{"dns": {"cname": ["gone.cdn.test"]}}')) AS d
WHERE f.name = 'base';
SELECT d.* FROM facts AS f,
	appguard_facts_diff(f.doc, (SELECT doc #- '{dns,cname}' FROM facts WHERE name = 'nxdomain')) AS d
WHERE f.name = 'base';
-- a baseline whose connection failed had still resolved
SELECT d.* FROM facts AS f, facts AS c,
	appguard_facts_diff(pg_temp.merge(f.doc, '{"status": "connect_failed", "tls": null}'), c.doc) AS d
WHERE f.name = 'base' AND c.name = 'nxdomain';
-- a name that did not resolve at baseline is not gone; neither is one
-- whose AAAA question was answered
SELECT * FROM pg_temp.drift('{}', '{}', from_doc => 'nxdomain');
SELECT d.* FROM facts AS f, facts AS c,
	appguard_facts_diff(pg_temp.merge(f.doc, '{"dns": {"a": [], "aaaa": [], "queries": {"AAAA": "NXDOMAIN"}}}'),
						c.doc) AS d
WHERE f.name = 'base' AND c.name = 'nxdomain';
SELECT d.* FROM facts AS f, facts AS c,
	appguard_facts_diff(f.doc, pg_temp.merge(c.doc, '{"dns": {"queries": {"AAAA": "NOERROR"}}}')) AS d
WHERE f.name = 'base' AND c.name = 'nxdomain';

---------------------------------------------------------------------------
-- dns_dangling_cname: a host that resolved is now an alias of a name that
-- is gone (NXDOMAIN) or has no address (NODATA)
---------------------------------------------------------------------------

-- As the probe writes it: the chain, no address, status dns_failed, no TLS;
-- the registrable domain still answers its NS, TXT and CAA questions.
INSERT INTO facts
SELECT 'dangling', pg_temp.merge(f.doc, $${
	"schema": 2, "status": "dns_failed", "tls": null,
	"error": "app.example-health.test has no IPv4 or IPv6 address",
	"dns": {"rcode": "NXDOMAIN", "ad": false,
			"queries": {"A": "NXDOMAIN", "AAAA": "NXDOMAIN"},
			"cname": ["edge.cdn.test"], "a": [], "aaaa": [],
			"cname_target_domain": "cdn.test", "cname_cross_domain": true}}$$)
FROM facts AS f WHERE f.name = 'base';
-- the target was deleted: one row, the chains at baseline and now; not
-- dns_domain_gone (the host's own name exists), and nothing else of a
-- failed measurement
SELECT d.* FROM facts AS b, facts AS c, appguard_facts_diff(b.doc, c.doc, 'health-app') AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- NODATA: the target exists and has no A or AAAA
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(b.doc, pg_temp.merge(c.doc, $${"dns": {"rcode": "NOERROR",
		"queries": {"A": "NOERROR", "AAAA": "NOERROR"}}}$$)) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- a host that was no alias at baseline, and a longer chain now
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(pg_temp.merge(b.doc, '{"dns": {"cname": []}}'),
		pg_temp.merge(c.doc, '{"dns": {"cname": ["edge.cdn.test", "lb-7.cloud.test"]}}')) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- the NXDOMAIN of the A question is the chain's end even when the AAAA
-- question timed out
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(b.doc, pg_temp.merge(c.doc, '{"dns": {"queries": {"AAAA": "TIMEOUT"}}}')) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- a baseline whose connection failed had still resolved
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(pg_temp.merge(b.doc, '{"status": "connect_failed", "tls": null}'), c.doc) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- Unknowns, no difference: NODATA of one question and a TIMEOUT, SERVFAIL
-- or unusable answer of the other (the other may hold the address)
SELECT q.a, q.aaaa, d.reason
FROM facts AS b CROSS JOIN facts AS c
	CROSS JOIN (VALUES ('NOERROR', 'TIMEOUT'), ('SERVFAIL', 'NOERROR'), ('NOERROR', 'ERROR'),
					   ('REFUSED', 'REFUSED'), ('NOERROR', NULL)) AS q(a, aaaa)
	LEFT JOIN LATERAL appguard_facts_diff(b.doc, pg_temp.merge(c.doc, jsonb_build_object('dns',
		jsonb_build_object('rcode', q.a, 'queries', jsonb_build_object('A', q.a, 'AAAA', q.aaaa))))) AS d ON true
WHERE b.name = 'base' AND c.name = 'dangling'
ORDER BY q.a, q.aaaa;
-- a chain of 16 steps, the most a document records, may be a loop or cut
-- short: its end is unknown; 15 steps are a chain that ended
SELECT n, d.reason, d.field
FROM facts AS b CROSS JOIN facts AS c CROSS JOIN (VALUES (15), (16)) AS k(n)
	LEFT JOIN LATERAL appguard_facts_diff(b.doc, pg_temp.merge(c.doc, jsonb_build_object('dns',
		jsonb_build_object('rcode', 'NOERROR', 'queries', '{"A": "NOERROR", "AAAA": "NOERROR"}'::jsonb,
						   'cname', (SELECT jsonb_agg('hop' || i || '.cdn.test') FROM generate_series(1, k.n) AS i))))) AS d ON true
WHERE b.name = 'base' AND c.name = 'dangling'
ORDER BY n;
-- the chain still ends at an address (of either family): not dangling
SELECT * FROM pg_temp.drift('{}', '{"dns": {"a": ["192.0.2.99"], "rcode": "NOERROR", "queries": {"A": "NOERROR", "AAAA": "NOERROR"}}}',
							from_doc => 'dangling');
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(b.doc, pg_temp.merge(c.doc, $${"dns": {"rcode": "NOERROR", "aaaa": ["2001:db8::99"],
		"queries": {"A": "NOERROR", "AAAA": "NOERROR"}}}$$)) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- a host that did not resolve at baseline (already dangling, or nothing
-- measured) is not dangling drift
SELECT * FROM pg_temp.drift('{}', '{}', from_doc => 'dangling');
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(pg_temp.merge(b.doc, $${"status": "dns_failed", "tls": null,
		"dns": {"rcode": "TIMEOUT", "a": [], "aaaa": [], "queries": {"A": "TIMEOUT", "AAAA": "TIMEOUT"}}}$$),
		c.doc) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- unknown facts of the current document: no chain key, addresses of
-- another type
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(b.doc, pg_temp.merge(c.doc #- '{dns,cname}', $${"dns": {"rcode": "NOERROR",
		"queries": {"A": "NOERROR", "AAAA": "NOERROR"}}}$$)) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(b.doc, pg_temp.merge(c.doc, $${"dns": {"rcode": "NOERROR", "aaaa": null,
		"queries": {"A": "NOERROR", "AAAA": "NOERROR"}}}$$)) AS d
WHERE b.name = 'base' AND c.name = 'dangling';
-- Where the chain ends is a fact, never a difference: a schema 1 baseline
-- without the keys, and a chain that moved into the host's own domain
-- (dns_cname_changed only)
SELECT * FROM pg_temp.drift('{}', $${"schema": 2, "dns": {"cname_target_domain": "cdn.test",
	"cname_cross_domain": true}}$$);
SELECT * FROM pg_temp.drift($${"schema": 2, "dns": {"cname_target_domain": "cdn.test",
	"cname_cross_domain": true}}$$,
	$${"schema": 2, "dns": {"cname": ["edge.example-health.test"],
	"cname_target_domain": "example-health.test", "cname_cross_domain": false}}$$);

---------------------------------------------------------------------------
-- tls_address_mismatch: another address of the host serves a certificate
-- not trusted for the name, or another organization's
---------------------------------------------------------------------------

-- An address as the probe lists it: the right certificate
CREATE FUNCTION pg_temp.addr(address text, patch jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT pg_temp.merge(jsonb_build_object('address', address, 'status', 'ok',
		'verified', true, 'verify_code', 0, 'verify_error', null, 'leaf_sha256', '1eaf0001',
		'spki_sha256', '5b140001', 'subject_o', 'Example Health, Inc.', 'validation', 'OV'), patch)
$$;
CREATE FUNCTION pg_temp.addrs(VARIADIC entries jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('schema', 2, 'tls_addresses', to_jsonb(entries), 'tls_addresses_skipped', 0)
$$;
CREATE TEMP TABLE two AS SELECT pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11')) AS doc;

-- the same list, and the same list in another order: no change
SELECT d.* FROM two, pg_temp.drift(two.doc, two.doc) AS d;
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.11'), pg_temp.addr('192.0.2.10'))) AS d;
-- the second address serves another organization's verified certificate
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"subject_o": "Northwind Data Brokers LLC", "leaf_sha256": "0bad0001"}'))) AS d;
-- ... a certificate that does not verify for the name
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"verified": false, "verify_code": 18, "verify_error": "self-signed certificate", "leaf_sha256": "0bad0002"}'))) AS d;
-- ... (a document that gives no verify_error still says it failed)
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"verified": false, "verify_error": null, "leaf_sha256": "0bad0002"}'))) AS d;
-- ... a verified DV certificate: no organization vouched for
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"subject_o": null, "validation": "DV", "leaf_sha256": "0bad0003"}'))) AS d;
-- the same organization spelt otherwise, EV: no change; a renewal of the
-- right certificate: no change
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"subject_o": "EXAMPLE HEALTH LLC", "validation": "EV", "leaf_sha256": "0aaa0001"}'))) AS d;
-- addresses that come and go: no change (dns.a is not patched here)
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.12', '{"leaf_sha256": "0aaa0002"}'))) AS d;
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.11'))) AS d;
-- a new address with another organization's certificate is a change
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11'),
	pg_temp.addr('2001:db8::66', '{"subject_o": "Northwind Data Brokers LLC", "leaf_sha256": "0bad0004"}'))) AS d;
-- an address as it was at baseline is no change, however bad; changed, it is
SELECT * FROM pg_temp.drift(
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"verified": false, "verify_error": "self-signed certificate", "leaf_sha256": "0bad0002"}')),
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"verified": false, "verify_error": "self-signed certificate", "leaf_sha256": "0bad0002"}')));
SELECT * FROM pg_temp.drift(
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"verified": false, "verify_error": "self-signed certificate", "leaf_sha256": "0bad0002"}')),
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"verified": false, "verify_error": "certificate has expired", "leaf_sha256": "0bad0005"}')));
-- the first address (tls.address) is the other rules' (tls_trust_lost here)
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10', '{"verified": false, "leaf_sha256": "0bad0006"}'),
	pg_temp.addr('192.0.2.11')) || '{"tls": {"verified": false, "verify_error": "self-signed certificate"}}') AS d;
-- not measured: blocked, failed, not reached, or of unknown facts
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	'{"address": "192.0.2.11", "status": "blocked", "blocked": "private"}',
	'{"address": "192.0.2.12", "status": "connect_failed", "error": "could not connect"}',
	'{"address": "192.0.2.13", "status": "timeout", "error": "no answer"}',
	'{"address": "192.0.2.14", "status": "not_measured"}',
	pg_temp.addr('192.0.2.15', '{"verified": "no", "leaf_sha256": "0bad0007"}'),
	pg_temp.addr('192.0.2.16', '{"validation": "XV", "subject_o": "Other", "leaf_sha256": "0bad0008"}'),
	'{"status": "ok", "verified": false}', '"192.0.2.17"')) AS d;
-- a baseline without the list (written before it existed), or a document
-- whose list is not an array: the rule does not run
SELECT * FROM pg_temp.drift('{}', pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"subject_o": "Northwind Data Brokers LLC", "leaf_sha256": "0bad0001"}')));
SELECT d.* FROM two, pg_temp.drift(two.doc, '{"tls_addresses": {"192.0.2.11": {"verified": false}}}') AS d;
-- a baseline that was not trusted cannot lose trust at another address; a
-- DV baseline vouched for no organization
SELECT d.* FROM two, pg_temp.drift(two.doc || '{"tls": {"verified": false, "verify_error": "self-signed certificate"}}',
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"verified": false, "leaf_sha256": "0bad0002"}'))) AS d;
SELECT d.* FROM two, pg_temp.drift(two.doc || '{"tls": {"leaf": {"validation": "DV"}}}',
	pg_temp.addrs(pg_temp.addr('192.0.2.10'), pg_temp.addr('192.0.2.11', '{"subject_o": "Northwind Data Brokers LLC", "leaf_sha256": "0bad0001"}'))
	|| '{"tls": {"leaf": {"validation": "DV"}}}') AS d;
-- a failed measurement is an unknown
SELECT d.* FROM two, pg_temp.drift(two.doc, pg_temp.addrs(pg_temp.addr('192.0.2.10'),
	pg_temp.addr('192.0.2.11', '{"subject_o": "Northwind Data Brokers LLC", "leaf_sha256": "0bad0001"}')) || '{"status": "timeout"}') AS d;
-- the words of its fields, for appguard_explain and the page
SELECT appguard.field_label('tls_addresses[192.0.2.11].subject_o') AS subject_o,
	   appguard.field_label('tls_addresses[2001:db8::66].verify_error') AS verify_error,
	   appguard.value_text('null', 'tls_addresses[192.0.2.11].verify_error') AS trusted,
	   appguard.value_text(NULL, 'tls_addresses[192.0.2.11].subject_o') AS no_org;

---------------------------------------------------------------------------
-- Reasons of severity "warn"
---------------------------------------------------------------------------

SELECT * FROM pg_temp.drift('{}', $${"tls": {"leaf": {"issuer": {"O": "Other CA Ltd"}}}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"ns": ["ns1.other-dns.test", "ns2.other-dns.test"]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"ns": ["ns1.dns.test"]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"cname": ["edge.other-cdn.test"]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"cname": []}}$$);
-- a chain is compared in order
SELECT * FROM pg_temp.drift($${"dns": {"cname": ["a.cdn.test", "b.cdn.test"]}}$$,
							$${"dns": {"cname": ["b.cdn.test", "a.cdn.test"]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"caa": [{"flags": 0, "tag": "issue", "value": "other-ca.test"},
	{"flags": 128, "tag": "issue", "value": "ca.test; \"quoted\""}]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"caa": []}}$$);
-- TLS versions: below 1.2 now, not before
SELECT b.v AS baseline, c.v AS current, d.reason, d.old_value, d.new_value
FROM (VALUES (1, 'TLSv1.3'), (2, 'TLSv1.2'), (3, 'TLSv1.1'), (4, 'TLSv1'), (5, 'SSLv3'), (6, 'QUIC')) AS b(i, v)
CROSS JOIN (VALUES (1, 'TLSv1.3'), (2, 'TLSv1.2'), (3, 'TLSv1.1'), (4, 'TLSv1'), (5, 'SSLv3'), (6, 'QUIC')) AS c(i, v)
LEFT JOIN LATERAL pg_temp.drift(jsonb_build_object('tls', jsonb_build_object('version', b.v)),
								jsonb_build_object('tls', jsonb_build_object('version', c.v))) AS d ON true
WHERE b.i <> c.i
ORDER BY b.i, c.i;
-- DNSSEC: lost, and gained
SELECT * FROM pg_temp.drift('{}', '{"dns": {"ad": false}}');
SELECT * FROM pg_temp.drift('{"dns": {"ad": false}}', '{}');

-- A DNS rule is skipped when its question got no definitive answer
SELECT * FROM pg_temp.drift('{}', $${"dns": {"queries": {"NS": "TIMEOUT"}, "ns": []}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"queries": {"CAA": "SERVFAIL"}, "caa": []}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"queries": {"A": "TIMEOUT"}, "a": [], "ad": false,
	"cname": ["edge.other-cdn.test"]}}$$);
SELECT * FROM pg_temp.drift('{}', $${"dns": {"queries": {"AAAA": "REFUSED"}, "aaaa": [],
	"cname": ["edge.other-cdn.test"]}}$$);
SELECT * FROM pg_temp.drift($${"dns": {"queries": {"NS": null}, "ns": []}}$$, '{}');

---------------------------------------------------------------------------
-- A failed measurement is never a difference
---------------------------------------------------------------------------

SELECT m.status, d.reason
FROM (VALUES
	(1, 'timeout', $${"status": "timeout", "error": "no answer within 5000 ms while resolving the host name",
		"tls": null, "dns": {"rcode": "TIMEOUT", "ad": false,
		"queries": {"A": "TIMEOUT", "AAAA": "TIMEOUT", "NS": "TIMEOUT", "TXT": "TIMEOUT", "CAA": "TIMEOUT"},
		"cname": [], "a": [], "aaaa": [], "ns": [], "caa": [], "txt": [], "ownership_ids": []}}$$::jsonb),
	-- the connection failed while DNS says the record is gone and NS moved
	(2, 'connect_failed', $${"status": "connect_failed", "tls": null,
		"error": "could not connect to 192.0.2.10 port 443: Connection refused",
		"dns": {"ns": ["ns1.other-dns.test"], "txt": [], "ownership_ids": []}}$$),
	(3, 'dns_failed', $${"status": "dns_failed", "tls": null, "error": "app has no IPv4 or IPv6 address",
		"dns": {"rcode": "SERVFAIL", "queries": {"A": "SERVFAIL", "AAAA": "SERVFAIL", "NS": "SERVFAIL",
		"TXT": "SERVFAIL", "CAA": "SERVFAIL"}, "a": [], "aaaa": [], "cname": [], "ns": [],
		"txt": [], "ownership_ids": []}}$$),
	-- NOERROR without addresses is no NXDOMAIN
	(4, 'dns_failed', $${"status": "dns_failed", "tls": null, "error": "app has no IPv4 or IPv6 address",
		"dns": {"a": [], "aaaa": [], "cname": []}}$$),
	(5, 'blocked', $${"status": "blocked", "tls": null, "error": "port 22 is not in appguard.allowed_ports (443)",
		"dns": {"rcode": null, "queries": {"A": null, "AAAA": null, "NS": null, "TXT": null, "CAA": null},
		"ad": false, "cname": [], "a": [], "aaaa": [], "ns": [], "caa": [], "txt": [], "ownership_ids": []}}$$),
	(6, 'blocked', $${"status": "blocked", "tls": null,
		"error": "refused by the address policy: 10.0.0.8 is a private address",
		"dns": {"a": ["10.0.0.8"], "aaaa": []}}$$)
	) AS m(i, status, patch)
LEFT JOIN LATERAL pg_temp.drift('{}', m.patch, 'health-app') AS d ON true
ORDER BY m.i;

-- tls_failed: connected, no handshake; the "tls" object names the address only
SELECT d.* FROM facts AS f,
	appguard_facts_diff(f.doc, jsonb_set(f.doc, '{tls}',
		'{"address": "192.0.2.10", "sni": "app.example-health.test"}')
		|| '{"status": "tls_failed", "error": "TLS handshake failed: wrong version number"}') AS d
WHERE f.name = 'base';

-- A baseline that measured nothing gives nothing to compare
SELECT * FROM pg_temp.drift($${"status": "timeout", "tls": null}$$,
							$${"tls": {"verified": false, "verify_error": "certificate has expired",
								"leaf": {"subject": {"O": "Other Health"}}}}$$);
SELECT d.* FROM facts AS b, facts AS c,
	appguard_facts_diff(pg_temp.merge(b.doc, '{"status": "blocked"}'), c.doc) AS d
WHERE b.name = 'sample' AND c.name = 'base';

---------------------------------------------------------------------------
-- Tolerance: missing keys and wrong types are unknown, never a change
---------------------------------------------------------------------------

SELECT * FROM appguard_facts_diff('{}', '{}');
SELECT d.* FROM facts AS f, appguard_facts_diff(f.doc, '{"schema": 1, "status": "ok"}') AS d
WHERE f.name = 'base';
SELECT d.* FROM facts AS f, appguard_facts_diff('{"status": "ok"}', f.doc) AS d
WHERE f.name = 'base';
SELECT d.* FROM facts AS f,
	appguard_facts_diff(f.doc, f.doc || '{"tls": "garbage", "dns": 42}') AS d
WHERE f.name = 'base';
SELECT * FROM pg_temp.drift('{}', $${
	"status": "ok",
	"dns": {"rcode": 0, "queries": "all", "ad": "no", "ns": "ns1.other.test",
			"a": [1, 2], "cname": {"x": 1}, "caa": [{"flags": "0", "tag": "issue", "value": "x"}],
			"ownership_ids": [null]},
	"tls": {"verified": "no", "version": 1.0, "chain": "none",
			"leaf": {"validation": 2, "serial": 77,
					 "subject": {"O": ["Other"], "C": 1}, "issuer": "Other CA"}}}$$);
-- sha256 null is a value: known to be absent
SELECT * FROM pg_temp.drift('{}', '{"tls": {"leaf": {"sha256": null}}}');
-- a CAA set with one malformed record is unknown as a whole
SELECT * FROM pg_temp.drift('{}', $${"dns": {"caa": [{"flags": 0, "tag": "issue", "value": "x.test"},
	{"tag": "issue", "value": "y.test"}]}}$$);

-- NULL documents give no rows, as a strict function would
SELECT count(*) FROM appguard_facts_diff(NULL, '{}');
SELECT count(*) FROM appguard_facts_diff('{}', NULL, 'health-app');

-- Called in a select list
SELECT appguard_facts_diff(f.doc, pg_temp.merge(f.doc, '{"dns": {"ad": false}}'))
FROM facts AS f WHERE f.name = 'base';

-- Large sets are compared by sorting (O(n log n)), so 100,000 addresses
-- against the same in reverse order are one set, with no difference
CREATE TEMP TABLE big_set AS
SELECT jsonb_agg(format('10.%s.%s.%s', i >> 16, (i >> 8) & 255, i & 255) ORDER BY i) AS up,
	   jsonb_agg(format('10.%s.%s.%s', i >> 16, (i >> 8) & 255, i & 255) ORDER BY i DESC) AS down
FROM generate_series(1, 100000) AS i;
SELECT jsonb_array_length(up) AS elements, up -> 0 AS first_up, down -> 0 AS first_down FROM big_set;
SELECT count(*) AS differences
FROM facts AS f, big_set AS b,
	appguard_facts_diff(jsonb_set(f.doc, '{dns,a}', b.up),
						jsonb_set(f.doc, '{dns,a}', b.down)) AS d
WHERE f.name = 'base';
-- the same for ownership records, each compared with the client's id
SELECT count(*) AS differences
FROM facts AS f, big_set AS b,
	appguard_facts_diff(jsonb_set(f.doc, '{dns,ownership_ids}', b.up),
						jsonb_set(f.doc, '{dns,ownership_ids}', b.down),
						'10.0.1.1') AS d
WHERE f.name = 'base';
-- one address replaced, one ownership record gone: found
SELECT d.reason, d.field, left(d.old_value, 12) AS old_start, length(d.new_value) AS new_length
FROM facts AS f, big_set AS b,
	appguard_facts_diff(jsonb_set(f.doc, '{dns,a}', b.up),
						jsonb_set(f.doc, '{dns,a}', jsonb_set(b.down, '{500}', '"10.200.0.1"'))) AS d
WHERE f.name = 'base';
SELECT d.reason, d.field, d.old_value, d.new_value
FROM facts AS f, big_set AS b,
	appguard_facts_diff(jsonb_set(f.doc, '{dns,ownership_ids}', b.up),
						jsonb_set(f.doc, '{dns,ownership_ids}', b.down - 99999),
						'10.0.0.1') AS d
WHERE f.name = 'base';

-- Arrays longer than 100,000 elements are refused (54000)
\set VERBOSITY default
SELECT count(*)
FROM facts AS f, big_set AS b,
	appguard_facts_diff(f.doc,
						jsonb_set(f.doc, '{dns,ns}', b.up || '"ns.extra.test"')) AS d
WHERE f.name = 'base';
\set VERBOSITY terse
DO $$
BEGIN
	PERFORM appguard_facts_diff(
		jsonb_build_object('dns', jsonb_build_object('caa',
			(SELECT jsonb_agg('{"flags": 0, "tag": "issue", "value": "ca.test"}'::jsonb)
			 FROM generate_series(1, 100001)))),
		'{}');
EXCEPTION WHEN program_limit_exceeded THEN
	RAISE NOTICE 'refused with %: %', SQLSTATE, SQLERRM;
END
$$;
DROP TABLE big_set;

-- Documents that are not objects, or of another schema, are refused
\set VERBOSITY default
SELECT * FROM appguard_facts_diff('[]', '{}');
SELECT * FROM appguard_facts_diff('{}', '"ok"');
SELECT * FROM appguard_facts_diff('{}', '42');
SELECT * FROM appguard_facts_diff('null', '{}');
SELECT * FROM appguard_facts_diff('{}', 'true');
SELECT * FROM appguard_facts_diff('{"schema": 3}', '{}');
SELECT * FROM appguard_facts_diff('{"schema": 0}', '{}');
SELECT * FROM appguard_facts_diff('{}', '{"schema": 2.0}');
SELECT * FROM appguard_facts_diff('{}', '{"schema": "1"}');
-- schemas 1 (0.1.0) and 2 (0.2.0) are read
SELECT count(*) FROM appguard_facts_diff('{"schema": 1}', '{"schema": 2}');
\set VERBOSITY terse

---------------------------------------------------------------------------
-- Policy: every reason with its default severity
---------------------------------------------------------------------------

SELECT * FROM appguard_drift_reasons();
SELECT p.reason, p.severity, p.description
FROM policy AS p ORDER BY p.reason;
SELECT count(*) AS seeded_as_built_in
FROM policy AS p JOIN appguard_drift_reasons() AS r USING (reason)
WHERE p.severity = r.default_severity AND p.description = r.description;

-- Unknown reasons and severities: 22023, the valid values, nothing changed
\set VERBOSITY default
INSERT INTO policy VALUES ('tls_made_up', 'warn', 'Made up');
UPDATE policy SET severity = 'block' WHERE reason = 'tls_trust_lost';
UPDATE policy SET reason = 'tls_renamed' WHERE reason = 'tls_trust_lost';
INSERT INTO client_policy VALUES ('health-app', 'tls_made_up', 'warn');
INSERT INTO client_policy VALUES ('health-app', 'tls_trust_lost', 'never');
INSERT INTO client_policy VALUES ('health-app', 'tls_trust_lost', NULL);
INSERT INTO client_policy VALUES ('health-app', NULL, 'warn');
\set VERBOSITY terse
SELECT reason, severity FROM policy WHERE reason LIKE 'tls_%' ORDER BY reason;
SELECT count(*) AS client_rows FROM client_policy;
DO $$
BEGIN
	INSERT INTO appguard.client_policy VALUES ('health-app', 'tls_trust_lost', 'Suspend');
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE 'refused with %: %', SQLSTATE, SQLERRM;
END
$$;

-- Inserting a reason that exists sets it (this is how pg_dump restores
-- the table over the rows CREATE EXTENSION seeds)
INSERT INTO policy (reason, severity) VALUES ('dns_ns_changed', 'suspend');
SELECT reason, severity, description FROM policy WHERE reason = 'dns_ns_changed';
INSERT INTO policy VALUES ('dns_ns_changed', 'warn',
	'The app''s domain is now served by different name servers');
SELECT reason, severity, description FROM policy WHERE reason = 'dns_ns_changed';

-- pg_dump keeps operator changes to both tables
SELECT c.relname, e.extconfig IS NOT NULL AS dumped
FROM pg_extension AS e
CROSS JOIN LATERAL unnest(e.extconfig) AS t(oid)
JOIN pg_class AS c ON c.oid = t.oid
WHERE e.extname = 'appguard' AND c.relname LIKE '%policy'
ORDER BY c.relname;

---------------------------------------------------------------------------
-- appguard_diff: stored snapshots, severities from the policy
---------------------------------------------------------------------------

INSERT INTO snapshots (host, port, taken_at, status, facts)
SELECT 'app.example-health.test', 443, '2026-11-01 09:00:00+00', 'ok', f.doc
FROM facts AS f WHERE f.name = 'base'
RETURNING id AS baseline_id \gset
-- renewed with a new key, NS moved, health-app's ownership record removed
INSERT INTO snapshots (host, port, taken_at, status, facts)
SELECT 'app.example-health.test', 443, '2026-11-29 09:00:00+00', 'ok', pg_temp.merge(f.doc, $${
	"dns": {"ns": ["ns1.other-dns.test"], "txt": ["appguard-client-id=health-portal"], "ownership_ids": ["health-portal"]},
	"tls": {"leaf": {"serial": "0A1B2C3E", "sha256": "1eaf0004", "spki_sha256": "5b140004"}}}$$)
FROM facts AS f WHERE f.name = 'base'
RETURNING id AS current_id \gset
INSERT INTO snapshots (host, port, taken_at, status, facts)
SELECT 'app.example-health.test', 443, '2026-11-30 09:00:00+00', 'dns_failed', f.doc
FROM facts AS f WHERE f.name = 'nxdomain'
RETURNING id AS gone_id \gset
INSERT INTO snapshots (host, port, taken_at, status, facts)
SELECT 'app.smoke.test', 8443, '2026-11-29 10:29:29+00', 'ok', f.doc
FROM facts AS f WHERE f.name = 'sample'
RETURNING id AS other_host_id \gset

-- built-in severities; health-app's ownership only with its client id
SELECT * FROM appguard_diff(:baseline_id, :current_id);
SELECT * FROM appguard_diff(:baseline_id, :current_id, 'health-app');
SELECT * FROM appguard_diff(:baseline_id, :gone_id, 'health-app');
SELECT * FROM appguard_diff(:current_id, :current_id, 'health-app');

-- Overrides belong to registered clients once the lifecycle part adds
-- appguard.clients (and the foreign key to it): register the test clients
DO $$
BEGIN
	IF pg_catalog.to_regprocedure('appguard_register_client(text,text,text[])') IS NOT NULL THEN
		PERFORM appguard_register_client(v.client_id, 'Example Health',
												  ARRAY['https://app.example-health.test/callback'])
		FROM (VALUES ('health-app'), ('health-portal')) AS v(client_id)
		WHERE NOT EXISTS (SELECT FROM appguard.clients AS c WHERE c.client_id = v.client_id);
	END IF;
END
$$;

-- health-app pins the key and does not mind its name servers;
-- health-portal keeps the global policy, which now warns about serials
INSERT INTO client_policy VALUES ('health-app', 'tls_spki_changed', 'suspend'),
								 ('health-app', 'dns_ns_changed', 'ignore');
UPDATE policy SET severity = 'warn' WHERE reason = 'tls_serial_changed';
SELECT * FROM appguard_diff(:baseline_id, :current_id, 'health-app');
SELECT * FROM appguard_diff(:baseline_id, :current_id, 'health-portal');
-- a client's override wins over the global policy
INSERT INTO client_policy VALUES ('health-app', 'tls_serial_changed', 'ignore');
SELECT reason, severity FROM appguard_diff(:baseline_id, :current_id, 'health-app')
WHERE reason = 'tls_serial_changed';
-- a reason missing from appguard.policy falls back to its built-in severity
DELETE FROM policy WHERE reason = 'tls_fingerprint_changed';
SELECT reason, severity FROM appguard_diff(:baseline_id, :current_id, 'health-portal')
WHERE reason = 'tls_fingerprint_changed';
INSERT INTO policy SELECT reason, default_severity, description
FROM appguard_drift_reasons() WHERE reason = 'tls_fingerprint_changed';
UPDATE policy SET severity = 'ignore' WHERE reason = 'tls_serial_changed';

-- Bad snapshot ids: the SQLSTATE, message and detail (ids, which vary from
-- run to run, shown as N)
CREATE FUNCTION pg_temp.diff_error(old_id bigint, new_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	message text;
	detail text;
BEGIN
	PERFORM appguard_diff(old_id, new_id);
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
							detail = PG_EXCEPTION_DETAIL;
	RETURN regexp_replace(state || ' ' || message || coalesce(' / ' || nullif(detail, ''), ''),
						  '(snapshots?|and) -?[0-9]+', '\1 N', 'gi');
END
$$;
SELECT pg_temp.diff_error(:baseline_id, -1);
SELECT pg_temp.diff_error(-1, :current_id);
SELECT pg_temp.diff_error(NULL, :current_id);
SELECT pg_temp.diff_error(:baseline_id, NULL);

-- Snapshots of different hosts compare too: the client moved its redirect
-- host to one run by someone else (health-app's overrides still apply)
SELECT * FROM appguard_diff(:baseline_id, :other_host_id, 'health-app');

---------------------------------------------------------------------------
-- Who may call what
---------------------------------------------------------------------------

SELECT p.oid::regprocedure AS function, p.provolatile, p.proparallel, p.prosecdef,
	   p.proconfig,
	   has_function_privilege('appguard_operator', p.oid, 'EXECUTE') AS operator,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public
FROM pg_proc AS p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND p.proname IN ('appguard_facts_diff', 'appguard_diff', 'appguard_drift_reasons',
					'policy_check_row', 'policy_insert_updates')
ORDER BY p.proname;
SELECT t.relname,
	   has_table_privilege('appguard_operator', t.oid, 'SELECT') AS operator_select,
	   has_table_privilege('appguard_operator', t.oid, 'INSERT, UPDATE, DELETE') AS operator_write,
	   has_table_privilege('public', t.oid, 'SELECT') AS public_select
FROM pg_class AS t
WHERE t.oid IN ('appguard.policy'::regclass, 'appguard.client_policy'::regclass)
ORDER BY t.relname;

SET ROLE appguard_operator;
SELECT count(*) AS differences FROM appguard_diff(:baseline_id, :current_id, 'health-app');
SELECT severity FROM appguard.policy WHERE reason = 'tls_trust_lost';
UPDATE appguard.policy SET severity = 'ignore' WHERE reason = 'tls_trust_lost';
RESET ROLE;

-- Objects in the caller's search_path are never called: an "=" for text
-- that fails, found before pg_catalog's, in a new session (no cached plans)
\c -
CREATE FUNCTION public.hostile_texteq(a text, b text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'hostile operator called';
END
$$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.hostile_texteq);
SET search_path = public, pg_catalog, appguard;
SELECT count(*) AS differences FROM appguard_diff(:baseline_id, :current_id, 'health-app');
SELECT 'x'::text = 'x'::text;	-- the caller's own query does use it
RESET search_path;
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.hostile_texteq(text, text);

-- Leave the database as it was
SET search_path = appguard, public;
DELETE FROM snapshots WHERE id IN (:baseline_id, :current_id, :gone_id, :other_host_id);
DELETE FROM client_policy;
DO $$
BEGIN
	IF pg_catalog.to_regprocedure('appguard_unregister_client(text)') IS NOT NULL THEN
		PERFORM appguard_unregister_client(v.client_id)
		FROM (VALUES ('health-app'), ('health-portal')) AS v(client_id);
	END IF;
END
$$;
SELECT count(*) AS policies_not_built_in
FROM policy AS p JOIN appguard_drift_reasons() AS r USING (reason)
WHERE p.severity <> r.default_severity OR p.description <> r.description;
