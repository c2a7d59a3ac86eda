-- appguard_protect: an auth server's own token tables, with their own
-- column names (hostile ones included), a status of any type, with or
-- without an error_uri column; the host's own statements keep working;
-- appguard only reverses what appguard did; appguard_unprotect.
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
SET search_path = appguard, public;
SELECT appguard_setting('appguard.allowed_ports') IS NOT NULL AS loaded;
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
SELECT row_key, client_id, state, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM protected_rows ORDER BY row_key::int;
SELECT * FROM unregistered_grants ORDER BY token_table;

-- the host's own statements work unchanged
INSERT INTO "we""ird"."tok""ens; DROP TABLE x; --" ("cli ent") VALUES ('glw'), ('glw');
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "last seen" = now() WHERE "k""ey" = 1;
SELECT row_key, client_id, state, baseline_snapshot_id IS NOT NULL AS has_baseline
FROM protected_rows ORDER BY row_key::int;
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
SELECT row_key, state, suspension_id IS NOT NULL AS suspended_by_appguard
FROM protected_rows ORDER BY row_key::int;
SELECT (appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '1') -> 'error') - 'error_uri' AS refused;
SELECT appguard_check_refresh('"we""ird"."tok""ens; DROP TABLE x; --"', '2');
SELECT tokens_suspended FROM suspensions WHERE client_id = 'glw';
SELECT appguard_drifted('glw');

-- the host revokes row 5 itself: appguard will not re-enable it
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "en""abled" = 0 WHERE "k""ey" = 5;
SELECT row_key, state FROM protected_rows WHERE row_key IN ('1', '5', '6') ORDER BY 1;
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
SELECT row_key, state FROM protected_rows WHERE row_key = '6';
SELECT snap('glw.example.org', 443, '{"tls.leaf.subject.O": "Data Harvest Ltd"}') IS NOT NULL AS next_sweep;
SELECT "k""ey", "en""abled" FROM "we""ird"."tok""ens; DROP TABLE x; --" ORDER BY 1;

-- key changes, deletes, truncates
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "k""ey" = 60 WHERE "k""ey" = 6;
DELETE FROM "we""ird"."tok""ens; DROP TABLE x; --" WHERE "k""ey" = 4;
SELECT row_key, client_id, state FROM protected_rows ORDER BY row_key::int;
-- a row moved to another client takes that client's next baseline
UPDATE "we""ird"."tok""ens; DROP TABLE x; --" SET "cli ent" = 'we"ird' WHERE "k""ey" = 1;
SELECT row_key, client_id, state, baseline_snapshot_id IS NULL AS pending FROM protected_rows WHERE row_key = '1';

-- A second table: text status with its own values, no error_uri column
-- (appguard keeps the error_uri of a row itself)
CREATE TABLE public.grants2 (id uuid PRIMARY KEY, app text NOT NULL, state text NOT NULL DEFAULT 'live');
SELECT appguard_protect('grants2', 'app', 'state', NULL, 'live', 'on-hold') ->> 'rows' AS adopted;
INSERT INTO grants2 VALUES ('00000000-0000-0000-0000-000000000001', 'we"ird', 'live'),
						   ('00000000-0000-0000-0000-000000000002', 'we"ird', 'revoked');
SELECT snap('weird.example.org', 443, '{"tls.verified": false, "tls.verify_error": "unable to get local issuer certificate"}') IS NOT NULL AS drifted;
SELECT id, state FROM grants2 ORDER BY id;
SELECT appguard_check_refresh('grants2', '00000000-0000-0000-0000-000000000001') -> 'error' ->> 'error_uri'
	= (SELECT error_uri FROM protected_rows WHERE row_key = '00000000-0000-0000-0000-000000000001') AS own_error_uri;
SELECT appguard_check_refresh('grants2', '00000000-0000-0000-0000-000000000002');
SELECT "k""ey", "en""abled" FROM "we""ird"."tok""ens; DROP TABLE x; --" WHERE "cli ent" = 'we"ird' ORDER BY 1;
SELECT appguard_reapprove('grants2', '00000000-0000-0000-0000-000000000001') ->> 'reapproved' AS reapproved;
SELECT id, state FROM grants2 ORDER BY id;
TRUNCATE grants2;
SELECT count(*) AS rows_left FROM protected_rows WHERE tbl = 'grants2'::regclass;

-- unprotect removes everything protect added; suspended rows stay suspended
SELECT appguard_unprotect('"we""ird"."tok""ens; DROP TABLE x; --"');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = '"we""ird"."tok""ens; DROP TABLE x; --"'::regclass;
SELECT count(*) AS rows_left FROM protected_rows
WHERE tbl = '"we""ird"."tok""ens; DROP TABLE x; --"'::regclass;
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
SELECT row_key, state, baseline_snapshot_id IS NULL AS pending FROM protected_rows
WHERE tbl = 'lv_tokens'::regclass ORDER BY row_key;
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
