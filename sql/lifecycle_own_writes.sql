-- appguard's own writes of a protected table's status (a fan-out, a
-- re-approval) fire its trigger appguard_protect_status as the host's do
-- (no WHEN clause: PostgreSQL would parse one again for every statement),
-- and appguard.grant_sync returns at once for them: appguard.applying(),
-- a flag in the backend (src/applying.c), says whose write it is.  The
-- host's writes, those its trigger code makes during appguard's write
-- included, change appguard's state.  Calls are counted with
-- track_functions in one transaction (pg_stat_xact_user_functions).
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SET appguard.allowed_ports = '';

SELECT appguard_register_client('ow', 'Own Writes App', ARRAY['https://ow.example.org/cb']) IS NOT NULL;
SELECT appguard_register_client('ow-linked', 'Linked App', ARRAY['https://linked.ow.example.org/cb']) IS NOT NULL;
SELECT appguard_register_client('ow-other', 'Other App', ARRAY['https://other.ow.example.org/cb']) IS NOT NULL;
SELECT snap('ow.example.org') IS NOT NULL, snap('linked.ow.example.org') IS NOT NULL,
	   snap('other.ow.example.org') IS NOT NULL;

-- The host's table, owned by the host's role: 40 rows of 'ow', one of
-- 'ow-linked' (row 41) and one of 'ow-other' (row 42).  The host's own
-- trigger revokes row 42 when row 41 gets suspended: a write of the host,
-- made while appguard's fan-out runs.
CREATE ROLE appguard_regress_ow_host IN ROLE appguard_auth_server;
CREATE SCHEMA ow AUTHORIZATION appguard_regress_ow_host;
SET ROLE appguard_regress_ow_host;
CREATE TABLE ow.tokens (id int PRIMARY KEY, client text NOT NULL,
						status text NOT NULL DEFAULT 'active', err text);
INSERT INTO ow.tokens (id, client)
SELECT i, CASE i WHEN 41 THEN 'ow-linked' WHEN 42 THEN 'ow-other' ELSE 'ow' END
FROM generate_series(1, 42) i;
CREATE FUNCTION ow.revoke_linked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE ow.tokens SET status = 'revoked' WHERE id = 42;
	RETURN NULL;
END
$$;
CREATE TRIGGER host_revoke_linked AFTER UPDATE OF status ON ow.tokens
	FOR EACH ROW WHEN (NEW.id = 41 AND NEW.status = 'suspended')
	EXECUTE FUNCTION ow.revoke_linked();
RESET ROLE;
SELECT appguard_protect('ow.tokens', 'client', 'status', 'err') ->> 'active_rows' AS active_rows;
SELECT pg_get_triggerdef(oid) FROM pg_trigger
WHERE tgrelid = 'ow.tokens'::regclass AND tgname = 'appguard_protect_status';

-- calls of appguard.grant_sync in this transaction
CREATE FUNCTION public.sync_calls() RETURNS bigint LANGUAGE sql AS $$
	SELECT coalesce(sum(f.calls), 0) FROM pg_catalog.pg_stat_xact_user_functions f
	WHERE f.schemaname = 'appguard' AND f.funcname = 'grant_sync'
$$;
CREATE VIEW public.ow_state AS
SELECT g.state, h.status, count(*) AS n, count(h.err) AS with_error_uri
FROM ow.tokens h JOIN appguard.grant_states g ON g.token_table = 'ow.tokens'::regclass
										AND g.token_key = h.id::text
GROUP BY 1, 2 ORDER BY 1, 2;

