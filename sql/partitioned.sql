-- Partitioned token tables: appguard_protect takes the partitioned table
-- (its root) as one table; the row triggers PostgreSQL clones to the
-- partitions map them to it; partitions created, attached, truncated,
-- detached and dropped later stay covered or take their grants with them;
-- what cannot work is refused.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SET appguard.allowed_ports = '';
SELECT appguard_register_client('pt', 'Partition App', ARRAY['https://pt.example.org/cb']) IS NOT NULL;
SELECT snap('pt.example.org') IS NOT NULL AS baseline;

-- A token table partitioned by issue time, its primary key the token id
-- and the partition key; a column dropped before the last partition is
-- made, so that partition numbers its columns otherwise
CREATE TABLE public.ptok (
	token_id text NOT NULL,
	dropme int,
	client text NOT NULL,
	status text NOT NULL DEFAULT 'active',
	err text,
	subject text,
	issued_at timestamptz NOT NULL,
	PRIMARY KEY (token_id, issued_at)
) PARTITION BY RANGE (issued_at);
CREATE TABLE public.ptok_jan PARTITION OF public.ptok FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE public.ptok_feb PARTITION OF public.ptok FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
INSERT INTO public.ptok (token_id, client, issued_at) VALUES ('j1', 'pt', '2026-01-05'), ('f1', 'pt', '2026-02-05');

-- refused: a partition, a key that is not the primary key's first column,
-- a primary key with a column beyond the partition key, no primary key
CREATE TABLE public.ptok_ts (token_id text, client text, status text, issued_at timestamptz,
	PRIMARY KEY (issued_at, token_id)) PARTITION BY RANGE (issued_at);
CREATE TABLE public.ptok_extra (token_id text, client text, status text, issued_at timestamptz,
	PRIMARY KEY (token_id, client, issued_at)) PARTITION BY RANGE (issued_at);
CREATE TABLE public.ptok_expr (token_id text, client text, status text, issued_at timestamptz)
	PARTITION BY RANGE (date_trunc('day', issued_at AT TIME ZONE 'UTC'));
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_protect('ptok_jan', 'client', 'status')$$),
	($$SELECT appguard_protect('ptok_ts', 'client', 'status')$$),
	($$SELECT appguard_protect('ptok_extra', 'client', 'status')$$),
	($$SELECT appguard_protect('ptok_expr', 'client', 'status')$$)
) AS t(sql);

SELECT appguard_protect('ptok', 'client', 'status', 'err', subject_column => 'subject')
	- 'status_type' AS protected;
SELECT tgrelid::regclass AS tbl, tgname, tgparentid <> 0 AS cloned,
	   CASE WHEN tgtype & 2 <> 0 THEN 'before' ELSE 'after' END AS timing
FROM pg_trigger WHERE tgname LIKE 'appguard_protect_%' AND tgrelid::regclass::text LIKE 'ptok%'
ORDER BY 1, 2;
-- a new partition, created after protect, numbers the columns otherwise
ALTER TABLE public.ptok DROP COLUMN dropme;
CREATE TABLE public.ptok_mar PARTITION OF public.ptok FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
SELECT attrelid::regclass AS tbl, attnum FROM pg_attribute
WHERE attrelid IN ('ptok'::regclass, 'ptok_mar'::regclass) AND attname = 'client' ORDER BY 1;
SELECT count(*) AS truncate_trigger FROM pg_trigger
WHERE tgrelid = 'ptok_mar'::regclass AND tgname = 'appguard_protect_truncate';
INSERT INTO public.ptok (token_id, client, subject, issued_at)
VALUES ('j2', 'pt', 'alice', '2026-01-06'), ('f2', 'pt', 'bob', '2026-02-06'),
	   ('m1', 'pt', 'carol', '2026-03-06'), ('m2', 'stranger', NULL, '2026-03-07');
SELECT token_table, token_key, client_id, state, subject, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
SELECT appguard_check_refresh('ptok', 'm1');
SELECT try($$SELECT appguard_check_refresh('ptok_mar', 'm1')$$);

-- the host retires a row of a partition (its status trigger, in C)
UPDATE public.ptok SET status = 'revoked' WHERE token_id = 'j1';
SELECT token_key, state FROM grant_states WHERE token_table = 'ptok'::regclass AND token_key = 'j1';

