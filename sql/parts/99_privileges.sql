---------------------------------------------------------------------------
-- Privileges: a backstop after every part has granted what it means to.
-- Nothing of appguard's is executable or readable by PUBLIC.
---------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA appguard FROM PUBLIC;
-- the API's routines in the extension's schema, which holds other objects too
DO $$
DECLARE
	routine regprocedure;
BEGIN
	FOR routine IN
		SELECT p.oid FROM pg_catalog.pg_proc p
		WHERE p.pronamespace = '@extschema@'::regnamespace
		  AND EXISTS (SELECT FROM pg_catalog.pg_depend d
					  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
						AND d.refclassid = 'pg_catalog.pg_extension'::regclass
						AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e
										  WHERE e.extname = 'appguard'))
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', routine);
	END LOOP;
END
$$;
REVOKE ALL ON ALL TABLES IN SCHEMA appguard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA appguard FROM PUBLIC;
GRANT USAGE ON SCHEMA appguard TO appguard_operator;
