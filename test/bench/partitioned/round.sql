-- One round of the partitioned-table benchmark on one table (psql
-- variables: round, shape = plain or part, tokens, calls).  A client with
-- :tokens active grants (spread over the 30 days of issue, so over every
-- partition of bench.tok_part), inserted through appguard's triggers.
--   check    :calls refresh checks appguard_check_refresh(tbl, key) in
--            one statement (the fast path: allowed), vs the bare SELECT of
--            the row's status by its token id, vs the statement calling
--            nothing (subtracted from both): CPU time of the backend
--   fan-out  a drifting snapshot suspending the :tokens grants (the host
--            rows' status and error_uri; the grants are held, not written), vs a bare
--            UPDATE ... SET status of the same rows freshly inserted again
--            and vacuumed, appguard's triggers off: CPU time
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\set tbl '''bench.tok_' :shape ''''
\set client '''pf-' :shape '-' :round ''''
\set host '''pf-' :shape :round '.bench.example'''
\set prefix '''pf' :shape :round '-'''
SELECT appguard_register_client(:client, 'Partitioned bench app', ARRAY['https://' || :host || '/callback'])
	IS NOT NULL AS registered \gset
SELECT bench.snap(:host, 'Example Health, Inc.', '01') AS base \gset
SELECT format('INSERT INTO %s (token_id, client_id, subject, issued_at) '
			  'SELECT %L || i, %L, ''patient-'' || i, '
			  'timestamptz ''2026-11-01 01:00+00'' + (i %% 30) * interval ''1 day'' '
			  'FROM generate_series(1, %s) i', :tbl, :prefix, :client, :tokens) AS fill \gset
:fill;
-- a later snapshot without drift: every grant's baseline has a verdict
SELECT bench.snap(:host, 'Example Health, Inc.', '02') IS NOT NULL AS verdict \gset
SELECT format('VACUUM ANALYZE %s', :tbl) AS vac \gset
:vac;
VACUUM ANALYZE appguard.grants;
CHECKPOINT;

\set loop 'SELECT count(*) FROM generate_series(1, ' :calls ') i WHERE '
\set key '(' :prefix ' || (1 + mod(i, ' :tokens ')))'
SELECT bench.cpu_ms_of(:'loop' || :'key' || ' IS NOT NULL') AS empty \gset
SELECT bench.cpu_ms_of(:'loop' || format('appguard_check_refresh(%L, %s) IS NOT NULL', :tbl, :'key')) AS check \gset
SELECT bench.cpu_ms_of(:'loop' || format('(SELECT t.status FROM %s t WHERE t.token_id = %s) IS NOT NULL', :tbl, :'key'))
	AS sel \gset
SELECT format('SELECT bench.snap(%L, %L, %L)', :host, 'Northwind Data Brokers LLC', '03') AS suspend \gset
SELECT * FROM bench.time_ms(:'suspend') \gset fan_
SELECT format('SELECT count(*) FROM %s WHERE client_id = %L AND status = ''suspended''', :tbl, :client) AS cnt \gset
:cnt \gset fan_

-- the same rows, fresh again, without appguard's triggers
SET session_replication_role = replica;
SELECT format('DELETE FROM %s WHERE client_id = %L', :tbl, :client) AS del \gset
:del;
:fill;
:vac;
CHECKPOINT;
SELECT * FROM bench.time_ms(format('UPDATE %s SET status = %L WHERE client_id = %L AND status = %L',
								   :tbl, 'suspended', :client, 'active')) \gset bare_
:cnt \gset bare_
SET session_replication_role = origin;

SELECT :fan_cpu_ms AS fan_cpu_ms, round(:fan_wall_ms::numeric, 1) AS fan_wall_ms,
	   :bare_cpu_ms AS bare_cpu_ms, round(:bare_wall_ms::numeric, 1) AS bare_wall_ms,
	   :fan_count AS suspended, :bare_count AS bare_updated,
	   round((:check - :empty)::numeric, 1) AS check_ms, round((:sel - :empty)::numeric, 1) AS select_ms;
