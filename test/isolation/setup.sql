-- Run once by test/isolation/run.sh in the isolation database, after
-- CREATE EXTENSION: the helpers the specs use.
CREATE OR REPLACE FUNCTION public.facts(host text, port integer DEFAULT 443, changes jsonb DEFAULT '{}',
							 status text DEFAULT 'ok')
RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	doc jsonb;
	k text;
	v jsonb;
BEGIN
	doc := jsonb_build_object(
		'schema', 1, 'host', host, 'port', port, 'status', status, 'error', NULL, 'elapsed_ms', 5,
		'taken_at', '2026-11-29T10:00:00Z',
		'dns', jsonb_build_object(
			'rcode', 'NOERROR',
			'queries', '{"A": "NOERROR", "AAAA": "NOERROR", "NS": "NOERROR", "TXT": "NOERROR", "CAA": "NOERROR"}'::jsonb,
			'ad', true, 'a', '["192.0.2.10"]'::jsonb, 'aaaa', '[]'::jsonb, 'cname', '[]'::jsonb,
			'ns', '["ns1.example.net", "ns2.example.net"]'::jsonb,
			'caa', '[]'::jsonb, 'caa_domain', NULL,
			'txt', '[]'::jsonb, 'ownership_ids', '[]'::jsonb,
			'registrable_domain', regexp_replace(host, '^[^.]+\.', '')),
		'tls', jsonb_build_object(
			'address', '192.0.2.10', 'sni', host, 'version', 'TLSv1.3',
			'cipher', 'TLS_AES_256_GCM_SHA384', 'verified', true, 'verify_code', 0,
			'verify_error', NULL, 'verify_depth', 0, 'hostname_match', true,
			'ocsp', NULL, 'ocsp_error', NULL, 'chain_in_order', true,
			'chain', jsonb_build_array(
				jsonb_build_object('subject', 'CN=' || host, 'issuer', 'CN=Test CA R1', 'sha256', repeat('a', 64)),
				jsonb_build_object('subject', 'CN=Test CA R1', 'issuer', 'CN=Test Root', 'sha256', repeat('b', 64))),
			'leaf', jsonb_build_object(
				'subject', jsonb_build_object('CN', host, 'O', 'Example Health, Inc.', 'C', 'US',
											  'ST', 'Missouri', 'L', 'St. Louis'),
				'issuer', '{"CN": "Test CA R1", "O": "Test CA"}'::jsonb,
				'san_dns', jsonb_build_array(host), 'serial', '01',
				'not_before', '2026-01-01T00:00:00Z', 'not_after', '2036-01-01T00:00:00Z',
				'sha256', repeat('a', 64), 'spki_sha256', repeat('c', 64), 'tbs_sha256', repeat('d', 64),
				'key_type', 'RSA', 'key_bits', 2048, 'signature_algorithm', 'sha256WithRSAEncryption',
				'policies', '["2.23.140.1.2.2"]'::jsonb, 'validation', 'OV')));
	IF status <> 'ok' THEN
		doc := jsonb_set(doc, '{tls}', 'null');
		doc := jsonb_set(doc, '{error}', to_jsonb('simulated ' || status));
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(changes) LOOP
		doc := jsonb_set(doc, string_to_array(k, '.'), v, true);
	END LOOP;
	RETURN doc;
END
$$;

-- Store a snapshot as appguard_snapshot would (this fires appguard's triggers)
CREATE OR REPLACE FUNCTION public.snap(host text, port integer DEFAULT 443, changes jsonb DEFAULT '{}',
							status text DEFAULT 'ok')
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog AS $$
	INSERT INTO appguard.snapshots (host, port, taken_at, status, facts)
	VALUES (host, port, clock_timestamp(), status, public.facts(host, port, changes, status))
	RETURNING id
$$;


-- Every spec's setup starts from an empty appguard
CREATE OR REPLACE FUNCTION public.reset_appguard()
RETURNS void LANGUAGE sql AS $$
	TRUNCATE appguard.snapshots, appguard.clients, appguard.refresh_tokens, appguard.suspensions,
			 appguard.holds, appguard.sweeps, appguard.sweep_hosts, appguard.events, appguard.drifts,
			 appguard.baseline_state, appguard.protected_tables, appguard.protected_rows
		RESTART IDENTITY CASCADE;
$$;

-- Grants in one line each: token, status, baseline as the n-th snapshot of the host
CREATE OR REPLACE FUNCTION public.grants_now()
RETURNS TABLE (token text, status text, baseline text)
LANGUAGE sql AS $$
	SELECT coalesce(g.token_table || ':', '') || g.token_key, g.state,
		   CASE WHEN g.baseline_snapshot_id IS NULL THEN 'pending'
				ELSE 'S' || (SELECT count(*) FROM appguard.snapshots s JOIN appguard.clients c
							 ON c.host = s.host AND c.port = s.port
							 WHERE c.client_id = g.client_id AND s.id <= g.baseline_snapshot_id) END
	FROM appguard.grants g ORDER BY 1
$$;
