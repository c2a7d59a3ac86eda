-- Security of the SQL surface, without network traffic:
--   1. the privilege matrix: every function, procedure, table, view and
--      sequence of schema appguard for PUBLIC, a role with no grants,
--      appguard_operator, appguard_auth_server and the owner of an auth
--      server's token table, then enforcement by real calls;
--   2. invariants: nothing for PUBLIC, every SECURITY DEFINER and trigger
--      function pins search_path;
--   3. settings that widen what appguard connects to are superuser-only,
--      also when set before the library is loaded;
--   4. the address guard as a pure function over every class, and every
--      spelling of an IP address as a host name;
--   5. error_uri parameters cannot inject;
--   6. identifiers given to appguard_protect are quoted;
--   7. a hostile search_path: objects planted before pg_catalog, and temp
--      objects named like appguard's, are never used.
\i sql/lifecycle_helpers.inc
\set VERBOSITY terse

CREATE ROLE ag_sec_nogrant NOLOGIN;
CREATE ROLE ag_sec_operator NOLOGIN IN ROLE appguard_operator;
CREATE ROLE ag_sec_auth NOLOGIN IN ROLE appguard_auth_server;
CREATE ROLE ag_sec_owner NOLOGIN;
GRANT CREATE ON SCHEMA public TO ag_sec_owner;

-- ---------------------------------------------------------------------
-- 1. Privilege matrix.  x = allowed, - = not.  Columns: PUBLIC, the
-- no-grant role, a member of appguard_operator, a member of
-- appguard_auth_server, the owner of a token table (no grants).
-- ---------------------------------------------------------------------
CREATE FUNCTION pg_temp.public_can(acl aclitem[], objtype "char", owner oid, priv text)
RETURNS text LANGUAGE sql AS $$
	SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(acl, pg_catalog.acldefault(objtype, owner))) a
							 WHERE a.grantee = 0 AND a.privilege_type = priv) THEN 'x' ELSE '-' END
$$;
CREATE FUNCTION pg_temp.fn_can(role name, fn oid) RETURNS text LANGUAGE sql AS $$
	SELECT CASE WHEN pg_catalog.has_function_privilege(role, fn, 'EXECUTE') THEN 'x' ELSE '-' END
$$;
-- a table's privileges as four letters: select insert update delete
CREATE FUNCTION pg_temp.rel_can(role name, rel oid) RETURNS text LANGUAGE sql AS $$
	SELECT CASE WHEN pg_catalog.has_table_privilege(role, rel, 'SELECT') THEN 'r' ELSE '-' END
		|| CASE WHEN pg_catalog.has_table_privilege(role, rel, 'INSERT')
				  OR pg_catalog.has_any_column_privilege(role, rel, 'INSERT') THEN 'a' ELSE '-' END
		|| CASE WHEN pg_catalog.has_table_privilege(role, rel, 'UPDATE')
				  OR pg_catalog.has_any_column_privilege(role, rel, 'UPDATE') THEN 'w' ELSE '-' END
		|| CASE WHEN pg_catalog.has_table_privilege(role, rel, 'DELETE') THEN 'd' ELSE '-' END
$$;

SELECT p.oid::regprocedure AS routine,
	   pg_temp.public_can(p.proacl, 'f', p.proowner, 'EXECUTE') AS pub,
	   pg_temp.fn_can('ag_sec_nogrant', p.oid) AS nogrant,
	   pg_temp.fn_can('ag_sec_operator', p.oid) AS operator,
	   pg_temp.fn_can('ag_sec_auth', p.oid) AS auth,
	   pg_temp.fn_can('ag_sec_owner', p.oid) AS owner,
	   CASE WHEN p.prosecdef THEN 'definer' ELSE '' END AS security
FROM pg_catalog.pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
ORDER BY p.proname, p.oid::regprocedure::text;

