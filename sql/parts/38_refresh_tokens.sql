---------------------------------------------------------------------------
-- Lifecycle, part 9: appguard's own refresh-token table, for auth servers
-- that start fresh
--
-- One more protected table (part 3), protected at install: its grants'
-- state is in appguard.grants like any other table's, and appguard writes
-- its status and error_uri as it writes any host's.  What it adds is a
-- guard of its status values, which a host table cannot have: only
-- appguard moves a token into 'suspended', or back to 'active' from a
-- suspension.
---------------------------------------------------------------------------

-- token_id identifies the token (use an id or a hash, not the token
-- itself: it appears in events and error messages never show it).
-- subject: the patient; every token of one subject for one client belongs
-- to that subject's consent (appguard.consents), so a rotated token, or a
-- new grant after a remembered approval, is held to what the patient
-- approved.  grant_id (optional): the grant a token belongs to; a rotated
-- token carries its predecessor's (re-approval restores the newest live
-- token of the grant; without it, of the subject's consent).
-- status: active, suspended (only appguard sets it), revoked (the auth
-- server's decision).
CREATE TABLE appguard.refresh_tokens (
	token_id				text PRIMARY KEY,
	client_id				text NOT NULL,
	subject					text NOT NULL,
	scope					text,
	status					text NOT NULL DEFAULT 'active'
							CHECK (status IN ('active', 'suspended', 'revoked')),
	error_uri				text,
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	last_refreshed_at		timestamptz,
	grant_id				text
);
COMMENT ON TABLE appguard.refresh_tokens IS 'Refresh tokens guarded by appguard (a protected table: their state is in appguard.grants)';
SELECT pg_catalog.pg_extension_config_dump('appguard.refresh_tokens', '');

-- Only appguard moves a token into 'suspended', or back to 'active' from a
-- suspension: a suspension needs its record and error_uri, a reactivation
-- a new baseline (appguard_reapprove).  Revoking a suspended token is the
-- auth server's right; appguard's state of the grant keeps its suspension
-- then (appguard.grants: inactive, with the suspension_id), so the auth
-- server may not make it active again either.  appguard's own writes are
-- told from the auth server's by appguard.applying() (26_applying), a
-- flag only appguard's code can raise.  No token is created suspended
-- either: the consent trigger refuses it (src/refresh.c,
-- refuse_suspended_token).  The WHEN clause keeps ordinary statements free
-- of any call (they run with the writing role's rights, so they call
-- nothing of appguard's), and so are appguard's own writes, which change error_uri
-- with the status (a suspension sets it, a re-approval clears it): the
-- auth server's role may not write error_uri (99_privileges), so each of
-- its status changes meets the guard, which tells appguard's writes by
-- appguard.applying() in any case.
CREATE FUNCTION appguard.refresh_token_status_guard()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g record;
BEGIN
	IF appguard.applying() THEN
		RETURN NEW;			-- a suspension or a re-approval by appguard
	END IF;
	SELECT gr.state, gr.suspension_id INTO g FROM appguard.grants gr
	WHERE gr.token_table = 'appguard.refresh_tokens'::regclass AND gr.token_key = NEW.token_id;
	IF NEW.status = 'suspended' THEN
		RAISE EXCEPTION 'only appguard suspends refresh tokens'
			USING ERRCODE = '55000',
				  HINT = 'Set status to ''revoked'' to revoke a token.';
	END IF;
	IF g.state = 'suspended' OR (g.state = 'inactive' AND g.suspension_id IS NOT NULL) THEN
		RAISE EXCEPTION 'refresh token was suspended by appguard'
			USING ERRCODE = '55000',
				  DETAIL = pg_catalog.format('It is %s under suspension %s; only appguard_reapprove makes it active again.',
											 OLD.status, g.suspension_id),
				  HINT = 'Reactivate a suspended token with appguard_reapprove(token_id), which takes a new baseline; a token revoked while suspended stays revoked.';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER appguard_status_guard BEFORE UPDATE OF status ON appguard.refresh_tokens
	FOR EACH ROW
	WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('suspended', 'active')
		  AND NEW.error_uri IS NOT DISTINCT FROM OLD.error_uri)
	EXECUTE FUNCTION appguard.refresh_token_status_guard();

-- Protected like any token table; not recorded as an event (it is part of
-- the install), and not dumped (CREATE EXTENSION makes it again).
SELECT appguard.protect_table('appguard.refresh_tokens', 'client_id', 'status', 'error_uri',
							  'active', 'suspended', 'subject', 'grant_id') IS NOT NULL AS protected;
SELECT pg_catalog.pg_extension_config_dump('appguard.protected_tables',
	'WHERE tbl OPERATOR(pg_catalog.<>) ''appguard.refresh_tokens''::pg_catalog.regclass');
