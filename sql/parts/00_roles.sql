-- appguard: the install script.
--
-- The install script is sql/parts/NN_topic.sql concatenated in name order
-- (Makefile).  The tens are the layers: 0 the schema and the roles, 1
-- snapshots, 2 drift and the means to act on other roles' tables safely
-- (25_table_owner, 26_applying), 3 the lifecycle (clients, baselines,
-- grants and token tables, suspension, refresh, breaker, sweeps,
-- operations, appguard's own token table), 5 consent and the patient's
-- error_uri page, 9 privileges; the units order the parts within a layer.
--
-- Naming, for every object of the extension:
--   * the API -- what a user, a DBA or an auth server calls -- lives in the
--     extension's schema (@extschema@: public unless CREATE EXTENSION appguard
--     SCHEMA x says otherwise), each name prefixed appguard_ once:
--     appguard_snapshot(host), appguard_drifted(client_id), CALL
--     appguard_sweep(...).  Reachable by those names with the default
--     search_path.
--   * everything else -- tables, views, sequences, internal functions and
--     trigger functions -- lives in schema appguard, without the prefix:
--     appguard.snapshots, appguard.client_status, appguard.evaluate_client().
--     A name carries its namespace once.
--   * nothing is executable or readable by PUBLIC, and every grant to
--     appguard's roles is in one place: 99_privileges.
--   * appguard's code names every object schema-qualified (appguard.x,
--     appguard_x) and pins search_path = pg_catalog, pg_temp.
-- appguard stores certificate names, DNS records and the texts patients
-- read as UTF-8, which a database of another encoding would store as other
-- characters.  (This script is ASCII only, so that this check runs in any
-- database: test/t/005_install.pl checks both.)
DO $$
BEGIN
	IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
		RAISE EXCEPTION 'appguard needs a UTF8 database; this one is %', pg_catalog.getdatabaseencoding()
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard stores certificate names, DNS records and the texts patients read as UTF-8.',
				  HINT = 'Create the auth server''s database with ENCODING ''UTF8'' (TEMPLATE template0).';
	END IF;
END
$$;

CREATE SCHEMA appguard;
COMMENT ON SCHEMA appguard IS 'appguard''s tables, views and internal functions; the API is in the extension''s schema';

---------------------------------------------------------------------------
-- Roles
---------------------------------------------------------------------------

-- Roles are cluster-wide: create the operator role once, keep it on DROP.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'appguard_operator') THEN
		CREATE ROLE appguard_operator NOLOGIN;
	END IF;
END
$$;

-- The auth server's own database role is granted this role: it registers
-- clients, issues and refreshes tokens (appguard.refresh_tokens), asks
-- appguard_check_refresh, shows appguard_explain and calls
-- appguard_reapprove.  It cannot prune, sweep, release holds or protect.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'appguard_auth_server') THEN
		CREATE ROLE appguard_auth_server NOLOGIN;
	END IF;
END
$$;