SELECT c.relname, c.relkind,
	   pg_temp.public_can(c.relacl, CASE c.relkind WHEN 'S' THEN 's'::"char" ELSE 'r'::"char" END, c.relowner, 'SELECT') AS pub_r,
	   pg_temp.rel_can('ag_sec_nogrant', c.oid) AS nogrant,
	   pg_temp.rel_can('ag_sec_operator', c.oid) AS operator,
	   pg_temp.rel_can('ag_sec_auth', c.oid) AS auth,
	   pg_temp.rel_can('ag_sec_owner', c.oid) AS owner
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'appguard'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
ORDER BY c.relname;

-- Enforcement, by calls that would connect out or change state if allowed
SET ROLE ag_sec_nogrant;
SELECT public.try($$SELECT appguard_probe('a.example.org')$$);
SELECT public.try($$SELECT appguard_snapshot('a.example.org')$$);
SELECT public.try($$SELECT * FROM appguard.snapshots$$);
SELECT public.try($$SELECT appguard_register_client('x', 'X', ARRAY['https://a.example.org/'])$$);
SELECT public.try($$SELECT appguard_check_refresh('t1')$$);
SELECT public.try($$SELECT appguard_explain_html(1, 'x')$$);
RESET ROLE;
SET ROLE ag_sec_owner;
CREATE TABLE public.sec_tokens (id bigint PRIMARY KEY, client text, status text);
SELECT public.try($$SELECT appguard_protect('public.sec_tokens', 'client', 'status')$$);
SELECT public.try($$SELECT appguard_check_refresh('public.sec_tokens', '1')$$);
SELECT public.try($$INSERT INTO appguard.snapshots (host, port, taken_at, status, facts) VALUES ('a.example.org', 443, now(), 'ok', '{}')$$);
SELECT public.try($$SELECT appguard.set_applying(true)$$);
RESET ROLE;
SET ROLE ag_sec_auth;
SELECT public.try($$SELECT appguard_protect('public.sec_tokens', 'client', 'status')$$);
SELECT public.try($$CALL appguard_sweep('1 hour', '1 minute')$$);
SELECT public.try($$SELECT appguard_prune('1 day')$$);
SELECT public.try($$SELECT appguard_snapshot('a.example.org')$$);
SELECT public.try($$UPDATE appguard.refresh_tokens SET error_uri = 'https://x.test/'$$);
SELECT public.try($$UPDATE appguard.refresh_tokens SET status = 'active' WHERE false$$);
SELECT public.try($$SELECT * FROM appguard.suspensions$$);
-- the flag that marks appguard's own writes to protected tables
SELECT public.try($$SELECT appguard.set_applying(true)$$);
SELECT public.try($$SELECT appguard.applying()$$);
RESET ROLE;
SET ROLE ag_sec_operator;
SELECT public.try($$SELECT appguard_protect('public.sec_tokens', 'client', 'status')$$);
SELECT public.try($$SELECT appguard_unprotect('public.sec_tokens')$$);
SELECT public.try($$INSERT INTO appguard.snapshots (host, port, taken_at, status, facts) VALUES ('a.example.org', 443, now(), 'ok', '{}')$$);
SELECT public.try($$DELETE FROM appguard.events$$);
SELECT public.try($$UPDATE appguard.policy SET severity = 'ignore'$$);
SELECT public.try($$SELECT count(*) FROM appguard.snapshots$$);
SELECT public.try($$SELECT appguard.set_applying(true)$$);
RESET ROLE;
-- set_applying is superuser-only in its C code too, should someone grant
-- every function of the schema to a role
GRANT EXECUTE ON FUNCTION appguard.set_applying(boolean) TO ag_sec_operator;
SET ROLE ag_sec_operator;
SELECT public.try($$SELECT appguard.set_applying(true)$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION appguard.set_applying(boolean) FROM ag_sec_operator;

-- ---------------------------------------------------------------------
-- 2. Invariants (each query lists violations: no rows expected)
-- ---------------------------------------------------------------------
-- nothing executable or readable by PUBLIC
SELECT p.oid::regprocedure AS public_executable
FROM pg_catalog.pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND pg_temp.public_can(p.proacl, 'f', p.proowner, 'EXECUTE') = 'x';
SELECT c.relname AS public_readable
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'appguard'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
  AND (c.relacl IS NULL OR EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = 0));
