-- appguard 0.1.0
-- Every object lives in schema appguard; nothing is executable by PUBLIC.

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

