-- One round of the fan-out benchmark (psql variables: round, tokens,
-- appguard_first).  A client with :tokens active grants on one baseline;
-- a snapshot that drifts from it (another organization) is stored, and
-- its trigger suspends them all: timed against a bare UPDATE ... SET
-- status of the same rows in a copy of the table without appguard.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\set client '''fan-' :round ''''
\set host '''fan' :round '.bench.example'''

-- fresh rows every round, and no leftovers of the previous one
DELETE FROM appguard.refresh_tokens WHERE client_id LIKE 'fan-%';
TRUNCATE bench.fan_plain;
SELECT appguard.appguard_register_client(:client, 'Fan-out app',
	ARRAY['https://' || :host || '/callback']) IS NOT NULL AS registered \gset
SELECT bench.snap(:host, 'Example Health, Inc.', '01') AS base \gset
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject, baseline_snapshot_id)
SELECT 'fan' || :round || '-' || i, :client, 'patient-' || i, :base FROM generate_series(1, :tokens) i;
INSERT INTO bench.fan_plain SELECT * FROM appguard.refresh_tokens WHERE client_id = :client;
VACUUM ANALYZE appguard.refresh_tokens;
VACUUM ANALYZE bench.fan_plain;

\if :appguard_first
CHECKPOINT;
SELECT bench.time_ms(format('SELECT bench.snap(%L, %L, %L)', :host, 'Northwind Data Brokers LLC', '02')) AS appguard_ms \gset
CHECKPOINT;
SELECT bench.time_ms(format('UPDATE bench.fan_plain SET status = %L WHERE client_id = %L AND baseline_snapshot_id = %s AND status = %L',
							'suspended', :client, :base, 'active')) AS bare_ms \gset
\else
CHECKPOINT;
SELECT bench.time_ms(format('UPDATE bench.fan_plain SET status = %L WHERE client_id = %L AND baseline_snapshot_id = %s AND status = %L',
							'suspended', :client, :base, 'active')) AS bare_ms \gset
CHECKPOINT;
SELECT bench.time_ms(format('SELECT bench.snap(%L, %L, %L)', :host, 'Northwind Data Brokers LLC', '02')) AS appguard_ms \gset
\endif

SELECT round(:appguard_ms::numeric, 1) AS appguard_ms, round(:bare_ms::numeric, 1) AS bare_ms,
	   (SELECT count(*) FROM appguard.refresh_tokens WHERE client_id = :client AND status = 'suspended') AS suspended,
	   (SELECT count(*) FROM bench.fan_plain WHERE status = 'suspended') AS updated,
	   (SELECT string_agg(array_to_string(reasons, ','), ';') FROM appguard.suspensions WHERE client_id = :client) AS reasons;