-- the naming rule (00_roles): the API, prefixed appguard_, in the
-- extension's schema; everything else in schema appguard, unprefixed, so
-- no internal function is reachable through the default search_path
SELECT p.oid::regprocedure AS misplaced, p.pronamespace::regnamespace AS schema
FROM pg_catalog.pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND (p.pronamespace = 'appguard'::regnamespace) = (p.proname LIKE 'appguard\_%');
SELECT c.oid::regclass AS misplaced_relation
FROM pg_catalog.pg_class c
WHERE c.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND c.relnamespace <> 'appguard'::regnamespace;
-- every SECURITY DEFINER function and every trigger function runs with
-- search_path = pg_catalog, pg_temp; the exceptions are the protected
-- tables' row triggers, appguard.grant_insert and appguard.grant_sync,
-- neither SECURITY DEFINER nor SET: their C code becomes their owner and
-- pins search_path around the SQL it runs (src/identity.c; section 7 runs
-- their paths under a hostile path); and appguard.snapshot_inserted_check,
-- the trigger of appguard.snapshots, which runs no SQL (an index lookup,
-- then appguard.snapshot_inserted(), pinned, by its OID)
SELECT p.oid::regprocedure AS unpinned, p.proconfig, p.prosecdef
FROM pg_catalog.pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND (p.prosecdef OR p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype))
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
ORDER BY p.oid::pg_catalog.regprocedure::pg_catalog.text;
-- every trigger on appguard's tables (but the built-in ones of foreign
-- keys), and the event trigger, call such functions
SELECT t.tgrelid::regclass AS tbl, t.tgname, t.tgfoid::regprocedure AS fn
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
WHERE t.tgrelid IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = 'appguard'::regnamespace)
  AND NOT t.tgisinternal
  AND t.tgfoid NOT IN ('appguard.grant_insert()'::regprocedure, 'appguard.grant_sync()'::regprocedure,
					   'appguard.snapshot_inserted_check()'::regprocedure)
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
SELECT e.evtname, e.evtfoid::regprocedure AS fn
FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'))
  AND NOT (p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig));
-- SECURITY DEFINER functions belong to the extension's owner
SELECT p.oid::regprocedure AS foreign_owner
FROM pg_catalog.pg_proc p
WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard')) AND p.prosecdef
  AND p.proowner <> (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'appguard');
-- counts, so the matrix above can be summed up
SELECT count(*) AS routines,
	   count(*) FILTER (WHERE p.prosecdef) AS security_definer,
	   count(*) FILTER (WHERE p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)) AS trigger_functions
FROM pg_catalog.pg_proc p WHERE p.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_proc'::regclass
				AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'appguard'));

-- ---------------------------------------------------------------------
-- 3. Settings that widen what appguard connects to, or that decide
-- suspensions, are superuser-only
-- ---------------------------------------------------------------------
SELECT name, context FROM pg_catalog.pg_settings
WHERE name LIKE 'appguard.%' AND appguard.setting(name) IS NOT NULL
ORDER BY name;
SET ROLE ag_sec_operator;
SELECT s AS setting, public.try(pg_catalog.format('SET %s = %L', s, v)) AS as_operator
FROM (VALUES ('appguard.allow_private_addresses', 'on'), ('appguard.dns_servers', '127.0.0.1:53'),
			 ('appguard.ca_file', '/etc/passwd'), ('appguard.allowed_ports', '1-65535'),
			 ('appguard.ownership_prefix', 'x'), ('appguard.error_uri_template', 'https://evil.test/{suspension_id}'),
			 ('appguard.reapprove_uri_template', 'https://evil.test/{client_id}'),
			 ('appguard.confirmations', '100'), ('appguard.mass_drift_threshold', '1'),
			 ('appguard.unreachable_grace', '0'), ('appguard.baseline_max_age', '0')) AS t(s, v);
