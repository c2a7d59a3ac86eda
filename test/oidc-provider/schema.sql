-- node-oidc-provider's storage for the appguard example (test/oidc-provider).
-- Run as the role the server connects as; it owns both tables.
--
-- Every model but refresh tokens (sessions, interactions, grants,
-- authorization codes, access tokens, ...) is one row of oidc_models, its
-- payload as oidc-provider gives it.  Refresh tokens get a table of their
-- own with plain columns for what appguard needs: protect.sql guards it with
-- appguard_protect (client_id, status, error_uri, account_id as the
-- subject, grant_id as the grant).

CREATE TABLE oidc_models (
	model       text NOT NULL,
	id          text NOT NULL,
	payload     jsonb NOT NULL,
	grant_id    text,                       -- payload.grantId (revokeByGrantId)
	uid         text,                       -- payload.uid (Session.findByUid)
	user_code   text,                       -- payload.userCode (device flow)
	expires_at  timestamptz,
	consumed_at timestamptz,
	PRIMARY KEY (model, id)
);
CREATE INDEX oidc_models_grant ON oidc_models (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX oidc_models_uid ON oidc_models (uid) WHERE uid IS NOT NULL;

-- status: 'active' (usable), 'consumed' (rotated away: presenting it again
-- is reuse and revokes the grant), 'revoked' (the server revoked it),
-- 'suspended' (written by appguard only, with error_uri).  The adapter
-- hands oidc-provider only active rows (and consumed ones, flagged).
CREATE TABLE oidc_refresh_tokens (
	id          text PRIMARY KEY,           -- the token's jti (its opaque value)
	client_id   text NOT NULL,              -- payload.clientId
	account_id  text NOT NULL,              -- payload.accountId: the patient
	grant_id    text NOT NULL,              -- payload.grantId: one approval's chain
	status      text NOT NULL DEFAULT 'active'
		CHECK (status IN ('active', 'consumed', 'revoked', 'suspended')),
	error_uri   text,                       -- written by appguard with 'suspended'
	payload     jsonb NOT NULL,
	expires_at  timestamptz,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oidc_refresh_tokens_grant ON oidc_refresh_tokens (grant_id);
-- A re-approval finds the grant's newest suspended row (server.js,
-- reapproveGrant) without reading the rest of a long rotation chain.
CREATE INDEX oidc_refresh_tokens_suspended ON oidc_refresh_tokens (grant_id, created_at)
	WHERE status = 'suspended';
