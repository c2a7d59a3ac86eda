-- The attacks of an adversarial review by ordinary roles, each reproduced;
-- none may do harm:
--   1. a protected table's owner makes appguard run its code as superuser:
--      a cast to json of a column's type (to_jsonb of the row), casts and
--      domain checks of the status column's type at appguard_protect;
--   2. one protected table switches suspensions off: a CHECK that rejects
--      the suspended value, a generated or dropped status column, disabled
--      triggers -- refused at protect, caught at DDL, kept to the table at
--      fan-out, and the table's refresh checks answer not allowed;
--   3. (settings: the TAP test of settings that hold)
--   4. an auth server un-suspends a token without re-approval by going
--      suspended -> revoked -> active;
--   5. a role that cannot SELECT a protected table, or a row of it under
--      row-level security, checks or re-approves its rows.
\set ECHO none
SET client_min_messages = warning;
\i sql/lifecycle_helpers.inc
RESET client_min_messages;
\set ECHO all
-- (no CONTEXT: line numbers of appguard's functions change with them)
\set SHOW_CONTEXT never

CREATE ROLE ag_hostile_owner NOLOGIN IN ROLE appguard_auth_server;
CREATE ROLE ag_hostile_reader NOLOGIN IN ROLE appguard_auth_server;
CREATE SCHEMA idp AUTHORIZATION ag_hostile_owner;
GRANT USAGE ON SCHEMA idp TO ag_hostile_reader;
-- the owner's weapon: any function it gets appguard to run as superuser
SET ROLE ag_hostile_owner;
CREATE FUNCTION idp.escalate() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE 'ALTER ROLE ag_hostile_owner SUPERUSER';
	RETURN true;
END
$$;
RESET ROLE;
CREATE VIEW pg_temp.owner_is_superuser AS
	SELECT rolsuper FROM pg_roles WHERE rolname = 'ag_hostile_owner';

SELECT appguard_register_client('hostile-app1', 'App One', ARRAY['https://app1.example.org/']) ->> 'host' AS host;
SELECT appguard_register_client('hostile-app2', 'App Two', ARRAY['https://app2.example.org/']) ->> 'host' AS host;
SELECT appguard_register_client('hostile-app3', 'App Three', ARRAY['https://app3.example.org/']) ->> 'host' AS host;
SELECT snap('app1.example.org') IS NOT NULL AS baseline1,
	   snap('app2.example.org') IS NOT NULL AS baseline2,
	   snap('app3.example.org') IS NOT NULL AS baseline3;

-- ---------------------------------------------------------------------
-- 1a. A cast to json of a column's type, added after protection
-- ---------------------------------------------------------------------
SET ROLE ag_hostile_owner;
CREATE TABLE idp.grants (id bigint PRIMARY KEY, client text, status text);
RESET ROLE;
SELECT appguard_protect('idp.grants', 'client', 'status') ->> 'rows' AS rows;
SET ROLE ag_hostile_owner;
CREATE TYPE idp.flag AS ENUM ('x');
CREATE FUNCTION idp.flag_json(idp.flag) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
	PERFORM idp.escalate();
	RETURN '"x"'::json;
END
$$;
CREATE CAST (idp.flag AS json) WITH FUNCTION idp.flag_json(idp.flag);
CREATE FUNCTION idp.flag_text(idp.flag) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM idp.escalate();
	RETURN 'x';
END
$$;
CREATE CAST (idp.flag AS text) WITH FUNCTION idp.flag_text(idp.flag);
ALTER TABLE idp.grants ADD COLUMN f idp.flag DEFAULT 'x';
-- every trigger appguard has on the table: insert, key, status, delete
INSERT INTO idp.grants VALUES (1, 'hostile-app1', 'active'), (2, 'hostile-app1', 'active'), (3, 'hostile-app1', 'active');
UPDATE idp.grants SET id = 4 WHERE id = 3;
UPDATE idp.grants SET status = 'revoked' WHERE id = 4;
DELETE FROM idp.grants WHERE id = 4;
RESET ROLE;
SELECT * FROM pg_temp.owner_is_superuser;
SELECT token_key, client_id, state FROM appguard.grant_states
WHERE token_table = 'idp.grants'::regclass ORDER BY token_key;
-- a status column of such a type is read without the cast too
SET ROLE ag_hostile_owner;
CREATE TYPE idp.state AS ENUM ('active', 'suspended', 'revoked');
CREATE FUNCTION idp.state_json(idp.state) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
	PERFORM idp.escalate();
	RETURN to_json($1::text);
END
$$;
CREATE CAST (idp.state AS json) WITH FUNCTION idp.state_json(idp.state);
CREATE TABLE idp.grants_enum (id bigint PRIMARY KEY, client text, status idp.state);
INSERT INTO idp.grants_enum VALUES (1, 'hostile-app1', 'active'), (2, 'hostile-app1', 'revoked');
RESET ROLE;

-- ---------------------------------------------------------------------
-- 1b. appguard_protect reads the values and the rows as the owner
-- ---------------------------------------------------------------------
-- rows already in the table, adopted at protect: no cast to json
SELECT appguard_protect('idp.grants_enum', 'client', 'status') - 'table' AS protected;
SELECT * FROM pg_temp.owner_is_superuser;
SELECT token_key, state FROM appguard.grant_states WHERE token_table = 'idp.grants_enum'::regclass ORDER BY token_key;
SELECT appguard_unprotect('idp.grants_enum') ->> 'rows_forgotten' AS forgotten;
-- a cast from text into the status type runs as the owner, not as superuser
SET ROLE ag_hostile_owner;
CREATE FUNCTION idp.state_in(text) RETURNS idp.state LANGUAGE plpgsql AS $$
BEGIN
	PERFORM idp.escalate();
	RETURN $1::name::idp.state;
END
$$;
CREATE CAST (text AS idp.state) WITH FUNCTION idp.state_in(text);
RESET ROLE;
SELECT try($$SELECT appguard_protect('idp.grants_enum', 'client', 'status')$$);
SELECT * FROM pg_temp.owner_is_superuser;
-- a domain's CHECK on the status column runs as the owner too
SET ROLE ag_hostile_owner;
CREATE DOMAIN idp.checked AS text CHECK (idp.escalate());
CREATE TABLE idp.grants_domain (id bigint PRIMARY KEY, client text, status idp.checked);
RESET ROLE;
SELECT try($$SELECT appguard_protect('idp.grants_domain', 'client', 'status')$$);
SELECT * FROM pg_temp.owner_is_superuser;

-- ---------------------------------------------------------------------
-- 2a. appguard_protect refuses a table it could not suspend rows of
-- ---------------------------------------------------------------------
SET ROLE ag_hostile_owner;
CREATE TABLE idp.g_check (id bigint PRIMARY KEY, client text,
						  status text CHECK (status IN ('active', 'revoked')));
CREATE TABLE idp.g_generated (id bigint PRIMARY KEY, client text, enabled boolean,
							  status text GENERATED ALWAYS AS (CASE WHEN enabled THEN 'active' ELSE 'revoked' END) STORED);
CREATE DOMAIN idp.two_states AS text CHECK (VALUE IN ('active', 'revoked'));
CREATE TABLE idp.g_domain (id bigint PRIMARY KEY, client text, status idp.two_states);
RESET ROLE;
SELECT try($$SELECT appguard_protect('idp.g_check', 'client', 'status')$$);
SELECT try($$SELECT appguard_protect('idp.g_generated', 'client', 'status')$$);
SELECT try($$SELECT appguard_protect('idp.g_domain', 'client', 'status')$$);
SELECT count(*) AS protected FROM appguard.protected_tables
WHERE tbl::text IN ('idp.g_check', 'idp.g_generated', 'idp.g_domain');

-- ---------------------------------------------------------------------
-- 2b. DDL that breaks a protected table later is caught, and a fan-out
-- keeps the failure to that table
-- ---------------------------------------------------------------------
SET ROLE ag_hostile_owner;
CREATE TABLE idp.g_broken (id bigint PRIMARY KEY, client text, status text, error_uri text);
CREATE TABLE idp.g_sound (id bigint PRIMARY KEY, client text, status text);
INSERT INTO idp.g_broken VALUES (1, 'hostile-app2', 'active', NULL), (2, 'hostile-app2', 'active', NULL);
INSERT INTO idp.g_sound VALUES (1, 'hostile-app2', 'active'), (2, 'hostile-app1', 'active');
RESET ROLE;
SELECT appguard_protect('idp.g_broken', 'client', 'status', 'error_uri') ->> 'rows' AS rows;
SELECT appguard_protect('idp.g_sound', 'client', 'status') ->> 'rows' AS rows;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('t3', 'hostile-app3', 'patient');
-- the owner adds a CHECK that rejects the suspended value: found at once
SET ROLE ag_hostile_owner;
ALTER TABLE idp.g_broken ADD CONSTRAINT no_suspension CHECK (status <> 'suspended');
RESET ROLE;
SELECT token_table, problem, problem_sqlstate, rows_suspended FROM appguard.table_problems;
SELECT kind, token_table, detail ->> 'found_by' AS found_by FROM appguard.events
WHERE kind = 'table_problem' ORDER BY id;
-- app2 drifts: the broken table's rows are suspended in appguard's state,
-- the sound table's rows in the host's too
SELECT snap('app2.example.org', 443, '{"tls.leaf.subject.O": "Someone Else LLC"}') IS NOT NULL AS drifted;
SELECT id, status, error_uri IS NOT NULL AS has_error_uri FROM idp.g_broken ORDER BY id;
SELECT id, client, status FROM idp.g_sound ORDER BY id;
SELECT token_table, token_key, state, suspension_id IS NOT NULL AS suspended_by_appguard
FROM appguard.grant_states WHERE token_table IN ('idp.g_broken'::regclass, 'idp.g_sound'::regclass)
ORDER BY token_table::text, token_key;
-- refresh checks of the broken table's rows answer not allowed, with the error_uri
SELECT appguard_check_refresh('idp.g_broken', '1') -> 'error' ->> 'error' AS g_broken_1,
	   appguard_check_refresh('idp.g_broken', '1') -> 'error' ? 'error_uri' AS with_error_uri,
	   appguard_check_refresh('idp.g_sound', '1') ->> 'allowed' AS g_sound_1,
	   appguard_check_refresh('idp.g_sound', '2') ->> 'allowed' AS g_sound_2_other_app;
-- other apps are not affected: app3 drifts and its token is suspended
SELECT snap('app3.example.org', 443, '{"dns.ownership_ids": []}') IS NOT NULL AS ok;
SELECT snap('app3.example.org', 443, '{"tls.verified": false, "tls.verify_error": "certificate has expired", "tls.verify_code": 10}') IS NOT NULL AS drifted;
SELECT status FROM public.tokens WHERE token_id = 't3';
SELECT appguard_check_refresh('t3') ->> 'allowed' AS t3_allowed;
SELECT count(*) AS undecided FROM appguard.suspensions WHERE state IN ('pending', 'held');
-- the owner drops the CHECK: the problem is cleared and the host rows written
SET ROLE ag_hostile_owner;
ALTER TABLE idp.g_broken DROP CONSTRAINT no_suspension;
RESET ROLE;
SELECT count(*) AS problems FROM appguard.table_problems;
SELECT id, status, error_uri IS NOT NULL AS has_error_uri FROM idp.g_broken ORDER BY id;
SELECT kind, detail ->> 'rows_written' AS rows_written FROM appguard.events
WHERE kind = 'table_problem_cleared' ORDER BY id;
-- a dropped status column, and disabled triggers, are problems too
SET ROLE ag_hostile_owner;
ALTER TABLE idp.g_sound DISABLE TRIGGER appguard_protect_insert;
RESET ROLE;
SELECT token_table, problem FROM appguard.table_problems ORDER BY 1;
SET ROLE ag_hostile_owner;
ALTER TABLE idp.g_sound ENABLE TRIGGER appguard_protect_insert;
ALTER TABLE idp.g_broken DROP COLUMN status CASCADE;
RESET ROLE;
SELECT token_table, problem FROM appguard.table_problems ORDER BY 1;
-- and a problem the DDL check cannot foresee (a CHECK on two columns)
-- is kept to its table at fan-out
SET ROLE ag_hostile_owner;
CREATE TABLE idp.g_two (id bigint PRIMARY KEY, client text, status text, note text,
						CHECK (status <> 'suspended' OR note IS NOT NULL));
INSERT INTO idp.g_two VALUES (1, 'hostile-app1', 'active', NULL);
RESET ROLE;
SELECT appguard_protect('idp.g_two', 'client', 'status') ->> 'rows' AS rows;
SELECT snap('app1.example.org', 443, '{"tls.leaf.subject.O": "Not App One Inc"}') IS NOT NULL AS drifted;
SELECT token_table, problem_sqlstate, rows_suspended FROM appguard.table_problems
WHERE token_table = 'idp.g_two'::regclass;
SELECT appguard_check_refresh('idp.g_two', '1') ->> 'allowed' AS g_two_allowed,
	   (SELECT status FROM idp.g_sound WHERE id = 2) AS g_sound_app1;

-- ---------------------------------------------------------------------
-- 4. suspended -> revoked -> active is refused; re-applying a suspension
-- never trips the guard
-- ---------------------------------------------------------------------
SET ROLE ag_hostile_owner;
SELECT try($$UPDATE appguard.refresh_tokens SET status = 'revoked' WHERE token_id = 't3'$$);
SELECT regexp_replace(try($$UPDATE appguard.refresh_tokens SET status = 'active' WHERE token_id = 't3'$$),
					  'suspension [0-9]+', 'suspension N') AS try;
RESET ROLE;
SELECT status, suspension_id IS NOT NULL AS suspended_by_appguard FROM public.tokens
WHERE token_id = 't3';
SELECT try($$SELECT appguard_reapprove('t3')$$);
-- a grant on the drifted baseline that the fan-out missed (a restored
-- row): the refresh check applies the suspension to it, no 55000
SELECT restore_token('t3b', 'hostile-app3', 'patient', baseline_snapshot_id) FROM appguard.suspensions
WHERE client_id = 'hostile-app3' AND state = 'applied';
SELECT appguard_check_refresh('t3b') ->> 'allowed' AS t3b_allowed;
SELECT status, suspension_id IS NOT NULL AS suspended_by_appguard FROM public.tokens
WHERE token_id = 't3b';

-- ---------------------------------------------------------------------
-- 5. The table's privileges and row-level security are respected
-- ---------------------------------------------------------------------
SET ROLE ag_hostile_reader;
SELECT try($$SELECT appguard_check_refresh('idp.g_sound', '1')$$);
SELECT try($$SELECT appguard_reapprove('idp.g_sound', '1')$$);
RESET ROLE;
SET ROLE ag_hostile_owner;
GRANT SELECT ON idp.g_sound TO ag_hostile_reader;
ALTER TABLE idp.g_sound ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_app1 ON idp.g_sound FOR SELECT TO ag_hostile_reader USING (client = 'hostile-app1');
RESET ROLE;
SET ROLE ag_hostile_reader;
SELECT try($$SELECT appguard_check_refresh('idp.g_sound', '1')$$);
SELECT try($$SELECT appguard_reapprove('idp.g_sound', '1')$$);
SELECT appguard_check_refresh('idp.g_sound', '2') -> 'error' ->> 'error' AS g_sound_2;
SELECT appguard_reapprove('idp.g_sound', '2') ->> 'reapproved' AS reapproved;
RESET ROLE;
SELECT id, status FROM idp.g_sound ORDER BY id;

-- ---------------------------------------------------------------------
\set SHOW_CONTEXT errors
SELECT * FROM pg_temp.owner_is_superuser;
-- a broken table can be unprotected
SELECT appguard_unprotect('idp.g_broken') - 'table' AS unprotected;
SET client_min_messages = warning;
SELECT appguard_unprotect(tbl) IS NOT NULL FROM appguard.protected_tables
WHERE tbl::text LIKE 'idp.%' ORDER BY tbl::text;
DROP SCHEMA idp CASCADE;
DELETE FROM appguard.refresh_tokens WHERE client_id IN ('hostile-app1', 'hostile-app2', 'hostile-app3');
SELECT appguard_unregister_client(c) IS NOT NULL FROM unnest(ARRAY['hostile-app1', 'hostile-app2', 'hostile-app3']) c;
RESET client_min_messages;
DROP ROLE ag_hostile_owner;
DROP ROLE ag_hostile_reader;
