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
-- server may not make it active again either.  No token is created
-- suspended either.  The protected table's own triggers refuse all three
-- (src/refresh.c: refuse_suspended_token in the consent trigger,
-- refuse_token_status in the status trigger), telling appguard's own
-- writes by appguard.applying() (26_applying), a flag only appguard's code
-- can raise.  (A trigger of their own, with a WHEN clause, had PostgreSQL
-- parse that clause again for every statement.)

-- Protected like any token table; not recorded as an event (it is part of
-- the install), and not dumped (CREATE EXTENSION makes it again).
SELECT appguard.protect_table('appguard.refresh_tokens', 'client_id', 'status', 'error_uri',
							  'active', 'suspended', 'subject', 'grant_id') IS NOT NULL AS protected;
SELECT pg_catalog.pg_extension_config_dump('appguard.protected_tables',
	'WHERE tbl OPERATOR(pg_catalog.<>) ''appguard.refresh_tokens''::pg_catalog.regclass');
