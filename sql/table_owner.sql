-- A protected table's own triggers never run as appguard's superuser owner:
-- appguard suspends and re-approves its rows as the table's owner, in a
-- security-restricted operation.
\set ECHO none
SET client_min_messages = warning;
\i sql/lifecycle_helpers.inc
RESET client_min_messages;
\set ECHO all

CREATE ROLE appguard_regress_tabowner NOLOGIN IN ROLE appguard_auth_server;
CREATE SCHEMA tabowner AUTHORIZATION appguard_regress_tabowner;
SET ROLE appguard_regress_tabowner;
CREATE TABLE tabowner.tokens (id bigint PRIMARY KEY, client text, status text);
CREATE TABLE tabowner.seen (op text, who text, superuser boolean);
CREATE FUNCTION tabowner.spy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO tabowner.seen
	SELECT TG_OP || ' ' || NEW.status, current_user, rolsuper
	FROM pg_roles WHERE rolname = current_user;
	RETURN NULL;
END
$$;
RESET ROLE;

SELECT appguard_register_client('owner-app', 'Owner App',
										 ARRAY['https://owner.example.org/']) ->> 'host' AS host;
SELECT snap('owner.example.org') IS NOT NULL AS baseline;
INSERT INTO tabowner.tokens VALUES (1, 'owner-app', 'active'), (2, 'owner-app', 'active');
SELECT appguard_protect('tabowner.tokens', 'client', 'status') ->> 'rows' AS rows;

-- Later the owner, not a superuser, adds a trigger of its own
SET ROLE appguard_regress_tabowner;
CREATE TRIGGER spy AFTER UPDATE ON tabowner.tokens
	FOR EACH ROW EXECUTE FUNCTION tabowner.spy();
RESET ROLE;

-- A drifting snapshot suspends both rows: the trigger runs as the owner
SELECT snap('owner.example.org', 443, '{"tls.leaf.subject.O": "Other LLC"}') IS NOT NULL AS drifted;
SELECT id, status FROM tabowner.tokens ORDER BY id;

-- The owner re-approves one (it is also the auth server): again as the owner
SET ROLE appguard_regress_tabowner;
SELECT appguard_reapprove('tabowner.tokens', '1') ->> 'reapproved' AS reapproved;
RESET ROLE;
SELECT id, status FROM tabowner.tokens ORDER BY id;

-- What the owner's trigger saw: never a superuser
SELECT op, who, superuser FROM tabowner.seen ORDER BY op;

-- A trigger that tries to use the borrowed identity gets nowhere
SET ROLE appguard_regress_tabowner;
CREATE FUNCTION tabowner.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE 'ALTER ROLE appguard_regress_tabowner SUPERUSER';
	RETURN NULL;
END
$$;
CREATE TRIGGER escalate AFTER UPDATE ON tabowner.tokens
	FOR EACH ROW EXECUTE FUNCTION tabowner.escalate();
RESET ROLE;
-- (no CONTEXT: its line numbers of appguard's functions change with them)
\set SHOW_CONTEXT never
SELECT snap('owner.example.org', 443, '{"tls.leaf.subject.O": "Third Org Ltd"}') IS NOT NULL AS drifted;
\set SHOW_CONTEXT errors
SELECT rolsuper FROM pg_roles WHERE rolname = 'appguard_regress_tabowner';

-- Nor one that changes settings for the rest of the session: a
-- search_path that put the owner's operators before pg_catalog's would run
-- them in appguard's own SQL, as appguard's owner (security audit).  Every
-- setting the owner's code changes is rolled back when appguard takes its
-- identity back: the fan-out, a re-approval, a recheck by DDL.
SET ROLE appguard_regress_tabowner;
DROP TRIGGER escalate ON tabowner.tokens;
CREATE FUNCTION tabowner.leave_settings() RETURNS boolean LANGUAGE sql AS $$
	SELECT pg_catalog.set_config('search_path', 'tabowner, pg_catalog', false) IS NOT NULL
	   AND pg_catalog.set_config('tabowner.left_behind', current_user, false) IS NOT NULL
$$;
CREATE FUNCTION tabowner.keep_settings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM tabowner.leave_settings();
	RETURN NULL;
END
$$;
CREATE TRIGGER keep_settings AFTER UPDATE ON tabowner.tokens
	FOR EACH ROW EXECUTE FUNCTION tabowner.keep_settings();
SHOW search_path;
SELECT appguard_reapprove('tabowner.tokens', '1') ->> 'reapproved' AS reapproved;
SHOW search_path;
SELECT current_setting('tabowner.left_behind', true) AS left_behind;
RESET ROLE;
-- row 1, re-approved, is suspended by the next drift: the owner's trigger
-- runs in the fan-out
SELECT snap('owner.example.org', 443, '{"tls.leaf.subject.O": "Fourth Org"}') IS NOT NULL AS drifted;
SELECT id, status FROM tabowner.tokens ORDER BY id;
SHOW search_path;
SELECT current_setting('tabowner.left_behind', true) AS left_behind;
SET ROLE appguard_regress_tabowner;
-- DDL by the owner rechecks the table: appguard runs the new CHECK with
-- the suspended value as the owner (NOT VALID: PostgreSQL itself, which
-- would run it as the owner in the owner's own session, does not)
ALTER TABLE tabowner.tokens ADD CONSTRAINT status_ok CHECK (tabowner.leave_settings() AND status IS NOT NULL) NOT VALID;
SHOW search_path;
SELECT current_setting('tabowner.left_behind', true) AS left_behind;
RESET ROLE;
SELECT appguard_recheck_table('tabowner.tokens') ->> 'problem' AS problem;
SHOW search_path;
SELECT current_setting('tabowner.left_behind', true) AS left_behind;

SELECT appguard_unprotect('tabowner.tokens') IS NOT NULL AS unprotected;
DROP SCHEMA tabowner CASCADE;
SELECT appguard_unregister_client('owner-app');
DROP ROLE appguard_regress_tabowner;
