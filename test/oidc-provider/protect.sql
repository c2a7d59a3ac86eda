-- appguard for the example server's database: run once as a superuser,
-- after schema.sql.  :"role" is the role the server connects as
--   psql -v role=oidc -f protect.sql <database>

CREATE EXTENSION IF NOT EXISTS appguard;

-- The server calls appguard_register_client, appguard_consent_info,
-- appguard_check_refresh, appguard_explain_html (and appguard_reapprove).
GRANT appguard_auth_server TO :"role";

-- Guard the refresh tokens: appguard sets status = 'suspended' and fills
-- error_uri when an app's certificate or DNS drifts from what the patient
-- approved.  account_id is the subject (the patient's consent), grant_id
-- the grant (a rotation keeps oidc-provider's grantId).
SELECT appguard_protect('oidc_refresh_tokens', 'client_id', 'status', 'error_uri',
						'active', 'suspended',
						subject_column => 'account_id', grant_column => 'grant_id');
