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

-- The fan-out's statement on a token table (appguard.write_host_suspensions),
-- as as_table_owner, with two text[] parameters passed as values (not as
-- text: 100,000 keys are one fan-out); returns the first column of the
-- statement's first row, a text[].  Granted to nobody.
CREATE FUNCTION appguard.as_table_owner_keys(tbl regclass, query text, keys text[], uris text[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'appguard_as_table_owner_keys'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION appguard.as_table_owner_keys(regclass, text, text[], text[]) IS
	'Run the fan-out''s statement on tbl as its owner in a security-restricted context, with keys and uris as $1 and $2';

-- The columns attnums of a host row as text, each printed by its type's
-- output function, never through a cast, an operator or to_jsonb, which
-- could call code the table's owner wrote (src/hostrow.c).  Granted to
-- nobody: the row triggers of protected tables call it as the extension's
-- owner.
CREATE FUNCTION appguard.row_texts(r record, attnums smallint[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'appguard_row_texts'
LANGUAGE C STABLE;
COMMENT ON FUNCTION appguard.row_texts(record, smallint[]) IS
	'For the row triggers of protected tables: columns of a row as their types print them, without casts';