SELECT public.try($$SELECT pg_catalog.set_config('appguard.allow_private_addresses', 'on', false)$$);
SELECT public.try($$ALTER ROLE ag_sec_operator SET appguard.allow_private_addresses = on$$);
-- nor the deadlines: a short one would make stored snapshots fail
SELECT public.try($$SET appguard.timeout_ms = 1000$$);
RESET ROLE;
RESET appguard.timeout_ms;
-- Preloaded (the supported set-up), a non-superuser's SET is refused at
-- once; for a library loaded late see test/t/015_settings_hold.pl
\c -
SET ROLE ag_sec_operator;
SET appguard.allow_private_addresses = on;
SET appguard.allowed_ports = '1-65535';
SELECT appguard_normalize_host('loads.the.library.example') IS NOT NULL AS loaded;
RESET ROLE;
SELECT name, source <> 'session' AS discarded
FROM pg_catalog.pg_settings
WHERE name IN ('appguard.allow_private_addresses', 'appguard.allowed_ports') ORDER BY name;

-- ---------------------------------------------------------------------
-- 4. The address guard, a pure function: every class
-- ---------------------------------------------------------------------
SELECT addr, appguard_address_class(addr::inet) AS class
FROM (VALUES
	('93.184.216.34'), ('2606:2800:220:1:248:1893:25c8:1946'),
	('127.0.0.1'), ('127.255.255.254'), ('::1'),
	('10.0.0.1'), ('172.16.0.1'), ('172.31.255.255'), ('192.168.0.1'),
	('169.254.0.1'), ('fe80::1'), ('febf::1'),
	('100.64.0.1'), ('100.127.255.254'),
	('224.0.0.1'), ('239.255.255.250'), ('ff02::1'), ('ff05::2'),
	('0.0.0.0'), ('0.255.255.255'), ('::'),
	('255.255.255.255'), ('240.0.0.1'), ('192.0.0.8'), ('192.88.99.1'),
	('::ffff:127.0.0.1'), ('::ffff:10.0.0.1'), ('::ffff:169.254.169.254'), ('::ffff:93.184.216.34'),
	('::127.0.0.1'), ('::10.0.0.1'), ('::8.8.8.8'),
	('64:ff9b::127.0.0.1'), ('64:ff9b::a9fe:a9fe'), ('64:ff9b::808:808'), ('64:ff9b:1::1'),
	('2002:7f00:1::1'), ('2002:0a00:0001::1'), ('2002:0808:0808::1'),
	('fc00::1'), ('fd12:3456::1'), ('fec0::1'),
	('192.0.2.1'), ('198.51.100.1'), ('203.0.113.1'), ('2001:db8::1'),
	('198.18.0.1'), ('198.19.255.255'),
	('169.254.169.254'), ('fd00:ec2::254'), ('100.100.100.200'), ('192.0.0.192'),
	('2001::1'), ('2001:0:4136:e378::1'), ('100::1'), ('4000::1'), ('::2')
) AS t(addr);

