---------------------------------------------------------------------------
-- Lifecycle: telling appguard's own writes to protected tables from the
-- host's
---------------------------------------------------------------------------

-- Set while appguard itself changes the status of a protected table's
-- row (suspending or re-approving), so the triggers of part 3 tell
-- appguard's writes from the host's.  A transaction-local placeholder
-- setting outside the reserved appguard.* prefix -- which any role can set
-- too, so it is no guard: appguard.refresh_tokens' guard below rests on
-- suspension_id instead, which only appguard writes.
CREATE FUNCTION appguard.set_applying(applying boolean)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT NULL::void FROM pg_catalog.set_config('appguard_lifecycle.applying',
												 CASE WHEN $1 THEN 'on' ELSE '' END, true)
$$;
