---------------------------------------------------------------------------
-- Drift: what changed between two snapshots of a host, and how much that
-- matters.  The rules are in C (src/drift_rules.c, whose header comment
-- says what counts as a change); the severity of each reason is policy:
-- a client's override in appguard.client_policy, else appguard.policy,
-- else the built-in default.
---------------------------------------------------------------------------

CREATE FUNCTION @extschema@.appguard_drift_reasons()
RETURNS TABLE (reason text, default_severity text, description text)
AS 'MODULE_PATHNAME', 'appguard_drift_reasons'
LANGUAGE C IMMUTABLE PARALLEL SAFE ROWS 20;
COMMENT ON FUNCTION @extschema@.appguard_drift_reasons() IS
	'Every drift reason appguard reports, with its built-in severity and a description';

CREATE FUNCTION @extschema@.appguard_facts_diff(old jsonb, new jsonb, client_id text DEFAULT NULL)
RETURNS TABLE (reason text, field text, old_value text, new_value text)
AS 'MODULE_PATHNAME', 'appguard_facts_diff'
LANGUAGE C IMMUTABLE PARALLEL SAFE ROWS 5;
COMMENT ON FUNCTION @extschema@.appguard_facts_diff(jsonb, jsonb, text) IS
	'Differences between two facts documents, one row per reason and field; with client_id, ownership is about that client only';

---------------------------------------------------------------------------
-- Policy: the severity of each reason (suspend, warn, ignore)
---------------------------------------------------------------------------

CREATE TABLE appguard.policy (
	reason		text PRIMARY KEY,
	severity	text NOT NULL CHECK (severity IN ('suspend', 'warn', 'ignore')),
	description	text NOT NULL
);
COMMENT ON TABLE appguard.policy IS
	'Severity of each drift reason for every client; INSERT of an existing reason updates it';

CREATE TABLE appguard.client_policy (
	client_id	text NOT NULL,
	reason		text NOT NULL,
	severity	text NOT NULL CHECK (severity IN ('suspend', 'warn', 'ignore')),
	PRIMARY KEY (client_id, reason)
);
COMMENT ON TABLE appguard.client_policy IS
	'Per-client severity of a drift reason, overriding appguard.policy';

-- Unknown reasons and severities are refused with 22023 and the valid
-- values, before any constraint would give a less helpful message.
CREATE FUNCTION appguard.policy_check_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM @extschema@.appguard_drift_reasons() AS r
				   WHERE r.reason = NEW.reason) THEN
		RAISE EXCEPTION 'unknown drift reason %', quote_nullable(NEW.reason)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('%I.%I holds only reasons that appguard reports.',
								  TG_TABLE_SCHEMA, TG_TABLE_NAME),
				  HINT = 'Valid reasons: '
					  || (SELECT string_agg(r.reason, ', ' ORDER BY r.reason)
						  FROM @extschema@.appguard_drift_reasons() AS r)
					  || '.';
	END IF;
	IF NEW.severity IS NULL OR NEW.severity NOT IN ('suspend', 'warn', 'ignore') THEN
		RAISE EXCEPTION 'unknown severity % for drift reason %',
				quote_nullable(NEW.severity), NEW.reason
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Valid severities: suspend, warn, ignore.';
	END IF;
	RETURN NEW;
END
$$;

-- appguard.policy is configuration that pg_dump keeps, but on restore
-- CREATE EXTENSION has already seeded every reason and the dumped rows
-- would collide with the seed.  So an INSERT of a reason that exists
-- updates that row instead, and the dump restores the operator's values.
CREATE FUNCTION appguard.policy_insert_updates()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE appguard.policy AS p
	SET severity = NEW.severity,
		description = coalesce(NEW.description, p.description)
	WHERE p.reason = NEW.reason;
	IF FOUND THEN
		RETURN NULL;
	END IF;
	RETURN NEW;
END
$$;

-- triggers of one event fire in name order: check first
CREATE TRIGGER policy_10_check
	BEFORE INSERT OR UPDATE ON appguard.policy
	FOR EACH ROW EXECUTE FUNCTION appguard.policy_check_row();
CREATE TRIGGER policy_20_insert_updates
	BEFORE INSERT ON appguard.policy
	FOR EACH ROW EXECUTE FUNCTION appguard.policy_insert_updates();
-- A restore runs with session_replication_role = replica (README,
-- Upgrading), which idles appguard's other triggers: this one must still
-- turn the dumped rows into updates of the seed.
ALTER TABLE appguard.policy ENABLE ALWAYS TRIGGER policy_20_insert_updates;
CREATE TRIGGER client_policy_10_check
	BEFORE INSERT OR UPDATE ON appguard.client_policy
	FOR EACH ROW EXECUTE FUNCTION appguard.policy_check_row();

INSERT INTO appguard.policy (reason, severity, description)
SELECT r.reason, r.default_severity, r.description
FROM @extschema@.appguard_drift_reasons() AS r;

SELECT pg_catalog.pg_extension_config_dump('appguard.policy', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.client_policy', '');

---------------------------------------------------------------------------
-- Comparing two stored snapshots, with severities
---------------------------------------------------------------------------

-- The snapshots may be of different hosts: a client whose redirect host
-- moved is compared with what its patients consented to.

CREATE FUNCTION @extschema@.appguard_diff(old_snapshot bigint, new_snapshot bigint,
									   client_id text DEFAULT NULL)
RETURNS TABLE (reason text, severity text, field text, old_value text, new_value text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_facts	jsonb;
	new_facts	jsonb;
BEGIN
	IF old_snapshot IS NULL OR new_snapshot IS NULL THEN
		RAISE EXCEPTION 'snapshot ids must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT s.facts INTO old_facts
	FROM appguard.snapshots AS s WHERE s.id = old_snapshot;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'snapshot % does not exist', old_snapshot
			USING ERRCODE = 'no_data_found',
				  HINT = 'Pass ids of appguard.snapshots.';
	END IF;
	SELECT s.facts INTO new_facts
	FROM appguard.snapshots AS s WHERE s.id = new_snapshot;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'snapshot % does not exist', new_snapshot
			USING ERRCODE = 'no_data_found',
				  HINT = 'Pass ids of appguard.snapshots.';
	END IF;

	RETURN QUERY
	SELECT d.reason,
		   coalesce(cp.severity, p.severity, r.default_severity),
		   d.field, d.old_value, d.new_value
	FROM @extschema@.appguard_facts_diff(old_facts, new_facts,
									  appguard_diff.client_id) WITH ORDINALITY AS d
	LEFT JOIN appguard.client_policy AS cp
		ON cp.client_id = appguard_diff.client_id AND cp.reason = d.reason
	LEFT JOIN appguard.policy AS p ON p.reason = d.reason
	LEFT JOIN @extschema@.appguard_drift_reasons() AS r ON r.reason = d.reason
	ORDER BY d.ordinality;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_diff(bigint, bigint, text) IS
	'Differences between two snapshots of one host, with the severity the policy gives each (client override, else global)';

