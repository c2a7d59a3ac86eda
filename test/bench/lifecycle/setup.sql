-- Benchmark data: no network.  Snapshots are stored as appguard_snapshot
-- would store them (handcrafted facts documents), which fires the same
-- triggers.  100 clients, each with a baseline snapshot and a later
-- snapshot without drift (so every grant's baseline has a verdict in
-- appguard.baseline_state, as after a sweep); 10,000 grants in each token
-- table (a protected table of the auth server's, and appguard's own
-- appguard.refresh_tokens, protected at install: one grant model, the
-- state of both tables' grants in appguard.grants).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION appguard;
CREATE SCHEMA bench;

-- The floor of any refresh check with appguard_check_refresh's signature:
-- a function of (regclass, text) returning jsonb that does nothing (the
-- server's own jsonb_build_object() with no arguments, which ignores them).
-- The same call in the same statement costs the parse of the table name,
-- the cast of the key, the call and the jsonb sent back.
CREATE FUNCTION bench.noop_check(tbl regclass, row_key text) RETURNS jsonb
LANGUAGE internal VOLATILE AS 'jsonb_build_object_noargs';

-- A facts document of an OV certificate for host, organization org
CREATE FUNCTION bench.facts(host text, org text, serial text)
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object(
		'schema', 1, 'host', host, 'port', 443, 'status', 'ok', 'error', NULL, 'elapsed_ms', 5,
		'taken_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
		'dns', jsonb_build_object(
			'rcode', 'NOERROR',
			'queries', '{"A": "NOERROR", "AAAA": "NOERROR", "NS": "NOERROR", "TXT": "NOERROR", "CAA": "NOERROR"}'::jsonb,
			'ad', false, 'a', '["192.0.2.10"]'::jsonb, 'aaaa', '[]'::jsonb, 'cname', '[]'::jsonb,
			'ns', '["ns1.example.net", "ns2.example.net"]'::jsonb, 'caa', '[]'::jsonb, 'caa_domain', NULL,
			'txt', '[]'::jsonb, 'ownership_ids', '[]'::jsonb,
			'registrable_domain', regexp_replace(host, '^[^.]+\.', '')),
		'tls', jsonb_build_object(
			'address', '192.0.2.10', 'sni', host, 'version', 'TLSv1.3',
			'cipher', 'TLS_AES_256_GCM_SHA384', 'verified', true, 'verify_code', 0,
			'verify_error', NULL, 'verify_depth', 0, 'hostname_match', true,
			'ocsp', NULL, 'ocsp_error', NULL, 'chain_in_order', true,
			'chain', jsonb_build_array(
				jsonb_build_object('subject', 'CN=' || host, 'issuer', 'CN=Bench CA', 'sha256', repeat(serial, 32)),
				jsonb_build_object('subject', 'CN=Bench CA', 'issuer', 'CN=Bench Root', 'sha256', repeat('b', 64))),
			'leaf', jsonb_build_object(
				'subject', jsonb_build_object('CN', host, 'O', org, 'C', 'US', 'ST', 'Wisconsin', 'L', 'Verona'),
				'issuer', '{"CN": "Bench CA", "O": "Bench CA"}'::jsonb,
				'san_dns', jsonb_build_array(host), 'serial', serial,
				'not_before', '2026-01-01T00:00:00Z', 'not_after', '2036-01-01T00:00:00Z',
				'sha256', repeat(serial, 32), 'spki_sha256', repeat('c', 64), 'tbs_sha256', repeat('d', 64),
				'key_type', 'RSA', 'key_bits', 2048, 'signature_algorithm', 'sha256WithRSAEncryption',
				'policies', '["2.23.140.1.2.2"]'::jsonb, 'validation', 'OV')))
$$;

-- Store a snapshot (fires appguard's evaluation trigger); returns its id
CREATE FUNCTION bench.snap(host text, org text, serial text)
RETURNS bigint LANGUAGE sql AS $$
	INSERT INTO appguard.snapshots (host, port, taken_at, status, facts)
	VALUES (host, 443, clock_timestamp(), 'ok', bench.facts(host, org, serial))
	RETURNING id
$$;

-- Milliseconds one statement takes: wall clock, and CPU time of this
-- backend (utime + stime of /proc/self/stat, in clock ticks of 10 ms),
-- which other processes on a shared machine do not inflate
CREATE FUNCTION bench.cpu_ticks()
RETURNS bigint LANGUAGE sql AS $$
	SELECT f[12]::bigint + f[13]::bigint
	FROM (SELECT string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') AS f) s
$$;
CREATE FUNCTION bench.time_ms(stmt text, OUT wall_ms double precision, OUT cpu_ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	c0 bigint := bench.cpu_ticks();
BEGIN
	EXECUTE stmt;
	wall_ms := 1000 * extract(epoch FROM clock_timestamp() - t0);
	cpu_ms := 10 * (bench.cpu_ticks() - c0);
END
$$;

SELECT count(appguard_register_client('client-' || i, 'Bench app ' || i,
											   ARRAY['https://app' || i || '.bench.example/callback']))
FROM generate_series(1, 100) i;
SELECT count(bench.snap('app' || i || '.bench.example', 'Example Health, Inc.', '01')) FROM generate_series(1, 100) i;

-- An auth server's token table, protected, and the same table unprotected
CREATE TABLE bench.tokens_guarded (
	id			bigint PRIMARY KEY,
	client_id	text NOT NULL,
	subject		text NOT NULL,
	status		text NOT NULL DEFAULT 'active',
	error_uri	text,
	last_used	timestamptz
);
CREATE TABLE bench.tokens_plain (LIKE bench.tokens_guarded INCLUDING ALL);
SELECT appguard_protect('bench.tokens_guarded', 'client_id', 'status', 'error_uri') ->> 'table';
INSERT INTO bench.tokens_guarded (id, client_id, subject)
SELECT i, 'client-' || (1 + i % 100), 'patient-' || i FROM generate_series(1, 10000) i;
INSERT INTO bench.tokens_plain SELECT * FROM bench.tokens_guarded;

-- appguard's own table, and a copy of it without appguard's triggers
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject)
SELECT 'rt-' || i, 'client-' || (1 + i % 100), 'patient-' || i FROM generate_series(1, 10000) i;
CREATE TABLE bench.refresh_tokens_plain (LIKE appguard.refresh_tokens INCLUDING ALL);
INSERT INTO bench.refresh_tokens_plain SELECT * FROM appguard.refresh_tokens;
CREATE SEQUENCE bench.token_seq;

-- a later sweep: every host measured again, renewed (new serial), no drift
SELECT count(bench.snap('app' || i || '.bench.example', 'Example Health, Inc.', '02')) FROM generate_series(1, 100) i;

SELECT count(*) AS grants_with_a_verdict
FROM appguard.grants r JOIN appguard.baseline_state b USING (client_id, baseline_snapshot_id)
WHERE NOT b.drifting;
VACUUM ANALYZE;

-- fan-out: a copy of appguard.refresh_tokens for the bare UPDATE
CREATE TABLE bench.fan_plain (LIKE appguard.refresh_tokens INCLUDING ALL);

-- The per-call cost of the refresh check (calls.sql), asked by an auth
-- server's role that is not a superuser, as in production: the check's
-- privilege test (SELECT on the table, row-level security) takes the
-- short way for a superuser.  CPU time from /proc/self/schedstat (time on
-- a CPU, in ns; read as the function's owner): calls cost microseconds,
-- finer than the clock ticks of /proc/self/stat.
CREATE FUNCTION bench.cpu_ns()
RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
	SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint
$$;
CREATE FUNCTION bench.cpu_ms_of(stmt text)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
	c0 bigint := bench.cpu_ns();
BEGIN
	EXECUTE stmt;
	RETURN (bench.cpu_ns() - c0) / 1e6;
END
$$;
CREATE ROLE bench_auth LOGIN IN ROLE appguard_auth_server;
GRANT USAGE ON SCHEMA bench TO bench_auth;
GRANT SELECT, UPDATE ON bench.tokens_guarded TO bench_auth;
