---------------------------------------------------------------------------
-- Privileges, all in one place: nothing of appguard's is executable or
-- readable by PUBLIC; appguard_operator and appguard_auth_server (00_roles)
-- get what is granted below, and nothing else.  appguard_protect,
-- appguard_unprotect and the settings stay with superusers.
---------------------------------------------------------------------------

REVOKE ALL ON ALL ROUTINES IN SCHEMA appguard FROM PUBLIC;
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

GRANT USAGE ON SCHEMA appguard TO appguard_operator, appguard_auth_server;

-- The auth server: clients, its tokens, the refresh path, consent, the
-- error_uri page, re-approval.  Not: measuring, protect, sweeps, holds,
-- prune.
GRANT EXECUTE ON FUNCTION
	@extschema@.appguard_register_client(text, text, text[]),
	@extschema@.appguard_register_client(text, jsonb),
	@extschema@.appguard_update_client(text, text, text[]),
	@extschema@.appguard_reregister_client(text, jsonb),
	@extschema@.appguard_consent_info(text),
	@extschema@.appguard_consent_info(text, text),
	@extschema@.appguard_check_refresh(text),
	@extschema@.appguard_check_refresh(regclass, text),
	@extschema@.appguard_explain(bigint),
	@extschema@.appguard_explain_html(bigint, text, text),
	@extschema@.appguard_reapprove(text),
	@extschema@.appguard_reapprove(regclass, text),
	@extschema@.appguard_drifted(text),
	@extschema@.appguard_drift(text)
TO appguard_auth_server;
GRANT SELECT, DELETE ON appguard.refresh_tokens TO appguard_auth_server;
GRANT INSERT (token_id, client_id, subject, scope, status, created_at, grant_id) ON appguard.refresh_tokens
	TO appguard_auth_server;
GRANT UPDATE (status, scope, last_refreshed_at) ON appguard.refresh_tokens TO appguard_auth_server;

-- Operators: everything the auth server may call, plus measuring, drift,
-- sweeps, holds, retention, table checks, and reading every table and view.
GRANT EXECUTE ON FUNCTION
	@extschema@.appguard_probe(text, integer),
	@extschema@.appguard_snapshot(text, integer),
	@extschema@.appguard_snapshot_many(text[], integer[]),
	@extschema@.appguard_normalize_host(text),
	@extschema@.appguard_registrable_domain(text),
	@extschema@.appguard_address_class(inet),
	@extschema@.appguard_address_allowed(inet, boolean, text),
	@extschema@.appguard_drift_reasons(),
	@extschema@.appguard_facts_diff(jsonb, jsonb, text),
	@extschema@.appguard_diff(bigint, bigint, text),
	@extschema@.appguard_register_client(text, text, text[]),
	@extschema@.appguard_register_client(text, jsonb),
	@extschema@.appguard_update_client(text, text, text[]),
	@extschema@.appguard_reregister_client(text, jsonb),
	@extschema@.appguard_unregister_client(text),
	@extschema@.appguard_consent_info(text),
	@extschema@.appguard_consent_info(text, text),
	@extschema@.appguard_check_refresh(text),
	@extschema@.appguard_check_refresh(regclass, text),
	@extschema@.appguard_explain(bigint),
	@extschema@.appguard_explain_html(bigint, text, text),
	@extschema@.appguard_reapprove(text),
	@extschema@.appguard_reapprove(regclass, text),
	@extschema@.appguard_drifted(text),
	@extschema@.appguard_drift(text),
	@extschema@.appguard_release_hold(bigint, text),
	@extschema@.appguard_discard_hold(bigint, text),
	@extschema@.appguard_prune(interval),
	@extschema@.appguard_expiring_certificates(integer),
	@extschema@.appguard_sweep_begin(interval, interval, integer),
	@extschema@.appguard_sweep_step(bigint),
	@extschema@.appguard_sweep_finish(bigint),
	@extschema@.appguard_recheck_table(regclass),
	-- called by CALL appguard_sweep, which runs as its caller
	appguard.sweep_raise_failure(bigint)
TO appguard_operator;
GRANT EXECUTE ON PROCEDURE
	@extschema@.appguard_sweep(interval, interval, integer),
	appguard.sweep_run(bigint)
TO appguard_operator;
GRANT SELECT ON
	appguard.snapshots, appguard.policy, appguard.client_policy,
	appguard.clients, appguard.client_hosts, appguard.events, appguard.refresh_tokens,
	appguard.protected_tables, appguard.baseline_state, appguard.baseline_hosts,
	appguard.baseline_host_state, appguard.drifts, appguard.suspensions,
	appguard.holds, appguard.sweeps, appguard.sweep_hosts, appguard.consent_shown,
	appguard.grants, appguard.grant_states, appguard.consents, appguard.client_status, appguard.expiring_certificates,
	appguard.open_suspensions, appguard.held_suspensions, appguard.unregistered_grants,
	appguard.table_problems
TO appguard_operator;