-- every spelling of an IP address is refused as a host name
CREATE FUNCTION pg_temp.host(h text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	RETURN appguard_normalize_host(h);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || detail;
END
$$;
SELECT h AS spelling, pg_temp.host(h) AS result
FROM (VALUES ('127.0.0.1'), ('127.1'), ('127.0.1'), ('2130706433'), ('017700000001'),
			 ('0x7f000001'), ('0x7f.1'), ('0x7F.0X1'), ('0177.0.0.1'), ('0177.1'), ('127.0.0.1.'),
			 ('0x7f.0x1.'), ('0x7f.0.0.0x1.'), ('0x7f.0x0.0x0.0x1'), ('127.0.0.0x1'),
			 ('１２７.０.０.１'), ('０ｘ７ｆ.０ｘ１'), ('127。0。0。1'),
			 ('169.254.169.254'), ('2852039166'), ('0xa9fea9fe'), ('0251.0376.0251.0376'),
			 ('::1'), ('[::1]'), ('::ffff:127.0.0.1'), ('[::ffff:7f00:1]'), ('0:0:0:0:0:0:0:1'),
			 ('a.0x1f'), ('a.123'), ('example.0x'), ('localhost'),
			 ('0x7f.example'), ('x127.0.0.1'), ('0xg.example')) AS t(h);

-- ---------------------------------------------------------------------
-- 5. error_uri: parameters are URL-encoded; nothing can inject
-- ---------------------------------------------------------------------
SELECT v AS client_id, appguard.error_uri(42, v) AS error_uri
FROM (VALUES ('app1'), ('a&b=c'), ('a#frag'), ('a"b'), ('a''b'), ('a b+c'), ('a/../b'), ('a?x=1'),
			 ('a%2Fb'), ('<script>'), ('ünïcødé'), ('日本'), (E'a\\b'), ('{suspension_id}')) AS t(v);
-- a control character (newline) is not a client_id at all
SELECT public.try($$SELECT appguard_register_client(E'a\nb', 'X', ARRAY['https://a.example.org/'])$$);
SELECT public.try($$SELECT appguard_register_client(E'a\rb', 'X', ARRAY['https://a.example.org/'])$$);
-- the encoder over every byte value a text can hold: only unreserved
-- characters and %XX come out
SELECT count(*) AS chars, count(*) FILTER (WHERE e ~ '^([A-Za-z0-9._~-]|%[0-9A-F]{2})+$') AS clean
FROM (SELECT appguard.url_encode(pg_catalog.chr(i)) AS e
	  FROM pg_catalog.generate_series(1, 55295) i) s;

-- ---------------------------------------------------------------------
-- 6. appguard_protect quotes the identifiers it is given
-- ---------------------------------------------------------------------
CREATE SCHEMA "Evil ""Schema""; DROP TABLE x; --";
CREATE TABLE "Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --" (
	"id"" ); DROP TABLE appguard.clients; --" bigint PRIMARY KEY,
	"client'); DELETE FROM appguard.events; --" text,
	"status"" = 'x'; --" text,
	"uri %I %s $1" text);
SELECT appguard_register_client('hostile-app', 'Hostile',
										 ARRAY['https://hostile.example.org/']) ->> 'host';
SELECT public.snap('hostile.example.org') IS NOT NULL AS baseline;
INSERT INTO "Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"
VALUES (1, 'hostile-app', 'active', NULL), (2, 'hostile-app', 'active', NULL);
SELECT appguard_protect('"Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"',
								 'client''); DELETE FROM appguard.events; --', 'status" = ''x''; --',
								 'uri %I %s $1', 'active', 'susp''ended') - 'table';
SELECT tgname FROM pg_catalog.pg_trigger
WHERE tgrelid = '"Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"'::regclass
ORDER BY tgname;
-- a drift suspends both rows through the hostile names
SELECT public.snap('hostile.example.org', 443, '{"tls.leaf.subject.O": "Someone Else LLC"}') IS NOT NULL AS drifted;
SELECT "id"" ); DROP TABLE appguard.clients; --" AS id, "status"" = 'x'; --" AS status,
	pg_catalog.regexp_replace("uri %I %s $1", '/suspensions/[0-9]+', '/suspensions/N') AS error_uri
FROM "Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --" ORDER BY 1;
SELECT appguard_check_refresh('"Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"', '1')
	-> 'error' ->> 'error' AS refused;
SELECT appguard_reapprove('"Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"', '1')
	->> 'reapproved' AS reapproved;
SELECT "id"" ); DROP TABLE appguard.clients; --" AS id, "status"" = 'x'; --" AS status,
	pg_catalog.regexp_replace("uri %I %s $1", '/suspensions/[0-9]+', '/suspensions/N') AS error_uri
FROM "Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --" ORDER BY 1;
SELECT appguard_unprotect('"Evil ""Schema""; DROP TABLE x; --"."tok""ens; DROP TABLE appguard.clients; --"')
	- 'table';
-- nothing was dropped or deleted by the names
SELECT to_regclass('appguard.clients') IS NOT NULL AS clients_kept,
	   (SELECT count(*) > 0 FROM appguard.events) AS events_kept;
DROP SCHEMA "Evil ""Schema""; DROP TABLE x; --" CASCADE;

-- ---------------------------------------------------------------------
-- 7. A hostile search_path: functions and operators planted in a schema
-- before pg_catalog, and temp tables named like appguard's, are never
-- used by any appguard function or trigger
-- ---------------------------------------------------------------------
CREATE SCHEMA hostile;
CREATE TABLE hostile.calls (what text);
GRANT INSERT ON hostile.calls TO PUBLIC;
CREATE FUNCTION hostile.note(what text) RETURNS void LANGUAGE sql
	AS $$INSERT INTO hostile.calls VALUES (what)$$;
CREATE FUNCTION hostile.eq(text, text) RETURNS boolean LANGUAGE sql
	AS $$SELECT hostile.note('operator =') IS NULL AND $1 OPERATOR(pg_catalog.=) $2$$;
CREATE OPERATOR hostile.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.eq);
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('now'); RETURN pg_catalog.now(); END$$;
CREATE FUNCTION hostile.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('clock_timestamp'); RETURN pg_catalog.clock_timestamp(); END$$;
CREATE FUNCTION hostile.lower(text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('lower'); RETURN pg_catalog.lower($1); END$$;
CREATE FUNCTION hostile.replace(text, text, text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('replace'); RETURN pg_catalog.replace($1, $2, $3); END$$;
CREATE FUNCTION hostile.format(text, text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('format'); RETURN 'SELECT 1'; END$$;
CREATE FUNCTION hostile.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('jsonb_build_object'); RETURN '{}'; END$$;
CREATE FUNCTION hostile.to_jsonb(anyelement) RETURNS jsonb LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('to_jsonb'); RETURN '{}'; END$$;
CREATE FUNCTION hostile.count(anyelement) RETURNS bigint LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('count'); RETURN 0; END$$;
CREATE FUNCTION hostile.setting(text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('setting'); RETURN 'x'; END$$;
CREATE FUNCTION hostile.url_encode(text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('url_encode'); RETURN $1; END$$;
CREATE FUNCTION hostile.log_event(text, text, jsonb) RETURNS bigint LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('log_event'); RETURN 0; END$$;
CREATE FUNCTION hostile.error_uri(bigint, text) RETURNS text LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('error_uri'); RETURN 'https://evil.test/'; END$$;
CREATE FUNCTION hostile.evaluate_snapshot(bigint, bigint) RETURNS jsonb LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('evaluate_snapshot'); RETURN '{}'; END$$;
CREATE FUNCTION hostile.baseline_for(text) RETURNS bigint LANGUAGE plpgsql
	AS $$BEGIN PERFORM hostile.note('baseline_for'); RETURN NULL; END$$;
CREATE TABLE hostile.clients (client_id text);
CREATE TABLE hostile.snapshots (id bigint);
CREATE TEMP TABLE clients (client_id text);
CREATE TEMP TABLE refresh_tokens (token_id text);
CREATE TEMP TABLE suspensions (id bigint);
CREATE TEMP TABLE grants (token_table regclass);
CREATE TABLE public.hp_tokens (id text PRIMARY KEY, client text, status text, uri text);

SET search_path = hostile, pg_temp, appguard, public, pg_catalog;
SELECT appguard_register_client('hp-app', 'Hostile Path', ARRAY['https://hp.example.org/']) ->> 'host';
SELECT public.snap('hp.example.org') IS NOT NULL AS baseline;
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('hp1', 'hp-app', 'pat');
INSERT INTO public.hp_tokens VALUES ('r1', 'hp-app', 'active', NULL);
SELECT appguard_protect('public.hp_tokens', 'client', 'status', 'uri') ->> 'rows';
-- the consent trigger's paths: its direct insert, a new consent
-- (appguard.consent_grant), and a key whose grant was left behind (its
-- row deleted with appguard's triggers idle: the SQL upsert)
INSERT INTO public.hp_tokens VALUES ('r2', 'hp-app', 'active', NULL);
INSERT INTO appguard.refresh_tokens (token_id, client_id, subject) VALUES ('hp2', 'hp-app', 'pat2');
SET session_replication_role = replica;
DELETE FROM public.hp_tokens WHERE id OPERATOR(pg_catalog.=) 'r2';
RESET session_replication_role;
INSERT INTO public.hp_tokens VALUES ('r2', 'hp-app', 'active', NULL);
SELECT pg_catalog.count(*) AS hp_grants FROM appguard.grant_states g
WHERE g.client_id OPERATOR(pg_catalog.=) 'hp-app' AND g.state OPERATOR(pg_catalog.=) 'active';
SELECT appguard_check_refresh('hp1') ->> 'allowed';
SELECT public.snap('hp.example.org', 443, '{"dns.ownership_ids": [], "tls.verified": false}') IS NOT NULL AS drifted;
SELECT appguard_check_refresh('hp1') -> 'error' ->> 'error_uri' LIKE 'https://auth.example.org/%' AS real_error_uri;
SELECT appguard_check_refresh('public.hp_tokens', 'r1') -> 'error' ->> 'error';
SELECT appguard_explain((SELECT t.suspension_id FROM public.tokens t
								  WHERE t.token_id OPERATOR(pg_catalog.=) 'hp1')) ->> 'app_name';
SELECT appguard_reapprove('hp1') ->> 'reapproved';
SELECT appguard_reapprove('public.hp_tokens', 'r1') ->> 'reapproved';
SELECT appguard_update_client('hp-app', 'Hostile Path 2') ->> 'name';
-- the status trigger's paths (appguard.grant_sync): a retired row (its
-- direct write), a row it suspended revoked by the host, the key trigger
-- and a delete (grant_sync_sql)
UPDATE appguard.refresh_tokens SET status = 'revoked' WHERE token_id OPERATOR(pg_catalog.=) 'hp1';
UPDATE public.hp_tokens SET status = 'revoked' WHERE id OPERATOR(pg_catalog.=) 'r2';
UPDATE public.hp_tokens SET client = 'hp-app' WHERE id OPERATOR(pg_catalog.=) 'r1';
SELECT g.token_key, g.state FROM appguard.grant_states g
WHERE g.token_table OPERATOR(pg_catalog.=) 'public.hp_tokens'::pg_catalog.regclass ORDER BY 1;
DELETE FROM public.hp_tokens;
SELECT appguard_unprotect('public.hp_tokens') ->> 'rows_forgotten';
UPDATE appguard.policy SET severity = 'warn' WHERE reason OPERATOR(pg_catalog.=) 'dns_caa_changed';
SELECT pg_catalog.count(*) >= 0 FROM appguard_prune('100 years') x;
SELECT appguard_unregister_client('hp-app') IS NOT NULL AS unregistered;
RESET search_path;
-- what the planted objects saw: nothing
SELECT what, count(*) FROM hostile.calls GROUP BY what ORDER BY what;
SELECT (SELECT count(*) FROM pg_temp.clients) + (SELECT count(*) FROM pg_temp.refresh_tokens)
	 + (SELECT count(*) FROM pg_temp.suspensions) + (SELECT count(*) FROM pg_temp.grants)
	 + (SELECT count(*) FROM hostile.clients) + (SELECT count(*) FROM hostile.snapshots) AS rows_in_decoys;
-- the control: the planted operator and functions do work when called
SET search_path = hostile, pg_catalog;
SELECT 'a' = 'a' AS planted_eq, lower('X') AS planted_lower, now() IS NOT NULL AS planted_now;
RESET search_path;
SELECT what, count(*) FROM hostile.calls GROUP BY what ORDER BY what;

DROP SCHEMA hostile CASCADE;
DROP TABLE public.hp_tokens, public.sec_tokens;
DROP TABLE pg_temp.clients, pg_temp.refresh_tokens, pg_temp.suspensions, pg_temp.grants;
REVOKE CREATE ON SCHEMA public FROM ag_sec_owner;
DROP ROLE ag_sec_nogrant;
DROP ROLE ag_sec_operator;
DROP ROLE ag_sec_auth;
DROP ROLE ag_sec_owner;
