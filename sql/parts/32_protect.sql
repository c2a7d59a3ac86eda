---------------------------------------------------------------------------
-- Lifecycle, part 3: guarding an auth server's existing token table
--
-- appguard_protect attaches the same guard as appguard.refresh_tokens has
-- to a table appguard does not own, without altering it: no column is
-- added.  appguard keeps its per-row state (client, baseline, suspension,
-- error_uri) in appguard.protected_rows, keyed by the table and the row's
-- primary key as text, kept in step by row triggers on the host table:
--   AFTER INSERT                           track the row, take its baseline
--   AFTER UPDATE OF <key>, <client>        follow key and client changes
--   AFTER UPDATE OF <status>               the host decided the row's status
--   AFTER DELETE, AFTER TRUNCATE           forget rows
-- The host's status column may be of any type; the values meaning active
-- and suspended are given at protect time (Glewlwyd: gpor_enabled 1 / 0).
-- A row is 'active' while its status is the active value, 'suspended'
-- while appguard holds it at the suspended value, and 'inactive' when the
-- host set any other value, or wrote its status itself (an UPDATE that
-- names the status column counts as the host's decision, even if the
-- value stays the same: a host revoking a row appguard suspended takes it
-- over, and re-approval will not re-enable it).  appguard's own writes of
-- the status (suspension, re-approval) are told from the host's by
-- appguard.applying(), a flag only appguard's code can raise (26_applying).
-- Columns are remembered by number, so renaming them keeps the guard.
---------------------------------------------------------------------------

