---------------------------------------------------------------------------
-- Statements on an auth server's token table run as that table's owner
-- (src/asowner.c): its triggers and defaults never run as appguard's
-- superuser owner.  Granted to nobody: only appguard's own functions call it.
---------------------------------------------------------------------------

CREATE FUNCTION appguard.as_table_owner(tbl regclass, query text, args text[] DEFAULT '{}')
RETURNS text[]
AS 'MODULE_PATHNAME', 'appguard_as_table_owner'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION appguard.as_table_owner(regclass, text, text[]) IS
	'Run a statement on tbl as its owner in a security-restricted context; the first column of each returned row';
