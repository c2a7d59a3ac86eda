---------------------------------------------------------------------------
-- Lifecycle: telling appguard's own writes to protected tables from the
-- host's
---------------------------------------------------------------------------

-- Raised (true) while appguard itself changes the status of protected
-- tables' rows (suspending or re-approving), lowered (false) after, so the
-- triggers of part 3 (appguard.grant_sync) leave appguard's state
-- of those rows to appguard.  A flag in the backend's memory (src/applying.c),
-- not a setting, which any role could set: granted to nobody, and
-- superuser-only in the C code too, so only appguard's SECURITY DEFINER
-- functions raise it.  It covers only the row triggers of appguard's own
-- statement (statements run meanwhile by the host's trigger code are the
-- host's writes), raises nest, and the end of the transaction or the abort
-- of the subtransaction that raised it lowers it: no error leaves it raised.
CREATE FUNCTION appguard.set_applying(applying boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'appguard_set_applying'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION appguard.set_applying(boolean) IS
	'For appguard''s own functions: mark (true) and unmark (false) appguard''s writes to protected tables';

-- Read by the row triggers of protected tables: whether the statement
-- that fired the calling trigger is appguard's own write.  Granted to
-- nobody; the triggers run as the extension's owner.
CREATE FUNCTION appguard.applying()
RETURNS boolean
AS 'MODULE_PATHNAME', 'appguard_applying'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION appguard.applying() IS
	'For the row triggers of protected tables: whether the firing statement is appguard''s own write';