CREATE TABLE appguard.protected_tables (
	tbl					regclass PRIMARY KEY,
	key_attnum			smallint NOT NULL,
	client_attnum		smallint NOT NULL,
	status_attnum		smallint NOT NULL,
	error_uri_attnum	smallint,
	active_value		text NOT NULL,		-- as the status column's type prints it
	suspended_value		text NOT NULL,
	active_json			text NOT NULL,		-- to_jsonb(active value) #>> '{}', what the triggers compare
	protected_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	protected_by		text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE appguard.protected_tables IS 'Token tables of an auth server guarded by appguard_protect';
SELECT pg_catalog.pg_extension_config_dump('appguard.protected_tables', '');

CREATE TABLE appguard.protected_rows (
	tbl						regclass NOT NULL REFERENCES appguard.protected_tables ON DELETE CASCADE,
	row_key					text NOT NULL,
	client_id				text,
	state					text NOT NULL CHECK (state IN ('active', 'suspended', 'inactive')),
	baseline_snapshot_id	bigint,
	suspension_id			bigint,
	suspended_at			timestamptz,
	error_uri				text,
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	reapproved_at			timestamptz,
	PRIMARY KEY (tbl, row_key)
);
COMMENT ON TABLE appguard.protected_rows IS 'appguard''s state of each row of a protected token table: baseline, suspension, error_uri';
CREATE INDEX protected_rows_client_baseline
	ON appguard.protected_rows (client_id, baseline_snapshot_id) WHERE state = 'active';
SELECT pg_catalog.pg_extension_config_dump('appguard.protected_rows', '');

-- Column names and types of a protected table, looked up by number.
-- PL/pgSQL, not SQL: the row triggers call it for every host row, and a
-- non-inlined SQL function is planned again at each call (milliseconds
-- for this catalog join), where PL/pgSQL keeps its plan for the session.
CREATE FUNCTION appguard.protected_table_columns(p_tbl regclass,
	OUT schema_name name, OUT table_name name,
	OUT key_name name, OUT key_type text,
	OUT client_name name,
	OUT status_name name, OUT status_type text,
	OUT error_uri_name name,
	OUT active_value text, OUT suspended_value text, OUT active_json text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT n.nspname, c.relname,
		   ka.attname, pg_catalog.format_type(ka.atttypid, ka.atttypmod),
		   ca.attname,
		   sa.attname, pg_catalog.format_type(sa.atttypid, sa.atttypmod),
		   ea.attname,
		   pt.active_value, pt.suspended_value, pt.active_json
	INTO schema_name, table_name, key_name, key_type, client_name, status_name, status_type,
		 error_uri_name, active_value, suspended_value, active_json
	FROM appguard.protected_tables pt
		 JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
		 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 JOIN pg_catalog.pg_attribute ka ON ka.attrelid = pt.tbl AND ka.attnum = pt.key_attnum
		 JOIN pg_catalog.pg_attribute ca ON ca.attrelid = pt.tbl AND ca.attnum = pt.client_attnum
		 JOIN pg_catalog.pg_attribute sa ON sa.attrelid = pt.tbl AND sa.attnum = pt.status_attnum
		 LEFT JOIN pg_catalog.pg_attribute ea ON ea.attrelid = pt.tbl AND ea.attnum = pt.error_uri_attnum
	WHERE pt.tbl = p_tbl;
END
$$;

-- lastval() belongs to the host.  Hosts that read the key of the row they
-- just inserted with SELECT lastval() (Glewlwyd through libhoel, PHP's
-- PDO::lastInsertId() without a sequence name) would get the value of an
-- appguard sequence, or "permission denied for sequence", if appguard's
-- trigger drew from a sequence in between: a live snapshot stores a
-- snapshot and events, an event has an identity.  The trigger paths that
-- may draw from a sequence save lastval() first and put it back after.
CREATE FUNCTION appguard.saved_lastval()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.lastval();
EXCEPTION WHEN object_not_in_prerequisite_state OR insufficient_privilege THEN
	RETURN NULL;			-- no nextval() in this session yet: nothing to keep
END
$$;

-- Make lastval() return saved again.  lastval() reports the sequence last
-- advanced by nextval() in this session, so the only way is a nextval()
-- that returns saved: that of a session-private temporary sequence set to
-- it.  The host's role calls lastval() on that sequence, hence its SELECT
-- grant (a temporary object, invisible to other sessions).
CREATE FUNCTION appguard.restore_lastval(saved bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF saved IS NULL THEN
		RETURN;
	END IF;
	IF pg_catalog.to_regclass('pg_temp.appguard_lastval') IS NULL THEN
		CREATE TEMPORARY SEQUENCE appguard_lastval AS bigint MINVALUE -9223372036854775808 NO CYCLE;
		GRANT SELECT ON SEQUENCE pg_temp.appguard_lastval TO PUBLIC;
	END IF;
	PERFORM pg_catalog.setval('pg_temp.appguard_lastval', saved, false);
	PERFORM pg_catalog.nextval('pg_temp.appguard_lastval');
END
$$;

-- The baseline of a host row that becomes active now (appguard.baseline_for).
-- The common case, a recent cached snapshot, reads one row and draws from
-- no sequence; otherwise baseline_for may measure live, and the host's
-- lastval() is kept.
CREATE FUNCTION appguard.protected_row_baseline(p_client_id text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cached record;
	saved bigint;
	baseline bigint;
BEGIN
	SELECT c.last_ok_snapshot_id, c.last_ok_at INTO cached
	FROM appguard.clients c WHERE c.client_id = p_client_id;
	IF NOT FOUND THEN
		RETURN NULL;			-- unregistered client: its rows are left alone
	END IF;
	IF cached.last_ok_snapshot_id IS NOT NULL
	   AND cached.last_ok_at >= pg_catalog.clock_timestamp()
			- appguard.appguard_setting('appguard.baseline_max_age')::interval THEN
		RETURN cached.last_ok_snapshot_id;
	END IF;
	saved := appguard.saved_lastval();
	baseline := appguard.baseline_for(p_client_id);
	PERFORM appguard.restore_lastval(saved);
	RETURN baseline;
END
$$;

-- Start tracking a host row (INSERT, or a host reactivating a row).
-- PL/pgSQL for its cached plan (see protected_table_columns).
CREATE FUNCTION appguard.protected_row_track(p_tbl regclass, p_key text, p_client_id text,
											 p_active boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO appguard.protected_rows AS r
		(tbl, row_key, client_id, state, baseline_snapshot_id)
	VALUES (p_tbl, p_key, p_client_id, CASE WHEN p_active THEN 'active' ELSE 'inactive' END,
			CASE WHEN p_active THEN appguard.protected_row_baseline(p_client_id) END)
	ON CONFLICT (tbl, row_key) DO UPDATE
	SET client_id = EXCLUDED.client_id, state = EXCLUDED.state,
		baseline_snapshot_id = EXCLUDED.baseline_snapshot_id,
		suspension_id = NULL, suspended_at = NULL, error_uri = NULL,
		created_at = pg_catalog.now(), reapproved_at = NULL;
END
$$;

-- The host wrote a row's status itself.
CREATE FUNCTION appguard.protected_row_status(p_tbl regclass, p_key text, p_client_id text,
											  p_active boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	saved bigint;
BEGIN
	SELECT * INTO r FROM appguard.protected_rows pr
	WHERE pr.tbl = p_tbl AND pr.row_key = p_key FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM appguard.protected_row_track(p_tbl, p_key, p_client_id, p_active);
		RETURN;
	END IF;
	IF p_active AND r.state <> 'active' THEN
		-- A row the host (re)activates keeps its baseline if it has one:
		-- if its app still drifts from it, the next snapshot suspends it
		-- again; only re-approval takes a new baseline.
		UPDATE appguard.protected_rows pr
		SET state = 'active',
			baseline_snapshot_id = coalesce(pr.baseline_snapshot_id, appguard.protected_row_baseline(pr.client_id)),
			suspension_id = NULL, suspended_at = NULL, error_uri = NULL
		WHERE pr.tbl = p_tbl AND pr.row_key = p_key;
		IF r.state = 'suspended' THEN
			saved := appguard.saved_lastval();
			PERFORM appguard.log_event('host_reactivated', r.client_id,
				pg_catalog.jsonb_build_object('detail', 'the host re-enabled a row appguard had suspended'),
				suspension_id => r.suspension_id, token_table => p_tbl::text, token_key => p_key);
			PERFORM appguard.restore_lastval(saved);
		END IF;
	ELSIF NOT p_active AND r.state <> 'inactive' THEN
		UPDATE appguard.protected_rows pr SET state = 'inactive'
		WHERE pr.tbl = p_tbl AND pr.row_key = p_key;
		IF r.state = 'suspended' THEN
			saved := appguard.saved_lastval();
			PERFORM appguard.log_event('host_took_over', r.client_id,
				pg_catalog.jsonb_build_object('detail', 'the host set the status of a row appguard had suspended; re-approval will not re-enable it'),
				suspension_id => r.suspension_id, token_table => p_tbl::text, token_key => p_key);
			PERFORM appguard.restore_lastval(saved);
		END IF;
	END IF;
END
$$;

-- The one trigger function of every protected table; TG_ARGV[0] says
-- which trigger fired.  Values are read through to_jsonb(row), so one
-- function serves tables of any shape.
CREATE FUNCTION appguard.protected_row_sync()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	new_row jsonb;
	old_row jsonb;
BEGIN
	IF TG_ARGV[0] = 'truncate' THEN
		DELETE FROM appguard.protected_rows pr WHERE pr.tbl = TG_RELID;
		RETURN NULL;
	END IF;
	-- appguard's own suspension or re-approval (see appguard.set_applying:
	-- a flag no host role can raise, unlike a setting)
	IF TG_OP = 'UPDATE' AND appguard.applying() THEN
		RETURN NULL;
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(TG_RELID);
	IF cfg.key_name IS NULL THEN
		RETURN NULL;
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		new_row := pg_catalog.to_jsonb(NEW);
	END IF;
	IF TG_OP IN ('DELETE', 'UPDATE') THEN
		old_row := pg_catalog.to_jsonb(OLD);
	END IF;
	IF TG_ARGV[0] = 'insert' THEN
		PERFORM appguard.protected_row_track(TG_RELID, new_row ->> cfg.key_name,
											 new_row ->> cfg.client_name,
											 (new_row ->> cfg.status_name) = cfg.active_json);
	ELSIF TG_ARGV[0] = 'delete' THEN
		DELETE FROM appguard.protected_rows pr
		WHERE pr.tbl = TG_RELID AND pr.row_key = old_row ->> cfg.key_name;
	ELSIF TG_ARGV[0] = 'key' THEN
		IF (old_row ->> cfg.key_name) IS DISTINCT FROM (new_row ->> cfg.key_name)
		   OR (old_row ->> cfg.client_name) IS DISTINCT FROM (new_row ->> cfg.client_name) THEN
			-- a row moved to another client needs a baseline of that client
			UPDATE appguard.protected_rows pr
			SET row_key = new_row ->> cfg.key_name,
				client_id = new_row ->> cfg.client_name,
				baseline_snapshot_id = CASE WHEN pr.client_id IS NOT DISTINCT FROM (new_row ->> cfg.client_name)
										THEN pr.baseline_snapshot_id END
			WHERE pr.tbl = TG_RELID AND pr.row_key = old_row ->> cfg.key_name;
		END IF;
	ELSIF TG_ARGV[0] = 'status' THEN
		PERFORM appguard.protected_row_status(TG_RELID, new_row ->> cfg.key_name,
											  new_row ->> cfg.client_name,
											  (new_row ->> cfg.status_name) = cfg.active_json);
	END IF;
	RETURN NULL;
END
$$;

-- Key types whose text output is also their to_jsonb text (the triggers
-- read keys through jsonb, everything else through ::text).
CREATE FUNCTION appguard.key_type_supported(typid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(
		(SELECT CASE WHEN t.typtype = 'd' THEN appguard.key_type_supported(t.typbasetype)
				ELSE t.oid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'text'::regtype,
							   'varchar'::regtype, 'uuid'::regtype, 'numeric'::regtype) END
		 FROM pg_catalog.pg_type t WHERE t.oid = $1), false)
$$;

CREATE FUNCTION appguard.column_attnum(p_tbl regclass, p_column name, p_what text)
RETURNS smallint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result smallint;
BEGIN
	IF p_column IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_what USING ERRCODE = '22023';
	END IF;
	SELECT a.attnum INTO result FROM pg_catalog.pg_attribute a
	WHERE a.attrelid = p_tbl AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', p_column, p_tbl
			USING ERRCODE = '42703',
				  DETAIL = pg_catalog.format('It was given as %s.', p_what);
	END IF;
	RETURN result;
END
$$;

-- A value given as text, as the column's type reads and prints it.
CREATE FUNCTION appguard.column_value(p_tbl regclass, p_attnum smallint, p_value text,
									  p_what text, OUT canonical text, OUT as_json text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	typ text;
	comparable boolean;
BEGIN
	IF p_value IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_what USING ERRCODE = '22023';
	END IF;
	SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO typ
	FROM pg_catalog.pg_attribute a WHERE a.attrelid = p_tbl AND a.attnum = p_attnum;
	BEGIN
		EXECUTE pg_catalog.format('SELECT (%L::%s)::text, pg_catalog.to_jsonb(%L::%s) #>> ''{}'', %L::%s = %L::%s',
								  p_value, typ, p_value, typ, p_value, typ, p_value, typ)
			INTO canonical, as_json, comparable;
	EXCEPTION WHEN OTHERS THEN
		RAISE EXCEPTION '% "%" is not a value of type %', p_what, p_value, typ
			USING ERRCODE = '22023',
				  DETAIL = SQLERRM;
	END;
END
$$;

-- Guard an existing token table.  Rows already in it are tracked at once:
-- active rows of registered clients get the client's latest successful
-- snapshot as baseline when it is younger than appguard.baseline_max_age,
-- else their baseline is pending (the next successful snapshot).
CREATE FUNCTION appguard.appguard_protect(tbl regclass, client_id_column name, status_column name,
										  error_uri_column name DEFAULT NULL,
										  active_value text DEFAULT 'active',
										  suspended_value text DEFAULT 'suspended')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rel record;
	key_attnums smallint[];
	key_attnum smallint;
	client_attnum smallint;
	status_attnum smallint;
	error_uri_attnum smallint;
	active record;
	suspended record;
	cfg record;
	qualified text;
	trigger_name text;
	adopted bigint;
	result jsonb;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT c.relkind, c.relpersistence, n.nspname, c.relname INTO rel
	FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid = tbl;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = '42P01';
	END IF;
	IF rel.relkind <> 'r' THEN
		RAISE EXCEPTION '% is not an ordinary table', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard protects ordinary tables (not views, foreign or partitioned tables).';
	END IF;
	IF rel.relpersistence = 't' THEN
		RAISE EXCEPTION '% is a temporary table', tbl USING ERRCODE = '0A000';
	END IF;
	IF rel.nspname = 'appguard' THEN
		RAISE EXCEPTION 'appguard''s own tables cannot be protected'
			USING ERRCODE = '22023',
				  HINT = 'appguard.refresh_tokens is guarded already.';
	END IF;
	IF EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = appguard_protect.tbl) THEN
		RAISE EXCEPTION 'table % is already protected', tbl
			USING ERRCODE = '23505',
				  HINT = 'Call appguard_unprotect first to change how it is protected.';
	END IF;

	SELECT i.indkey::smallint[] INTO key_attnums
	FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary;
	IF key_attnums IS NULL THEN
		RAISE EXCEPTION 'table % has no primary key', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard keeps its state of each row keyed by the row''s primary key.';
	END IF;
	IF pg_catalog.cardinality(key_attnums) <> 1 THEN
		RAISE EXCEPTION 'the primary key of table % has more than one column', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard supports single-column primary keys.';
	END IF;
	key_attnum := key_attnums[pg_catalog.array_lower(key_attnums, 1)];	-- int2vector counts from 0
	IF NOT appguard.key_type_supported((SELECT a.atttypid FROM pg_catalog.pg_attribute a
										WHERE a.attrelid = tbl AND a.attnum = key_attnum)) THEN
		RAISE EXCEPTION 'the primary key of table % has an unsupported type', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'Supported key types: smallint, integer, bigint, numeric, text, varchar, uuid.';
	END IF;

	client_attnum := appguard.column_attnum(tbl, client_id_column, 'client_id_column');
	status_attnum := appguard.column_attnum(tbl, status_column, 'status_column');
	IF error_uri_column IS NOT NULL THEN
		error_uri_attnum := appguard.column_attnum(tbl, error_uri_column, 'error_uri_column');
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
					   WHERE a.attrelid = tbl AND a.attnum = error_uri_attnum
						 AND (t.oid IN ('text'::regtype, 'varchar'::regtype)
							  OR t.typbasetype IN ('text'::regtype, 'varchar'::regtype))) THEN
			RAISE EXCEPTION 'error_uri column "%" must be of type text or varchar', error_uri_column
				USING ERRCODE = '22023';
		END IF;
	END IF;
	IF status_attnum IN (key_attnum, client_attnum) OR client_attnum = key_attnum
	   OR error_uri_attnum IN (key_attnum, client_attnum, status_attnum) THEN
		RAISE EXCEPTION 'the key, client_id, status and error_uri columns must be distinct'
			USING ERRCODE = '22023';
	END IF;
	SELECT * INTO active FROM appguard.column_value(tbl, status_attnum, active_value, 'active_value');
	SELECT * INTO suspended FROM appguard.column_value(tbl, status_attnum, suspended_value, 'suspended_value');
	IF active.as_json = suspended.as_json THEN
		RAISE EXCEPTION 'active_value and suspended_value must differ' USING ERRCODE = '22023';
	END IF;
	FOREACH trigger_name IN ARRAY ARRAY['appguard_protect_insert', 'appguard_protect_key',
										'appguard_protect_status', 'appguard_protect_delete',
										'appguard_protect_truncate'] LOOP
		IF EXISTS (SELECT FROM pg_catalog.pg_trigger t
				   WHERE t.tgrelid = tbl AND t.tgname = trigger_name) THEN
			RAISE EXCEPTION 'table % already has a trigger named %', tbl, trigger_name
				USING ERRCODE = '42710';
		END IF;
	END LOOP;

	-- Wait for drift evaluations in flight (they update appguard.clients)
	-- and keep new ones out until this commits, so that no evaluation
	-- misses the rows adopted here.  Taken before any lock on the host
	-- table: an evaluation locks clients, then the host table.
	LOCK TABLE appguard.clients IN SHARE MODE;
	INSERT INTO appguard.protected_tables (tbl, key_attnum, client_attnum, status_attnum,
										   error_uri_attnum, active_value, suspended_value, active_json)
	VALUES (tbl, key_attnum, client_attnum, status_attnum, error_uri_attnum,
			active.canonical, suspended.canonical, active.as_json);
	SELECT * INTO cfg FROM appguard.protected_table_columns(tbl);
	qualified := pg_catalog.format('%I.%I', cfg.schema_name, cfg.table_name);

	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_insert AFTER INSERT ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.protected_row_sync(''insert'')', qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_key AFTER UPDATE OF %I, %I ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.protected_row_sync(''key'')',
		cfg.key_name, cfg.client_name, qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_status AFTER UPDATE OF %I ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.protected_row_sync(''status'')',
		cfg.status_name, qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_delete AFTER DELETE ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.protected_row_sync(''delete'')', qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_truncate AFTER TRUNCATE ON %s '
		'FOR EACH STATEMENT EXECUTE FUNCTION appguard.protected_row_sync(''truncate'')', qualified);

	EXECUTE pg_catalog.format(
		'INSERT INTO appguard.protected_rows (tbl, row_key, client_id, state, baseline_snapshot_id) '
		'SELECT $1, h.%1$I::text, h.%2$I::text, '
		'       CASE WHEN (pg_catalog.to_jsonb(h.%3$I) #>> ''{}'') = $2 THEN ''active'' ELSE ''inactive'' END, '
		'       CASE WHEN (pg_catalog.to_jsonb(h.%3$I) #>> ''{}'') = $2 '
		'             AND c.last_ok_at >= pg_catalog.clock_timestamp() - $3 THEN c.last_ok_snapshot_id END '
		'FROM %4$s h LEFT JOIN appguard.clients c ON c.client_id = h.%2$I::text',
		cfg.key_name, cfg.client_name, cfg.status_name, qualified)
		USING tbl, active.as_json, appguard.appguard_setting('appguard.baseline_max_age')::interval;
	GET DIAGNOSTICS adopted = ROW_COUNT;

	result := pg_catalog.jsonb_build_object(
		'table', tbl::text, 'key_column', cfg.key_name, 'client_id_column', cfg.client_name,
		'status_column', cfg.status_name, 'status_type', cfg.status_type,
		'error_uri_column', cfg.error_uri_name,
		'active_value', active.canonical, 'suspended_value', suspended.canonical,
		'rows', adopted,
		'active_rows', (SELECT pg_catalog.count(*) FROM appguard.protected_rows pr
						WHERE pr.tbl = appguard_protect.tbl AND pr.state = 'active'),
		'pending_baselines', (SELECT pg_catalog.count(*) FROM appguard.protected_rows pr
							  JOIN appguard.clients c ON c.client_id = pr.client_id
							  WHERE pr.tbl = appguard_protect.tbl AND pr.state = 'active'
								AND pr.baseline_snapshot_id IS NULL));
	PERFORM appguard.log_event('table_protected', detail => result, token_table => tbl::text);
	RETURN result;
END
$$;
COMMENT ON FUNCTION appguard.appguard_protect(regclass, name, name, name, text, text) IS
	'Guard an auth server''s existing token table: suspend its rows when their app''s facts drift';

-- Remove everything appguard_protect added: the triggers and appguard's
-- state of the rows.  Rows appguard suspended keep the host's suspended
-- value (re-enabling them silently would undo a security decision); their
-- number is returned and reported.
CREATE FUNCTION appguard.appguard_unprotect(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	qualified text;
	trigger_name text;
	result jsonb;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(tbl);
	IF cfg.table_name IS NULL THEN
		RAISE EXCEPTION 'table % is not protected by appguard', tbl USING ERRCODE = '22023';
	END IF;
	qualified := pg_catalog.format('%I.%I', cfg.schema_name, cfg.table_name);
	FOREACH trigger_name IN ARRAY ARRAY['appguard_protect_insert', 'appguard_protect_key',
										'appguard_protect_status', 'appguard_protect_delete',
										'appguard_protect_truncate'] LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, qualified);
	END LOOP;
	result := pg_catalog.jsonb_build_object(
		'table', tbl::text,
		'rows_forgotten', (SELECT pg_catalog.count(*) FROM appguard.protected_rows pr
						   WHERE pr.tbl = appguard_unprotect.tbl),
		'rows_left_suspended', (SELECT pg_catalog.count(*) FROM appguard.protected_rows pr
								WHERE pr.tbl = appguard_unprotect.tbl AND pr.state = 'suspended'));
	DELETE FROM appguard.protected_tables pt WHERE pt.tbl = appguard_unprotect.tbl;
	PERFORM appguard.log_event('table_unprotected', detail => result, token_table => tbl::text);
	IF (result ->> 'rows_left_suspended')::bigint > 0 THEN
		RAISE NOTICE '% rows of % stay suspended', result ->> 'rows_left_suspended', tbl
			USING DETAIL = 'appguard suspended them because their app''s facts drifted; unprotecting does not re-enable them.';
	END IF;
	RETURN result;
END
$$;
COMMENT ON FUNCTION appguard.appguard_unprotect(regclass) IS
	'Remove appguard''s triggers and row state from a protected table';

-- A protected table dropped by the host takes its appguard state with it.
-- Never fails the DROP: problems become a WARNING.
CREATE FUNCTION appguard.protected_table_dropped()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	gone record;
BEGIN
	FOR gone IN
		DELETE FROM appguard.protected_tables pt
		USING pg_catalog.pg_event_trigger_dropped_objects() d
		WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
		  AND d.objid = pt.tbl::oid
		RETURNING d.object_identity
	LOOP
		PERFORM appguard.log_event('table_dropped', token_table => gone.object_identity);
	END LOOP;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'appguard could not forget a dropped protected table: %', SQLERRM;
END
$$;
CREATE EVENT TRIGGER appguard_protected_table_dropped ON sql_drop
	EXECUTE FUNCTION appguard.protected_table_dropped();