-- drift: the fan-out writes the rows in every partition
SELECT snap('pt.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT tableoid::regclass AS part, token_id, status, err IS NOT NULL AS has_error_uri
FROM public.ptok ORDER BY token_id;
SELECT token_key, state FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
SELECT appguard_check_refresh('ptok', 'm1') ->> 'allowed' AS allowed;
SELECT tokens_suspended FROM suspensions WHERE client_id = 'pt';
-- a rotation in a partition joins the consent's suspension (subject column)
INSERT INTO public.ptok (token_id, client, subject, issued_at) VALUES ('m3', 'pt', 'carol', '2026-03-08');
SELECT token_id, status FROM public.ptok WHERE token_id = 'm3';
-- re-approval writes the row back in its partition
SELECT appguard_reapprove('ptok', 'm1') ->> 'reapproved' AS reapproved;
SELECT token_id, status FROM public.ptok WHERE token_id IN ('m1', 'm3') ORDER BY 1;

-- TRUNCATE of one partition forgets that partition's grants only
TRUNCATE public.ptok_jan;
SELECT token_key FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
-- a detached partition takes its rows' grants, and appguard's triggers
ALTER TABLE public.ptok DETACH PARTITION public.ptok_feb;
SELECT token_key FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
SELECT count(*) AS triggers_left FROM pg_trigger
WHERE tgrelid = 'ptok_feb'::regclass AND tgname LIKE 'appguard_%';
-- an attached table brings its rows, which are adopted
INSERT INTO public.ptok_feb (token_id, client, status, issued_at) VALUES ('f3', 'pt', 'active', '2026-02-07');
ALTER TABLE public.ptok ATTACH PARTITION public.ptok_feb FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
SELECT token_key, state FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
-- a dropped partition takes its rows' grants
DROP TABLE public.ptok_mar;
SELECT token_key FROM grant_states WHERE token_table = 'ptok'::regclass ORDER BY token_key;
SELECT kind, detail - 'partitions_covered' - 'partitions_left' AS detail
FROM events WHERE kind = 'partitions_changed' ORDER BY id;

-- a cloned trigger disabled on a partition is a table problem
ALTER TABLE public.ptok_feb DISABLE TRIGGER appguard_protect_insert;
SELECT token_table, problem FROM table_problems;
ALTER TABLE public.ptok_feb ENABLE TRIGGER appguard_protect_insert;
SELECT count(*) AS problems FROM table_problems;

-- a partition dropped while the event triggers were idle (replica role):
-- its rows' grants stay until appguard_prune reconciles the table
SET session_replication_role = replica;
DROP TABLE public.ptok_feb;
RESET session_replication_role;
SELECT count(*) AS stale_grants FROM grant_states WHERE token_table = 'ptok'::regclass;
SELECT (appguard_prune('100 years') ->> 'grants_of_gone_rows')::int AS forgotten;
SELECT count(*) AS grants_left FROM grant_states WHERE token_table = 'ptok'::regclass;

-- TRUNCATE of the partitioned table forgets all its grants
TRUNCATE public.ptok;
SELECT count(*) AS grants_left FROM grant_states WHERE token_table = 'ptok'::regclass;

-- refused: a partitioned table one of whose partitions is protected on its
-- own (whose rows that partition's own triggers keep guarding)
CREATE TABLE public.pouter (token_id text NOT NULL, client text NOT NULL, status text NOT NULL,
	issued_at timestamptz NOT NULL) PARTITION BY RANGE (issued_at);
CREATE TABLE public.pinner (LIKE public.pouter, PRIMARY KEY (token_id));
SELECT appguard_protect('pinner', 'client', 'status') ->> 'rows' AS adopted;
ALTER TABLE public.pouter ATTACH PARTITION public.pinner FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
SELECT try($$SELECT appguard_protect('pouter', 'client', 'status')$$);
INSERT INTO public.pouter VALUES ('i1', 'pt', 'active', '2026-01-02');
SELECT token_table, token_key, state FROM grant_states WHERE token_key = 'i1';

-- a tree of two levels: the primary key holds the partition keys of both;
-- the leaves map to the root through the level between
CREATE TABLE public.ptree (token_id text NOT NULL, client text NOT NULL, status text NOT NULL DEFAULT 'active',
	issued_at timestamptz NOT NULL, region int NOT NULL, PRIMARY KEY (token_id, issued_at, region))
	PARTITION BY RANGE (issued_at);
CREATE TABLE public.ptree_jan PARTITION OF public.ptree FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')
	PARTITION BY LIST (region);
CREATE TABLE public.ptree_jan_1 PARTITION OF public.ptree_jan FOR VALUES IN (1);
SELECT appguard_protect('ptree', 'client', 'status') ->> 'rows' AS adopted;
SELECT try($$SELECT appguard_protect('ptree_jan', 'client', 'status')$$);
CREATE TABLE public.ptree_jan_2 PARTITION OF public.ptree_jan FOR VALUES IN (2);
INSERT INTO public.ptree VALUES ('t1', 'pt', 'active', '2026-01-02', 1), ('t2', 'pt', 'active', '2026-01-02', 2);
SELECT token_table, token_key, state FROM grant_states WHERE token_table = 'ptree'::regclass ORDER BY 2;
ALTER TABLE public.ptree DETACH PARTITION public.ptree_jan;
SELECT count(*) AS grants_left FROM grant_states WHERE token_table = 'ptree'::regclass;
SELECT count(*) AS triggers_left FROM pg_trigger t
WHERE t.tgname LIKE 'appguard_%' AND t.tgrelid IN (SELECT relid FROM pg_partition_tree('ptree_jan'));
SELECT appguard_unprotect('ptree') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.ptree, public.ptree_jan;

-- unprotect removes every trigger appguard put on the tree
SELECT appguard_unprotect('ptok') - 'table' AS unprotected;
SELECT count(*) AS triggers_left FROM pg_trigger t
WHERE t.tgname LIKE 'appguard_%' AND t.tgrelid IN (SELECT relid FROM pg_partition_tree('ptok'));
SELECT appguard_unprotect('pinner') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.ptok, public.ptok_ts, public.ptok_extra, public.ptok_expr, public.pouter;
SELECT appguard_unregister_client('pt');
