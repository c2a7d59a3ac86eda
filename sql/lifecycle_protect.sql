-- appguard_protect: an auth server's own token tables, with their own
-- column names (hostile ones included), a status of any type, with or
-- without an error_uri column; the host's own statements keep working;
-- appguard only reverses what appguard did; appguard_unprotect.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET appguard.allowed_ports = '';

SELECT appguard_register_client('glw', 'Glewlwyd App', ARRAY['https://glw.example.org/cb']) IS NOT NULL;
SELECT appguard_register_client('we"ird', 'Weird App', ARRAY['https://weird.example.org/cb']) IS NOT NULL;
SELECT snap('glw.example.org') IS NOT NULL, snap('weird.example.org') IS NOT NULL;

-- A host table in another schema, every name hostile, a 0/1 status
CREATE SCHEMA "we""ird";
CREATE TABLE "we""ird"."tok""ens; DROP TABLE x; --" (
	"k""ey" bigserial PRIMARY KEY,
	"cli ent" varchar(64),
	"en""abled" smallint NOT NULL DEFAULT 1,
	"err'uri" text,
	"last seen" timestamptz
);
-- rows that exist before protect are tracked too
INSERT INTO "we""ird"."tok""ens; DROP TABLE x; --" ("cli ent", "en""abled")
VALUES ('glw', 1), ('glw', 0), ('we"ird', 1), ('stranger', 1);

-- bad input: clear errors, nothing changed
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_protect(NULL, 'c', 's')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', NULL, 'en"abled', NULL, '1', '0')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'nope', NULL, '1', '0')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', 'last seen', '1', '0')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', NULL, 'yes', '0')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', NULL, '1', NULL)$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', NULL, '1', '01')$$),
	($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'cli ent', NULL, '1', '0')$$),
	($$SELECT appguard_protect('appguard.refresh_tokens', 'client_id', 'status')$$),
	($$SELECT appguard_protect('pg_catalog.pg_class', 'relname', 'relkind')$$),
	($$SELECT appguard_unprotect('"we""ird"."tok""ens; DROP TABLE x; --"')$$),
	($$SELECT appguard_unprotect(NULL)$$),
	($$SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '1')$$)
) AS t(sql);
CREATE TABLE "we""ird".nopk (c text, s text);
CREATE TABLE "we""ird".twokeys (a int, b int, c text, s text, PRIMARY KEY (a, b));
CREATE TABLE "we""ird".tskey (t timestamptz PRIMARY KEY, c text, s text);
CREATE VIEW "we""ird".v AS SELECT * FROM "we""ird".nopk;
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_protect('"we""ird".nopk', 'c', 's')$$),
	($$SELECT appguard_protect('"we""ird".twokeys', 'c', 's')$$),
	($$SELECT appguard_protect('"we""ird".tskey', 'c', 's')$$),
	($$SELECT appguard_protect('"we""ird".v', 'c', 's')$$)
) AS t(sql);
SELECT count(*) AS protected_tables FROM protected_tables;

SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', 'err''uri', '1', '0');
SELECT try($$SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', NULL, '1', '0')$$);
SELECT tgname FROM pg_trigger WHERE tgrelid = '"we""ird"."tok""ens; DROP TABLE x; --"'::regclass ORDER BY 1;
SELECT token_key, client_id, state, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM grant_states WHERE token_table <> 'appguard.refresh_tokens'::regclass ORDER BY token_key::int;
SELECT * FROM unregistered_grants ORDER BY token_table;

-- the host's own statements work unchanged
INSERT INTO "we""ird"."tok""ens; DROP TABLE x; --" ("cli ent") VALUES ('glw'), ('glw');
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "last seen" = now() WHERE "k""ey" = 1;
SELECT token_key, client_id, state, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM grant_states WHERE token_table <> 'appguard.refresh_tokens'::regclass ORDER BY token_key::int;
SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '1');
SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '2');
SELECT try($$SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '99')$$);
SELECT try($$SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', NULL)$$);

-- the organization behind glw changes: its active rows are suspended in
-- the host table (0, and the error_uri in the host's column)
SELECT snap('glw.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT "k""ey", "cli ent", "en""abled",
	   "err'uri" = (SELECT error_uri FROM suspensions s WHERE s.client_id = 'glw') AS error_uri_set
FROM "we""ird"."tok""ens; DROP TABLE x; --" ORDER BY 1;
SELECT token_key, state, suspension_id IS NOT NULL AS suspended_by_appguard
FROM grant_states WHERE token_table <> 'appguard.refresh_tokens'::regclass ORDER BY token_key::int;
SELECT (appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '1') -> 'error') - 'error_uri' AS refused;
SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '2');
SELECT tokens_suspended FROM suspensions WHERE client_id = 'glw';
SELECT appguard_drifted('glw');

-- the host revokes row 5 itself: appguard will not re-enable it
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "en""abled" = 0 WHERE "k""ey" = 5;
SELECT token_key, state FROM grant_states WHERE token_key IN ('1', '5', '6') AND token_table <> 'appguard.refresh_tokens'::regclass ORDER BY 1;
SELECT try($$SELECT appguard_reapprove('"we""ird"."tok""ens; DROP TABLE x; --"', '5')$$);
SELECT try($$SELECT appguard_reapprove('"we""ird"."tok""ens; DROP TABLE x; --"', '2')$$);
-- re-approval of row 1: the host's value back, error_uri cleared, new baseline
SELECT appguard_reapprove('"we""ird"."tok""ens; DROP TABLE x; --"', '1')
	- ARRAY['suspension_id', 'baseline_snapshot_id'] AS reapproved;
SELECT "k""ey", "en""abled", "err'uri" IS NOT NULL AS has_error_uri
FROM "we""ird"."tok""ens; DROP TABLE x; --" ORDER BY 1;
SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '1');
SELECT kind, token_key FROM events WHERE token_table IS NOT NULL AND kind IN ('reapproved', 'host_took_over') ORDER BY id;
-- the host re-enables row 6 on its own: appguard follows (its baseline
-- is unchanged, so the next drifting snapshot suspends it again)
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "en""abled" = 1 WHERE "k""ey" = 6;
SELECT token_key, state FROM grant_states WHERE token_key = '6' AND token_table <> 'appguard.refresh_tokens'::regclass;
SELECT snap('glw.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS next_sweep;
SELECT "k""ey", "en""abled" FROM "we""ird"."tok""ens; DROP TABLE x; --" ORDER BY 1;

-- key changes, deletes, truncates
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "k""ey" = 60 WHERE "k""ey" = 6;
DELETE FROM "we""ird"."tok""ens; DROP TABLE x; --" WHERE "k""ey" = 4;
SELECT token_key, client_id, state FROM grant_states WHERE token_table <> 'appguard.refresh_tokens'::regclass ORDER BY token_key::int;
-- a row moved to another client takes that client's next baseline
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "cli ent" = 'we"ird' WHERE "k""ey" = 1;
SELECT token_key, client_id, state, baseline_snapshot_id IS NULL AS pending FROM grant_states WHERE token_key = '1' AND token_table <> 'appguard.refresh_tokens'::regclass;

-- A second table: text status with its own values, no error_uri column
-- (appguard keeps the error_uri of a row itself)
CREATE TABLE public.grants2 (id uuid PRIMARY KEY, app text NOT NULL, state text NOT NULL DEFAULT 'live');
SELECT appguard_protect('grants2', 'app', 'state', NULL, 'live', 'on-hold') ->> 'rows' AS adopted;
INSERT INTO grants2 VALUES ('00000000-0000-0000-0000-000000000001', 'we"ird', 'live'),
						   ('00000000-0000-0000-0000-000000000002', 'we"ird', 'revoked');
SELECT snap('weird.example.org', 443, '{"tls.verified": false, "tls.verify_error": "unable to get local issuer certificate"}') IS NOT NULL AS drifted;
SELECT id, state FROM grants2 ORDER BY id;
SELECT appguard_check_refresh('grants2', '00000000-0000-0000-0000-000000000001') -> 'error' ->> 'error_uri'
	= (SELECT error_uri FROM grant_states WHERE token_key = '00000000-0000-0000-0000-000000000001') AS own_error_uri;
SELECT appguard_check_refresh('grants2', '00000000-0000-0000-0000-000000000002');
SELECT "k""ey", "en""abled" FROM "we""ird"."tok""ens; DROP TABLE x; --" WHERE "cli ent" = 'we"ird' ORDER BY 1;
SELECT appguard_reapprove('grants2', '00000000-0000-0000-0000-000000000001') ->> 'reapproved' AS reapproved;
SELECT id, state FROM grants2 ORDER BY id;
TRUNCATE grants2;
SELECT count(*) AS rows_left FROM grant_states WHERE token_table = 'grants2'::regclass;

-- unprotect removes everything protect added; suspended rows stay suspended
SELECT appguard_unprotect('"we""ird"."tok""ens; DROP TABLE x; --"');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = '"we""ird"."tok""ens; DROP TABLE x; --"'::regclass;
SELECT count(*) AS rows_left FROM grant_states
WHERE token_table = '"we""ird"."tok""ens; DROP TABLE x; --"'::regclass;
SELECT "k""ey", "en""abled" FROM "we""ird"."tok""ens; DROP TABLE x; --" ORDER BY 1;
INSERT INTO "we""ird"."tok""ens; DROP TABLE x; --" ("cli ent") VALUES ('glw');
-- protect again, then the host drops the table: appguard forgets it
SELECT appguard_protect('"we""ird"."tok""ens; DROP TABLE x; --"', 'cli ent', 'en"abled', NULL, '1', '0') ->> 'rows' AS adopted;
DROP SCHEMA "we""ird" CASCADE;
SELECT tbl::text FROM protected_tables ORDER BY 1;
SELECT kind, token_table FROM events WHERE kind LIKE 'table_%' ORDER BY id;
DROP TABLE grants2;
SELECT count(*) AS protected_tables FROM protected_tables;

-- lastval() stays the host's.  Hosts that read the key of the row they
-- just inserted with SELECT lastval() (Glewlwyd through libhoel, PHP's
-- PDO) must get it even when appguard's trigger drew from its own
-- sequences: a live snapshot (stored here as 'blocked') and its event.
-- The host's role has no privilege on appguard's sequences.
SELECT appguard_register_client('lv', 'Lastval App', ARRAY['https://lastval.example.org/cb']) IS NOT NULL;
CREATE TABLE public.lv_tokens (id serial PRIMARY KEY, client text, enabled smallint DEFAULT 1);
CREATE ROLE appguard_regress_lv_host;
GRANT ALL ON public.lv_tokens, public.lv_tokens_id_seq TO appguard_regress_lv_host;
SELECT appguard_protect('lv_tokens', 'client', 'enabled', NULL, '1', '0') ->> 'rows' AS adopted;
SELECT count(*) AS snapshots, (SELECT count(*) FROM events) AS events FROM snapshots \gset lv_before_
SET ROLE appguard_regress_lv_host;
INSERT INTO public.lv_tokens (client) VALUES ('lv');
SELECT lastval() = (SELECT max(id) FROM public.lv_tokens) AS lastval_is_the_new_key;
RESET ROLE;
SELECT count(*) - :lv_before_snapshots AS live_snapshots, (SELECT count(*) FROM events) - :lv_before_events AS events
FROM snapshots;
-- a second row within the minute after the failed attempt: no new attempt
SET ROLE appguard_regress_lv_host;
INSERT INTO public.lv_tokens (client) VALUES ('lv');
SELECT lastval() = (SELECT max(id) FROM public.lv_tokens) AS lastval_is_the_new_key;
RESET ROLE;
SELECT token_key, state, baseline_snapshot_id IS NULL AS pending FROM grant_states
WHERE token_table = 'lv_tokens'::regclass ORDER BY token_key;
-- the host takes over a row appguard suspended (an event): lastval() kept
SELECT snap('lastval.example.org') IS NOT NULL AS baseline;
SELECT snap('lastval.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT id, enabled FROM public.lv_tokens ORDER BY id;
SET ROLE appguard_regress_lv_host;
SELECT nextval('public.lv_tokens_id_seq') AS drawn \gset
UPDATE public.lv_tokens SET enabled = 0 WHERE id = 1;
SELECT lastval() = :drawn AS lastval_kept;
RESET ROLE;
SELECT kind FROM events WHERE token_table = 'public.lv_tokens' ORDER BY id;
SELECT appguard_unprotect('lv_tokens') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.lv_tokens;
DROP ROLE appguard_regress_lv_host;
SELECT appguard_unregister_client('lv');

-- appguard's own writes are told from the host's by a flag no host role
-- can raise (appguard.set_applying, src/applying.c), where a setting
-- (appguard_lifecycle.applying) once served, which any role could set to
-- change a row's status behind appguard's back.  Whatever a host role
-- does, appguard's state of a row follows the host's write.  The auth
-- server's role owns its table here (as Glewlwyd's does); a second role
-- only writes to it.
SELECT appguard_register_client('hf', 'Flag App', ARRAY['https://flag.example.org/cb']) IS NOT NULL;
SELECT appguard_register_client('hf2', 'Flag App 2', ARRAY['https://flag2.example.org/cb']) IS NOT NULL;
SELECT snap('flag.example.org') IS NOT NULL AS baseline, snap('flag2.example.org') IS NOT NULL AS baseline2;
CREATE ROLE appguard_regress_hf_owner IN ROLE appguard_auth_server;
CREATE ROLE appguard_regress_hf_writer IN ROLE appguard_auth_server;
CREATE TABLE public.hf_tokens (id int PRIMARY KEY, client text NOT NULL, enabled smallint NOT NULL DEFAULT 1);
ALTER TABLE public.hf_tokens OWNER TO appguard_regress_hf_owner;
GRANT SELECT, UPDATE ON public.hf_tokens TO appguard_regress_hf_writer;
INSERT INTO public.hf_tokens VALUES (1, 'hf'), (2, 'hf'), (3, 'hf2'), (4, 'hf2'), (5, 'hf2'), (6, 'hf2');
SELECT appguard_protect('public.hf_tokens', 'client', 'enabled', NULL, '1', '0') ->> 'rows' AS adopted;
-- the host's status and appguard's state of each row, and whether they agree
CREATE VIEW public.hf_state AS
SELECT h.id, h.enabled, pr.state,
	   CASE WHEN h.enabled = 1 THEN pr.state = 'active' ELSE pr.state <> 'active' END AS in_step
FROM public.hf_tokens h
	 JOIN appguard.grant_states pr ON pr.token_table = 'public.hf_tokens'::regclass AND pr.token_key = h.id::text;

-- Neither role can raise the flag, nor read it
SET ROLE appguard_regress_hf_owner;
SELECT try($$SELECT appguard.set_applying(true)$$);
SELECT try($$SELECT appguard.applying()$$);
RESET ROLE;
SET ROLE appguard_regress_hf_writer;
SELECT try($$SELECT appguard.set_applying(true)$$);
RESET ROLE;

-- The old setting, set by the writer: its write is still its own.  It
-- revokes row 3, which appguard must then refuse (it answered allowed
-- when the setting made appguard skip the write)
SET ROLE appguard_regress_hf_writer;
SET appguard_lifecycle.applying = on;
UPDATE public.hf_tokens SET enabled = 0 WHERE id = 3;
RESET appguard_lifecycle.applying;
RESET ROLE;
SELECT * FROM public.hf_state WHERE id = 3;
SELECT appguard_check_refresh('public.hf_tokens', '3') -> 'error' ->> 'error_description' AS refused;

-- The owner's own trigger code runs inside appguard's write (as the owner,
-- in a security-restricted operation): when appguard suspends a row of
-- hf, it revokes row 4 of hf2.  That nested statement is the host's write,
-- not appguard's: appguard's state of row 4 follows it
CREATE FUNCTION public.hf_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE public.hf_tokens SET enabled = 0 WHERE id = 4 AND enabled = 1;
	RETURN NULL;
END
$$;
ALTER FUNCTION public.hf_cascade() OWNER TO appguard_regress_hf_owner;
CREATE TRIGGER hf_cascade AFTER UPDATE OF enabled ON public.hf_tokens
	FOR EACH ROW WHEN (NEW.client = 'hf' AND NEW.enabled = 0) EXECUTE FUNCTION public.hf_cascade();
SELECT snap('flag.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT * FROM public.hf_state ORDER BY id;
SELECT appguard_check_refresh('public.hf_tokens', '4') -> 'error' ->> 'error_description' AS refused;
DROP TRIGGER hf_cascade ON public.hf_tokens;
DROP FUNCTION public.hf_cascade();

-- The owner, with the old flag set, re-enables suspended row 1 and revokes
-- row 5; the writer does the same to row 2 and row 6.  appguard follows:
-- rows 1 and 2 active again (with the baseline that drifted, recorded as
-- re-enabled by the host), rows 5 and 6 no longer active
SET ROLE appguard_regress_hf_owner;
SET appguard_lifecycle.applying = on;
UPDATE public.hf_tokens SET enabled = CASE id WHEN 1 THEN 1 ELSE 0 END WHERE id IN (1, 5);
RESET appguard_lifecycle.applying;
RESET ROLE;
SET ROLE appguard_regress_hf_writer;
SET appguard_lifecycle.applying = on;
UPDATE public.hf_tokens SET enabled = CASE id WHEN 2 THEN 1 ELSE 0 END WHERE id IN (2, 6);
RESET appguard_lifecycle.applying;
RESET ROLE;
SELECT * FROM public.hf_state ORDER BY id;
SELECT kind, token_key FROM events WHERE token_table = 'public.hf_tokens' AND kind LIKE 'host_%' ORDER BY id;
SELECT appguard_check_refresh('public.hf_tokens', '5') -> 'error' ->> 'error_description' AS refused;

-- The flag's lifetime, shown by the superuser (who alone can raise it).
-- Raised, a write of the status counts as appguard's: appguard's state
-- stays (row 6 inactive while the host has 1 -- rolled back)
BEGIN;
SELECT appguard.set_applying(true);
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
SELECT * FROM public.hf_state WHERE id = 6;
ROLLBACK;
-- a raise in a released savepoint holds until lowered
BEGIN;
SAVEPOINT s;
SELECT appguard.set_applying(true);
RELEASE SAVEPOINT s;
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
SELECT appguard.set_applying(false);
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 5;
SELECT * FROM public.hf_state WHERE id IN (5, 6) ORDER BY id;
ROLLBACK;
-- rolled back to a savepoint, an error caught by an exception block, a
-- failed or a committed transaction: lowered
BEGIN;
SAVEPOINT s;
SELECT appguard.set_applying(true);
ROLLBACK TO SAVEPOINT s;
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
SELECT * FROM public.hf_state WHERE id = 6;
ROLLBACK;
DO $$
BEGIN
	BEGIN
		PERFORM appguard.set_applying(true);
		PERFORM 1 / 0;
	EXCEPTION WHEN division_by_zero THEN
		NULL;
	END;
	UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
END
$$;
SELECT * FROM public.hf_state WHERE id = 6;
UPDATE public.hf_tokens SET enabled = 0 WHERE id = 6;
BEGIN;
SELECT appguard.set_applying(true);
SELECT 1 / 0;
ROLLBACK;
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
SELECT * FROM public.hf_state WHERE id = 6;
UPDATE public.hf_tokens SET enabled = 0 WHERE id = 6;
SELECT appguard.set_applying(true);
UPDATE public.hf_tokens SET enabled = 1 WHERE id = 6;
SELECT * FROM public.hf_state WHERE id = 6;
SELECT try($$SELECT appguard.set_applying(NULL)$$);

-- appguard's own writes still leave its state to appguard: a drift of
-- hf2 suspends its one active row (6), re-approval re-enables it
SELECT snap('flag2.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS drifted;
SELECT * FROM public.hf_state WHERE id IN (3, 4, 5, 6) ORDER BY id;
SELECT appguard_reapprove('public.hf_tokens', '6') ->> 'reapproved' AS reapproved;
SELECT * FROM public.hf_state WHERE id IN (3, 4, 5, 6) ORDER BY id;
SELECT appguard_check_refresh('public.hf_tokens', '6');

DROP VIEW public.hf_state;
SELECT appguard_unprotect('public.hf_tokens') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.hf_tokens;
DROP ROLE appguard_regress_hf_owner, appguard_regress_hf_writer;
SELECT appguard_unregister_client('hf'), appguard_unregister_client('hf2');

-- The consent trigger's grant is written directly (src/grantwrite.c) as a
-- rule; through its SQL upsert where appguard.grants has a trigger (here
-- one that says so) or a grant is under the key already.  Both write the
-- same row: every column alike, created_at (now()) included.
SELECT appguard_register_client('gw', 'Grant Write App', ARRAY['https://gw.example.org/cb']) IS NOT NULL;
SELECT snap('gw.example.org') IS NOT NULL;
CREATE TABLE public.gw_tokens (id text PRIMARY KEY, client text, status text NOT NULL);
SELECT appguard_protect('public.gw_tokens', 'client', 'status') IS NOT NULL AS protected;
CREATE FUNCTION public.gw_via_sql() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE '% row of % written by SQL', TG_TABLE_NAME,
		coalesce(to_jsonb(NEW) ->> 'token_key', to_jsonb(NEW) ->> 'subject');
	RETURN NEW;
END
$$;
BEGIN;
CREATE TRIGGER gw_via_sql BEFORE INSERT ON appguard.grants
	FOR EACH ROW EXECUTE FUNCTION public.gw_via_sql();
INSERT INTO public.gw_tokens VALUES
	('s-active', 'gw', 'active'), ('s-inactive', 'gw', 'revoked'),
	('s-noclient', NULL, 'active'), ('s-stranger', 'stranger', 'active');
DROP TRIGGER gw_via_sql ON appguard.grants;
INSERT INTO public.gw_tokens VALUES
	('c-active', 'gw', 'active'), ('c-inactive', 'gw', 'revoked'),
	('c-noclient', NULL, 'active'), ('c-stranger', 'stranger', 'active');
SELECT c.token_key, to_jsonb(c) - 'token_key' = to_jsonb(s) - 'token_key' AS same_as_sql,
	   c.client_id, c.state, c.baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM clients WHERE client_id = 'gw') AS baseline_latest,
	   c.created_at = now() AS created_now
FROM grant_states c JOIN grant_states s ON s.token_table = c.token_table AND s.token_key = 's-' || substr(c.token_key, 3)
WHERE c.token_table = 'public.gw_tokens'::regclass AND c.token_key LIKE 'c-%'
ORDER BY 1;
COMMIT;
-- the direct insert keeps every index: the primary key (a duplicate is
-- refused), the partial index of active grants (only those)
SELECT split_part(try($$INSERT INTO appguard.grants (token_table, token_key, state) VALUES ('public.gw_tokens', 'c-active', 'active')$$), ' (', 1) AS unique_violation;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT token_key FROM grants WHERE client_id = 'gw' AND state = 'active';
SELECT token_key FROM grant_states WHERE client_id = 'gw' AND state = 'active' ORDER BY 1;
RESET enable_seqscan;
RESET enable_bitmapscan;
-- the table's constraints and unique indexes hold for the direct insert
-- (a CHECK and a unique index added for the test); the error is the
-- INSERT's, and nothing is written
ALTER TABLE appguard.grants ADD CONSTRAINT gw_test_check CHECK (client_id IS DISTINCT FROM 'forbidden');
CREATE UNIQUE INDEX gw_test_unique ON appguard.grants (client_id) WHERE client_id = 'solo';
SELECT split_part(try($$INSERT INTO public.gw_tokens VALUES ('c-forbidden', 'forbidden', 'active')$$), ' (', 1) AS check_violation;
INSERT INTO public.gw_tokens VALUES ('c-solo', 'solo', 'active');
SELECT try($$INSERT INTO public.gw_tokens VALUES ('c-solo2', 'solo', 'active')$$) AS unique_violation;
SELECT token_key FROM grant_states WHERE token_table = 'public.gw_tokens'::regclass
  AND token_key IN ('c-forbidden', 'c-solo', 'c-solo2');
DROP INDEX appguard.gw_test_unique;
ALTER TABLE appguard.grants DROP CONSTRAINT gw_test_check;
-- a grant left under the key (its row went while appguard's triggers were
-- off) is replaced by the new row's
SET session_replication_role = replica;
DELETE FROM public.gw_tokens WHERE id = 'c-active';
SET session_replication_role = origin;
UPDATE grants SET suspension_id = 1, suspended_at = now(), error_uri = 'x', reapproved_at = now(), created_at = now() - interval '1 day'
WHERE token_table = 'public.gw_tokens'::regclass AND token_key = 'c-active';
BEGIN;
INSERT INTO public.gw_tokens VALUES ('c-active', NULL, 'revoked');
SELECT token_key, client_id, state, baseline_snapshot_id, suspension_id, suspended_at, error_uri, reapproved_at,
	   created_at = now() AS created_now
FROM grant_states WHERE token_table = 'public.gw_tokens'::regclass AND token_key = 'c-active';
COMMIT;
-- A patient's first consent is started directly (src/grantwrite.c) as a
-- rule; through its SQL INSERT where appguard.consents has a trigger (the
-- one above, which says so).  Both write the same consent: created_at now(),
-- approved_at the clock's time during the INSERT, the baseline the
-- client's latest snapshot.
CREATE TABLE public.gwc_tokens (id text PRIMARY KEY, client text, subject text, status text NOT NULL);
SELECT appguard_protect('public.gwc_tokens', 'client', 'status', subject_column => 'subject') IS NOT NULL AS protected;
BEGIN;
CREATE TRIGGER gw_via_sql BEFORE INSERT ON appguard.consents
	FOR EACH ROW EXECUTE FUNCTION public.gw_via_sql();
INSERT INTO public.gwc_tokens VALUES ('s-1', 'gw', 'sql-patient', 'active');
DROP TRIGGER gw_via_sql ON appguard.consents;
SELECT clock_timestamp() AS before_direct \gset
INSERT INTO public.gwc_tokens VALUES ('c-1', 'gw', 'c-patient', 'active');
SELECT clock_timestamp() AS after_direct \gset
SELECT to_jsonb(c) - ARRAY['subject', 'approved_at'] = to_jsonb(s) - ARRAY['subject', 'approved_at'] AS same_as_sql,
	   c.baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM clients WHERE client_id = 'gw') AS baseline_latest,
	   c.created_at = now() AS created_now,
	   c.approved_at BETWEEN :'before_direct' AND :'after_direct' AS approved_during_insert,
	   c.shown_snapshot_id IS NULL AND c.shown_at IS NULL AS nothing_shown
FROM consents c JOIN consents s ON s.client_id = c.client_id AND s.subject = 'sql-patient'
WHERE c.client_id = 'gw' AND c.subject = 'c-patient';
SELECT token_key, state, baseline_snapshot_id = (SELECT baseline_snapshot_id FROM consents
												 WHERE client_id = 'gw' AND subject = 'c-patient') AS consents_baseline
FROM grant_states WHERE token_table = 'public.gwc_tokens'::regclass ORDER BY 1;
COMMIT;
-- the direct insert keeps the primary key: a second consent is refused
SELECT split_part(try($$INSERT INTO appguard.consents (client_id, subject) VALUES ('gw', 'c-patient')$$), ' (', 1) AS unique_violation;
-- a second token of the patient joins the consent (nothing written to it)
INSERT INTO public.gwc_tokens VALUES ('c-2', 'gw', 'c-patient', 'active');
SELECT count(*) AS consents_of_patient FROM consents WHERE client_id = 'gw' AND subject = 'c-patient';
SELECT appguard_unprotect('public.gwc_tokens') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.gwc_tokens;
DELETE FROM consents WHERE client_id = 'gw';

-- the status trigger: a host retiring an active row (every rotation) is
-- done in C; the rest by appguard.grant_sync_sql, counted here with
-- track_functions: an untracked row, a reactivation
SET track_functions = 'all';
INSERT INTO public.gw_tokens VALUES ('t-retire', 'gw', 'active'), ('t-untracked', 'gw', 'active');
SET session_replication_role = replica;
DELETE FROM grants WHERE token_table = 'public.gw_tokens'::regclass AND token_key = 't-untracked';
SET session_replication_role = origin;
CREATE FUNCTION pg_temp.sync_sql_calls() RETURNS bigint LANGUAGE sql AS $$
	SELECT coalesce((SELECT calls FROM pg_catalog.pg_stat_xact_user_functions
					 WHERE schemaname = 'appguard' AND funcname = 'grant_sync_sql'), 0)
$$;
BEGIN;
UPDATE public.gw_tokens SET status = 'revoked' WHERE id = 't-retire';
SELECT pg_temp.sync_sql_calls() AS sql_calls_after_retiring;
SELECT state FROM grant_states WHERE token_table = 'public.gw_tokens'::regclass AND token_key = 't-retire';
UPDATE public.gw_tokens SET status = 'revoked' WHERE id = 't-retire';
SELECT pg_temp.sync_sql_calls() AS sql_calls_after_retiring_again;
UPDATE public.gw_tokens SET status = 'revoked' WHERE id = 't-untracked';
SELECT pg_temp.sync_sql_calls() AS sql_calls_after_untracked;
UPDATE public.gw_tokens SET status = 'active' WHERE id = 't-retire';
SELECT pg_temp.sync_sql_calls() AS sql_calls_after_reactivating;
COMMIT;
SELECT token_key, state, baseline_snapshot_id = (SELECT last_ok_snapshot_id FROM clients WHERE client_id = 'gw') AS baseline_latest
FROM grant_states WHERE token_table = 'public.gw_tokens'::regclass AND token_key LIKE 't-%' ORDER BY 1;
RESET track_functions;
DELETE FROM public.gw_tokens WHERE id LIKE 't-%';
SELECT count(*) FROM grant_states WHERE token_table = 'public.gw_tokens'::regclass;
SELECT appguard_unprotect('public.gw_tokens') ->> 'rows_forgotten' AS forgotten;
DROP TABLE public.gw_tokens;
DROP FUNCTION public.gw_via_sql();
SELECT appguard_unregister_client('gw');
