---------------------------------------------------------------------------
-- Privileges: a backstop after every part has granted what it means to.
-- Nothing in schema appguard is executable or readable by PUBLIC.
---------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA appguard FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA appguard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA appguard FROM PUBLIC;
GRANT USAGE ON SCHEMA appguard TO appguard_operator;
