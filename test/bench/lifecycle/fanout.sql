-- One round of the fan-out benchmark (psql variables: round, tokens,
-- appguard_first).  A client with :tokens active grants on one baseline;
-- a snapshot that drifts from it (another organization) is stored, and
-- its trigger suspends them all.  Timed against bare UPDATE ... SET status
-- statements:
--   same rows   the same rows of appguard.refresh_tokens (deleted and
--               inserted again, vacuumed), its triggers off
--               (session_replication_role = replica), before or after the
--               suspension -- the order alternates between rounds;
--   copy        the same rows in a table without appguard's triggers.
-- One grant model: the suspension writes the token rows (status,
-- error_uri, as the table's owner); their grants are held by its baseline
-- (appguard.grant_states), not written;
-- the token table has no baseline column, so the bare statements pick
-- the client's active tokens (all of them share the baseline).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\set client '''fan-' :round ''''
\set host '''fan' :round '.bench.example'''

-- a client with a baseline, and a copy table without triggers
SET session_replication_role = replica;
DELETE FROM appguard.refresh_tokens WHERE client_id LIKE 'fan-%';
DELETE FROM appguard.grants WHERE token_table = 'appguard.refresh_tokens'::regclass AND client_id LIKE 'fan-%';
SET session_replication_role = origin;
TRUNCATE bench.fan_plain;
SELECT appguard_register_client(:client, 'Fan-out app',
	ARRAY['https://' || :host || '/callback']) IS NOT NULL AS registered \gset
SELECT bench.snap(:host, 'Example Health, Inc.', '01') AS base \gset

\set suspend 'SELECT * FROM bench.time_ms(format(''SELECT bench.snap(%L, %L, %L)'', ' :host ', ''Northwind Data Brokers LLC'', ''02''))'
\set bare 'SELECT * FROM bench.time_ms(format(''UPDATE appguard.refresh_tokens SET status = %L WHERE client_id = %L AND status = %L'', ''suspended'', ' :client ', ''active''))'
\set copy 'SELECT * FROM bench.time_ms(format(''UPDATE bench.fan_plain SET status = %L WHERE client_id = %L AND status = %L'', ''suspended'', ' :client ', ''active''))'

-- Each timed statement runs on rows just inserted and vacuumed
-- (fanout_fresh.sql), so that both find the same table layout: an
-- UPDATE of rows updated before (free space in their pages) costs much
-- less than one of freshly inserted rows.
\if :appguard_first
\ir fanout_fresh.sql
:suspend \gset appguard_
SELECT count(*) AS appguard_count FROM appguard.refresh_tokens WHERE client_id = :client AND status = 'suspended' \gset
\ir fanout_fresh.sql
SET session_replication_role = replica;
:bare \gset bare_
SET session_replication_role = origin;
SELECT count(*) AS bare_count FROM appguard.refresh_tokens WHERE client_id = :client AND status = 'suspended' \gset
\else
\ir fanout_fresh.sql
SET session_replication_role = replica;
:bare \gset bare_
SET session_replication_role = origin;
SELECT count(*) AS bare_count FROM appguard.refresh_tokens WHERE client_id = :client AND status = 'suspended' \gset
\ir fanout_fresh.sql
:suspend \gset appguard_
SELECT count(*) AS appguard_count FROM appguard.refresh_tokens WHERE client_id = :client AND status = 'suspended' \gset
\endif

-- the copy: the same rows, fresh, in a table without appguard's triggers
INSERT INTO bench.fan_plain (token_id, client_id, subject)
SELECT 'fan' || :round || '-' || i, :client, 'patient-' || i FROM generate_series(1, :tokens) i;
VACUUM ANALYZE bench.fan_plain;
CHECKPOINT;
:copy \gset copy_

SELECT round(:appguard_wall_ms::numeric, 1) AS appguard_wall_ms, :appguard_cpu_ms AS appguard_cpu_ms,
	   round(:bare_wall_ms::numeric, 1) AS bare_wall_ms, :bare_cpu_ms AS bare_cpu_ms,
	   round(:copy_wall_ms::numeric, 1) AS copy_wall_ms, :copy_cpu_ms AS copy_cpu_ms,
	   :appguard_count AS suspended, :bare_count AS bare_updated,
	   (SELECT count(*) FROM bench.fan_plain WHERE status = 'suspended') AS copy_updated,
	   (SELECT string_agg(array_to_string(reasons, ','), ';') FROM appguard.suspensions WHERE client_id = :client) AS reasons;