BEGIN;
SET LOCAL track_functions = 'all';
SELECT sync_calls() AS calls_before;
-- the fan-out: 40 rows suspended; grant_sync, called for each, leaves them
-- to appguard
SELECT snap('ow.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT sync_calls() AS calls_after_fan_out;
SELECT * FROM ow_state;
SELECT appguard.applying() AS flag_raised_after;
-- the host's UPDATE of the status: one call per row, appguard's state follows
UPDATE ow.tokens SET status = 'revoked' WHERE id IN (1, 2);
SELECT sync_calls() AS calls_after_host_update;
SELECT token_key, state FROM grant_states
WHERE token_table = 'ow.tokens'::regclass AND token_key IN ('1', '2', '3') ORDER BY 1;
-- the host's trigger, fired by appguard's fan-out of row 41, revokes row
-- 42: that is the host's write (one call), and appguard's state follows
SELECT snap('linked.ow.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT sync_calls() AS calls_after_linked_fan_out;
SELECT h.id, h.status, g.state, g.suspension_id IS NOT NULL AS suspended_by_appguard
FROM ow.tokens h JOIN grant_states g ON g.token_table = 'ow.tokens'::regclass AND g.token_key = h.id::text
WHERE h.id IN (41, 42) ORDER BY 1;
-- a re-approval is appguard's own write too: one call, which leaves it
SELECT snap('ow.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS new_facts;
SELECT appguard_reapprove('ow.tokens', '3') ->> 'reapproved' AS reapproved;
SELECT sync_calls() AS calls_after_reapproval;
SELECT h.status, g.state FROM ow.tokens h
	 JOIN grant_states g ON g.token_table = 'ow.tokens'::regclass AND g.token_key = h.id::text
WHERE h.id = 3;
COMMIT;

-- No setting tells appguard's writes: appguard.* names are reserved, so a
-- host role cannot make one up either.
SET ROLE appguard_regress_ow_host;
SELECT try($$SET appguard.applying_depth = '0'$$);
SELECT try($$SELECT pg_catalog.set_config('appguard.applying_depth', '0', true)$$);
RESET ROLE;
SELECT count(*) AS settings_named_so FROM pg_settings WHERE name = 'appguard.applying_depth';

-- The flag (appguard.set_applying, called here as the superuser its owner
-- is) through raises, lowers, subtransactions and functions with a SET
-- clause.  Each line: whether a row trigger of a statement run here sees
-- appguard.applying().
CREATE TABLE ow.probe (n int);
CREATE TABLE ow.seen (applying boolean);
CREATE FUNCTION ow.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO ow.seen VALUES (appguard.applying());
	RETURN NULL;
END
$$;
CREATE TRIGGER record AFTER INSERT ON ow.probe FOR EACH ROW EXECUTE FUNCTION ow.record();
CREATE FUNCTION public.flag() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r ow.seen;
BEGIN
	DELETE FROM ow.seen;
	INSERT INTO ow.probe VALUES (1);
	SELECT * INTO r FROM ow.seen;
	RETURN format('applying %s', r.applying);
END
$$;
CREATE FUNCTION public.raise_with_set_clause() RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
BEGIN
	PERFORM appguard.set_applying(true);
END
$$;
BEGIN;
SELECT flag() AS nothing_raised;
SELECT appguard.set_applying(true);
SELECT flag() AS raised_at_depth_0;
-- lowered in an exception block that then fails: raised again, both
DO $$
BEGIN
	PERFORM appguard.set_applying(false);
	RAISE EXCEPTION 'boom';
EXCEPTION WHEN raise_exception THEN
	NULL;
END
$$;
SELECT flag() AS lowered_in_aborted_block;
-- raised, the outer raise lowered, raised again, in an exception block
-- that then fails: back to the outer raise, both
DO $$
BEGIN
	PERFORM appguard.set_applying(true);
	PERFORM appguard.set_applying(false);
	PERFORM appguard.set_applying(false);
	PERFORM appguard.set_applying(true);
	RAISE EXCEPTION 'boom';
EXCEPTION WHEN raise_exception THEN
	NULL;
END
$$;
SELECT flag() AS raised_in_aborted_block;
SELECT appguard.set_applying(false);
SELECT flag() AS lowered;
-- raised in a function with a SET clause: kept at its exit
SELECT raise_with_set_clause();
SELECT flag() AS raised_in_set_clause_function;
-- RESET ALL leaves it alone
RESET ALL;
SELECT flag() AS after_reset_all;
-- a savepoint released, then one rolled back
SAVEPOINT a;
SELECT appguard.set_applying(false);
RELEASE SAVEPOINT a;
SELECT flag() AS lowered_in_released_savepoint;
SAVEPOINT b;
SELECT raise_with_set_clause();
SAVEPOINT c;
SELECT appguard.set_applying(false);
SELECT flag() AS lowered_in_savepoint;
ROLLBACK TO SAVEPOINT b;
SELECT flag() AS after_rollback_to_b;
SELECT appguard.set_applying(true);
COMMIT;
SELECT flag() AS after_commit;

-- clean up
SELECT appguard_unprotect('ow.tokens') ->> 'rows_forgotten' AS forgotten;
DROP VIEW public.ow_state;
DROP FUNCTION public.sync_calls(), public.flag(), public.raise_with_set_clause();
DROP SCHEMA ow CASCADE;
DROP ROLE appguard_regress_ow_host;
SELECT appguard_unregister_client('ow'), appguard_unregister_client('ow-linked'),
	   appguard_unregister_client('ow-other');
