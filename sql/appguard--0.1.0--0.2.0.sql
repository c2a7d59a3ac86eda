-- appguard 0.1.0 -> 0.2.0: consent lineage (a patient's consent holds the
-- baseline every token of that patient for that client takes: rotated
-- tokens and remembered approvals inherit it), and the patient's error_uri
-- page (appguard_explain_html, at the end).  Written by hand; the
-- upgrade test (test/upgrade.sh) checks that an upgraded database has the
-- schema and rows of a fresh install of 0.2.0.
\echo Use "ALTER EXTENSION appguard UPDATE TO '0.2.0'" to load this file. \quit

-- appguard stores certificate names, DNS records and the texts patients
-- read as UTF-8, which a database of another encoding would store as other
-- characters.  (As in the install script, sql/parts/00_roles.sql.)
DO $$
BEGIN
	IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
		RAISE EXCEPTION 'appguard needs a UTF8 database; this one is %', pg_catalog.getdatabaseencoding()
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard stores certificate names, DNS records and the texts patients read as UTF-8.',
				  HINT = 'Create the auth server''s database with ENCODING ''UTF8'' (TEMPLATE template0).';
	END IF;
END
$$;

-- ---- tables ----
ALTER TABLE appguard.protected_tables ADD COLUMN subject_attnum smallint, ADD COLUMN grant_attnum smallint;
COMMENT ON TABLE appguard.protected_tables IS 'Token tables of an auth server guarded by appguard_protect';
ALTER TABLE appguard.grants ADD COLUMN subject text, ADD COLUMN grant_key text;
CREATE INDEX grants_consent ON appguard.grants (client_id, subject, created_at)
	WHERE subject IS NOT NULL;
CREATE TABLE appguard.consents (
	client_id				text NOT NULL,
	subject					text NOT NULL,
	baseline_snapshot_id	bigint,				-- NULL: pending (the client's next successful snapshot)
	shown_snapshot_id		bigint,				-- the last consent screen's snapshot
	shown_at				timestamptz,
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	approved_at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),	-- the baseline's
	PRIMARY KEY (client_id, subject)
);
COMMENT ON TABLE appguard.consents IS 'A patient''s consent to a client: the baseline all the patient''s grants of that client are held to';
SELECT pg_catalog.pg_extension_config_dump('appguard.consents', '');
ALTER TABLE appguard.refresh_tokens ADD COLUMN grant_id text;
-- a consent's applied suspension holds its new rows
ALTER TABLE appguard.baseline_state ADD COLUMN suspension_applied boolean NOT NULL DEFAULT false;
UPDATE appguard.baseline_state bs SET suspension_applied = true
FROM appguard.suspensions s
WHERE s.state = 'applied' AND bs.client_id = s.client_id
  AND bs.baseline_snapshot_id = s.baseline_snapshot_id AND NOT bs.suspension_applied;

-- appguard.refresh_tokens is protected with its subject and grant_id
-- columns; its grants learn their subject, and each subject's consent
-- takes the baseline of the subject's newest grant that has one
UPDATE appguard.protected_tables pt
SET subject_attnum = (SELECT a.attnum FROM pg_catalog.pg_attribute a
					  WHERE a.attrelid = pt.tbl AND a.attname = 'subject'),
	grant_attnum = (SELECT a.attnum FROM pg_catalog.pg_attribute a
					WHERE a.attrelid = pt.tbl AND a.attname = 'grant_id')
WHERE pt.tbl = 'appguard.refresh_tokens'::regclass;
UPDATE appguard.grants g SET subject = t.subject, grant_key = t.grant_id
FROM appguard.refresh_tokens t
WHERE g.token_table = 'appguard.refresh_tokens'::regclass AND g.token_key = t.token_id;
INSERT INTO appguard.consents (client_id, subject, baseline_snapshot_id, created_at, approved_at)
SELECT DISTINCT ON (g.client_id, g.subject) g.client_id, g.subject, g.baseline_snapshot_id,
	   g.created_at, coalesce(g.reapproved_at, g.created_at)
FROM appguard.grants g JOIN appguard.clients c ON c.client_id = g.client_id
WHERE g.subject IS NOT NULL AND (g.state <> 'inactive' OR g.baseline_snapshot_id IS NOT NULL)
ORDER BY g.client_id, g.subject, g.baseline_snapshot_id IS NULL, g.created_at DESC, g.token_key DESC;

-- ---- functions whose signature changed ----
-- grant_sync in C (its common case, a host retiring an active row), the
-- rest in grant_sync_sql, as the install script has them
CREATE FUNCTION appguard.grant_sync_sql()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	root regclass;			-- the protected table (TG_RELID, or its partitioned root)
	attnums smallint[];
	new_row text[];			-- key, client, status
	old_row text[];
	keys text[];
	g appguard.grants;
BEGIN
	-- appguard's own suspension or re-approval (see appguard.set_applying:
	-- a flag no host role can raise, unlike a setting)
	IF TG_OP = 'UPDATE' AND appguard.applying() THEN
		RETURN NULL;
	END IF;
	root := appguard.protected_root(TG_RELID);
	IF root IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(root);
	IF TG_ARGV[0] = 'truncate' THEN
		IF root = TG_RELID THEN
			DELETE FROM appguard.grants pr WHERE pr.token_table = root;
		ELSIF cfg.key_name IS NOT NULL THEN
			-- a partition's own (BEFORE) TRUNCATE trigger: its rows' keys
			keys := appguard.as_table_owner(TG_RELID, pg_catalog.format(
				'SELECT %s FROM %s h', appguard.printed_column(cfg.key_name), TG_RELID::regclass));
			DELETE FROM appguard.grants pr WHERE pr.token_table = root AND pr.token_key = ANY (keys);
		END IF;
		RETURN NULL;
	END IF;
	IF cfg.key_name IS NULL THEN
		RETURN NULL;
	END IF;
	attnums := cfg.attnums;
	IF root <> TG_RELID THEN
		-- a partition: the same columns, perhaps numbered otherwise
		attnums := appguard.partition_attnums(TG_RELID,
			ARRAY[cfg.key_name, cfg.client_name, cfg.status_name]);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		new_row := appguard.row_texts(NEW, attnums);
	END IF;
	IF TG_OP IN ('DELETE', 'UPDATE') THEN
		old_row := appguard.row_texts(OLD, attnums);
	END IF;
	IF TG_ARGV[0] = 'delete' THEN
		DELETE FROM appguard.grants pr
		WHERE pr.token_table = root AND pr.token_key = old_row[1];
	ELSIF TG_ARGV[0] = 'key' THEN
		IF old_row[1] IS DISTINCT FROM new_row[1] OR old_row[2] IS DISTINCT FROM new_row[2] THEN
			-- a row moved to another client needs a baseline of that client;
			-- a suspended one stays suspended (its suspension written into
			-- the grant: the baseline that held it is the old client's)
			SELECT * INTO g FROM appguard.grants pr
			WHERE pr.token_table = root AND pr.token_key = old_row[1] FOR UPDATE;
			g := appguard.grant_effective(g);
			UPDATE appguard.grants pr
			SET token_key = new_row[1],
				client_id = new_row[2],
				baseline_snapshot_id = CASE WHEN pr.client_id IS NOT DISTINCT FROM new_row[2]
										THEN pr.baseline_snapshot_id END,
				state = g.state, suspension_id = g.suspension_id,
				suspended_at = g.suspended_at, error_uri = g.error_uri
			WHERE pr.token_table = root AND pr.token_key = old_row[1];
		END IF;
	ELSIF TG_ARGV[0] = 'status' THEN
		PERFORM appguard.grant_status(root, new_row[1], new_row[2],
											  new_row[3] IS NOT DISTINCT FROM cfg.active_value);
	END IF;
	RETURN NULL;
END
$$;
-- (not SECURITY DEFINER, as grant_insert: its C code becomes the owner to write)
CREATE OR REPLACE FUNCTION appguard.grant_sync()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_grant_sync'
LANGUAGE C;
-- The consent trigger becomes its owner in C (src/identity.c)
CREATE OR REPLACE FUNCTION appguard.grant_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_grant_insert'
LANGUAGE C;

DROP FUNCTION @extschema@.appguard_protect(regclass, name, name, name, text, text);
DROP FUNCTION appguard.protect_table(regclass, name, name, name, text, text);
DROP FUNCTION appguard.protected_table_columns(regclass);
CREATE FUNCTION appguard.protected_table_columns(p_tbl regclass,
	OUT schema_name name, OUT table_name name,
	OUT key_name name, OUT key_type text,
	OUT client_name name,
	OUT status_name name, OUT status_type text,
	OUT error_uri_name name,
	OUT active_value text, OUT suspended_value text,
	OUT attnums smallint[],
	OUT subject_name name, OUT grant_name name)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT n.nspname, c.relname,
		   ka.attname, pg_catalog.format_type(ka.atttypid, ka.atttypmod),
		   ca.attname,
		   sa.attname, pg_catalog.format_type(sa.atttypid, sa.atttypmod),
		   ea.attname,
		   pt.active_value, pt.suspended_value,
		   ARRAY[pt.key_attnum, pt.client_attnum, pt.status_attnum],
		   ua.attname, ga.attname
	INTO schema_name, table_name, key_name, key_type, client_name, status_name, status_type,
		 error_uri_name, active_value, suspended_value, attnums, subject_name, grant_name
	FROM appguard.protected_tables pt
		 JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
		 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 JOIN pg_catalog.pg_attribute ka ON ka.attrelid = pt.tbl AND ka.attnum = pt.key_attnum AND NOT ka.attisdropped
		 JOIN pg_catalog.pg_attribute ca ON ca.attrelid = pt.tbl AND ca.attnum = pt.client_attnum AND NOT ca.attisdropped
		 JOIN pg_catalog.pg_attribute sa ON sa.attrelid = pt.tbl AND sa.attnum = pt.status_attnum AND NOT sa.attisdropped
		 LEFT JOIN pg_catalog.pg_attribute ea ON ea.attrelid = pt.tbl AND ea.attnum = pt.error_uri_attnum AND NOT ea.attisdropped
		 LEFT JOIN pg_catalog.pg_attribute ua ON ua.attrelid = pt.tbl AND ua.attnum = pt.subject_attnum AND NOT ua.attisdropped
		 LEFT JOIN pg_catalog.pg_attribute ga ON ga.attrelid = pt.tbl AND ga.attnum = pt.grant_attnum AND NOT ga.attisdropped
	WHERE pt.tbl = p_tbl;
END
$$;

CREATE FUNCTION appguard.printed_column(c name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $1 IS NULL THEN 'NULL'
				ELSE pg_catalog.format('CASE WHEN h.%1$I IS NULL THEN NULL ELSE pg_catalog.format(''%%s'', h.%1$I) END', $1)
		   END
$$;

CREATE FUNCTION appguard.protect_table(tbl regclass, client_id_column name, status_column name,
									   error_uri_column name, active_value text, suspended_value text,
									   subject_column name DEFAULT NULL, grant_column name DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rel record;
	key_attnums smallint[];
	part_attnums smallint[];
	problem_rel regclass;
	key_attnum smallint;
	client_attnum smallint;
	status_attnum smallint;
	error_uri_attnum smallint;
	subject_attnum smallint;
	grant_attnum smallint;
	active_value_printed text;
	suspended_value_printed text;
	problem text;
	cfg record;
	qualified text;
	trigger_name text;
	adopted bigint;
	result jsonb;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT c.relkind, c.relpersistence, c.relispartition, n.nspname, c.relname INTO rel
	FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid = tbl;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = '42P01';
	END IF;
	IF rel.relkind NOT IN ('r', 'p') THEN
		RAISE EXCEPTION '% is not a table', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard protects ordinary and partitioned tables (not views, materialized views or foreign tables).';
	END IF;
	-- A partitioned table is protected as one table, at its root: its
	-- partitions are guarded with it (see "Partitioned token tables" above).
	IF rel.relispartition THEN
		RAISE EXCEPTION '% is a partition of %', tbl, pg_catalog.pg_partition_root(tbl)
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard protects a partitioned table as one table, with all its partitions.',
				  HINT = pg_catalog.format('Protect the partitioned table %s instead.', pg_catalog.pg_partition_root(tbl));
	END IF;
	IF rel.relkind = 'p' THEN
		SELECT l.relid INTO problem_rel FROM pg_catalog.pg_partition_tree(tbl) l
			 JOIN appguard.protected_tables pt ON pt.tbl = l.relid
		WHERE l.relid <> protect_table.tbl LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'partition % of % is protected on its own', problem_rel, tbl
				USING ERRCODE = '0A000',
					  DETAIL = 'A partitioned table is protected as one table, with all its partitions.',
					  HINT = pg_catalog.format('Call appguard_unprotect(%L) first.', problem_rel::text);
		END IF;
		SELECT l.relid INTO problem_rel FROM pg_catalog.pg_partition_tree(tbl) l
			 JOIN pg_catalog.pg_class c ON c.oid = l.relid
		WHERE l.isleaf AND c.relkind <> 'r' LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'partition % of % is not an ordinary table', problem_rel, tbl
				USING ERRCODE = '0A000',
					  DETAIL = 'appguard writes the status of rows in every partition; foreign partitions are not supported.';
		END IF;
	END IF;
	IF rel.relpersistence = 't' THEN
		RAISE EXCEPTION '% is a temporary table', tbl USING ERRCODE = '0A000';
	END IF;
	IF appguard.citus_table(tbl) THEN
		RAISE EXCEPTION '% is a Citus table', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'Its rows live in shards, where appguard''s triggers would guard nothing: appguard does not guard distributed, reference or Citus local tables yet.',
				  HINT = 'See docs/citus.md.';
	END IF;
	IF rel.nspname = 'appguard' AND rel.relname <> 'refresh_tokens' THEN
		RAISE EXCEPTION 'appguard''s own tables cannot be protected'
			USING ERRCODE = '22023',
				  HINT = 'appguard.refresh_tokens is guarded already.';
	END IF;
	IF EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = protect_table.tbl) THEN
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
	key_attnum := key_attnums[pg_catalog.array_lower(key_attnums, 1)];	-- int2vector counts from 0
	IF rel.relkind = 'p' THEN
		-- A partitioned table's primary key must include its partition
		-- key: the key column leads it, the partition key columns follow,
		-- and key values are unique across the whole table (as random
		-- token ids are; appguard keys its state by them alone).
		-- (the partition keys of every level of the tree, as the root
		-- numbers their columns)
		SELECT pg_catalog.array_agg(DISTINCT ra.attnum) INTO part_attnums
		FROM pg_catalog.pg_partition_tree(tbl) l
			 JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = l.relid
			 CROSS JOIN LATERAL pg_catalog.unnest(p.partattrs::smallint[]) AS k(attnum)
			 JOIN pg_catalog.pg_attribute pa ON pa.attrelid = l.relid AND pa.attnum = k.attnum
			 JOIN pg_catalog.pg_attribute ra ON ra.attrelid = tbl AND ra.attname = pa.attname;
		IF pg_catalog.cardinality(key_attnums) > 1
		   AND (key_attnum = ANY (part_attnums)
				OR NOT (key_attnums[pg_catalog.array_lower(key_attnums, 1) + 1:] <@ part_attnums)) THEN
			RAISE EXCEPTION 'the primary key of partitioned table % is not its key column followed by its partition key', tbl
				USING ERRCODE = '0A000',
					  DETAIL = 'appguard keys a row by the first column of the primary key; the other columns must be the partition key, and key values must be unique across the whole table.',
					  HINT = 'Declare the primary key as (token_id, <partition key columns>).';
		END IF;
	ELSIF pg_catalog.cardinality(key_attnums) <> 1 THEN
		RAISE EXCEPTION 'the primary key of table % has more than one column', tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard supports single-column primary keys (a partitioned table''s may add its partition key).';
	END IF;
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
	IF grant_column IS NOT NULL AND subject_column IS NULL THEN
		RAISE EXCEPTION 'grant_column needs subject_column'
			USING ERRCODE = '22023',
				  DETAIL = 'A grant belongs to the consent of its subject (the patient).';
	END IF;
	IF subject_column IS NOT NULL THEN
		subject_attnum := appguard.column_attnum(tbl, subject_column, 'subject_column');
		IF subject_attnum IN (key_attnum, client_attnum, status_attnum, error_uri_attnum) THEN
			RAISE EXCEPTION 'subject_column must differ from the key, client_id, status and error_uri columns'
				USING ERRCODE = '22023';
		END IF;
	END IF;
	IF grant_column IS NOT NULL THEN
		grant_attnum := appguard.column_attnum(tbl, grant_column, 'grant_column');
		IF grant_attnum IN (key_attnum, client_attnum, status_attnum, error_uri_attnum, subject_attnum) THEN
			RAISE EXCEPTION 'grant_column must differ from the key, client_id, status, error_uri and subject columns'
				USING ERRCODE = '22023';
		END IF;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
			   WHERE a.attrelid = tbl AND a.attnum = status_attnum AND a.attgenerated <> '') THEN
		RAISE EXCEPTION 'status column "%" of table % is generated', status_column, tbl
			USING ERRCODE = '0A000',
				  DETAIL = 'appguard suspends a row by writing its status column.';
	END IF;
	active_value_printed := appguard.column_value(tbl, status_attnum, active_value, 'active_value');
	suspended_value_printed := appguard.column_value(tbl, status_attnum, suspended_value, 'suspended_value');
	IF active_value_printed = suspended_value_printed THEN
		RAISE EXCEPTION 'active_value and suspended_value must differ' USING ERRCODE = '22023';
	END IF;
	FOREACH trigger_name IN ARRAY appguard.protect_trigger_names() LOOP
		SELECT t.tgrelid INTO problem_rel FROM pg_catalog.pg_trigger t
		WHERE (t.tgrelid = protect_table.tbl
			   OR t.tgrelid IN (SELECT l.relid FROM pg_catalog.pg_partition_tree(protect_table.tbl) l))
		  AND t.tgname = trigger_name
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'table % already has a trigger named %', problem_rel, trigger_name
				USING ERRCODE = '42710';
		END IF;
	END LOOP;

	-- Wait for drift evaluations in flight (they update appguard.clients)
	-- and keep new ones out until this commits, so that no evaluation
	-- misses the rows adopted here.  Taken before any lock on the host
	-- table: an evaluation locks clients, then the host table.
	LOCK TABLE appguard.clients IN SHARE MODE;
	INSERT INTO appguard.protected_tables (tbl, key_attnum, client_attnum, status_attnum,
										   error_uri_attnum, subject_attnum, grant_attnum,
										   active_value, suspended_value)
	VALUES (tbl, key_attnum, client_attnum, status_attnum, error_uri_attnum,
			subject_attnum, grant_attnum, active_value_printed, suspended_value_printed);
	SELECT * INTO cfg FROM appguard.protected_table_columns(tbl);
	qualified := pg_catalog.format('%I.%I', cfg.schema_name, cfg.table_name);

	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_insert AFTER INSERT ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.grant_insert()', qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_key AFTER UPDATE OF %I, %I ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.grant_sync(''key'')',
		cfg.key_name, cfg.client_name, qualified);
	-- No WHEN clause: PostgreSQL reads a trigger's WHEN expression again for
	-- every statement, which cost a host's status UPDATE (every rotation)
	-- more than the trigger's own work.  appguard's own writes (a fan-out,
	-- a re-approval) fire it too, and grant_sync returns at once for them
	-- (appguard.applying(), a flag in the backend's memory: src/applying.c).
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_status AFTER UPDATE OF %I ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.grant_sync(''status'')',
		cfg.status_name, qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_delete AFTER DELETE ON %s '
		'FOR EACH ROW EXECUTE FUNCTION appguard.grant_sync(''delete'')', qualified);
	EXECUTE pg_catalog.format(
		'CREATE TRIGGER appguard_protect_truncate AFTER TRUNCATE ON %s '
		'FOR EACH STATEMENT EXECUTE FUNCTION appguard.grant_sync(''truncate'')', qualified);

	-- A partitioned table's partitions: their TRUNCATE triggers
	IF rel.relkind = 'p' THEN
		PERFORM appguard.cover_partitions(tbl);
	END IF;

	-- Fail closed from the start: a table appguard could not suspend rows
	-- of is refused (the CHECK constraints are evaluated as its owner).
	problem := appguard.protection_problem(tbl);
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'appguard could not suspend rows of table %: %', tbl, problem
			USING ERRCODE = '0A000',
				  DETAIL = pg_catalog.format('appguard suspends a row by setting its status column to %L.',
											 suspended_value_printed);
	END IF;

	-- The rows already there (appguard.adopt_rows)
	adopted := appguard.adopt_rows(tbl, tbl);

	result := pg_catalog.jsonb_build_object(
		'table', tbl::text, 'key_column', cfg.key_name, 'client_id_column', cfg.client_name,
		'status_column', cfg.status_name, 'status_type', cfg.status_type,
		'error_uri_column', cfg.error_uri_name,
		'active_value', active_value_printed, 'suspended_value', suspended_value_printed,
		'rows', adopted,
		'active_rows', (SELECT pg_catalog.count(*) FROM appguard.grant_states pr
						WHERE pr.token_table = protect_table.tbl AND pr.state = 'active'),
		'pending_baselines', (SELECT pg_catalog.count(*) FROM appguard.grants pr
							  JOIN appguard.clients c ON c.client_id = pr.client_id
							  WHERE pr.token_table = protect_table.tbl AND pr.state = 'active'
								AND pr.baseline_snapshot_id IS NULL))
		-- (the subject and grant columns only when named)
		|| pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
			'subject_column', cfg.subject_name, 'grant_column', cfg.grant_name));
	RETURN result;
END
$$;

CREATE FUNCTION @extschema@.appguard_protect(tbl regclass, client_id_column name, status_column name,
										  error_uri_column name DEFAULT NULL,
										  active_value text DEFAULT 'active',
										  suspended_value text DEFAULT 'suspended',
										  subject_column name DEFAULT NULL,
										  grant_column name DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result jsonb;
BEGIN
	result := appguard.protect_table(tbl, client_id_column, status_column, error_uri_column,
									 active_value, suspended_value, subject_column, grant_column);
	PERFORM appguard.log_event('table_protected', detail => result, token_table => tbl::text);
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_protect(regclass, name, name, name, text, text, name, name) IS
	'Guard an auth server''s existing token table: suspend its rows when their app''s facts drift';

CREATE FUNCTION appguard.consent_grant(p_tbl regclass, p_key text, p_client_id text,
									   p_subject text, p_grant_key text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	baseline bigint;
	holding_id bigint;
	holding_uri text;
	released bigint;
	held boolean := false;
	saved bigint;
BEGIN
	IF EXISTS (SELECT FROM appguard.clients cl WHERE cl.client_id = p_client_id) THEN
		-- (statements on appguard.consents are planned at each call: a
		-- plan kept from when the table was small would scan it whole, and
		-- a statement inserting many first consents would be quadratic)
		EXECUTE 'SELECT * FROM appguard.consents k WHERE k.client_id = $1 AND k.subject = $2 FOR UPDATE'
			INTO c USING p_client_id, p_subject;
		IF c.client_id IS NOT NULL AND c.shown_snapshot_id IS NOT NULL
		   AND c.shown_at >= pg_catalog.clock_timestamp()
							 - appguard.setting('appguard.consent_window')::interval
		   AND c.shown_at > c.approved_at THEN
			-- (a screen shown before the consent's last approval -- an
			-- earlier token of this flow, a re-approval -- is spent)
			baseline := c.shown_snapshot_id;
			EXECUTE 'UPDATE appguard.consents k SET baseline_snapshot_id = $3, '
					'approved_at = pg_catalog.clock_timestamp() WHERE k.client_id = $1 AND k.subject = $2'
				USING p_client_id, p_subject, baseline;
			-- a patient whose consent was suspended approved the app again
			-- on a fresh consent screen: a re-approval, as appguard_reapprove
			SELECT s.id INTO released FROM appguard.suspensions s
			WHERE s.client_id = p_client_id AND s.baseline_snapshot_id = c.baseline_snapshot_id
			  AND s.state = 'applied' AND c.baseline_snapshot_id IS DISTINCT FROM baseline
			ORDER BY s.id DESC LIMIT 1;
			IF released IS NOT NULL THEN
				saved := appguard.saved_lastval();
				PERFORM appguard.log_event('reapproved', p_client_id,
					pg_catalog.jsonb_build_object('old_baseline_snapshot_id', c.baseline_snapshot_id,
												  'baseline_snapshot_id', baseline,
												  'detail', 'the patient approved the app again on a consent screen',
												  'subject_given', true),
					snapshot_id => baseline, suspension_id => released,
					token_table => p_tbl::text, token_key => p_key);
				PERFORM appguard.restore_lastval(saved);
			END IF;
		ELSIF c.client_id IS NOT NULL AND c.baseline_snapshot_id IS NOT NULL THEN
			baseline := c.baseline_snapshot_id;
		ELSIF c.client_id IS NOT NULL THEN
			-- a consent screen shown long ago and never followed, or a
			-- consent still pending: the baseline a grant issued now takes
			baseline := appguard.grant_baseline(p_client_id);
			EXECUTE 'UPDATE appguard.consents k SET baseline_snapshot_id = $3, '
					'approved_at = pg_catalog.clock_timestamp() WHERE k.client_id = $1 AND k.subject = $2'
				USING p_client_id, p_subject, baseline;
		ELSE
			baseline := appguard.grant_baseline(p_client_id);
			INSERT INTO appguard.consents (client_id, subject, baseline_snapshot_id, approved_at)
			VALUES (p_client_id, p_subject, baseline, pg_catalog.clock_timestamp())
			ON CONFLICT (client_id, subject) DO NOTHING;
			IF NOT FOUND THEN		-- a concurrent first grant of the consent won
				EXECUTE 'SELECT k.baseline_snapshot_id FROM appguard.consents k '
						'WHERE k.client_id = $1 AND k.subject = $2'
					INTO baseline USING p_client_id, p_subject;
			END IF;
		END IF;
		IF baseline IS NOT NULL THEN
			-- (applied once, a suspension holds the consent until the
			-- patient approves again, even if the facts come back or a
			-- later verdict of the baseline is pending or discarded)
			SELECT s.id, s.error_uri INTO holding_id, holding_uri
			FROM appguard.suspensions s
			WHERE s.client_id = p_client_id AND s.baseline_snapshot_id = baseline AND s.state = 'applied'
			ORDER BY s.id DESC LIMIT 1;
			held := holding_id IS NOT NULL;
		END IF;
	END IF;

	-- (a held baseline's suspension holds the grant: appguard.grant_states)
	INSERT INTO appguard.grants AS r
		(token_table, token_key, client_id, state, baseline_snapshot_id, subject, grant_key,
		 suspension_id, suspended_at, error_uri)
	VALUES (p_tbl, p_key, p_client_id, 'active', baseline, p_subject, p_grant_key, NULL, NULL, NULL)
	ON CONFLICT (token_table, token_key) DO UPDATE
	SET client_id = EXCLUDED.client_id, state = EXCLUDED.state,
		baseline_snapshot_id = EXCLUDED.baseline_snapshot_id,
		subject = EXCLUDED.subject, grant_key = EXCLUDED.grant_key,
		suspension_id = EXCLUDED.suspension_id, suspended_at = EXCLUDED.suspended_at,
		error_uri = EXCLUDED.error_uri, created_at = pg_catalog.now(), reapproved_at = NULL;
	IF NOT held THEN
		RETURN;
	END IF;

	-- The suspension of the consent's baseline holds this row too
	PERFORM appguard.set_applying(true);
	PERFORM appguard.write_host_suspensions_or_record(p_tbl, ARRAY[p_key], holding_uri);
	PERFORM appguard.set_applying(false);
	-- (not counted in the suspension's tokens_suspended, the fan-out's
	-- count: updating that one row at every token a statement inserts
	-- would leave a version of it per token, each found again by the next
	-- update -- quadratic in a bulk insert; the event counts it)
	saved := appguard.saved_lastval();
	PERFORM appguard.log_event('grant_joined_suspension', p_client_id,
		pg_catalog.jsonb_build_object('detail', 'a new token of a consent whose baseline is suspended',
									  'subject_given', true, 'grant_key_given', p_grant_key IS NOT NULL),
		snapshot_id => baseline, suspension_id => holding_id,
		token_table => p_tbl::text, token_key => p_key);
	PERFORM appguard.restore_lastval(saved);
END
$$;

CREATE FUNCTION @extschema@.appguard_consent_info(client_id text, subject text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	info jsonb;
	shown_snapshot bigint;
BEGIN
	IF subject IS NULL OR subject = '' THEN
		RAISE EXCEPTION 'subject must not be null or empty' USING ERRCODE = '22023';
	END IF;
	info := @extschema@.appguard_consent_info(client_id);
	shown_snapshot := (info ->> 'snapshot_id')::bigint;
	IF shown_snapshot IS NOT NULL THEN
		INSERT INTO appguard.consents AS k (client_id, subject, shown_snapshot_id, shown_at, approved_at)
		VALUES (appguard_consent_info.client_id, appguard_consent_info.subject,
				shown_snapshot, pg_catalog.clock_timestamp(), '-infinity')
		ON CONFLICT ON CONSTRAINT consents_pkey DO UPDATE
		SET shown_snapshot_id = EXCLUDED.shown_snapshot_id, shown_at = EXCLUDED.shown_at;
	END IF;
	RETURN info || pg_catalog.jsonb_build_object('subject', subject);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_consent_info(text, text) IS
	'What the consent screen shows about an app, recorded as shown to this patient: a token within appguard.consent_window takes it as baseline';

CREATE FUNCTION appguard.suspend_consent_rows(p_tbl regclass, p_client_id text, p_subject text,
											  p_baseline bigint, p_suspension_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keys text[];
	written text[];
	uri text;
	n bigint;
	saved bigint;
BEGIN
	SELECT pg_catalog.array_agg(g.token_key) INTO keys FROM appguard.grant_states g
	WHERE g.token_table = p_tbl AND g.client_id = p_client_id AND g.subject = p_subject
	  AND g.baseline_snapshot_id = p_baseline AND g.state = 'suspended'
	  AND g.suspension_id = p_suspension_id;
	SELECT s.error_uri INTO uri FROM appguard.suspensions s
	WHERE s.id = p_suspension_id AND s.state = 'applied';
	IF keys IS NULL OR uri IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM appguard.set_applying(true);
	written := appguard.write_host_suspensions_or_record(p_tbl, keys, uri);
	PERFORM appguard.set_applying(false);
	n := pg_catalog.cardinality(written);
	IF n = 0 THEN
		RETURN 0;
	END IF;
	UPDATE appguard.suspensions s SET tokens_suspended = s.tokens_suspended + n
	WHERE s.id = p_suspension_id;
	saved := appguard.saved_lastval();
	PERFORM appguard.log_event('grant_joined_suspension', p_client_id,
		pg_catalog.jsonb_build_object('detail', 'tokens of a consent whose suspension was applied as they were issued',
									  'tokens', n, 'token_keys', pg_catalog.to_jsonb(written)),
		snapshot_id => p_baseline, suspension_id => p_suspension_id, token_table => p_tbl::text);
	PERFORM appguard.restore_lastval(saved);
	RETURN n;
END
$$;

CREATE FUNCTION appguard.write_host_suspensions_or_record(p_tbl regclass, p_keys text[], p_uri text,
														   p_count_only boolean DEFAULT false,
														   p_held_again bigint[] DEFAULT '{}')
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN appguard.write_host_suspensions(p_tbl, p_keys, p_uri, p_count_only, p_held_again);
EXCEPTION WHEN OTHERS THEN
	IF SQLSTATE IN ('40P01', '40001', '55P03', '57014') THEN
		RAISE;
	END IF;
	PERFORM appguard.record_table_problem(p_tbl, SQLERRM, SQLSTATE, 'suspension');
	RETURN CASE WHEN p_count_only THEN '{0}' ELSE '{}' END::text[];
END
$$;

CREATE FUNCTION appguard.citus_table(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	managed boolean := false;
BEGIN
	IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
		EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1)'
			INTO managed USING tbl;
	END IF;
	IF NOT managed
	   AND pg_catalog.to_regprocedure('pg_catalog.relation_is_a_known_shard(regclass)') IS NOT NULL THEN
		EXECUTE 'SELECT pg_catalog.relation_is_a_known_shard($1)' INTO managed USING tbl;
	END IF;
	RETURN coalesce(managed, false);
END
$$;

-- ---- functions whose body changed ----
CREATE OR REPLACE FUNCTION appguard.evaluate_client(p_client_id text, p_snapshot_id bigint,
										 p_sweep_id bigint DEFAULT NULL,
										 p_baselines bigint[] DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	cli record;
	baselines bigint[];
	filled bigint;
	hold bigint;
	drifted boolean := false;
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status, s.facts INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	-- An open hold takes this evaluation's suspensions.  Locked before the
	-- client (the order of appguard_release_hold and of a sweep's end), so
	-- that a hold being closed is not joined after its release.
	IF p_sweep_id IS NULL THEN
		SELECT h.id INTO hold FROM appguard.holds h WHERE h.state = 'open' FOR SHARE;
	END IF;
	SELECT * INTO cli FROM appguard.clients c WHERE c.client_id = p_client_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF cli.host <> snap.host OR cli.port <> snap.port THEN
		-- another watched host of the client, if it is one
		RETURN appguard.evaluate_client_host(p_client_id, p_snapshot_id, p_sweep_id, p_baselines, hold);
	END IF;

	IF p_baselines IS NULL THEN
		IF cli.last_snapshot_id IS NOT NULL AND cli.last_snapshot_id <> snap.id
		   AND (cli.last_snapshot_at, cli.last_snapshot_id) > (snap.taken_at, snap.id) THEN
			RETURN false;		-- older than what the client has seen: stored, not evaluated
		END IF;
		UPDATE appguard.clients c
		SET last_snapshot_id = snap.id, last_snapshot_at = snap.taken_at, last_status = snap.status,
			last_ok_snapshot_id = CASE WHEN snap.status = 'ok' THEN snap.id ELSE c.last_ok_snapshot_id END,
			last_ok_at = CASE WHEN snap.status = 'ok' THEN snap.taken_at ELSE c.last_ok_at END,
			registrable_domain = coalesce(c.registrable_domain,
										  snap.facts -> 'dns' ->> 'registrable_domain')
		WHERE c.client_id = p_client_id;

		baselines := ARRAY(
			SELECT DISTINCT r.baseline_snapshot_id FROM appguard.grants r
			WHERE r.client_id = p_client_id AND r.state = 'active'
			  AND r.baseline_snapshot_id IS NOT NULL AND r.baseline_snapshot_id <> snap.id
			  AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = r.baseline_snapshot_id)
			ORDER BY 1);
		-- (a statement of its own: once per baseline, not per grant)
		baselines := ARRAY(SELECT b FROM pg_catalog.unnest(baselines) b
						   WHERE appguard.baseline_unheld(p_client_id, b) ORDER BY b);
	ELSE
		baselines := ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(p_baselines) b
						   WHERE b IS NOT NULL AND b <> snap.id
							 AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = b)
						   ORDER BY b);
	END IF;
	-- (a baseline that names no snapshot -- written by hand, or restored
	-- without its snapshot -- cannot be compared with anything: it is
	-- skipped, so it cannot stop the evaluation of the client's others)
	IF pg_catalog.cardinality(baselines) > 0 THEN
		drifted := appguard.evaluate_baselines(p_client_id, snap.id, true, baselines, baselines, p_sweep_id, hold);
	END IF;

	-- Pending consents and grants take this snapshot, the client's next
	-- successful one, after the fan-out and without waiting: a row another
	-- transaction holds stays pending until the next.  Locked before the
	-- host's rows, or waited for while the fan-out holds some, they would
	-- break the lock order (a host revoking two rows would deadlock with it).
	IF p_baselines IS NULL AND snap.status = 'ok' THEN
		UPDATE appguard.consents k SET baseline_snapshot_id = snap.id
		WHERE (k.client_id, k.subject) IN (
			SELECT p.client_id, p.subject FROM appguard.consents p
			WHERE p.client_id = p_client_id AND p.baseline_snapshot_id IS NULL
			  AND EXISTS (SELECT FROM appguard.grants r
						  WHERE r.client_id = p.client_id AND r.subject = p.subject)
			FOR UPDATE OF p SKIP LOCKED);
		UPDATE appguard.grants r SET baseline_snapshot_id = snap.id
		WHERE (r.token_table, r.token_key) IN (
			SELECT p.token_table, p.token_key FROM appguard.grants p
			WHERE p.client_id = p_client_id AND p.state = 'active' AND p.baseline_snapshot_id IS NULL
			FOR UPDATE OF p SKIP LOCKED);
		GET DIAGNOSTICS filled = ROW_COUNT;
		IF filled > 0 THEN
			PERFORM appguard.log_event('baselines_assigned', p_client_id,
				pg_catalog.jsonb_build_object('grants', filled),
				snapshot_id => snap.id, sweep_id => p_sweep_id);
		END IF;
	END IF;
	RETURN drifted;
END
$$;

CREATE OR REPLACE FUNCTION appguard.reapprove_row_full(tbl regclass, row_key text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r appguard.grants;
	cfg record;
	new_baseline bigint;
	done boolean;
	asked text := row_key;
BEGIN
	r := appguard.grant_of(tbl, row_key);
	-- Locks: the client, then the patient's consent (a rotation inserting
	-- a token of this consent holds it: wait for that token to commit),
	-- then the newest row is picked, then the host's row and the grant
	PERFORM FROM appguard.clients c WHERE c.client_id = r.client_id FOR NO KEY UPDATE;
	IF r.subject IS NOT NULL THEN
		PERFORM FROM appguard.consents k
		WHERE k.client_id = r.client_id AND k.subject = r.subject FOR UPDATE;
		r := appguard.grant_of(tbl, row_key);	-- as a rotation we waited for left it
	END IF;
	IF r.subject IS NOT NULL AND r.grant_key IS NOT NULL THEN
		-- the grant's newest row: if the host disabled it (a chain broken
		-- by a reused token), nothing of the grant is restored
		SELECT g.token_key INTO row_key FROM appguard.grants g
		WHERE g.token_table = reapprove_row_full.tbl AND g.client_id = r.client_id
		  AND g.subject = r.subject AND g.grant_key = r.grant_key
		ORDER BY g.created_at DESC, g.token_key DESC LIMIT 1;
	ELSIF r.subject IS NOT NULL AND r.state = 'suspended' THEN
		-- no grant column: the patient's newest row appguard suspended
		-- (rows the host disabled, such as a broken chain's, stay as they are)
		SELECT g.token_key INTO row_key FROM appguard.grant_states g
		WHERE g.token_table = reapprove_row_full.tbl AND g.client_id = r.client_id
		  AND g.subject = r.subject AND g.state = 'suspended'
		ORDER BY g.created_at DESC, g.token_key DESC LIMIT 1;
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(tbl);
	-- the host's row, then appguard's: the order of the triggers
	PERFORM appguard.as_table_owner(tbl,
		pg_catalog.format('SELECT true FROM %I.%I h WHERE h.%I = $1::%s FOR UPDATE',
						  cfg.schema_name, cfg.table_name, cfg.key_name, cfg.key_type),
		ARRAY[row_key]);
	SELECT * INTO r FROM appguard.grants g
	WHERE g.token_table = reapprove_row_full.tbl AND g.token_key = reapprove_row_full.row_key FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no row with key "%" in protected table %', pg_catalog.left(row_key, 100), tbl
			USING ERRCODE = 'P0002';
	END IF;
	r := appguard.grant_effective(r);
	IF r.state = 'active' THEN
		RETURN pg_catalog.jsonb_build_object('reapproved', false, 'status', 'active',
											 'baseline_snapshot_id', r.baseline_snapshot_id);
	END IF;
	IF r.state <> 'suspended' AND row_key IS DISTINCT FROM asked THEN
		RAISE EXCEPTION 'the newest row "%" of the grant of row "%" of % was disabled by the host, not suspended by appguard',
			pg_catalog.left(row_key, 100), pg_catalog.left(asked, 100), tbl
			USING ERRCODE = '55000',
				  DETAIL = 'appguard re-enables only rows it suspended; the auth server disabled this grant''s newest token itself (for example a reused refresh token), and appguard keeps that decision.';
	END IF;
	IF r.state <> 'suspended' THEN
		RAISE EXCEPTION 'row "%" of % was disabled by the host, not suspended by appguard',
			pg_catalog.left(row_key, 100), tbl
			USING ERRCODE = '55000',
				  DETAIL = 'appguard re-enables only rows it suspended.';
	END IF;
	new_baseline := appguard.baseline_for(r.client_id);
	PERFORM appguard.set_applying(true);
	-- as the table's owner: its triggers never run as appguard's owner.
	-- (A row the fan-out did not write -- it committed as the fan-out ran
	-- -- still has the active value: its grant is re-approved all the same.)
	done := pg_catalog.cardinality(appguard.as_table_owner(tbl, pg_catalog.format(
		'UPDATE %I.%I h SET %I = %L::%s %s WHERE h.%I = $1::%s AND h.%I IN (%L::%s, %L::%s) RETURNING true',
		cfg.schema_name, cfg.table_name, cfg.status_name, cfg.active_value, cfg.status_type,
		CASE WHEN cfg.error_uri_name IS NOT NULL
			 THEN pg_catalog.format(', %I = NULL', cfg.error_uri_name) ELSE '' END,
		cfg.key_name, cfg.key_type, cfg.status_name, cfg.suspended_value, cfg.status_type,
		cfg.active_value, cfg.status_type),
		ARRAY[row_key])) > 0;
	PERFORM appguard.set_applying(false);
	IF NOT done THEN
		RAISE EXCEPTION 'row "%" of % no longer has the suspended value', pg_catalog.left(row_key, 100), tbl
			USING ERRCODE = '55000';
	END IF;
	-- (the app as it is now may be the baseline a suspension holds, when
	-- another of its hosts changed: the patient approved it again, so that
	-- suspension no longer holds this grant -- its suspension_id says so)
	UPDATE appguard.grants g
	SET state = 'active', baseline_snapshot_id = new_baseline,
		suspension_id = appguard.baseline_hold(g.client_id, new_baseline),
		suspended_at = NULL, error_uri = NULL, reapproved_at = pg_catalog.now()
	WHERE g.token_table = reapprove_row_full.tbl AND g.token_key = reapprove_row_full.row_key;
	IF r.subject IS NOT NULL THEN
		-- the patient approved the app as it is now
		UPDATE appguard.consents k
		SET baseline_snapshot_id = new_baseline, approved_at = pg_catalog.clock_timestamp()
		WHERE k.client_id = r.client_id AND k.subject = r.subject;
	END IF;
	-- the app's other hosts as they are now, too
	PERFORM appguard.take_host_baselines(r.client_id, h.host, h.port, 'reapproved', NULL,
										 ARRAY[new_baseline], true)
	FROM appguard.client_hosts h
	WHERE h.client_id = r.client_id AND NOT h.is_primary AND new_baseline IS NOT NULL
	ORDER BY h.host, h.port;
	PERFORM appguard.log_event('reapproved', r.client_id,
		pg_catalog.jsonb_build_object('old_baseline_snapshot_id', r.baseline_snapshot_id,
									  'baseline_snapshot_id', new_baseline),
		snapshot_id => new_baseline, suspension_id => r.suspension_id,
		token_table => tbl::text, token_key => row_key);
	RETURN pg_catalog.jsonb_build_object('reapproved', true, 'status', 'active',
										 'baseline_snapshot_id', new_baseline,
										 'baseline_pending', new_baseline IS NULL,
										 'suspension_id', r.suspension_id)
		|| CASE WHEN row_key IS DISTINCT FROM asked
				THEN pg_catalog.jsonb_build_object('row_key', row_key) ELSE '{}' END;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.appguard_prune(keep interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cutoff timestamptz;
	n_state bigint;
	n_drifts bigint;
	n_sweeps bigint;
	n_suspensions bigint;
	n_holds bigint;
	n_events bigint;
	n_snapshots bigint;
	n_consents bigint;
	n_gone bigint := 0;
	t regclass;
	result jsonb;
BEGIN
	IF keep IS NULL OR keep < interval '0' OR keep > interval '10000 years' THEN
		RAISE EXCEPTION 'keep must be an interval from zero to 10000 years' USING ERRCODE = '22023';
	END IF;
	cutoff := pg_catalog.now() - keep;

	FOR t IN
		SELECT pt.tbl FROM appguard.protected_tables pt JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
		WHERE c.relkind = 'p' ORDER BY pt.tbl
	LOOP
		PERFORM appguard.partitions_changed(t, 'appguard_prune');
		n_gone := n_gone + appguard.forget_gone_rows(t);
	END LOOP;

	-- Before the lock below, what writes clients' rows (a fan-out waiting
	-- for that lock may hold one): a consent deleted under it keeps its
	-- baseline's verdicts, other hosts' baselines and hold until the next
	-- prune.
	-- verdicts of baselines no grant uses any more
	DELETE FROM appguard.baseline_state bs
	WHERE bs.evaluated_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bs.client_id AND gr.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bs.client_id AND k.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bs.client_id AND s.baseline_snapshot_id = bs.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	GET DIAGNOSTICS n_state = ROW_COUNT;
	-- the other hosts' baselines and verdicts of baselines no grant uses
	DELETE FROM appguard.baseline_host_state bs
	WHERE bs.evaluated_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bs.client_id AND gr.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bs.client_id AND k.baseline_snapshot_id = bs.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bs.client_id AND s.baseline_snapshot_id = bs.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	DELETE FROM appguard.baseline_hosts bh
	WHERE bh.taken_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = bh.client_id AND gr.baseline_snapshot_id = bh.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = bh.client_id AND k.baseline_snapshot_id = bh.baseline_snapshot_id)
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s
					  WHERE s.client_id = bh.client_id AND s.baseline_snapshot_id = bh.baseline_snapshot_id
						AND s.state IN ('pending', 'held'));
	PERFORM appguard.note_hosts_drifted(c.client_id) FROM appguard.clients c WHERE c.hosts_drifted;
	-- held baselines no active grant and no consent holds any more
	-- (only the rows that change are written: a client's row is what its
	-- evaluations and re-approvals lock)
	UPDATE appguard.clients c SET held_baselines = n.kept
	FROM (SELECT h.client_id, ARRAY(
				 SELECT b FROM pg_catalog.unnest(h.held_baselines) b
				 WHERE EXISTS (SELECT FROM appguard.grants gr
							   WHERE gr.client_id = h.client_id AND gr.baseline_snapshot_id = b
								 AND gr.state = 'active')
					OR EXISTS (SELECT FROM appguard.consents k
							   WHERE k.client_id = h.client_id AND k.baseline_snapshot_id = b)
				 ORDER BY b) AS kept
		  FROM appguard.clients h WHERE h.held_baselines <> '{}') n
	WHERE c.client_id = n.client_id AND c.held_baselines IS DISTINCT FROM n.kept;
	-- what no grant or consent refers to
	DELETE FROM appguard.drifts d WHERE d.detected_at < cutoff;
	GET DIAGNOSTICS n_drifts = ROW_COUNT;
	DELETE FROM appguard.sweeps w WHERE w.state <> 'running' AND w.finished_at < cutoff;
	GET DIAGNOSTICS n_sweeps = ROW_COUNT;
	DELETE FROM appguard.events e WHERE e.at < cutoff;
	GET DIAGNOSTICS n_events = ROW_COUNT;

	-- Token writes in flight commit first, and new ones wait until this
	-- commits: a token joining a consent takes ROW EXCLUSIVE on
	-- appguard.grants before it reads the consent (src/refresh.c), so no
	-- consent, or baseline, a new grant joins is pruned under it.
	LOCK TABLE appguard.grants IN SHARE MODE;
	-- consents none of whose grants is left
	DELETE FROM appguard.consents k
	WHERE k.approved_at < cutoff AND (k.shown_at IS NULL OR k.shown_at < cutoff)
	  AND NOT EXISTS (SELECT FROM appguard.grants gr
					  WHERE gr.client_id = k.client_id AND gr.subject = k.subject);
	GET DIAGNOSTICS n_consents = ROW_COUNT;

	-- decided suspensions no grant points to any more, neither by its own
	-- suspension_id nor as its baseline's hold
	DELETE FROM appguard.suspensions s
	WHERE s.created_at < cutoff AND s.state IN ('applied', 'discarded', 'superseded', 'failed')
	  AND NOT EXISTS (SELECT FROM appguard.grants gr WHERE gr.suspension_id = s.id)
	  AND NOT (s.state = 'applied'
			   AND EXISTS (SELECT FROM appguard.clients c
						   WHERE c.client_id = s.client_id AND s.baseline_snapshot_id = ANY (c.held_baselines)))
	  -- (the suspension of a consent's baseline holds the consent's next tokens)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE k.client_id = s.client_id AND k.baseline_snapshot_id = s.baseline_snapshot_id);
	GET DIAGNOSTICS n_suspensions = ROW_COUNT;
	DELETE FROM appguard.holds h
	WHERE h.state <> 'open' AND h.closed_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.suspensions s WHERE s.hold_id = h.id);
	GET DIAGNOSTICS n_holds = ROW_COUNT;
	DELETE FROM appguard.snapshots s
	WHERE s.taken_at < cutoff
	  AND NOT EXISTS (SELECT FROM appguard.grants r WHERE r.baseline_snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.consents k
					  WHERE s.id IN (k.baseline_snapshot_id, k.shown_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.suspensions u
					  WHERE s.id IN (u.baseline_snapshot_id, u.snapshot_id, u.first_drift_snapshot_id,
									 u.host_baseline_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.baseline_hosts bh WHERE bh.snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.baseline_host_state bs
					  WHERE s.id IN (bs.evaluated_snapshot_id, bs.first_drift_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.baseline_state bs
					  WHERE s.id IN (bs.baseline_snapshot_id, bs.evaluated_snapshot_id, bs.first_drift_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.clients c
					  WHERE s.id IN (c.last_snapshot_id, c.last_ok_snapshot_id))
	  AND NOT EXISTS (SELECT FROM appguard.sweep_hosts sh WHERE sh.snapshot_id = s.id)
	  AND NOT EXISTS (SELECT FROM appguard.drifts d
					  WHERE s.id IN (d.baseline_snapshot_id, d.snapshot_id));
	GET DIAGNOSTICS n_snapshots = ROW_COUNT;

	result := pg_catalog.jsonb_build_object(
		'keep', keep, 'snapshots', n_snapshots, 'drifts', n_drifts, 'baseline_states', n_state,
		'suspensions', n_suspensions, 'holds', n_holds, 'sweeps', n_sweeps, 'events', n_events,
		'consents', n_consents, 'grants_of_gone_rows', n_gone);
	PERFORM appguard.log_event('pruned', detail => result);
	RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.appguard_explain(suspension_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	changes jsonb;
	app text;
	app_domain text;
	address jsonb;
	by_host bigint;
BEGIN
	IF suspension_id IS NULL THEN
		RAISE EXCEPTION 'suspension_id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT su.*, c.name, c.host AS primary_host, c.port AS primary_port, c.registrable_domain,
		   b.taken_at AS baseline_taken_at, n.taken_at AS snapshot_taken_at,
		   f.taken_at AS first_drift_taken_at,
		   coalesce(b.facts -> 'dns' ->> 'registrable_domain', n.facts -> 'dns' ->> 'registrable_domain') AS facts_domain
	INTO s
	FROM appguard.suspensions su
		 LEFT JOIN appguard.clients c ON c.client_id = su.client_id
		 LEFT JOIN appguard.snapshots b ON b.id = su.baseline_snapshot_id
		 LEFT JOIN appguard.snapshots n ON n.id = su.snapshot_id
		 LEFT JOIN appguard.snapshots f ON f.id = su.first_drift_snapshot_id
	WHERE su.id = appguard_explain.suspension_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'suspension % does not exist', suspension_id USING ERRCODE = 'P0002';
	END IF;
	app := coalesce(s.name, s.client_id);
	app_domain := coalesce(s.registrable_domain, s.facts_domain, s.host);
	-- which of the app's watched hosts changed, and what it is to the patient
	address := pg_catalog.jsonb_build_object(
		'host', s.host, 'port', s.port, 'roles', pg_catalog.to_jsonb(s.roles),
		'primary', s.host_baseline_snapshot_id = s.baseline_snapshot_id,
		'what', appguard.roles_text(s.roles));

	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
			   'reason', e ->> 'reason',
			   'severity', e ->> 'severity',
			   'field', e ->> 'field',
			   'what', appguard.field_label(e ->> 'field'),
			   'description', p.description,
			   'old', e -> 'old',
			   'new', e -> 'new',
			   'text', pg_catalog.format('%s (%s): %s ' || pg_catalog.chr(8594) || ' %s',	-- a right arrow (the script is ASCII)
										 coalesce(p.description, 'Something changed'),
										 appguard.field_label(e ->> 'field'),
										 appguard.value_text(e -> 'old', e ->> 'field'),
										 appguard.value_text(e -> 'new', e ->> 'field')))
			   ORDER BY e ->> 'severity' = 'suspend' DESC, e ->> 'reason',
						e ->> 'field' = 'tls.leaf.subject.O' DESC, e ->> 'field'), '[]')
	INTO changes
	-- one change per fact (field, old and new value): a fact that two
	-- reasons report (a chain that changed and now dangles is
	-- dns_cname_changed and dns_dangling_cname) is given once, with the
	-- reason of the severity that applies
	FROM (SELECT DISTINCT ON (d ->> 'field', d -> 'old', d -> 'new') d AS e
		  FROM pg_catalog.jsonb_array_elements(s.diff) d
		  ORDER BY d ->> 'field', d -> 'old', d -> 'new', d ->> 'severity' = 'suspend' DESC, d ->> 'reason') f
		 LEFT JOIN appguard.policy p ON p.reason = f.e ->> 'reason';

	-- tokens of this approval the auth server disabled itself, before or
	-- after the suspension (revoked, or the newest token of a chain broken
	-- by reuse; rows it disables as it rotates count too): its decision,
	-- which re-approval keeps
	SELECT pg_catalog.count(*) INTO by_host FROM appguard.grants g
	WHERE g.state = 'inactive'
	  AND (g.suspension_id = s.id
		   OR (g.client_id = s.client_id AND g.baseline_snapshot_id = s.baseline_snapshot_id
			   AND g.suspension_id IS NULL AND g.subject IS NOT NULL));

	RETURN pg_catalog.jsonb_build_object(
		'suspension_id', s.id,
		'state', s.state,
		'client_id', s.client_id,
		'app_name', app,
		'domain', app_domain,
		'host', s.host,
		'address', address,
		'reasons', pg_catalog.to_jsonb(s.reasons),
		'changes', changes,
		-- what the consent screen showed against what it shows now (50_consent):
		-- of the host that changed
		'consent', appguard.consent_change(s.client_id, s.host_baseline_snapshot_id, s.snapshot_id),
		'consented_at', s.baseline_taken_at,
		'first_detected_at', coalesce(s.first_drift_taken_at, s.snapshot_taken_at),
		'confirmed_at', s.snapshot_taken_at,
		'suspended_at', s.applied_at,
		'baseline_snapshot_id', s.baseline_snapshot_id,
		'snapshot_id', s.snapshot_id,
		'error_uri', s.error_uri,
		'summary', pg_catalog.format(
			'The security information of %s (%s) changed%s after you approved it, so its access was suspended: %s.',
			app, app_domain,
			-- (another host than the primary: which address, in plain words)
			CASE WHEN NOT (address ->> 'primary')::boolean
				 THEN pg_catalog.format(' at %s, %s,', s.host, address ->> 'what') ELSE '' END,
			(SELECT pg_catalog.string_agg(c ->> 'text', '; ') FROM pg_catalog.jsonb_array_elements(changes) c
			 WHERE c ->> 'severity' = 'suspend')),
		'how_to_reapprove', pg_catalog.format(
			'If you still trust %s, open it and sign in again: you will be asked to approve its access once more, '
			'and your new approval is recorded against what %s shows now. If you do not recognise these changes, do nothing: '
			'the app cannot use your data while its access is suspended.', app, app_domain))
		|| CASE WHEN by_host > 0 THEN pg_catalog.jsonb_build_object('host_decisions', pg_catalog.jsonb_build_object(
			   'tokens_disabled_by_host', by_host,
			   'text', pg_catalog.format('%s token(s) of this approval were disabled by the sign-in service itself '
										 '(replaced, revoked, or a reused token that ended its chain); that is its decision, '
										 'and approving again does not re-enable them.', by_host)))
		   ELSE '{}' END;
END
$$;

CREATE OR REPLACE FUNCTION appguard.apply_suspensions(p_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	total bigint := 0;
	pt record;
	rec record;
	already bigint[];
	keys text[];
	done text[];
	n bigint;
	written bigint;
	round integer;
BEGIN
	IF p_ids IS NULL OR pg_catalog.cardinality(p_ids) = 0 THEN
		RETURN 0;
	END IF;

	SELECT coalesce(pg_catalog.array_agg(s.id), '{}') INTO already FROM appguard.suspensions s
	WHERE s.id = ANY (p_ids) AND s.state = 'applied';
	UPDATE appguard.suspensions s
	SET state = 'applied', applied_at = coalesce(s.applied_at, pg_catalog.clock_timestamp()),
		resolved_at = coalesce(s.resolved_at, pg_catalog.clock_timestamp())
	WHERE s.id = ANY (p_ids);
	UPDATE appguard.baseline_state bs SET suspension_applied = true
	FROM appguard.suspensions s
	WHERE s.id = ANY (p_ids) AND bs.client_id = s.client_id
	  AND bs.baseline_snapshot_id = s.baseline_snapshot_id AND NOT bs.suspension_applied;
	UPDATE appguard.clients c
	SET held_baselines = ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(c.held_baselines || h.baselines) b
							   ORDER BY b)
	FROM (SELECT s.client_id, pg_catalog.array_agg(DISTINCT s.baseline_snapshot_id) AS baselines
		  FROM appguard.suspensions s WHERE s.id = ANY (p_ids) GROUP BY s.client_id) h
	WHERE c.client_id = h.client_id AND NOT c.held_baselines @> h.baselines;

	PERFORM appguard.set_applying(true);
	-- Per token table and suspension, the host rows of the grants its
	-- baseline's hold suspends, as the table's owner
	-- (write_host_suspensions: through the primary key, a row only if it
	-- still has the active value).  Repeated in new statements for grants
	-- not seen yet, until none is left: a rotation that committed while
	-- the fan-out waited for its rows is seen and written too (its grant
	-- is suspended already: its baseline is held).  A table appguard
	-- cannot write (its CHECK rejects the suspended value, its status
	-- column is gone, ...) keeps the failure to itself: it is recorded and
	-- reported (record_table_problem), its grants are suspended in
	-- appguard's state all the same, so that their refresh checks answer
	-- not allowed, and the other tables and the caller (a sweep) go on.
	-- Transient errors (a deadlock, a serialization failure, a lock not
	-- available, a cancel) are not the table's: they are raised.
	FOR pt IN
		-- (the token tables that have an active grant on the baseline: one
		-- probe of each protected table, not a read of every grant)
		SELECT t.tbl, s.id AS sid, s.error_uri, s.client_id, s.baseline_snapshot_id AS baseline,
			   appguard.baseline_hold(s.client_id, s.baseline_snapshot_id) AS hold
		FROM appguard.suspensions s CROSS JOIN appguard.protected_tables t
		WHERE s.id = ANY (p_ids)
		  AND EXISTS (SELECT FROM appguard.grants r
					  WHERE r.client_id = s.client_id AND r.baseline_snapshot_id = s.baseline_snapshot_id
						AND r.state = 'active' AND r.token_table = t.tbl)
		ORDER BY 1, 2
	LOOP
		done := '{}';
		n := 0;
		FOR round IN 1 .. 5 LOOP
			IF pt.sid = ANY (already) THEN
				-- Applied again (appguard.verify_grant): the suspension holds
				-- again the grants the host re-enabled after it
				-- (appguard.grant_status), at every round: one the host
				-- re-enables as the rows are written is held at the next
				-- (its write and ours serialise on its row)
				UPDATE appguard.grants r SET suspension_id = NULL
				WHERE r.client_id = pt.client_id AND r.baseline_snapshot_id = pt.baseline
				  AND r.state = 'active' AND r.token_table = pt.tbl AND r.suspension_id = ANY (already);
			END IF;
			-- (executed with its arrays as values: the grants not seen yet
			-- are found by hashing the keys seen, where a kept plan would
			-- compare each grant with each of them)
			EXECUTE 'SELECT pg_catalog.array_agg(r.token_key) FROM appguard.grants r '
					'WHERE r.client_id = $1 AND r.baseline_snapshot_id = $2 AND r.state = ''active'' '
					'AND r.token_table = $3 AND r.suspension_id IS DISTINCT FROM $4 '
					'AND NOT (r.token_key = ANY ($5))'
				INTO keys USING pt.client_id, pt.baseline, pt.tbl, pt.hold, done;
			EXIT WHEN keys IS NULL;
			written := (appguard.write_host_suspensions_or_record(pt.tbl, keys, pt.error_uri, true,
																  already))[1]::bigint;
			-- (counted: the grants it holds when first applied, whether or
			-- not their table could be written; applied again, the host
			-- rows it wrote -- the grants it held already are not counted
			-- twice)
			n := n + CASE WHEN pt.sid = ANY (already) THEN written
						  ELSE pg_catalog.cardinality(keys) END;
			done := done || keys;
		END LOOP;
		UPDATE appguard.suspensions s SET tokens_suspended = s.tokens_suspended + n
		WHERE s.id = pt.sid;
	END LOOP;
	PERFORM appguard.set_applying(false);

	FOR rec IN
		SELECT s.id, s.client_id, s.tokens_suspended, s.reasons, s.snapshot_id, s.sweep_id, s.hold_id
		FROM appguard.suspensions s WHERE s.id = ANY (p_ids) ORDER BY s.id
	LOOP
		total := total + rec.tokens_suspended;
		PERFORM appguard.log_event(CASE WHEN rec.id = ANY (already) THEN 'suspension_extended'
									   ELSE 'suspension_applied' END, rec.client_id,
			pg_catalog.jsonb_build_object('reasons', pg_catalog.to_jsonb(rec.reasons),
										  'tokens_suspended', rec.tokens_suspended),
			snapshot_id => rec.snapshot_id, suspension_id => rec.id,
			sweep_id => rec.sweep_id, hold_id => rec.hold_id);
		PERFORM pg_catalog.pg_notify('appguard_suspension', rec.id::text);
	END LOOP;
	RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION appguard.grant_status(p_tbl regclass, p_key text, p_client_id text,
											  p_active boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r appguard.grants;
	saved bigint;
BEGIN
	SELECT * INTO r FROM appguard.grants pr
	WHERE pr.token_table = p_tbl AND pr.token_key = p_key FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM appguard.grant_track(p_tbl, p_key, p_client_id, p_active);
		RETURN;
	END IF;
	r := appguard.grant_effective(r);
	IF p_active AND r.state <> 'active' THEN
		-- A row the host (re)activates keeps its baseline if it has one:
		-- if its app still drifts from it, the next snapshot suspends it
		-- again; only re-approval takes a new baseline.  The suspension
		-- holding that baseline (appguard.baseline_hold) no longer holds
		-- this grant: its suspension_id records the one the host overrode.
		UPDATE appguard.grants pr
		SET state = 'active',
			baseline_snapshot_id = coalesce(pr.baseline_snapshot_id, appguard.grant_baseline(pr.client_id)),
			suspension_id = appguard.baseline_hold(pr.client_id, pr.baseline_snapshot_id),
			suspended_at = NULL, error_uri = NULL
		WHERE pr.token_table = p_tbl AND pr.token_key = p_key;
		IF r.state = 'suspended' THEN
			saved := appguard.saved_lastval();
			PERFORM appguard.log_event('host_reactivated', r.client_id,
				pg_catalog.jsonb_build_object('detail', 'the host re-enabled a row appguard had suspended'),
				suspension_id => r.suspension_id, token_table => p_tbl::text, token_key => p_key);
			PERFORM appguard.restore_lastval(saved);
		END IF;
	ELSIF NOT p_active AND r.state <> 'inactive' THEN
		-- (a suspended grant keeps its suspension: revoked while suspended)
		UPDATE appguard.grants pr
		SET state = 'inactive',
			suspension_id = CASE WHEN r.state = 'suspended' THEN r.suspension_id END,
			suspended_at = CASE WHEN r.state = 'suspended' THEN r.suspended_at END,
			error_uri = CASE WHEN r.state = 'suspended' THEN r.error_uri END
		WHERE pr.token_table = p_tbl AND pr.token_key = p_key;
		IF r.state = 'suspended' THEN
			saved := appguard.saved_lastval();
			PERFORM appguard.log_event('host_took_over', r.client_id,
				pg_catalog.jsonb_build_object('detail', 'the host set the status of a row appguard had suspended; re-approval will not re-enable it'),
				suspension_id => r.suspension_id, token_table => p_tbl::text, token_key => p_key);
			PERFORM appguard.restore_lastval(saved);
			-- A host that disables a suspended token as it rotates it has
			-- just inserted the successor, which may have joined the
			-- consent before the suspension committed: the suspension
			-- holds the consent's other active rows on that baseline too.
			IF r.subject IS NOT NULL AND r.suspension_id IS NOT NULL THEN
				PERFORM appguard.suspend_consent_rows(p_tbl, r.client_id, r.subject,
													  r.baseline_snapshot_id, r.suspension_id);
			END IF;
		END IF;
	END IF;
END
$$;

-- ---- privileges (as sql/parts/99_privileges.sql) ----
REVOKE ALL ON FUNCTION appguard.protected_table_columns(regclass), appguard.printed_column(name),
	appguard.grant_sync_sql(),
	appguard.citus_table(regclass),
	appguard.protect_table(regclass, name, name, name, text, text, name, name),
	@extschema@.appguard_protect(regclass, name, name, name, text, text, name, name),
	appguard.consent_grant(regclass, text, text, text, text),
	appguard.suspend_consent_rows(regclass, text, text, bigint, bigint),
	appguard.write_host_suspensions_or_record(regclass, text[], text, boolean, bigint[]),
	@extschema@.appguard_consent_info(text, text)
FROM PUBLIC;
REVOKE ALL ON appguard.consents FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.appguard_consent_info(text, text)
TO appguard_auth_server, appguard_operator;
GRANT INSERT (grant_id) ON appguard.refresh_tokens TO appguard_auth_server;
GRANT SELECT ON appguard.consents TO appguard_operator;

-- ---- new functions: the error_uri page (as sql/parts/51_explain_html.sql) ----

---------------------------------------------------------------------------
-- The patient's error_uri page: appguard_explain_html
--
-- appguard_explain_html(suspension_id, client_id, lang) renders what
-- appguard_explain(suspension_id) returns as one complete HTML page, for
-- the auth server to serve at the error_uri (whose template names both
-- ids).  The page:
--   * names the suspension only together with its client: an id of another
--     client raises the same error as an unknown id (P0002), so a patient,
--     or anyone guessing ids, learns nothing about other apps;
--   * escapes every value it shows (appguard.html_escape), carries no
--     script, no external resource and inline CSS only, so that it works
--     under "Content-Security-Policy: default-src 'none'; style-src
--     'unsafe-inline'";
--   * has a lang attribute, one h1, h2s in order, a viewport, a link text
--     that says where it goes, and text and link colours above 7:1;
--   * says what the patient was shown at consent and what is true now,
--     each change in the plain words of appguard_explain, the domain, and
--     a re-approval link from appguard.reapprove_uri_template (none when
--     empty: the page then tells the patient to sign in to the app again).
-- Languages: English only today; any other well-formed language tag gets
-- the English page (lang="en"), a malformed one or NULL is refused
-- (22023).  docs/facts.md describes the page.
---------------------------------------------------------------------------

-- & < > " ' as character references: safe in text and in quoted
-- attributes.  NULL becomes the empty string, so that a missing value
-- never empties the whole page.
CREATE FUNCTION appguard.html_escape(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
			   coalesce($1, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
$$;

-- The page's language from the caller's tag ('en', 'en-US', 'de_CH'):
-- 'en', the only one so far.  A NULL or malformed tag is an error.
CREATE FUNCTION appguard.html_lang(lang text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF lang IS NULL THEN
		RAISE EXCEPTION 'the language must not be NULL' USING ERRCODE = '22023',
			  HINT = 'Give a language tag such as en or en-US.';
	END IF;
	IF lang !~ '^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$' OR pg_catalog.length(lang) > 35 THEN
		RAISE EXCEPTION 'invalid language "%"', pg_catalog.left(lang, 40)
			USING ERRCODE = '22023',
				  DETAIL = 'Give a language tag such as en or en-US; a language without a translation gets the English page.';
	END IF;
	RETURN 'en';
END
$$;

-- The re-approval link from appguard.reapprove_uri_template, every value
-- URL-encoded as in appguard.error_uri; NULL when the template is empty.
CREATE FUNCTION appguard.reapprove_uri(p_suspension_id bigint, p_client_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.replace(
			   pg_catalog.replace(nullif(appguard.setting('appguard.reapprove_uri_template'), ''),
								  '{suspension_id}', appguard.url_encode($1::text)),
			   '{client_id}', appguard.url_encode($2))
$$;

-- A time as the page shows it: UTC, to the minute.
CREATE FUNCTION appguard.html_time(value jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(pg_catalog.to_char(($1 #>> '{}')::timestamptz AT TIME ZONE 'UTC',
									   'YYYY-MM-DD HH24:MI "UTC"'), 'unknown')
$$;

-- A shown value in words (the consent screen's, unquoted).
CREATE FUNCTION appguard.html_consent_value(field text, v jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $2 = 'true'::jsonb THEN 'verified'
				WHEN $2 = 'false'::jsonb THEN 'not verified'
				WHEN ($2 IS NULL OR $2 = 'null'::jsonb) AND $1 IN ('organization', 'location') THEN 'not verified'
				WHEN $2 IS NULL OR $2 = 'null'::jsonb THEN 'none'
				ELSE $2 #>> '{}' END
$$;

-- What the consent screen showed against what it shows now, as a table
-- (explain's "consent"); changed rows say so in words, not by colour.
CREATE FUNCTION appguard.html_consent_table(consent jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '<table><caption>What you were shown, and what is true now</caption>' || E'\n'
		|| '<thead><tr><th scope="col">Shown about the app</th><th scope="col">When you approved it</th>'
		|| '<th scope="col">Now</th></tr></thead><tbody>' || E'\n'
		|| pg_catalog.string_agg(pg_catalog.format(
			   '<tr%s><th scope="row">%s%s</th><td>%s</td><td>%s</td></tr>',
			   CASE WHEN changed THEN ' class="changed"' ELSE '' END,
			   f.what,
			   CASE WHEN changed THEN ' <span class="tag">changed</span>' ELSE '' END,
			   appguard.html_escape(appguard.html_consent_value(f.field, $1 -> 'shown' -> f.field)),
			   appguard.html_escape(appguard.html_consent_value(f.field, $1 -> 'now' -> f.field))),
			   E'\n' ORDER BY f.ord)
		|| E'\n</tbody></table>'
	FROM (VALUES (1, 'app_name', 'App'), (2, 'organization', 'Organization'),
				 (3, 'location', 'Location'), (4, 'domain', 'Domain'),
				 (5, 'ownership_verified', 'Domain ownership')) AS f(ord, field, what)
		 CROSS JOIN LATERAL (SELECT ($1 -> 'shown' -> f.field) IS DISTINCT FROM ($1 -> 'now' -> f.field)
								 AS changed) c
$$;

-- The changes of one severity class as a list, one item per reason: the
-- reason in plain words (appguard.policy's description, as
-- appguard_explain gives it), then each field with old -> new.  NULL when
-- there is none.
CREATE FUNCTION appguard.html_change_list(changes jsonb, suspending boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '<ul class="changes">' || E'\n' || pg_catalog.string_agg(r.item, E'\n' ORDER BY r.first) || E'\n</ul>'
	FROM (SELECT pg_catalog.min(n) AS first,
				 '<li><p class="reason">'
				 || appguard.html_escape(coalesce(pg_catalog.max(c ->> 'description'), 'Something changed')) || '</p>'
				 || pg_catalog.string_agg(pg_catalog.format(
						'<p>%s: <span class="old">%s</span> ' || pg_catalog.chr(8594) || ' <span class="new">%s</span></p>',
						appguard.html_escape(pg_catalog.upper(pg_catalog.left(c ->> 'what', 1))
											 || pg_catalog.substr(c ->> 'what', 2)),
						appguard.html_escape(appguard.value_text(c -> 'old', c ->> 'field')),
						appguard.html_escape(appguard.value_text(c -> 'new', c ->> 'field'))), '' ORDER BY n)
				 || '</li>' AS item
		  FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS e(c, n)
		  WHERE (c ->> 'severity' = 'suspend') = $2
		  GROUP BY c ->> 'reason') r
	HAVING pg_catalog.count(*) > 0
$$;

-- The document around a body: no script, no external resource, inline
-- CSS (colours: #1a1a1a on #fff, 17:1; links #0b4f9c, 8:1; the changed
-- tag #7a1f00 on #fde8e0, 8.8:1; the reference line #4d4d4d, 8.4:1).
CREATE FUNCTION appguard.html_document(lang text, title text, body text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '<!DOCTYPE html>' || E'\n'
		|| '<html lang="' || appguard.html_escape($1) || '">' || E'\n'
		|| '<head>' || E'\n'
		|| '<meta charset="utf-8">' || E'\n'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1">' || E'\n'
		|| '<meta name="referrer" content="no-referrer">' || E'\n'
		|| '<meta name="robots" content="noindex">' || E'\n'
		|| '<title>' || appguard.html_escape($2) || '</title>' || E'\n'
		|| '<style>'
		|| 'body{margin:0;background:#fff;color:#1a1a1a;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}'
		|| 'main{max-width:40rem;margin:0 auto;padding:1rem}'
		|| 'h1{font-size:1.5rem;line-height:1.25}h2{font-size:1.2rem;margin-top:1.5rem}'
		|| 'a{color:#0b4f9c}a:focus{outline:3px solid #1a1a1a;outline-offset:2px}'
		-- fixed layout: on a phone, a long value breaks within its column
		-- rather than squeezing the others into broken words
		|| 'table{border-collapse:collapse;width:100%;table-layout:fixed}'
		|| 'caption{text-align:left;font-weight:bold;padding:.25rem 0}thead th:first-child{width:34%}'
		|| 'th,td{border:1px solid #767676;padding:.4rem;text-align:left;vertical-align:top;overflow-wrap:break-word}'
		|| 'tr.changed{background:#fde8e0}.tag{color:#7a1f00;font-weight:bold}'
		|| '.changes li{margin-bottom:.75rem}.changes p{margin:0}.reason{font-weight:bold}'
		|| '.old,.new{overflow-wrap:break-word}.action{font-size:1.1rem;font-weight:bold}'
		|| '.meta{color:#4d4d4d;font-size:.9rem}'
		|| '</style>' || E'\n'
		|| '</head>' || E'\n'
		|| '<body>' || E'\n'
		|| '<main>' || E'\n'
		|| '<h1>' || appguard.html_escape($2) || '</h1>' || E'\n'
		|| $3 || E'\n'
		|| '</main>' || E'\n'
		|| '</body>' || E'\n'
		|| '</html>' || E'\n'
$$;

-- What the patient can do: the re-approval link when there is a template
-- and the grants are still suspended; otherwise sign in to the app again.
CREATE FUNCTION appguard.html_next_step(x jsonb, reapprove_uri text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '<h2>What you can do</h2>' || E'\n'
		|| '<p>If you still trust ' || appguard.html_escape(x ->> 'app_name') || ' ('
		|| appguard.html_escape(x ->> 'domain') || '), approve its access again: your new approval is '
		|| 'recorded against what the app shows now. If you do not recognise these changes, do nothing: '
		|| 'the app cannot use your data while its access is suspended.</p>' || E'\n'
		|| CASE WHEN reapprove_uri IS NOT NULL
				THEN '<p class="action"><a href="' || appguard.html_escape(reapprove_uri) || '">Approve '
					 || appguard.html_escape(x ->> 'app_name') || ' again</a></p>'
				ELSE '<p class="action">To approve it again, open ' || appguard.html_escape(x ->> 'app_name')
					 || ' and sign in again, or contact the app''s support.</p>' END
$$;

-- The page's states: suspended (applied, or failed: the refresh check
-- refuses its grants), restored (no grant left suspended by it, and a
-- re-approval recorded), checking (pending or held: access not suspended
-- yet), not_applied (discarded or superseded).  The title, unescaped
-- (html_document escapes it):
CREATE FUNCTION appguard.html_title(x jsonb, page_state text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (x ->> 'app_name') || CASE page_state
			WHEN 'suspended' THEN ': access to your data suspended'
			WHEN 'restored' THEN ': access to your data restored'
			WHEN 'checking' THEN ': a change is being checked'
			ELSE ': access to your data not suspended' END
$$;

-- The first paragraph: what happened to the app's access.
CREATE FUNCTION appguard.html_lead(x jsonb, page_state text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '<p>' || CASE page_state
			WHEN 'suspended' THEN 'The security information of ' || app || ' changed after you approved it, '
				|| 'so its access to your data was suspended on '
				-- a failed suspension was never applied: its grants are refused
				-- since the snapshot that confirmed the drift
				|| appguard.html_time(coalesce(nullif(x -> 'suspended_at', 'null'), x -> 'confirmed_at')) || '.'
			WHEN 'restored' THEN 'The security information of ' || app || ' changed after you approved it, '
				|| 'and its access was suspended. It has since been approved again, against what the app shows '
				|| 'now, and its access is restored. There is nothing more to do.'
			WHEN 'checking' THEN 'The security information of ' || app || ' changed after you approved it. '
				|| 'The change is being checked; the app''s access has not been suspended.'
			ELSE 'A change to the security information of ' || app || ' was noticed, but the app''s access '
				|| 'was not suspended for it. If the app asks you to, sign in again.' END || '</p>'
	FROM (SELECT appguard.html_escape(x ->> 'app_name') || ' (' || appguard.html_escape(x ->> 'domain') || ')'
				 AS app) a
$$;

-- The body: the lead, the domain, what changed, what to do (while
-- suspended), a reference line.
CREATE FUNCTION appguard.html_explain_body(x jsonb, page_state text, reapprove_uri text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT appguard.html_lead(x, page_state) || E'\n'
		|| '<p>Domain of the app: <strong>' || appguard.html_escape(x ->> 'domain') || '</strong>. You approved it on '
		|| appguard.html_time(x -> 'consented_at') || '.</p>' || E'\n'
		-- another of the app's addresses than its main one changed: which
		|| CASE WHEN (x -> 'address' ->> 'primary')::boolean IS FALSE
				THEN '<p>The address that changed: <strong>' || appguard.html_escape(x -> 'address' ->> 'host')
					 || '</strong>, ' || appguard.html_escape(x -> 'address' ->> 'what') || '.</p>' || E'\n'
				ELSE '' END
		|| '<h2>What changed</h2>' || E'\n'
		|| appguard.html_consent_table(x -> 'consent') || E'\n'
		|| coalesce(appguard.html_change_list(x -> 'changes', true), '<p>No change at suspension level is recorded.</p>')
		|| coalesce(E'\n<h2>Other changes</h2>\n<p>These were noticed too; on their own they do not suspend access.</p>\n'
					|| appguard.html_change_list(x -> 'changes', false), '') || E'\n'
		|| CASE WHEN page_state = 'suspended'
				THEN appguard.html_next_step(x, reapprove_uri) || E'\n'
					 || '<p>If you have already approved the app again, its access is restored and you can ignore '
					 || 'this page.</p>' || E'\n'
				ELSE '' END
		|| '<p class="meta">Reference: suspension ' || appguard.html_escape(x ->> 'suspension_id')
		|| ' of app ' || appguard.html_escape(x ->> 'client_id') || '; first detected '
		|| appguard.html_time(x -> 'first_detected_at') || '.</p>'
$$;

CREATE FUNCTION @extschema@.appguard_explain_html(p_suspension_id bigint, p_client_id text,
												  p_lang text DEFAULT 'en')
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lang text;
	su record;
	page_state text;
	x jsonb;
BEGIN
	IF p_suspension_id IS NULL OR p_suspension_id <= 0 THEN
		RAISE EXCEPTION 'suspension_id must be a positive number' USING ERRCODE = '22023';
	END IF;
	PERFORM appguard.check_client_id(p_client_id);
	lang := appguard.html_lang(p_lang);
	-- another client's suspension is reported exactly as an unknown one
	SELECT s.id, s.state INTO su FROM appguard.suspensions s
	WHERE s.id = p_suspension_id AND s.client_id = p_client_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'suspension % of client "%" does not exist', p_suspension_id, pg_catalog.left(p_client_id, 100)
			USING ERRCODE = 'P0002',
				  DETAIL = 'It may have been pruned, or the error_uri was changed.';
	END IF;
	page_state := CASE
		WHEN su.state IN ('pending', 'held') THEN 'checking'
		WHEN su.state IN ('discarded', 'superseded') THEN 'not_applied'
		WHEN NOT EXISTS (SELECT FROM appguard.grant_states g
						 WHERE g.client_id = p_client_id AND g.suspension_id = su.id AND g.state = 'suspended')
			 AND EXISTS (SELECT FROM appguard.events e WHERE e.suspension_id = su.id AND e.kind = 'reapproved')
			THEN 'restored'
		ELSE 'suspended' END;
	x := @extschema@.appguard_explain(su.id);
	RETURN appguard.html_document(lang, appguard.html_title(x, page_state),
								  appguard.html_explain_body(x, page_state, appguard.reapprove_uri(su.id, p_client_id)));
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_explain_html(bigint, text, text) IS
	'The error_uri page of a suspension of this client, as a complete HTML document (escaped, no script, no external resource)';

-- privileges of the page (as sql/parts/99_privileges.sql)
REVOKE ALL ON FUNCTION
	appguard.html_escape(text),
	appguard.html_lang(text),
	appguard.reapprove_uri(bigint, text),
	appguard.html_time(jsonb),
	appguard.html_consent_value(text, jsonb),
	appguard.html_consent_table(jsonb),
	appguard.html_change_list(jsonb, boolean),
	appguard.html_document(text, text, text),
	appguard.html_next_step(jsonb, text),
	appguard.html_title(jsonb, text),
	appguard.html_lead(jsonb, text),
	appguard.html_explain_body(jsonb, text, text),
	@extschema@.appguard_explain_html(bigint, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.appguard_explain_html(bigint, text, text)
TO appguard_auth_server, appguard_operator;

-- ---- dns_dangling_cname ----
-- The new drift reason's policy row, as the install script seeds it from
-- appguard_drift_reasons() (which the new module already reports).  The
-- seed is no operator's change: no policy_insert event, as at install.
ALTER TABLE appguard.policy DISABLE TRIGGER appguard_policy_audit;
INSERT INTO appguard.policy (reason, severity, description)
SELECT r.reason, r.default_severity, r.description
FROM @extschema@.appguard_drift_reasons() AS r
WHERE r.reason = 'dns_dangling_cname';
ALTER TABLE appguard.policy ENABLE TRIGGER appguard_policy_audit;

-- ---- hosts of a client (issue 14, part 1) ----
-- Every https redirect URI's host and the hosts of metadata URLs
-- (jwks_uri, ...) are watched (appguard.client_hosts); each other host's
-- baseline hangs off the grants' baseline (appguard.baseline_hosts), with
-- its own verdicts (appguard.baseline_host_state); a suspension names the
-- host that changed.
ALTER TABLE appguard.clients ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
ALTER TABLE appguard.clients ADD COLUMN hosts_undecided boolean NOT NULL DEFAULT false;
ALTER TABLE appguard.clients ADD COLUMN hosts_drifted boolean NOT NULL DEFAULT false;
CREATE TABLE appguard.client_hosts (
	client_id	text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	host		text NOT NULL,
	port		integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
	roles		text[] NOT NULL,	-- primary_redirect, redirect, jwks_uri, initiate_login_uri, ...
	is_primary	boolean NOT NULL,
	added_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (client_id, host, port)
);
COMMENT ON TABLE appguard.client_hosts IS 'Every host a client''s grants trust (redirect URIs, jwks_uri, other metadata URLs), with its roles';
CREATE INDEX client_hosts_host ON appguard.client_hosts (host, port);
CREATE UNIQUE INDEX client_hosts_primary ON appguard.client_hosts (client_id) WHERE is_primary;
SELECT pg_catalog.pg_extension_config_dump('appguard.client_hosts', '');
CREATE TABLE appguard.baseline_hosts (
	client_id				text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	baseline_snapshot_id	bigint NOT NULL,
	host					text NOT NULL,
	port					integer NOT NULL,
	snapshot_id				bigint NOT NULL,
	how						text NOT NULL
							CHECK (how IN ('at_baseline', 'first_facts', 'host_added', 'reapproved', 'was_primary')),
	taken_at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	PRIMARY KEY (client_id, baseline_snapshot_id, host, port)
);
COMMENT ON TABLE appguard.baseline_hosts IS 'Per baseline of a client, the baseline snapshot of each of its other watched hosts';
SELECT pg_catalog.pg_extension_config_dump('appguard.baseline_hosts', '');
CREATE TABLE appguard.baseline_host_state (
	client_id				text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	baseline_snapshot_id	bigint NOT NULL,
	host					text NOT NULL,
	port					integer NOT NULL,
	evaluated_snapshot_id	bigint NOT NULL,
	evaluated_at			timestamptz NOT NULL,
	streak					integer NOT NULL,
	drifting				boolean NOT NULL,
	first_drift_snapshot_id	bigint,
	last_diff				jsonb NOT NULL,
	PRIMARY KEY (client_id, baseline_snapshot_id, host, port)
);
COMMENT ON TABLE appguard.baseline_host_state IS 'Latest comparison of each baseline of a client''s other watched hosts with their snapshots; the confirmation count';
SELECT pg_catalog.pg_extension_config_dump('appguard.baseline_host_state', '');
-- a suspension names the host that changed: until now the client's
-- primary host, whose snapshot confirmed it
ALTER TABLE appguard.suspensions ADD COLUMN host text, ADD COLUMN port integer,
	ADD COLUMN roles text[], ADD COLUMN host_baseline_snapshot_id bigint;
UPDATE appguard.suspensions su
SET host = s.host, port = s.port, roles = '{primary_redirect}', host_baseline_snapshot_id = su.baseline_snapshot_id
FROM appguard.snapshots s WHERE s.id = su.snapshot_id;
ALTER TABLE appguard.suspensions ALTER COLUMN host SET NOT NULL, ALTER COLUMN port SET NOT NULL,
	ALTER COLUMN roles SET NOT NULL, ALTER COLUMN host_baseline_snapshot_id SET NOT NULL;
DROP INDEX appguard.suspensions_undecided;
CREATE UNIQUE INDEX suspensions_undecided ON appguard.suspensions (client_id, baseline_snapshot_id, host, port)
	WHERE state IN ('pending', 'held');

-- clients.hosts_drifted: another host's applied suspension holds the client's new grants
-- clients.hosts_drifted of a client, from its other hosts' verdicts: true
-- while one of them is drifting from any baseline (confirmed or not: it
-- only sends the client's grants to the SQL paths, which decide).  Called
-- wherever those verdicts change: an evaluation of another host, its
-- baselines taken again, a host removed, a prune.
CREATE FUNCTION appguard.note_hosts_drifted(p_client_id text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE appguard.clients c SET hosts_drifted = d.drifted
	FROM (SELECT EXISTS (SELECT FROM appguard.baseline_host_state st
						 WHERE st.client_id = p_client_id AND st.drifting) AS drifted) d
	WHERE c.client_id = p_client_id AND c.hosts_drifted IS DISTINCT FROM d.drifted
$$;

REVOKE ALL ON FUNCTION appguard.note_hosts_drifted(text) FROM PUBLIC;

-- new functions (as the install script has them)
CREATE FUNCTION appguard.metadata_url_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ARRAY['jwks_uri', 'initiate_login_uri', 'sector_identifier_uri', 'client_uri',
				 'logo_uri', 'policy_uri', 'tos_uri']
$$;
CREATE FUNCTION appguard.role_rank(role text)
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE $1 WHEN 'primary_redirect' THEN 0 WHEN 'redirect' THEN 1
		   ELSE 2 + coalesce(pg_catalog.array_position(appguard.metadata_url_keys(), $1), 99) END
$$;
CREATE FUNCTION appguard.check_client_metadata(metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
	v jsonb;
	watched jsonb := '{}';
	ignored record;
BEGIN
	IF metadata IS NULL OR pg_catalog.jsonb_typeof(metadata) <> 'object' THEN
		RAISE EXCEPTION 'client metadata must be a JSON object'
			USING ERRCODE = '22023',
				  HINT = 'For example {"client_name": "App", "redirect_uris": ["https://app.example.org/cb"], "jwks_uri": "https://keys.example.org/jwks.json"} (RFC 7591).';
	END IF;
	IF pg_catalog.length(metadata::text) > 65536 THEN
		RAISE EXCEPTION 'client metadata is too large' USING ERRCODE = '22023',
			DETAIL = 'appguard takes at most 64 kB of client metadata.';
	END IF;
	IF metadata ? 'client_name' AND pg_catalog.jsonb_typeof(metadata -> 'client_name') <> 'string' THEN
		RAISE EXCEPTION 'client metadata: client_name must be a string' USING ERRCODE = '22023';
	END IF;
	IF NOT metadata ? 'redirect_uris' OR pg_catalog.jsonb_typeof(metadata -> 'redirect_uris') <> 'array'
	   OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(metadata -> 'redirect_uris') e
				  WHERE pg_catalog.jsonb_typeof(e) <> 'string') THEN
		RAISE EXCEPTION 'client metadata: redirect_uris must be an array of strings' USING ERRCODE = '22023',
			HINT = 'The first one is the primary redirect URI.';
	END IF;
	FOREACH k IN ARRAY appguard.metadata_url_keys() LOOP
		v := metadata -> k;
		CONTINUE WHEN v IS NULL OR v = 'null'::jsonb;
		IF pg_catalog.jsonb_typeof(v) <> 'string' THEN
			RAISE EXCEPTION 'client metadata: % must be a string', k USING ERRCODE = '22023';
		END IF;
		IF (v #>> '{}') !~* '^https://' THEN
			RAISE EXCEPTION 'invalid % "%"', k, pg_catalog.left(v #>> '{}', 200)
				USING ERRCODE = '22023',
					  DETAIL = pg_catalog.format('appguard watches the host of %s, so it must be an https URL.', k);
		END IF;
		BEGIN
			SELECT * INTO ignored FROM appguard.parse_redirect_uri(v #>> '{}', true);
		EXCEPTION WHEN invalid_parameter_value THEN
			DECLARE
				why text;
			BEGIN
				GET STACKED DIAGNOSTICS why = PG_EXCEPTION_DETAIL;
				RAISE EXCEPTION 'invalid % "%"', k, pg_catalog.left(v #>> '{}', 200)
					USING ERRCODE = '22023',
						  DETAIL = pg_catalog.replace(coalesce(why, ''), 'redirect URI', k),
						  HINT = 'appguard watches the host of every metadata URL: it must be https://host[:port]/...';
			END;
		END;
		watched := watched || pg_catalog.jsonb_build_object(k, v);
	END LOOP;
	RETURN watched;
END
$$;
CREATE FUNCTION appguard.client_host_list(redirect_uris text[], metadata jsonb,
										  OUT host text, OUT port integer, OUT roles text[],
										  OUT is_primary boolean)
RETURNS SETOF record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	dup text;
	n integer;
BEGIN
	SELECT u INTO dup FROM pg_catalog.unnest(redirect_uris) u GROUP BY u HAVING pg_catalog.count(*) > 1 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'redirect URI "%" is listed twice', pg_catalog.left(dup, 200)
			USING ERRCODE = '22023';
	END IF;
	RETURN QUERY
	WITH u AS (
		SELECT p.host, p.port,
			   CASE WHEN x.ord = 1 THEN 'primary_redirect' ELSE 'redirect' END AS role,
			   x.ord AS ord
		FROM pg_catalog.unnest(redirect_uris) WITH ORDINALITY AS x(uri, ord),
			 LATERAL appguard.parse_redirect_uri(x.uri, x.ord = 1) p
		WHERE p.host IS NOT NULL
		UNION ALL
		SELECT p.host, p.port, k.key, 1000 + k.ord
		FROM pg_catalog.unnest(appguard.metadata_url_keys()) WITH ORDINALITY AS k(key, ord),
			 LATERAL appguard.parse_redirect_uri(coalesce(metadata, '{}') ->> k.key, true) p
		WHERE coalesce(metadata, '{}') ->> k.key IS NOT NULL
	)
	SELECT u.host, u.port,
		   ARRAY(SELECT q.role FROM (SELECT DISTINCT u2.role FROM u u2
									 WHERE u2.host = u.host AND u2.port = u.port) q
				 ORDER BY appguard.role_rank(q.role)),
		   pg_catalog.bool_or(u.role = 'primary_redirect')
	FROM u GROUP BY u.host, u.port
	ORDER BY pg_catalog.bool_or(u.role = 'primary_redirect') DESC, pg_catalog.min(u.ord);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 20 THEN
		RAISE EXCEPTION 'a client may have at most 20 hosts' USING ERRCODE = '22023',
			DETAIL = pg_catalog.format('Its redirect URIs and metadata URLs name %s distinct hosts.', n);
	END IF;
END
$$;
CREATE FUNCTION appguard.client_hosts_json(client_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
			   'host', h.host, 'port', h.port, 'roles', pg_catalog.to_jsonb(h.roles))
			   ORDER BY NOT h.is_primary, appguard.role_rank(h.roles[1]), h.host, h.port), '[]')
	FROM appguard.client_hosts h WHERE h.client_id = $1
$$;
CREATE FUNCTION appguard.client_baselines(p_client_id text)
RETURNS SETOF bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT g.baseline_snapshot_id FROM appguard.grants g
	WHERE g.client_id = p_client_id AND g.state <> 'inactive' AND g.baseline_snapshot_id IS NOT NULL
	UNION
	SELECT k.baseline_snapshot_id FROM appguard.consents k
	WHERE k.client_id = p_client_id AND k.baseline_snapshot_id IS NOT NULL
$$;
CREATE FUNCTION appguard.set_client_hosts(p_client_id text, p_redirect_uris text[], p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_primary record;
	h record;
	added jsonb := '[]';
	removed jsonb := '[]';
	nh jsonb;			-- the new host list
BEGIN
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(l)), '[]') INTO nh
	FROM appguard.client_host_list(p_redirect_uris, p_metadata) l;
	SELECT ch.host, ch.port INTO old_primary FROM appguard.client_hosts ch
	WHERE ch.client_id = p_client_id AND ch.is_primary;

	FOR h IN
		SELECT ch.host, ch.port, ch.roles FROM appguard.client_hosts ch
		WHERE ch.client_id = p_client_id
		  AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean) WHERE n.host = ch.host AND n.port = ch.port)
		ORDER BY ch.host, ch.port
	LOOP
		DELETE FROM appguard.client_hosts ch
		WHERE ch.client_id = p_client_id AND ch.host = h.host AND ch.port = h.port;
		DELETE FROM appguard.baseline_hosts b
		WHERE b.client_id = p_client_id AND b.host = h.host AND b.port = h.port;
		DELETE FROM appguard.baseline_host_state b
		WHERE b.client_id = p_client_id AND b.host = h.host AND b.port = h.port;
		removed := removed || pg_catalog.jsonb_build_object('host', h.host, 'port', h.port,
															'roles', pg_catalog.to_jsonb(h.roles));
	END LOOP;
	-- (the unique primary index: no two primaries, even for a moment)
	UPDATE appguard.client_hosts ch SET is_primary = false
	WHERE ch.client_id = p_client_id AND ch.is_primary
	  AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean)
					  WHERE n.host = ch.host AND n.port = ch.port AND n.is_primary);
	UPDATE appguard.client_hosts ch SET roles = n.roles, is_primary = n.is_primary
	FROM pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean)
	WHERE ch.client_id = p_client_id AND n.host = ch.host AND n.port = ch.port
	  AND (ch.roles, ch.is_primary) IS DISTINCT FROM (n.roles, n.is_primary);
	IF old_primary.host IS NOT NULL THEN
		-- a former primary still watched: the grants' baselines are its own
		INSERT INTO appguard.baseline_hosts (client_id, baseline_snapshot_id, host, port, snapshot_id, how)
		SELECT p_client_id, b, ch.host, ch.port, b, 'was_primary'
		FROM appguard.client_hosts ch, appguard.client_baselines(p_client_id) b
		WHERE ch.client_id = p_client_id AND ch.host = old_primary.host AND ch.port = old_primary.port
		  AND NOT ch.is_primary
		ON CONFLICT DO NOTHING;
	END IF;
	-- the primary is compared with the grants' baselines themselves
	DELETE FROM appguard.baseline_hosts b
	USING pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean)
	WHERE b.client_id = p_client_id AND n.is_primary AND b.host = n.host AND b.port = n.port;
	DELETE FROM appguard.baseline_host_state b
	USING pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean)
	WHERE b.client_id = p_client_id AND n.is_primary AND b.host = n.host AND b.port = n.port;
	PERFORM appguard.note_hosts_drifted(p_client_id);

	FOR h IN
		SELECT n.* FROM pg_catalog.jsonb_to_recordset(nh) AS n(host text, port integer, roles text[], is_primary boolean)
		WHERE NOT EXISTS (SELECT FROM appguard.client_hosts ch
						  WHERE ch.client_id = p_client_id AND ch.host = n.host AND ch.port = n.port)
		ORDER BY NOT n.is_primary, n.host, n.port
	LOOP
		INSERT INTO appguard.client_hosts (client_id, host, port, roles, is_primary)
		VALUES (p_client_id, h.host, h.port, h.roles, h.is_primary);
		added := added || pg_catalog.jsonb_build_object('host', h.host, 'port', h.port,
														'roles', pg_catalog.to_jsonb(h.roles));
	END LOOP;
	RETURN pg_catalog.jsonb_build_object('added', added, 'removed', removed);
END
$$;
CREATE FUNCTION appguard.log_host_changes(p_client_id text, p_changes jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e jsonb;
BEGIN
	FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(p_changes -> 'removed') x LOOP
		PERFORM appguard.log_event('host_removed', p_client_id, e);
	END LOOP;
	FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(p_changes -> 'added') x LOOP
		PERFORM appguard.log_event('host_added', p_client_id, e);
		IF NOT e -> 'roles' ? 'primary_redirect' THEN
			PERFORM appguard.take_host_baselines(p_client_id, e ->> 'host', (e ->> 'port')::integer,
												 'host_added');
		END IF;
	END LOOP;
END
$$;
CREATE FUNCTION appguard.register_client(p_client_id text, p_name text, p_redirect_uris text[],
										 p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target record;
BEGIN
	PERFORM appguard.check_client_id(p_client_id);
	SELECT * INTO target FROM appguard.check_client_fields(p_name, p_redirect_uris);
	PERFORM FROM appguard.client_host_list(p_redirect_uris, p_metadata);
	IF EXISTS (SELECT FROM appguard.clients c WHERE c.client_id = p_client_id) THEN
		RAISE EXCEPTION 'client "%" is already registered', p_client_id
			USING ERRCODE = '23505',
				  HINT = 'Use appguard_update_client to change its name, redirect URIs or metadata.';
	END IF;
	INSERT INTO appguard.clients (client_id, name, redirect_uris, host, port, registrable_domain, metadata)
	VALUES (p_client_id, pg_catalog.btrim(p_name), p_redirect_uris, target.host, target.port,
			appguard.registrable_domain_of(target.host), coalesce(p_metadata, '{}'));
	PERFORM appguard.set_client_hosts(p_client_id, p_redirect_uris, p_metadata);
	PERFORM appguard.refresh_client_cache(p_client_id);
	PERFORM appguard.log_event('client_registered', p_client_id,
							   appguard.client_json(p_client_id));
	RETURN appguard.client_json(p_client_id)
		|| pg_catalog.jsonb_build_object('hosts', appguard.client_hosts_json(p_client_id));
END
$$;
CREATE FUNCTION appguard.update_client(p_client_id text, p_name text, p_redirect_uris text[],
									   p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old record;
	target record;
	changes jsonb;
BEGIN
	SELECT * INTO old FROM appguard.clients c
	WHERE c.client_id = p_client_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'client "%" is not registered', p_client_id
			USING ERRCODE = 'P0002',
				  HINT = 'Register it with appguard_register_client.';
	END IF;
	SELECT * INTO target
	FROM appguard.check_client_fields(coalesce(p_name, old.name), coalesce(p_redirect_uris, old.redirect_uris));
	PERFORM FROM appguard.client_host_list(coalesce(p_redirect_uris, old.redirect_uris),
										   coalesce(p_metadata, old.metadata));
	UPDATE appguard.clients c
	SET name = pg_catalog.btrim(coalesce(p_name, old.name)),
		redirect_uris = coalesce(p_redirect_uris, old.redirect_uris),
		metadata = coalesce(p_metadata, old.metadata),
		host = target.host, port = target.port,
		registrable_domain = CASE WHEN target.host = old.host THEN old.registrable_domain
							 ELSE appguard.registrable_domain_of(target.host) END,
		updated_at = pg_catalog.now()
	WHERE c.client_id = p_client_id;
	IF target.host <> old.host OR target.port <> old.port THEN
		UPDATE appguard.clients c
		SET last_snapshot_id = NULL, last_snapshot_at = NULL, last_status = NULL,
			last_ok_snapshot_id = NULL, last_ok_at = NULL
		WHERE c.client_id = p_client_id;
		PERFORM appguard.refresh_client_cache(p_client_id);
	END IF;
	changes := appguard.set_client_hosts(p_client_id, coalesce(p_redirect_uris, old.redirect_uris),
										 coalesce(p_metadata, old.metadata));
	PERFORM appguard.log_event('client_updated', p_client_id,
							   pg_catalog.jsonb_build_object(
								   'old', pg_catalog.jsonb_build_object('name', old.name,
									   'redirect_uris', pg_catalog.to_jsonb(old.redirect_uris),
									   'host', old.host, 'port', old.port)
									   || CASE WHEN old.metadata <> '{}'
											   THEN pg_catalog.jsonb_build_object('metadata', old.metadata)
											   ELSE '{}' END,
								   'new', appguard.client_json(p_client_id))
							   || CASE WHEN changes <> '{"added": [], "removed": []}'
									   THEN pg_catalog.jsonb_build_object('hosts', changes) ELSE '{}' END);
	PERFORM appguard.log_host_changes(p_client_id, changes);
	RETURN appguard.client_json(p_client_id)
		|| pg_catalog.jsonb_build_object('hosts', appguard.client_hosts_json(p_client_id));
END
$$;
CREATE FUNCTION appguard.roles_text(roles text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.string_agg(w, ' and ' ORDER BY rank)
	FROM (SELECT DISTINCT ON (w) w, rank
		  FROM (SELECT appguard.role_rank(r) AS rank,
					   CASE r
						   WHEN 'primary_redirect' THEN 'the address your login is sent to'
						   WHEN 'redirect' THEN 'the address your login is sent to'
						   WHEN 'jwks_uri' THEN 'where the app''s keys are published'
						   WHEN 'initiate_login_uri' THEN 'the address that starts your login to the app'
						   WHEN 'sector_identifier_uri' THEN 'where the app lists its login addresses'
						   WHEN 'client_uri' THEN 'the app''s home page'
						   WHEN 'logo_uri' THEN 'where the app''s logo is published'
						   WHEN 'policy_uri' THEN 'the app''s privacy policy'
						   WHEN 'tos_uri' THEN 'the app''s terms of service'
						   ELSE 'an address the app uses' END AS w
				FROM pg_catalog.unnest($1) r) q
		  ORDER BY w, rank) d
$$;
CREATE FUNCTION appguard.take_host_baselines(p_client_id text, p_host text, p_port integer, p_how text,
											 p_snapshot_id bigint DEFAULT NULL,
											 p_baselines bigint[] DEFAULT NULL,
											 p_replace boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap bigint := p_snapshot_id;
	n bigint;
BEGIN
	IF snap IS NULL THEN
		SELECT s.id INTO snap FROM appguard.snapshots s
		WHERE s.host = p_host AND s.port = p_port AND s.status = 'ok'
		ORDER BY s.taken_at DESC, s.id DESC LIMIT 1;
		IF snap IS NULL THEN
			RETURN 0;		-- never measured: its first successful snapshot will be
		END IF;
	END IF;
	INSERT INTO appguard.baseline_hosts AS bh (client_id, baseline_snapshot_id, host, port, snapshot_id, how)
	SELECT p_client_id, b, p_host, p_port, snap, p_how
	FROM (SELECT b FROM appguard.client_baselines(p_client_id) b
		  WHERE p_baselines IS NULL
		  UNION SELECT b FROM pg_catalog.unnest(p_baselines) b WHERE b IS NOT NULL) q
	ON CONFLICT (client_id, baseline_snapshot_id, host, port) DO UPDATE
	SET snapshot_id = EXCLUDED.snapshot_id, how = EXCLUDED.how, taken_at = EXCLUDED.taken_at
	WHERE p_replace AND bh.snapshot_id <> EXCLUDED.snapshot_id;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		IF p_replace THEN
			-- a new baseline: the old verdicts are of no use
			DELETE FROM appguard.baseline_host_state st
			WHERE st.client_id = p_client_id AND st.host = p_host AND st.port = p_port
			  AND st.baseline_snapshot_id IN (SELECT bh.baseline_snapshot_id FROM appguard.baseline_hosts bh
											 WHERE bh.client_id = p_client_id AND bh.host = p_host
											   AND bh.port = p_port AND bh.snapshot_id = snap);
			PERFORM appguard.note_hosts_drifted(p_client_id);
		END IF;
		PERFORM appguard.log_event('host_baselines_taken', p_client_id,
			pg_catalog.jsonb_build_object('host', p_host, 'port', p_port, 'how', p_how, 'baselines', n),
			snapshot_id => snap);
	END IF;
	RETURN n;
END
$$;
CREATE FUNCTION appguard.evaluate_baselines(p_client_id text, p_snapshot_id bigint, p_primary boolean,
											p_baselines bigint[], p_compared bigint[],
											p_sweep_id bigint, p_hold bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	confirmations integer;
	grace interval;
	last_ok timestamptz;
	unreachable text;
	confirmed jsonb;
	any_drift boolean;
	new_ids bigint[];
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	confirmations := appguard.setting('appguard.confirmations')::integer;
	grace := appguard.setting('appguard.unreachable_grace')::interval;
	-- appguard.unreachable_grace: a host that has not been measured
	-- successfully for longer than the grace counts as drifted (off by
	-- default), at the severity the policy gives host_unreachable (suspend
	-- by default), from every baseline.  Its last successful measurement:
	-- the client's record of it for the primary host (the caller has not
	-- moved it for a failed one), the newest successful snapshot for
	-- another.
	IF grace > interval '0' AND snap.status <> 'ok' THEN
		IF p_primary THEN
			SELECT c.last_ok_at INTO last_ok FROM appguard.clients c WHERE c.client_id = p_client_id;
		ELSE
			SELECT pg_catalog.max(s.taken_at) INTO last_ok FROM appguard.snapshots s
			WHERE s.host = snap.host AND s.port = snap.port AND s.status = 'ok';
		END IF;
		IF snap.taken_at - coalesce(last_ok, snap.taken_at) > grace THEN
			SELECT coalesce(cp.severity, p.severity, 'suspend') INTO unreachable
			FROM (SELECT) AS one
				 LEFT JOIN appguard.client_policy AS cp
					 ON cp.client_id = p_client_id AND cp.reason = 'host_unreachable'
				 LEFT JOIN appguard.policy AS p ON p.reason = 'host_unreachable';
		END IF;
	END IF;

	WITH d AS (
		-- (the pairs by subscript, not by unnest, whose row estimate is the
		-- arrays' length in a custom plan and 100 in a generic one: that made
		-- PL/pgSQL plan this statement again at every call)
		SELECT b.baseline, b.compared,
			   coalesce(x.diff, '[]') AS diff,
			   coalesce(x.drifting, false) AS drifting
		FROM (SELECT p_baselines[i] AS baseline, p_compared[i] AS compared
			  FROM pg_catalog.generate_subscripts(p_baselines, 1) AS i) b
			 LEFT JOIN LATERAL (
				SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
							'reason', r.reason, 'severity', r.severity, 'field', r.field,
							'old', pg_catalog.to_jsonb(r.old_value), 'new', pg_catalog.to_jsonb(r.new_value))
						ORDER BY r.severity = 'suspend' DESC, r.reason, r.field)
						FILTER (WHERE r.severity <> 'ignore') AS diff,
					   pg_catalog.bool_or(r.severity = 'suspend') AS drifting
				FROM (SELECT df.reason::text AS reason, df.severity::text AS severity, df.field::text AS field,
							 pg_catalog.to_jsonb(df.old_value) AS old_value, pg_catalog.to_jsonb(df.new_value) AS new_value
					  FROM @extschema@.appguard_diff(b.compared, snap.id, p_client_id) df
					  UNION ALL
					  SELECT 'host_unreachable', unreachable, 'status', '"ok"'::jsonb, pg_catalog.to_jsonb(snap.status)
					  WHERE unreachable IS NOT NULL) r
			 ) x ON true
	), o AS (
		SELECT bs.baseline_snapshot_id, bs.evaluated_snapshot_id, bs.streak, bs.drifting,
			   bs.first_drift_snapshot_id, bs.last_diff
		FROM appguard.baseline_state bs
		WHERE p_primary AND bs.client_id = p_client_id AND bs.baseline_snapshot_id = ANY (p_baselines)
		UNION ALL
		SELECT st.baseline_snapshot_id, st.evaluated_snapshot_id, st.streak, st.drifting,
			   st.first_drift_snapshot_id, st.last_diff
		FROM appguard.baseline_host_state st
		WHERE NOT p_primary AND st.client_id = p_client_id AND st.host = snap.host AND st.port = snap.port
		  AND st.baseline_snapshot_id = ANY (p_baselines)
	), n AS (
		-- (a baseline already compared with this snapshot keeps its verdict:
		-- the refresh check may evaluate a straggler's baseline again)
		SELECT d.baseline, d.compared, d.drifting,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.streak
					WHEN d.drifting THEN coalesce(o.streak, 0) + 1
					WHEN snap.status = 'ok' THEN 0
					ELSE coalesce(o.streak, 0) END AS streak,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.drifting
					WHEN d.drifting THEN true
					WHEN snap.status = 'ok' THEN false
					ELSE coalesce(o.drifting, false) END AS drifting_now,
			   CASE WHEN o.evaluated_snapshot_id = snap.id THEN o.first_drift_snapshot_id
					WHEN d.drifting AND coalesce(o.streak, 0) = 0 THEN snap.id
					WHEN d.drifting THEN o.first_drift_snapshot_id
					WHEN snap.status = 'ok' THEN NULL
					ELSE o.first_drift_snapshot_id END AS first_drift,
			   CASE WHEN snap.status = 'ok' OR d.diff <> '[]' THEN d.diff
					ELSE coalesce(o.last_diff, '[]') END AS last_diff,
			   o.last_diff AS old_diff
		FROM d LEFT JOIN o ON o.baseline_snapshot_id = d.baseline
	), up AS (
		INSERT INTO appguard.baseline_state AS bs
			(client_id, baseline_snapshot_id, evaluated_snapshot_id, evaluated_at,
			 streak, drifting, first_drift_snapshot_id, last_diff)
		SELECT p_client_id, n.baseline, snap.id, pg_catalog.clock_timestamp(),
			   n.streak, n.drifting_now, n.first_drift, n.last_diff
		FROM n WHERE p_primary
		ON CONFLICT (client_id, baseline_snapshot_id) DO UPDATE
		SET evaluated_snapshot_id = EXCLUDED.evaluated_snapshot_id,
			evaluated_at = EXCLUDED.evaluated_at, streak = EXCLUDED.streak,
			drifting = EXCLUDED.drifting, first_drift_snapshot_id = EXCLUDED.first_drift_snapshot_id,
			last_diff = EXCLUDED.last_diff
	), up_host AS (
		INSERT INTO appguard.baseline_host_state AS st
			(client_id, baseline_snapshot_id, host, port, evaluated_snapshot_id, evaluated_at,
			 streak, drifting, first_drift_snapshot_id, last_diff)
		SELECT p_client_id, n.baseline, snap.host, snap.port, snap.id, pg_catalog.clock_timestamp(),
			   n.streak, n.drifting_now, n.first_drift, n.last_diff
		FROM n WHERE NOT p_primary
		ON CONFLICT (client_id, baseline_snapshot_id, host, port) DO UPDATE
		SET evaluated_snapshot_id = EXCLUDED.evaluated_snapshot_id,
			evaluated_at = EXCLUDED.evaluated_at, streak = EXCLUDED.streak,
			drifting = EXCLUDED.drifting, first_drift_snapshot_id = EXCLUDED.first_drift_snapshot_id,
			last_diff = EXCLUDED.last_diff
	), dr AS (
		INSERT INTO appguard.drifts (client_id, baseline_snapshot_id, snapshot_id,
									 reason, severity, field, old_value, new_value)
		SELECT p_client_id, n.baseline, snap.id, e ->> 'reason', e ->> 'severity', e ->> 'field',
			   e -> 'old', e -> 'new'
		FROM n, pg_catalog.jsonb_array_elements(n.last_diff) e
		WHERE n.last_diff IS DISTINCT FROM coalesce(n.old_diff, '[]')
	)
	-- the confirmed baselines' verdicts, as just kept
	SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
				'baseline', n.baseline, 'compared', n.compared,
				'first_drift', n.first_drift, 'last_diff', n.last_diff) ORDER BY n.baseline)
			   FILTER (WHERE n.drifting AND n.streak >= confirmations),
		   coalesce(pg_catalog.bool_or(n.drifting), false)
	INTO confirmed, any_drift
	FROM n;
	IF NOT p_primary THEN
		PERFORM appguard.note_hosts_drifted(p_client_id);
	END IF;

	IF confirmed IS NULL THEN
		RETURN any_drift;
	END IF;

	WITH ins AS (
		INSERT INTO appguard.suspensions (id, client_id, baseline_snapshot_id, snapshot_id,
										  first_drift_snapshot_id, reasons, diff, state,
										  sweep_id, hold_id, error_uri,
										  host, port, roles, host_baseline_snapshot_id)
		SELECT x.id, p_client_id, x.baseline, snap.id, x.first_drift,
			   ARRAY(SELECT DISTINCT e ->> 'reason'
					 FROM pg_catalog.jsonb_array_elements(x.last_diff) e
					 WHERE e ->> 'severity' = 'suspend' ORDER BY 1),
			   x.last_diff,
			   CASE WHEN p_hold IS NOT NULL AND p_sweep_id IS NULL THEN 'held' ELSE 'pending' END,
			   p_sweep_id,
			   CASE WHEN p_sweep_id IS NULL THEN p_hold END,
			   appguard.error_uri(x.id, p_client_id),
			   snap.host, snap.port,
			   coalesce((SELECT ch.roles FROM appguard.client_hosts ch
						 WHERE ch.client_id = p_client_id AND ch.host = snap.host AND ch.port = snap.port),
						'{primary_redirect}'),
			   x.compared
		FROM (SELECT pg_catalog.nextval('appguard.suspensions_id_seq') AS id, c.*
			  FROM pg_catalog.jsonb_to_recordset(confirmed)
				   AS c(baseline bigint, compared bigint, first_drift bigint, last_diff jsonb)
			  WHERE NOT EXISTS (SELECT FROM appguard.suspensions u
								WHERE u.client_id = p_client_id AND u.baseline_snapshot_id = c.baseline
								  AND u.host = snap.host AND u.port = snap.port
								  AND u.state IN ('pending', 'held'))
			  ORDER BY c.baseline) x
		RETURNING id
	)
	SELECT coalesce(pg_catalog.array_agg(ins.id ORDER BY ins.id), '{}') INTO new_ids FROM ins;

	IF pg_catalog.cardinality(new_ids) = 0 THEN
		RETURN any_drift;
	END IF;
	IF p_sweep_id IS NOT NULL THEN
		-- the end of the sweep decides; until then the refresh check of the
		-- grants takes the full path, which refuses them (its C path reads
		-- the primary host's verdicts, and for the other hosts this flag)
		IF NOT p_primary THEN
			UPDATE appguard.clients c SET hosts_undecided = true
			WHERE c.client_id = p_client_id AND NOT c.hosts_undecided;
		END IF;
		RETURN any_drift;
	END IF;
	IF p_hold IS NOT NULL THEN
		PERFORM appguard.log_event('suspension_held', p_client_id,
			pg_catalog.jsonb_build_object('detail', 'a hold is open: new suspensions join it',
										  'suspensions', pg_catalog.to_jsonb(new_ids)),
			snapshot_id => snap.id, hold_id => p_hold);
		PERFORM pg_catalog.pg_notify('appguard_hold', p_hold::text);
		RETURN any_drift;
	END IF;
	PERFORM appguard.apply_suspensions(new_ids);
	RETURN any_drift;
END
$$;
CREATE FUNCTION appguard.evaluate_client_host(p_client_id text, p_snapshot_id bigint,
											  p_sweep_id bigint, p_baselines bigint[], p_hold bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snap record;
	ch record;
	baselines bigint[];
	compared bigint[];
	max_age interval;
	n bigint;
	hows text;
BEGIN
	SELECT s.id, s.host, s.port, s.taken_at, s.status INTO snap
	FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	SELECT h.* INTO ch FROM appguard.client_hosts h
	WHERE h.client_id = p_client_id AND h.host = snap.host AND h.port = snap.port AND NOT h.is_primary;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF p_baselines IS NULL AND EXISTS (
		SELECT FROM appguard.snapshots s
		WHERE s.host = snap.host AND s.port = snap.port AND (s.taken_at, s.id) > (snap.taken_at, snap.id)) THEN
		RETURN false;		-- older than the host's latest snapshot: stored, not evaluated
	END IF;
	baselines := ARRAY(
		SELECT DISTINCT r.baseline_snapshot_id FROM appguard.grants r
		WHERE r.client_id = p_client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
		  AND (p_baselines IS NULL OR r.baseline_snapshot_id = ANY (p_baselines))
		ORDER BY 1);
	IF p_baselines IS NULL THEN
		-- (a statement of its own: once per baseline, not per grant)
		baselines := ARRAY(SELECT b FROM pg_catalog.unnest(baselines) b
						   WHERE appguard.baseline_unheld(p_client_id, b) ORDER BY b);
	END IF;
	IF pg_catalog.cardinality(baselines) = 0 THEN
		RETURN false;
	END IF;

	-- Baselines with no facts of this host yet: its latest successful
	-- snapshot when the baseline was taken (no older than
	-- appguard.baseline_max_age then, nor than the host's watching), else
	-- this snapshot if it succeeded.
	max_age := appguard.setting('appguard.baseline_max_age')::interval;
	WITH missing AS (
		SELECT b, greatest(bs.taken_at,
						   (SELECT pg_catalog.min(coalesce(g.reapproved_at, g.created_at)) FROM appguard.grants g
							WHERE g.client_id = p_client_id AND g.baseline_snapshot_id = b)) AS anchor
		FROM pg_catalog.unnest(baselines) b JOIN appguard.snapshots bs ON bs.id = b
		WHERE NOT EXISTS (SELECT FROM appguard.baseline_hosts bh
						  WHERE bh.client_id = p_client_id AND bh.baseline_snapshot_id = b
							AND bh.host = snap.host AND bh.port = snap.port)
	), pick AS (
		SELECT m.b, coalesce(c.id, CASE WHEN snap.status = 'ok' THEN snap.id END) AS sid,
			   CASE WHEN c.id IS NOT NULL THEN 'at_baseline' ELSE 'first_facts' END AS how
		FROM missing m
			 LEFT JOIN LATERAL (SELECT s.id FROM appguard.snapshots s
								WHERE s.host = snap.host AND s.port = snap.port AND s.status = 'ok'
								  AND s.taken_at <= m.anchor AND s.taken_at >= m.anchor - max_age
								  AND s.taken_at >= ch.added_at - max_age
								ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) c ON true
	), ins AS (
		INSERT INTO appguard.baseline_hosts (client_id, baseline_snapshot_id, host, port, snapshot_id, how)
		SELECT p_client_id, pick.b, snap.host, snap.port, pick.sid, pick.how
		FROM pick WHERE pick.sid IS NOT NULL
		RETURNING how
	)
	SELECT pg_catalog.count(*), pg_catalog.string_agg(DISTINCT ins.how, ', ') INTO n, hows FROM ins;
	IF n > 0 THEN
		PERFORM appguard.log_event('host_baselines_taken', p_client_id,
			pg_catalog.jsonb_build_object('host', snap.host, 'port', snap.port, 'how', hows, 'baselines', n),
			snapshot_id => snap.id, sweep_id => p_sweep_id);
	END IF;

	-- each baseline with the host's own that can be compared
	SELECT coalesce(pg_catalog.array_agg(bh.baseline_snapshot_id ORDER BY bh.baseline_snapshot_id), '{}'),
		   coalesce(pg_catalog.array_agg(bh.snapshot_id ORDER BY bh.baseline_snapshot_id), '{}')
	INTO baselines, compared
	FROM appguard.baseline_hosts bh
	WHERE bh.client_id = p_client_id AND bh.host = snap.host AND bh.port = snap.port
	  AND bh.baseline_snapshot_id = ANY (baselines) AND bh.snapshot_id <> snap.id
	  AND EXISTS (SELECT FROM appguard.snapshots s WHERE s.id = bh.snapshot_id);
	RETURN appguard.evaluate_baselines(p_client_id, snap.id, false, baselines, compared, p_sweep_id, p_hold);
END
$$;
-- functions whose body changed
CREATE OR REPLACE FUNCTION appguard.parse_redirect_uri(uri text, is_primary boolean,
											OUT host text, OUT port integer)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m text[];
	authority text;
	hostpart text;
	portpart text;
BEGIN
	IF uri IS NULL THEN
		RAISE EXCEPTION 'redirect URIs must not contain nulls'
			USING ERRCODE = '22023';
	END IF;
	IF uri = '' OR pg_catalog.length(uri) > 2000 THEN
		RAISE EXCEPTION 'invalid redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI has 1 to 2000 characters.';
	END IF;
	IF uri ~ '[[:space:][:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI contains no white space or control characters.';
	END IF;
	IF pg_catalog.strpos(uri, '#') > 0 THEN
		RAISE EXCEPTION 'invalid redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI must not contain a fragment (RFC 6749, section 3.1.2).';
	END IF;
	m := pg_catalog.regexp_match(uri, '^([A-Za-z][A-Za-z0-9+.-]*):(//([^/?]*))?(.*)$');
	IF m IS NULL THEN
		RAISE EXCEPTION 'invalid redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI is an absolute URI: a scheme, a colon, then the rest.',
				  HINT = 'For example https://app.example.org/callback.';
	END IF;
	authority := m[3];
	IF is_primary AND pg_catalog.lower(m[1]) <> 'https' THEN
		RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'The first redirect URI names the host appguard watches, so it must use https.',
				  HINT = 'Put an https:// redirect URI first.';
	END IF;
	IF pg_catalog.lower(m[1]) IN ('http', 'https') AND coalesce(authority, '') = '' THEN
		RAISE EXCEPTION 'invalid redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'An http or https redirect URI needs a host.';
	END IF;
	IF pg_catalog.lower(m[1]) <> 'https' THEN
		RETURN;				-- not watched (private-use schemes, http://localhost)
	END IF;
	IF pg_catalog.strpos(authority, '@') > 0 THEN
		RAISE EXCEPTION 'invalid %redirect URI "%"', CASE WHEN is_primary THEN 'primary ' ELSE '' END, pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI must not carry user information before the host.';
	END IF;
	IF pg_catalog.left(authority, 1) = '[' THEN
		RAISE EXCEPTION 'invalid %redirect URI "%"', CASE WHEN is_primary THEN 'primary ' ELSE '' END, pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'An https redirect URI must name its host, not an IP address: appguard watches it.';
	END IF;
	m := pg_catalog.regexp_match(authority, '^([^:]*)(:([0-9]*))?$');
	IF m IS NULL THEN
		RAISE EXCEPTION 'invalid %redirect URI "%"', CASE WHEN is_primary THEN 'primary ' ELSE '' END, pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'The authority is host or host:port.';
	END IF;
	hostpart := m[1];
	portpart := m[3];
	IF m[2] IS NOT NULL AND (portpart = '' OR pg_catalog.length(portpart) > 5
							 OR portpart::integer NOT BETWEEN 1 AND 65535) THEN
		RAISE EXCEPTION 'invalid %redirect URI "%"', CASE WHEN is_primary THEN 'primary ' ELSE '' END, pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A port is a number from 1 to 65535.';
	END IF;
	BEGIN
		host := @extschema@.appguard_normalize_host(hostpart);
	EXCEPTION WHEN invalid_parameter_value THEN
		DECLARE
			why text;
		BEGIN
			GET STACKED DIAGNOSTICS why = PG_EXCEPTION_DETAIL;
			RAISE EXCEPTION 'invalid %redirect URI "%"', CASE WHEN is_primary THEN 'primary ' ELSE '' END, pg_catalog.left(uri, 200)
				USING ERRCODE = '22023',
					  DETAIL = 'Its host is refused: ' || coalesce(why, 'not a DNS host name.');
		END;
	END;
	port := coalesce(portpart::integer, 443);
END
$$;
CREATE OR REPLACE FUNCTION appguard.client_json(client_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.jsonb_build_object(
		'client_id', c.client_id, 'name', c.name, 'redirect_uris', pg_catalog.to_jsonb(c.redirect_uris),
		'host', c.host, 'port', c.port, 'registrable_domain', c.registrable_domain,
		'registered_at', c.registered_at, 'updated_at', c.updated_at)
		|| CASE WHEN c.metadata <> '{}' THEN pg_catalog.jsonb_build_object('metadata', c.metadata) ELSE '{}' END
	FROM appguard.clients c WHERE c.client_id = $1
$$;
CREATE OR REPLACE FUNCTION @extschema@.appguard_register_client(client_id text, name text, redirect_uris text[])
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT appguard.register_client($1, $2, $3, '{}')
$$;
CREATE OR REPLACE FUNCTION @extschema@.appguard_update_client(client_id text, name text DEFAULT NULL,
												redirect_uris text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM appguard.check_client_id(client_id);
	IF name IS NULL AND redirect_uris IS NULL THEN
		RAISE EXCEPTION 'nothing to update for client "%"', client_id
			USING ERRCODE = '22023',
				  HINT = 'Give a new name, new redirect URIs, or both.';
	END IF;
	RETURN appguard.update_client(client_id, name, redirect_uris, NULL);
END
$$;
CREATE OR REPLACE FUNCTION appguard.evaluate_snapshot(p_snapshot_id bigint, p_sweep_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	drifted boolean := false;
BEGIN
	FOR c IN
		SELECT ch.client_id
		FROM appguard.snapshots s JOIN appguard.client_hosts ch ON ch.host = s.host AND ch.port = s.port
		WHERE s.id = p_snapshot_id
		ORDER BY ch.client_id
	LOOP
		IF appguard.evaluate_client(c.client_id, p_snapshot_id, p_sweep_id) THEN
			drifted := true;
		END IF;
	END LOOP;
	RETURN drifted;
END
$$;
CREATE OR REPLACE FUNCTION @extschema@.appguard_release_hold(hold_id bigint, client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	to_apply bigint[];
	superseded bigint[];
	tokens bigint;
	hold_state text;
	result jsonb;
BEGIN
	PERFORM appguard.hold_for_update(hold_id, client_id);
	-- the clients' rows first, in order, as every evaluation does
	PERFORM FROM appguard.clients c
	WHERE c.client_id IN (SELECT s.client_id FROM appguard.suspensions s
						  WHERE s.hold_id = appguard_release_hold.hold_id AND s.state = 'held'
							AND (appguard_release_hold.client_id IS NULL
								 OR s.client_id = appguard_release_hold.client_id))
	ORDER BY c.client_id FOR NO KEY UPDATE;
	-- (still drifting: by the verdict of the host the suspension names)
	SELECT coalesce(pg_catalog.array_agg(s.id ORDER BY s.id) FILTER (WHERE coalesce(bh.drifting, bs.drifting)), '{}'),
		   coalesce(pg_catalog.array_agg(s.id ORDER BY s.id)
						FILTER (WHERE NOT coalesce(bh.drifting, bs.drifting, false)), '{}')
	INTO to_apply, superseded
	FROM appguard.suspensions s
		 LEFT JOIN appguard.baseline_state bs ON bs.client_id = s.client_id
											 AND bs.baseline_snapshot_id = s.baseline_snapshot_id
		 LEFT JOIN appguard.baseline_host_state bh ON bh.client_id = s.client_id
												  AND bh.baseline_snapshot_id = s.baseline_snapshot_id
												  AND bh.host = s.host AND bh.port = s.port
	WHERE s.hold_id = appguard_release_hold.hold_id AND s.state = 'held'
	  AND (appguard_release_hold.client_id IS NULL OR s.client_id = appguard_release_hold.client_id);
	UPDATE appguard.suspensions s SET state = 'superseded', resolved_at = pg_catalog.now()
	WHERE s.id = ANY (superseded);
	tokens := appguard.apply_suspensions(to_apply);
	hold_state := appguard.close_hold_if_empty(hold_id, 'released');
	result := pg_catalog.jsonb_build_object(
		'hold_id', hold_id, 'client_id', client_id,
		'applied', pg_catalog.cardinality(to_apply), 'superseded', pg_catalog.cardinality(superseded),
		'tokens_suspended', tokens, 'hold_state', hold_state);
	PERFORM appguard.log_event('hold_released', client_id, result, hold_id => hold_id);
	RETURN result;
END
$$;
CREATE OR REPLACE FUNCTION @extschema@.appguard_sweep_begin(max_age interval, budget interval, batch_size integer DEFAULT 32)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stale record;
	orphan record;
	sweep bigint;
	n integer;
	err_state text;
	err_message text;
	err_detail text;
BEGIN
	-- 55000 when this session's settings did not hold (src/appguard.c)
	PERFORM appguard.setting('appguard.mass_drift_threshold');
	IF max_age IS NULL OR max_age < interval '0' OR max_age > interval '10000 years' THEN
		RAISE EXCEPTION 'max_age must be an interval from zero to 10000 years' USING ERRCODE = '22023';
	END IF;
	IF budget IS NULL OR budget <= interval '0' OR budget > interval '10000 years' THEN
		RAISE EXCEPTION 'budget must be a positive interval of at most 10000 years' USING ERRCODE = '22023';
	END IF;
	IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 1024 THEN
		RAISE EXCEPTION 'batch_size must be between 1 and 1024' USING ERRCODE = '22023';
	END IF;
	-- One sweep at a time.  A running sweep whose backend is gone, idle
	-- (its CALL ended without finishing it) or this one is finished as
	-- 'aborted': its pending suspensions go through the breaker with the
	-- counts it reached.  If that close raises, the stale sweep ends
	-- 'failed' (sweep_fail) and this one starts all the same.
	LOCK TABLE appguard.sweeps IN SHARE ROW EXCLUSIVE MODE;
	FOR stale IN
		SELECT w.id FROM appguard.sweeps w
		WHERE w.state = 'running'
		  AND (w.pid = pg_catalog.pg_backend_pid()
			   OR NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
							  WHERE a.pid = w.pid AND a.backend_start <= w.started_at
								AND a.state IS DISTINCT FROM 'idle'))
		ORDER BY w.id
	LOOP
		BEGIN
			PERFORM appguard.sweep_close(stale.id, 'aborted');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
									err_detail = PG_EXCEPTION_DETAIL;
			PERFORM appguard.sweep_fail(stale.id, 'aborted', err_state, err_message, err_detail);
		END;
	END LOOP;
	-- A suspension left pending for a sweep that has ended (a refresh
	-- check's evaluation that raced the sweep's close) would never be
	-- decided, and would keep its baseline from being suspended: failed.
	FOR orphan IN
		UPDATE appguard.suspensions s SET state = 'failed', resolved_at = pg_catalog.clock_timestamp()
		WHERE s.state = 'pending'
		  AND NOT EXISTS (SELECT FROM appguard.sweeps w WHERE w.id = s.sweep_id AND w.state = 'running')
		RETURNING s.id, s.client_id, s.snapshot_id, s.sweep_id, s.reasons
	LOOP
		PERFORM appguard.log_event('suspension_failed', orphan.client_id,
			pg_catalog.jsonb_build_object('reasons', pg_catalog.to_jsonb(orphan.reasons),
										  'detail', 'left pending after its sweep had ended'),
			snapshot_id => orphan.snapshot_id, suspension_id => orphan.id, sweep_id => orphan.sweep_id);
		RAISE WARNING 'appguard: suspension % of client "%" was left pending after sweep % ended; it is marked failed',
			orphan.id, orphan.client_id, orphan.sweep_id
			USING DETAIL = 'Its grants are refused at refresh while the drift lasts; the next snapshot suspends them.';
	END LOOP;
	SELECT w.id, w.pid INTO stale FROM appguard.sweeps w WHERE w.state = 'running' LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'sweep % is still running (backend pid %)', stale.id, stale.pid
			USING ERRCODE = '55000',
				  HINT = 'Let it finish; schedule sweeps further apart than their budget.';
	END IF;

	INSERT INTO appguard.sweeps (max_age, budget, batch_size, deadline)
	VALUES (max_age, budget, batch_size, pg_catalog.clock_timestamp() + budget)
	RETURNING id INTO sweep;
	INSERT INTO appguard.sweep_hosts (sweep_id, host, port, ord)
	SELECT sweep, t.host, t.port,
		   pg_catalog.row_number() OVER (ORDER BY l.taken_at NULLS FIRST, t.host, t.port)
	FROM (SELECT DISTINCT h.host, h.port FROM appguard.client_hosts h) t
		 LEFT JOIN LATERAL (SELECT s.taken_at FROM appguard.snapshots s
							WHERE s.host = t.host AND s.port = t.port
							ORDER BY s.taken_at DESC LIMIT 1) l ON true
	WHERE l.taken_at IS NULL OR l.taken_at < pg_catalog.clock_timestamp() - max_age;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE appguard.sweeps w SET planned = n WHERE w.id = sweep;
	PERFORM appguard.log_event('sweep_started',
		detail => pg_catalog.jsonb_build_object('max_age', max_age, 'budget', budget,
												'batch_size', batch_size, 'planned', n),
		sweep_id => sweep);
	RETURN sweep;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_register_client(text, text, text[]) IS
	'Register an OAuth client: its name and redirect URIs; every https redirect URI''s host is watched';
-- appguard_drift gained a column (host): its other watched hosts' differences
DROP FUNCTION @extschema@.appguard_drift(text);
CREATE FUNCTION @extschema@.appguard_drift(client_id text)
RETURNS TABLE (baseline_snapshot_id bigint, snapshot_id bigint, active_grants bigint,
			   reason text, severity text, field text, old_value jsonb, new_value jsonb, host text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cli record;
	latest bigint;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	SELECT c.client_id, c.host, c.port INTO cli FROM appguard.clients c
	WHERE c.client_id = appguard_drift.client_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'client "%" is not registered', client_id USING ERRCODE = 'P0002';
	END IF;
	-- the primary host
	SELECT s.id INTO latest FROM appguard.snapshots s
	WHERE s.host = cli.host AND s.port = cli.port
	ORDER BY s.taken_at DESC, s.id DESC LIMIT 1;
	IF latest IS NOT NULL THEN
		RETURN QUERY
		WITH b AS (
			SELECT r.baseline_snapshot_id AS baseline, pg_catalog.count(*) AS n
			FROM appguard.grant_states r
			WHERE r.client_id = cli.client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
			  AND r.baseline_snapshot_id <> latest
			GROUP BY r.baseline_snapshot_id
		)
		SELECT b.baseline, latest, b.n, d.reason::text, d.severity::text, d.field::text,
			   pg_catalog.to_jsonb(d.old_value), pg_catalog.to_jsonb(d.new_value), cli.host
		FROM b, @extschema@.appguard_diff(b.baseline, latest, cli.client_id) d
		WHERE d.severity <> 'ignore'
		ORDER BY b.baseline, d.severity = 'suspend' DESC, d.reason, d.field;
	END IF;
	RETURN QUERY
	WITH b AS (
		SELECT r.baseline_snapshot_id AS baseline, pg_catalog.count(*) AS n
		FROM appguard.grant_states r
		WHERE r.client_id = cli.client_id AND r.state = 'active' AND r.baseline_snapshot_id IS NOT NULL
		GROUP BY r.baseline_snapshot_id
	)
	SELECT b.baseline, l.id, b.n, d.reason::text, d.severity::text, d.field::text,
		   pg_catalog.to_jsonb(d.old_value), pg_catalog.to_jsonb(d.new_value), h.host
	FROM appguard.client_hosts h
		 CROSS JOIN LATERAL (SELECT s.id FROM appguard.snapshots s
							 WHERE s.host = h.host AND s.port = h.port
							 ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) l
		 JOIN appguard.baseline_hosts bh ON bh.client_id = h.client_id AND bh.host = h.host
										AND bh.port = h.port AND bh.snapshot_id <> l.id
		 JOIN b ON b.baseline = bh.baseline_snapshot_id
		 CROSS JOIN LATERAL @extschema@.appguard_diff(bh.snapshot_id, l.id, cli.client_id) d
	WHERE h.client_id = cli.client_id AND NOT h.is_primary AND d.severity <> 'ignore'
	ORDER BY h.host, h.port, b.baseline, d.severity = 'suspend' DESC, d.reason, d.field;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_drift(text) IS
	'Differences between each watched host''s latest snapshot and its baseline for each baseline of the client''s active grants';
COMMENT ON FUNCTION @extschema@.appguard_drifted(text) IS
	'True when a watched host''s latest snapshot drifts at suspend level from its baseline for any active grant';
REVOKE ALL ON FUNCTION @extschema@.appguard_drift(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.appguard_drift(text) TO appguard_auth_server, appguard_operator;
-- the API's new functions
CREATE FUNCTION @extschema@.appguard_register_client(client_id text, metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	watched jsonb;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	watched := appguard.check_client_metadata(metadata);
	RETURN appguard.register_client(client_id, coalesce(metadata ->> 'client_name', client_id),
		ARRAY(SELECT pg_catalog.jsonb_array_elements_text(metadata -> 'redirect_uris')), watched);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_register_client(text, jsonb) IS
	'Register an OAuth client from RFC 7591 client metadata; every redirect URI''s and metadata URL''s host is watched';
CREATE FUNCTION @extschema@.appguard_reregister_client(client_id text, metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	watched jsonb;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	watched := appguard.check_client_metadata(metadata);
	RETURN appguard.update_client(client_id, metadata ->> 'client_name',
		ARRAY(SELECT pg_catalog.jsonb_array_elements_text(metadata -> 'redirect_uris')), watched);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_reregister_client(text, jsonb) IS
	'Re-register a client from RFC 7591 client metadata: its redirect URIs and watched metadata URLs are replaced';

-- Every client's hosts from its redirect URIs.  0.1.0 recorded the other
-- redirect URIs without watching them: their hosts are watched from now
-- on, as hosts a re-registration adds (host_added, and their latest
-- successful snapshots taken into the baselines the grants hold).  A
-- client whose other https redirect URIs appguard cannot watch (an IP
-- address, a name that is not a DNS host name) keeps its primary host
-- alone, with a WARNING.
DO $$
DECLARE
	c record;
	changes jsonb;
	e jsonb;
BEGIN
	FOR c IN SELECT cl.client_id, cl.redirect_uris, cl.host, cl.port FROM appguard.clients cl ORDER BY cl.client_id LOOP
		BEGIN
			changes := appguard.set_client_hosts(c.client_id, c.redirect_uris, '{}');
		EXCEPTION WHEN invalid_parameter_value THEN
			RAISE WARNING 'appguard: client "%" has redirect URIs appguard cannot watch; only its primary host % is watched', c.client_id, c.host
				USING HINT = 'Re-register it with appguard_update_client and https redirect URIs that name DNS hosts.';
			changes := appguard.set_client_hosts(c.client_id, c.redirect_uris[1:1], '{}');
		END;
		FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(changes -> 'added') x
				 WHERE NOT x -> 'roles' ? 'primary_redirect' LOOP
			PERFORM appguard.log_event('host_added', c.client_id, e || '{"upgrade": "0.2.0"}');
			PERFORM appguard.take_host_baselines(c.client_id, e ->> 'host', (e ->> 'port')::integer, 'host_added');
		END LOOP;
	END LOOP;
END
$$;

-- privileges (as sql/parts/99_privileges.sql)
REVOKE ALL ON FUNCTION
	appguard.metadata_url_keys(),
	appguard.role_rank(text),
	appguard.check_client_metadata(jsonb),
	appguard.client_host_list(text[], jsonb),
	appguard.client_hosts_json(text),
	appguard.client_baselines(text),
	appguard.set_client_hosts(text, text[], jsonb),
	appguard.log_host_changes(text, jsonb),
	appguard.register_client(text, text, text[], jsonb),
	appguard.update_client(text, text, text[], jsonb),
	appguard.roles_text(text[]),
	appguard.take_host_baselines(text, text, integer, text, bigint, bigint[], boolean),
	appguard.evaluate_client_host(text, bigint, bigint, bigint[], bigint),
	appguard.evaluate_baselines(text, bigint, boolean, bigint[], bigint[], bigint, bigint),
	@extschema@.appguard_register_client(text, jsonb),
	@extschema@.appguard_reregister_client(text, jsonb)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.appguard_register_client(text, jsonb),
	@extschema@.appguard_reregister_client(text, jsonb)
TO appguard_auth_server, appguard_operator;
REVOKE ALL ON appguard.client_hosts, appguard.baseline_hosts, appguard.baseline_host_state FROM PUBLIC;
GRANT SELECT ON appguard.client_hosts, appguard.baseline_hosts, appguard.baseline_host_state TO appguard_operator;

-- ---- partitioned token tables (as sql/parts/32_protect.sql) ----
CREATE FUNCTION appguard.protected_root(p_rel regclass)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	root regclass;
BEGIN
	IF EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = p_rel) THEN
		RETURN p_rel;
	END IF;
	SELECT pt.tbl INTO root
	FROM pg_catalog.pg_partition_ancestors(p_rel) WITH ORDINALITY AS a(relid, n)
		 JOIN appguard.protected_tables pt ON pt.tbl = a.relid
	ORDER BY a.n LIMIT 1;
	RETURN root;
END
$$;

CREATE FUNCTION appguard.partition_attnums(p_rel regclass, p_names name[])
RETURNS smallint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN (SELECT pg_catalog.array_agg(a.attnum ORDER BY n.i)
			FROM pg_catalog.unnest(p_names) WITH ORDINALITY AS n(name, i)
				 LEFT JOIN pg_catalog.pg_attribute a
					 ON a.attrelid = p_rel AND a.attname = n.name AND NOT a.attisdropped);
END
$$;

CREATE FUNCTION appguard.cover_partitions(p_tbl regclass)
RETURNS regclass[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	leaf regclass;
	covered regclass[] := '{}';
BEGIN
	FOR leaf IN
		SELECT l.relid FROM pg_catalog.pg_partition_tree(p_tbl) l
			 JOIN pg_catalog.pg_class c ON c.oid = l.relid
		WHERE l.isleaf AND l.relid <> p_tbl AND c.relkind = 'r'
		  AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
						  WHERE t.tgrelid = l.relid AND t.tgname = 'appguard_protect_truncate')
		ORDER BY l.level, l.relid
	LOOP
		EXECUTE pg_catalog.format(
			'CREATE TRIGGER appguard_protect_truncate BEFORE TRUNCATE ON %s '
			'FOR EACH STATEMENT EXECUTE FUNCTION appguard.grant_sync(''truncate'')', leaf);
		covered := covered || leaf;
	END LOOP;
	RETURN covered;
END
$$;

CREATE FUNCTION appguard.adopt_rows(p_tbl regclass, p_from regclass)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	n bigint;
BEGIN
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	WITH adopted AS (
		SELECT h.v[1] AS token_key, h.v[2] AS client_id, h.v[4] AS subject, h.v[5] AS grant_key,
			   h.v[3] IS NOT DISTINCT FROM cfg.active_value AS active,
			   c.client_id IS NOT NULL AS registered,
			   CASE WHEN c.last_ok_at >= pg_catalog.clock_timestamp()
							- appguard.setting('appguard.baseline_max_age')::interval
					THEN c.last_ok_snapshot_id END AS recent
		FROM pg_catalog.unnest(appguard.as_table_owner(p_from, pg_catalog.format(
				'SELECT ARRAY[%1$s, %2$s, %3$s, %4$s, %5$s]::pg_catalog.text FROM %6$s h',
				appguard.printed_column(cfg.key_name), appguard.printed_column(cfg.client_name),
				appguard.printed_column(cfg.status_name), appguard.printed_column(cfg.subject_name),
				appguard.printed_column(cfg.grant_name), p_from::text))) AS r(row_text),
			 LATERAL (SELECT r.row_text::text[] AS v) h
			 LEFT JOIN appguard.clients c ON c.client_id = h.v[2]
		WHERE NOT EXISTS (SELECT FROM appguard.grants g
						  WHERE g.token_table = p_tbl AND g.token_key = h.v[1])
	), started AS (
		INSERT INTO appguard.consents (client_id, subject, baseline_snapshot_id)
		SELECT DISTINCT ON (a.client_id, a.subject) a.client_id, a.subject, a.recent
		FROM adopted a
		WHERE a.active AND a.registered AND a.subject IS NOT NULL
		ORDER BY a.client_id, a.subject
		ON CONFLICT (client_id, subject) DO NOTHING
		RETURNING client_id, subject, baseline_snapshot_id
	)
	INSERT INTO appguard.grants (token_table, token_key, client_id, state, baseline_snapshot_id,
								 subject, grant_key)
	SELECT p_tbl, a.token_key, a.client_id, CASE WHEN a.active THEN 'active' ELSE 'inactive' END,
		   CASE WHEN NOT a.active THEN NULL
				WHEN k.client_id IS NOT NULL THEN k.baseline_snapshot_id
				WHEN n.client_id IS NOT NULL THEN n.baseline_snapshot_id
				ELSE a.recent END,
		   a.subject, a.grant_key
	FROM adopted a
		 LEFT JOIN appguard.consents k ON k.client_id = a.client_id AND k.subject = a.subject
		 LEFT JOIN started n ON n.client_id = a.client_id AND n.subject = a.subject;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

CREATE FUNCTION appguard.forget_gone_rows(p_tbl regclass)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	keys text[];
	gone text[];
	n bigint;
BEGIN
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	IF cfg.key_name IS NULL THEN
		RETURN 0;
	END IF;
	SELECT pg_catalog.array_agg(g.token_key) INTO keys FROM appguard.grants g WHERE g.token_table = p_tbl;
	IF keys IS NULL THEN
		RETURN 0;
	END IF;
	gone := appguard.as_table_owner_keys(p_tbl, pg_catalog.format(
		'SELECT pg_catalog.array_agg(k.k) FROM pg_catalog.unnest($1) AS k(k) '
		'WHERE NOT EXISTS (SELECT FROM %s h WHERE %s OPERATOR(pg_catalog.=) k.k)',
		pg_catalog.format('%I.%I', cfg.schema_name, cfg.table_name),
		appguard.printed_column(cfg.key_name)), keys, '{}');
	DELETE FROM appguard.grants g WHERE g.token_table = p_tbl AND g.token_key = ANY (gone);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

CREATE FUNCTION appguard.partitions_changed(p_tbl regclass, p_context text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	covered regclass[] := '{}';
	leaf regclass;
	adopted bigint := 0;
	forgotten bigint := 0;
	left_tree regclass[] := '{}';
	t regclass;
BEGIN
	IF p_tbl IS NOT NULL THEN
		covered := appguard.cover_partitions(p_tbl);
		FOREACH leaf IN ARRAY covered LOOP
			adopted := adopted + appguard.adopt_rows(p_tbl, leaf);
		END LOOP;
	END IF;
	-- appguard's TRUNCATE trigger on a table no protected table holds
	FOR leaf IN
		SELECT t.tgrelid::regclass FROM pg_catalog.pg_trigger t
		WHERE t.tgname = 'appguard_protect_truncate' AND t.tgparentid = 0
		  AND t.tgfoid = 'appguard.grant_sync()'::pg_catalog.regprocedure
		  AND appguard.protected_root(t.tgrelid) IS NULL
		ORDER BY 1
	LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER appguard_protect_truncate ON %s', leaf);
		left_tree := left_tree || leaf;
	END LOOP;
	IF p_tbl IS NULL OR pg_catalog.cardinality(left_tree) > 0 THEN
		FOR t IN
			SELECT pt.tbl FROM appguard.protected_tables pt
				 JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
			WHERE c.relkind = 'p' ORDER BY pt.tbl
		LOOP
			forgotten := forgotten + appguard.forget_gone_rows(t);
		END LOOP;
	END IF;
	IF pg_catalog.cardinality(covered) + pg_catalog.cardinality(left_tree) + forgotten > 0 THEN
		PERFORM appguard.log_event('partitions_changed',
			detail => pg_catalog.jsonb_build_object('found_by', p_context,
				'partitions_covered', pg_catalog.to_jsonb(covered::text[]),
				'rows_adopted', adopted,
				'partitions_left', pg_catalog.to_jsonb(left_tree::text[]),
				'grants_forgotten', forgotten),
			token_table => p_tbl::text);
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION appguard.protection_problem(p_tbl regclass)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pt appguard.protected_tables;
	cfg record;
	con record;
	part record;
	verdict text[];
	printed text;
	trigger_name text;
BEGIN
	SELECT * INTO pt FROM appguard.protected_tables t WHERE t.tbl = p_tbl;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	IF cfg.key_name IS NULL THEN
		RETURN 'its primary key, client_id or status column was dropped';
	END IF;
	IF pt.error_uri_attnum IS NOT NULL AND cfg.error_uri_name IS NULL THEN
		RETURN 'its error_uri column was dropped';
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
			   WHERE a.attrelid = p_tbl AND a.attnum = pt.status_attnum AND a.attgenerated <> '') THEN
		RETURN pg_catalog.format('its status column "%s" is generated', cfg.status_name);
	END IF;
	BEGIN
		printed := appguard.column_value(p_tbl, pt.status_attnum, pt.suspended_value, 'suspended_value');
		IF printed IS DISTINCT FROM pt.suspended_value THEN
			RETURN pg_catalog.format('its status column "%s" (%s) reads the suspended value "%s" as "%s"',
									 cfg.status_name, cfg.status_type, pt.suspended_value, printed);
		END IF;
		printed := appguard.column_value(p_tbl, pt.status_attnum, pt.active_value, 'active_value');
		IF printed IS DISTINCT FROM pt.active_value THEN
			RETURN pg_catalog.format('its status column "%s" (%s) reads the active value "%s" as "%s"',
									 cfg.status_name, cfg.status_type, pt.active_value, printed);
		END IF;
	EXCEPTION WHEN invalid_parameter_value THEN
		RETURN pg_catalog.format('its status column "%s" (%s) does not take the value: %s',
								 cfg.status_name, cfg.status_type, SQLERRM);
	END;
	FOR con IN
		SELECT c.conname, pg_catalog.pg_get_expr(c.conbin, c.conrelid) AS expr
		FROM pg_catalog.pg_constraint c
		WHERE c.conrelid = p_tbl AND c.contype = 'c' AND c.conkey = ARRAY[pt.status_attnum]
		ORDER BY c.conname
	LOOP
		BEGIN
			verdict := appguard.as_table_owner(p_tbl,
				pg_catalog.format('SELECT (%s)::pg_catalog.text FROM (SELECT $1::%s AS %I) AS h',
								  con.expr, cfg.status_type, cfg.status_name),
				ARRAY[pt.suspended_value]);
		EXCEPTION WHEN OTHERS THEN
			verdict := ARRAY['error: ' || SQLERRM];
		END;
		IF verdict[1] IS DISTINCT FROM 'true' AND verdict[1] IS NOT NULL THEN
			RETURN pg_catalog.format('its CHECK constraint "%s" rejects the suspended value "%s"',
									 con.conname, pt.suspended_value);
		END IF;
	END LOOP;
	FOREACH trigger_name IN ARRAY appguard.protect_trigger_names() LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
					   WHERE t.tgrelid = p_tbl AND t.tgname = trigger_name AND t.tgenabled <> 'D') THEN
			RETURN pg_catalog.format('appguard''s trigger %s on it is missing or disabled', trigger_name);
		END IF;
	END LOOP;
	-- Its partitions: every leaf an ordinary table, with the row triggers
	-- cloned from it and appguard's TRUNCATE trigger, enabled
	FOR part IN
		SELECT l.relid, c.relkind FROM pg_catalog.pg_partition_tree(p_tbl) l
			 JOIN pg_catalog.pg_class c ON c.oid = l.relid
		WHERE l.isleaf AND l.relid <> p_tbl
		ORDER BY l.level, l.relid
	LOOP
		IF part.relkind <> 'r' THEN
			RETURN pg_catalog.format('its partition %s is not an ordinary table', part.relid::regclass);
		END IF;
		FOREACH trigger_name IN ARRAY appguard.protect_trigger_names() LOOP
			IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
						   WHERE t.tgrelid = part.relid AND t.tgname = trigger_name AND t.tgenabled <> 'D') THEN
				RETURN pg_catalog.format('appguard''s trigger %s on its partition %s is missing or disabled',
										 trigger_name, part.relid::regclass);
			END IF;
		END LOOP;
	END LOOP;
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.appguard_unprotect(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qualified text;
	trigger_name text;
	part regclass;
	result jsonb;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	IF NOT EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = appguard_unprotect.tbl) THEN
		RAISE EXCEPTION 'table % is not protected by appguard', tbl USING ERRCODE = '22023';
	END IF;
	IF tbl = 'appguard.refresh_tokens'::regclass THEN
		RAISE EXCEPTION 'appguard.refresh_tokens is always protected' USING ERRCODE = '22023';
	END IF;
	-- (from the catalog: the columns appguard used may be gone)
	SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
	FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid = tbl;
	-- Wait for drift evaluations in flight and keep new ones out, before
	-- any lock on the host table, as appguard_protect does: an evaluation
	-- locks clients, then the host's rows and appguard's grants, which
	-- this deletes.  Then the lock DROP TRIGGER takes: a fan-out in flight
	-- on the table commits before the rows are counted.
	LOCK TABLE appguard.clients IN SHARE MODE;
	EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', qualified);
	result := pg_catalog.jsonb_build_object(
		'table', tbl::text,
		'rows_forgotten', (SELECT pg_catalog.count(*) FROM appguard.grants pr
						   WHERE pr.token_table = appguard_unprotect.tbl),
		'rows_left_suspended', (SELECT pg_catalog.count(*) FROM appguard.grant_states pr
								WHERE pr.token_table = appguard_unprotect.tbl AND pr.state = 'suspended'));
	-- forgotten before its triggers go, which the DDL check would report
	DELETE FROM appguard.protected_tables pt WHERE pt.tbl = appguard_unprotect.tbl;
	DELETE FROM appguard.grants g WHERE g.token_table = appguard_unprotect.tbl;
	FOREACH trigger_name IN ARRAY appguard.protect_trigger_names() LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, qualified);
	END LOOP;
	-- (the row triggers' clones on partitions go with them; the partitions'
	-- TRUNCATE triggers are appguard's own)
	FOR part IN
		SELECT t.tgrelid::regclass FROM pg_catalog.pg_partition_tree(tbl) l
			 JOIN pg_catalog.pg_trigger t ON t.tgrelid = l.relid
		WHERE l.relid <> tbl AND t.tgname = 'appguard_protect_truncate' AND t.tgparentid = 0
		ORDER BY 1
	LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER appguard_protect_truncate ON %s', part);
	END LOOP;
	PERFORM appguard.log_event('table_unprotected', detail => result, token_table => tbl::text);
	IF (result ->> 'rows_left_suspended')::bigint > 0 THEN
		RAISE NOTICE '% rows of % stay suspended', result ->> 'rows_left_suspended', tbl
			USING DETAIL = 'appguard suspended them because their app''s facts drifted; unprotecting does not re-enable them.';
	END IF;
	RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION appguard.protected_table_dropped()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	gone record;
	t regclass;
BEGIN
	FOR gone IN
		DELETE FROM appguard.protected_tables pt
		USING pg_catalog.pg_event_trigger_dropped_objects() d
		WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
		  AND d.objid = pt.tbl::oid
		RETURNING d.objid, d.object_identity
	LOOP
		DELETE FROM appguard.grants g WHERE g.token_table::oid = gone.objid;
		PERFORM appguard.log_event('table_dropped', token_table => gone.object_identity);
	END LOOP;
	-- A dropped table that carried appguard's triggers without being
	-- protected itself: a partition of a protected table, whose rows'
	-- grants go with it (appguard.partitions_changed)
	IF EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
			   WHERE d.classid = 'pg_catalog.pg_trigger'::regclass
				 AND d.address_names[3] = ANY (appguard.protect_trigger_names())
				 AND EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() dt
							 WHERE dt.classid = 'pg_catalog.pg_class'::regclass AND dt.objsubid = 0
							   AND dt.address_names = d.address_names[1:2])) THEN
		PERFORM appguard.partitions_changed(NULL, pg_catalog.lower(TG_TAG));
	END IF;
	-- A protected table one of whose appguard triggers was dropped (an
	-- ALTER TABLE that drops one is checked at its end instead:
	-- protected_table_altered)
	IF TG_TAG <> 'ALTER TABLE' THEN
		FOR t IN
			SELECT DISTINCT pt.tbl
			FROM pg_catalog.pg_event_trigger_dropped_objects() d
				 JOIN pg_catalog.pg_class c ON c.relname = d.address_names[2]
				 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = d.address_names[1]
				 JOIN appguard.protected_tables pt ON pt.tbl = appguard.protected_root(c.oid)
			WHERE d.classid = 'pg_catalog.pg_trigger'::regclass
			  AND d.address_names[3] = ANY (appguard.protect_trigger_names())
			ORDER BY pt.tbl
		LOOP
			PERFORM appguard.recheck_table(t, 'drop trigger');
		END LOOP;
	END IF;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'appguard could not forget a dropped protected table: %', SQLERRM;
END
$$;

CREATE OR REPLACE FUNCTION appguard.protected_table_altered()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regclass;
	partitioned boolean;
BEGIN
	FOR t, partitioned IN
		SELECT pt.tbl, c.relkind = 'p'
		FROM appguard.protected_tables pt JOIN pg_catalog.pg_class c ON c.oid = pt.tbl
		WHERE TG_TAG IN ('ALTER DOMAIN', 'ALTER TYPE')
		   OR pt.tbl IN (SELECT appguard.protected_root(d.objid)
						 FROM pg_catalog.pg_event_trigger_ddl_commands() d
						 WHERE d.classid = 'pg_catalog.pg_class'::regclass)
		   OR pt.tbl IN (SELECT appguard.protected_root(tr.tgrelid)
						 FROM pg_catalog.pg_event_trigger_ddl_commands() d
							  JOIN pg_catalog.pg_trigger tr ON tr.oid = d.objid
						 WHERE d.classid = 'pg_catalog.pg_trigger'::regclass)
		ORDER BY pt.tbl
	LOOP
		-- (a partition created, attached or detached: see partitions_changed)
		IF partitioned AND TG_TAG IN ('CREATE TABLE', 'ALTER TABLE') THEN
			PERFORM appguard.partitions_changed(t, pg_catalog.lower(TG_TAG));
		END IF;
		PERFORM appguard.recheck_table(t, pg_catalog.lower(TG_TAG));
	END LOOP;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'appguard could not check protected tables after %: %', TG_TAG, SQLERRM;
END
$$;

-- (it now follows CREATE TABLE too: a partition created in a protected table)
DROP EVENT TRIGGER appguard_protected_table_altered;
CREATE EVENT TRIGGER appguard_protected_table_altered ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER DOMAIN', 'ALTER TYPE', 'ALTER TRIGGER')
	EXECUTE FUNCTION appguard.protected_table_altered();

REVOKE ALL ON FUNCTION appguard.protected_root(regclass),
	appguard.partition_attnums(regclass, name[]),
	appguard.cover_partitions(regclass),
	appguard.adopt_rows(regclass, regclass),
	appguard.forget_gone_rows(regclass),
	appguard.partitions_changed(regclass, text)
FROM PUBLIC;
-- END partitioned token tables

-- BEGIN undecided suspensions of a client's other hosts (clients.hosts_undecided)
-- The suspension that holds the client's grants on baseline p_baseline
-- (any baseline when NULL) because another watched host than the primary
-- drifted: the newest suspension of some (baseline, host) in one of
-- p_states, whose host verdict is still confirmed drifted; the newest
-- such.  NULL if none.  With the default states, pending (its sweep has
-- not decided) or failed (its sweep could not), it refuses a refresh;
-- applied, a grant that came on the baseline after the fan-out joins it
-- (appguard.verify_grant).  The primary's own are verify_grant's.
-- VOLATILE: each call reads what has committed (appguard.sweep_close
-- clears hosts_undecided with it).
CREATE FUNCTION appguard.other_host_blocking(p_client_id text, p_baseline bigint,
											 p_states text[] DEFAULT '{pending,failed}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	blocking bigint;
BEGIN
	SELECT s.id INTO blocking
	FROM appguard.suspensions s
		 JOIN appguard.baseline_host_state bh
			 ON bh.client_id = s.client_id AND bh.baseline_snapshot_id = s.baseline_snapshot_id
			AND bh.host = s.host AND bh.port = s.port
	WHERE s.client_id = p_client_id
	  AND (p_baseline IS NULL OR s.baseline_snapshot_id = p_baseline)
	  AND s.state = ANY (p_states)
	  AND bh.drifting AND bh.streak >= appguard.setting('appguard.confirmations')::integer
	  AND NOT EXISTS (SELECT FROM appguard.suspensions u
					  WHERE u.client_id = s.client_id AND u.baseline_snapshot_id = s.baseline_snapshot_id
						AND u.host = s.host AND u.port = s.port AND u.id > s.id)
	ORDER BY s.id DESC
	LIMIT 1;
	RETURN blocking;
END
$$;

CREATE OR REPLACE FUNCTION appguard.verify_grant(p_client_id text, p_baseline bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cli record;
	max_age interval;
	sweep bigint;
	verdict record;
	decided record;
	blocking bigint;
BEGIN
	IF p_client_id IS NULL OR p_baseline IS NULL THEN
		RETURN NULL;		-- baseline pending: nothing to compare with yet
	END IF;
	SELECT c.last_snapshot_id, c.last_snapshot_at INTO cli
	FROM appguard.clients c WHERE c.client_id = p_client_id;
	IF NOT FOUND THEN
		RETURN NULL;		-- unregistered client: left alone
	END IF;
	-- Another watched host's suspension its sweep has not decided, or
	-- could not: refused, as the primary's are below (fail closed).
	blocking := appguard.other_host_blocking(p_client_id, p_baseline);
	IF blocking IS NOT NULL THEN
		RETURN blocking;
	END IF;
	-- Another watched host's applied suspension of this baseline: it holds
	-- this grant too (a token rotated or issued after it was applied), as
	-- the primary's do below.
	blocking := appguard.other_host_blocking(p_client_id, p_baseline, '{applied}');
	IF blocking IS NOT NULL THEN
		PERFORM appguard.lock_client_for_refresh(p_client_id);
		PERFORM appguard.apply_suspensions(ARRAY[blocking]);
		RETURN NULL;
	END IF;
	max_age := appguard.setting('appguard.refresh_max_age')::interval;
	IF max_age > interval '0'
	   AND (cli.last_snapshot_at IS NULL OR cli.last_snapshot_at < pg_catalog.clock_timestamp() - max_age) THEN
		-- (held during the measurement, at most appguard.baseline_timeout_ms:
		-- the new snapshot's evaluation needs them)
		PERFORM appguard.lock_client_for_refresh(p_client_id);
		PERFORM appguard.live_snapshot(p_client_id, 'refresh');
		SELECT c.last_snapshot_id, c.last_snapshot_at INTO cli
		FROM appguard.clients c WHERE c.client_id = p_client_id;
	END IF;
	IF cli.last_snapshot_id IS NULL OR cli.last_snapshot_id = p_baseline THEN
		RETURN NULL;
	END IF;
	SELECT bs.evaluated_snapshot_id, bs.drifting, bs.streak INTO verdict
	FROM appguard.baseline_state bs
	WHERE bs.client_id = p_client_id AND bs.baseline_snapshot_id = p_baseline;
	IF FOUND AND verdict.evaluated_snapshot_id = cli.last_snapshot_id THEN
		IF NOT (verdict.drifting
				AND verdict.streak >= appguard.setting('appguard.confirmations')::integer) THEN
			RETURN NULL;	-- compared, and not (yet) to be suspended
		END IF;
		-- Confirmed drifted: what was decided for this baseline's grants
		-- holds for this one too.  Applied: apply it to this grant as well.
		-- Held: the operator decides for it too.  Pending or failed:
		-- refused (fail closed).  Discarded or superseded: the operator's
		-- decision stands until the next snapshot.
		SELECT s.id, s.state INTO decided FROM appguard.suspensions s
		WHERE s.client_id = p_client_id AND s.baseline_snapshot_id = p_baseline
		ORDER BY s.id DESC LIMIT 1;
		IF FOUND THEN
			IF decided.state = 'applied' THEN
				PERFORM appguard.lock_client_for_refresh(p_client_id);
				PERFORM appguard.apply_suspensions(ARRAY[decided.id]);
			ELSIF decided.state IN ('pending', 'failed') THEN
				RETURN decided.id;
			END IF;
			RETURN NULL;
		END IF;
	END IF;
	-- Not compared with the latest snapshot yet: compare now.
	SELECT h.sweep_id INTO sweep
	FROM appguard.sweep_hosts h JOIN appguard.sweeps w ON w.id = h.sweep_id
	WHERE h.snapshot_id = cli.last_snapshot_id AND w.state = 'running';
	PERFORM appguard.lock_client_for_refresh(p_client_id);
	PERFORM appguard.evaluate_client(p_client_id, cli.last_snapshot_id, sweep, ARRAY[p_baseline]);
	-- The same rule on the verdict just reached: a suspension left pending
	-- for the running sweep, or one already pending or failed (which the
	-- evaluation does not replace), refuses the grant.
	SELECT s.id INTO blocking
	FROM appguard.baseline_state bs
		 CROSS JOIN LATERAL (SELECT s.id, s.state FROM appguard.suspensions s
							 WHERE s.client_id = bs.client_id
							   AND s.baseline_snapshot_id = bs.baseline_snapshot_id
							 ORDER BY s.id DESC LIMIT 1) s
	WHERE bs.client_id = p_client_id AND bs.baseline_snapshot_id = p_baseline
	  AND bs.drifting AND bs.streak >= appguard.setting('appguard.confirmations')::integer
	  AND s.state IN ('pending', 'failed');
	RETURN blocking;
END
$$;

CREATE OR REPLACE FUNCTION appguard.sweep_close(p_sweep_id bigint, p_state text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w appguard.sweeps;
	pending bigint[];
	threshold double precision;
	min_hosts integer;
	tripped boolean;
	hold bigint;
	n_applied integer := 0;
	n_held integer := 0;
	n_tokens bigint := 0;
	summary jsonb;
BEGIN
	w := appguard.running_sweep(p_sweep_id);
	IF w.state <> 'running' THEN
		RETURN appguard.sweep_summary(p_sweep_id);
	END IF;
	-- the open hold before any client row (see part 4)
	SELECT h.id INTO hold FROM appguard.holds h WHERE h.state = 'open' FOR UPDATE;
	PERFORM appguard.sweep_evaluate(p_sweep_id);
	SELECT * INTO w FROM appguard.sweeps s WHERE s.id = p_sweep_id;

	threshold := appguard.setting('appguard.mass_drift_threshold')::double precision;
	min_hosts := appguard.setting('appguard.mass_drift_min_hosts')::integer;
	tripped := w.measured >= min_hosts AND w.drifted > threshold * w.measured;
	pending := ARRAY(SELECT s.id FROM appguard.suspensions s
					 WHERE s.sweep_id = p_sweep_id AND s.state = 'pending' ORDER BY s.id);

	IF pg_catalog.cardinality(pending) > 0 THEN
		IF tripped OR hold IS NOT NULL THEN
			IF hold IS NULL THEN
				INSERT INTO appguard.holds (sweep_id, hosts_measured, hosts_drifted, threshold, min_hosts)
				VALUES (p_sweep_id, w.measured, w.drifted, threshold, min_hosts)
				RETURNING id INTO hold;
				PERFORM appguard.log_event('hold_opened', detail => pg_catalog.jsonb_build_object(
					'hosts_measured', w.measured, 'hosts_drifted', w.drifted,
					'threshold', threshold, 'min_hosts', min_hosts), hold_id => hold, sweep_id => p_sweep_id);
			END IF;
			UPDATE appguard.suspensions s SET state = 'held', hold_id = hold
			WHERE s.id = ANY (pending);
			n_held := pg_catalog.cardinality(pending);
			PERFORM appguard.log_event('suspensions_held',
				detail => pg_catalog.jsonb_build_object('suspensions', pg_catalog.to_jsonb(pending),
														'breaker_tripped', tripped),
				hold_id => hold, sweep_id => p_sweep_id);
			RAISE WARNING 'appguard: % suspension(s) found by sweep % are held (hold %)', n_held, p_sweep_id, hold
				USING DETAIL = CASE WHEN tripped
					THEN pg_catalog.format('%s of the %s hosts measured drifted, more than the mass-drift threshold of %s.',
										   w.drifted, w.measured, threshold)
					ELSE 'An earlier hold is still open; new suspensions join it.' END,
					  HINT = pg_catalog.format('Inspect appguard.held_suspensions, then call appguard_release_hold(%s) to apply them or appguard_discard_hold(%s) to drop them.', hold, hold);
			PERFORM pg_catalog.pg_notify('appguard_hold', hold::text);
		ELSE
			PERFORM FROM appguard.clients c
			WHERE c.client_id IN (SELECT s.client_id FROM appguard.suspensions s WHERE s.id = ANY (pending))
			ORDER BY c.client_id FOR NO KEY UPDATE;
			n_tokens := appguard.apply_suspensions(pending);
			n_applied := pg_catalog.cardinality(pending);
		END IF;
	ELSIF tripped THEN
		RAISE WARNING 'appguard: % of the % hosts measured by sweep % drifted', w.drifted, w.measured, p_sweep_id
			USING DETAIL = 'Nothing is confirmed yet (appguard.confirmations); the next sweep may hold suspensions.';
	END IF;
	-- Decided: the refresh check's fast path may serve these clients again
	-- unless another host's suspension still refuses (a failed one, one
	-- of a sweep still running).  The rows are locked first, so that the
	-- UPDATE's own reads see the evaluations that committed meanwhile.
	PERFORM FROM appguard.clients c WHERE c.hosts_undecided ORDER BY c.client_id FOR NO KEY UPDATE;
	UPDATE appguard.clients c SET hosts_undecided = false
	WHERE c.hosts_undecided AND appguard.other_host_blocking(c.client_id, NULL) IS NULL;

	UPDATE appguard.sweeps s
	SET state = p_state, finished_at = pg_catalog.clock_timestamp(),
		suspended = n_applied, held = n_held, tokens_suspended = n_tokens,
		hold_id = CASE WHEN n_held > 0 THEN hold END
	WHERE s.id = p_sweep_id;
	summary := appguard.sweep_summary(p_sweep_id);
	PERFORM appguard.log_event('sweep_finished', detail => summary,
							   sweep_id => p_sweep_id, hold_id => CASE WHEN n_held > 0 THEN hold END);
	RAISE LOG 'appguard: sweep % %: % of % hosts measured (% failed, % drifted), % skipped, % suspension(s) applied, % held, in % s',
		p_sweep_id, p_state, summary ->> 'measured', summary ->> 'planned', summary ->> 'failed',
		summary ->> 'drifted', summary ->> 'skipped', n_applied, n_held,
		pg_catalog.round(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) w.started_at)::numeric, 3);
	RETURN summary;
END
$$;

REVOKE ALL ON FUNCTION appguard.other_host_blocking(text, bigint, text[]) FROM PUBLIC;

-- END undecided suspensions of a client's other hosts

-- BEGIN tables Citus must not take
CREATE FUNCTION appguard.refuse_citus_shards()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	shard numeric;
	first_shard numeric;
	last_shard numeric;
	prot regclass;
BEGIN
	FOR r IN
		SELECT c.oid, c.relname, c.relnamespace, d.object_identity
		FROM pg_catalog.pg_event_trigger_ddl_commands() d
			 JOIN pg_catalog.pg_class c ON c.oid = d.objid
		WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
		  AND c.relkind IN ('r', 'p') AND c.relname ~ '_[0-9]+$'
	LOOP
		IF r.relnamespace = 'appguard'::regnamespace THEN
			RAISE EXCEPTION '% would be a Citus shard of an appguard table', r.object_identity
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = 'appguard keeps its own tables local on every node: Citus cannot make them reference, distributed or Citus local tables.',
					  HINT = 'See docs/citus.md.';
		END IF;
		IF last_shard IS NULL THEN
			IF pg_catalog.to_regclass('pg_catalog.pg_dist_shardid_seq') IS NULL THEN
				RETURN;				-- no Citus here
			END IF;
			EXECUTE 'SELECT s.seqmin, q.last_value FROM pg_catalog.pg_sequence s, pg_catalog.pg_dist_shardid_seq q '
					'WHERE s.seqrelid = ''pg_catalog.pg_dist_shardid_seq''::regclass'
				INTO first_shard, last_shard;
		END IF;
		shard := pg_catalog.substring(r.relname, '_([0-9]+)$')::numeric;
		CONTINUE WHEN shard < first_shard OR shard > last_shard;
		prot := appguard.protected_root(r.oid);
		IF prot IS NULL THEN
			SELECT appguard.protected_root(c.oid) INTO prot
			FROM pg_catalog.pg_class c
			WHERE c.relnamespace = r.relnamespace AND c.oid <> r.oid
			  AND c.relname = pg_catalog.substring(r.relname, '^(.*)_[0-9]+$');
		END IF;
		IF prot = r.oid THEN			-- (renamed: named here as it was)
			RAISE EXCEPTION 'protected table %.% would become a Citus table',
				pg_catalog.quote_ident(r.relnamespace::regnamespace::text),
				pg_catalog.quote_ident(pg_catalog.substring(r.relname, '^(.*)_[0-9]+$'))
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = pg_catalog.format('Citus is renaming it to %s, its shard. appguard does not guard Citus tables.', r.object_identity),
					  HINT = 'appguard_unprotect the table first; see docs/citus.md.';
		ELSIF prot IS NOT NULL THEN
			RAISE EXCEPTION 'protected table % would become a Citus table', prot
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = pg_catalog.format('Citus is making %s, a shard of it. appguard does not guard Citus tables: its triggers on shards would guard nothing.', r.object_identity),
					  HINT = 'appguard_unprotect the table first; see docs/citus.md.';
		END IF;
	END LOOP;
END
$$;
CREATE EVENT TRIGGER appguard_refuse_citus_shards ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
	EXECUTE FUNCTION appguard.refuse_citus_shards();

REVOKE ALL ON FUNCTION appguard.refuse_citus_shards() FROM PUBLIC;
-- END tables Citus must not take

-- ---- every address of a host (issue 14, part 2) ----
-- The new drift reason's policy row, as the install script seeds it (no
-- policy_insert event, as at install), and the words for its fields.
ALTER TABLE appguard.policy DISABLE TRIGGER appguard_policy_audit;
INSERT INTO appguard.policy (reason, severity, description)
SELECT r.reason, r.default_severity, r.description
FROM @extschema@.appguard_drift_reasons() AS r
WHERE r.reason = 'tls_address_mismatch';
ALTER TABLE appguard.policy ENABLE TRIGGER appguard_policy_audit;

CREATE OR REPLACE FUNCTION appguard.field_label(field text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN $1 LIKE 'tls\_addresses[%].subject\_o'
			THEN 'organization in the certificate at the app''s server address '
				 || pg_catalog.substring($1, '^tls_addresses\[(.*)\]\.subject_o$')
		WHEN $1 LIKE 'tls\_addresses[%].verify\_error'
			THEN 'certificate trust at the app''s server address '
				 || pg_catalog.substring($1, '^tls_addresses\[(.*)\]\.verify_error$')
		ELSE CASE $1
		WHEN 'tls.leaf.subject.O' THEN 'organization in the certificate'
		WHEN 'tls.leaf.subject.OU' THEN 'organizational unit in the certificate'
		WHEN 'tls.leaf.subject.C' THEN 'country in the certificate'
		WHEN 'tls.leaf.subject.ST' THEN 'state or province in the certificate'
		WHEN 'tls.leaf.subject.L' THEN 'locality in the certificate'
		WHEN 'tls.leaf.issuer.O' THEN 'certificate authority'
		WHEN 'tls.leaf.validation' THEN 'validation class of the certificate'
		WHEN 'tls.verified' THEN 'certificate trust'
		WHEN 'tls.verify_error' THEN 'certificate trust'
		WHEN 'tls.version' THEN 'TLS version'
		WHEN 'dns.ownership_ids' THEN 'ownership record in DNS'
		WHEN 'dns.rcode' THEN 'domain in DNS'
		WHEN 'dns.ns' THEN 'name servers of the domain'
		WHEN 'dns.cname' THEN 'alias (CNAME) of the host'
		WHEN 'dns.caa' THEN 'certificate authorities allowed by the domain (CAA)'
		WHEN 'dns.ad' THEN 'DNSSEC validation'
		WHEN 'status' THEN 'reachability of the app'
		ELSE $1 END END
$$;

CREATE OR REPLACE FUNCTION appguard.value_text(v jsonb, field text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN ($1 IS NULL OR $1 = 'null'::jsonb)
					 AND ($2 = 'tls.verify_error' OR $2 LIKE 'tls\_addresses[%].verify\_error') THEN 'trusted'
				WHEN ($1 IS NULL OR $1 = 'null'::jsonb) AND $2 = 'dns.ownership_ids' THEN 'absent'
				WHEN $2 = 'dns.ownership_ids' THEN 'present for ' || ($1 #>> '{}')
				WHEN $2 = 'dns.rcode' AND $1 = '"NOERROR"'::jsonb THEN 'exists'
				WHEN $2 = 'dns.rcode' AND $1 = '"NXDOMAIN"'::jsonb THEN 'does not exist'
				WHEN $1 IS NULL OR $1 = 'null'::jsonb THEN '(none)'
				WHEN pg_catalog.jsonb_typeof($1) = 'string' THEN $1 #>> '{}'
				WHEN pg_catalog.jsonb_typeof($1) = 'array' AND pg_catalog.jsonb_array_length($1) = 0 THEN '(none)'
				WHEN pg_catalog.jsonb_typeof($1) = 'array'
					THEN (SELECT pg_catalog.string_agg(CASE WHEN pg_catalog.jsonb_typeof(e) = 'string'
															THEN e #>> '{}' ELSE e::text END, ', ')
						  FROM pg_catalog.jsonb_array_elements($1) e)
				ELSE $1::text END
$$;
-- END every address of a host

-- ---- appguard.allowed_networks: the address policy's decision (as sql/parts/10_snapshots.sql) ----
CREATE FUNCTION @extschema@.appguard_address_allowed(addr inet, allow_private boolean, networks text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'appguard_address_allowed'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.appguard_address_allowed(inet, boolean, text) IS
	'Whether a probe may connect to the address, given appguard.allow_private_addresses and appguard.allowed_networks';
REVOKE ALL ON FUNCTION @extschema@.appguard_address_allowed(inet, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.appguard_address_allowed(inet, boolean, text) TO appguard_operator;

-- ---- appguard.refresh_tokens' status rules: in the protected table's own triggers (as sql/parts/38_refresh_tokens.sql) ----
DROP TRIGGER appguard_status_guard_insert ON appguard.refresh_tokens;
DROP TRIGGER appguard_status_guard ON appguard.refresh_tokens;
DROP FUNCTION appguard.refresh_token_status_guard();


-- ---- the status trigger without a WHEN clause (as sql/parts/32_protect.sql) ----
-- each protected table's status trigger again, without its WHEN clause
-- (appguard's event triggers idle meanwhile: the table is never without
-- its trigger once this commits, and no problem is to be recorded)
DO $$
DECLARE
	t record;
	role_before text := pg_catalog.current_setting('session_replication_role');
BEGIN
	PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
	FOR t IN
		SELECT c.* FROM appguard.protected_tables pt,
			 LATERAL appguard.protected_table_columns(pt.tbl) c
		ORDER BY pt.tbl
	LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER appguard_protect_status ON %I.%I',
								  t.schema_name, t.table_name);
		EXECUTE pg_catalog.format(
			'CREATE TRIGGER appguard_protect_status AFTER UPDATE OF %I ON %I.%I '
			'FOR EACH ROW EXECUTE FUNCTION appguard.grant_sync(''status'')',
			t.status_name, t.schema_name, t.table_name);
	END LOOP;
	PERFORM pg_catalog.set_config('session_replication_role', role_before, true);
END
$$;


-- ---- expiring certificates of every watched host and address (as sql/parts/37_operations.sql) ----
-- (a column more, address: the function and its view are made again)
DROP VIEW appguard.expiring_certificates;
DROP FUNCTION @extschema@.appguard_expiring_certificates(integer);
CREATE FUNCTION @extschema@.appguard_expiring_certificates(within_days integer DEFAULT 30)
RETURNS TABLE (client_id text, name text, host text, port integer, snapshot_id bigint,
			   not_after timestamptz, days_left integer, verified boolean, address text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF within_days IS NULL OR within_days NOT BETWEEN 0 AND 3650000 THEN
		RAISE EXCEPTION 'within_days must be from 0 to 3650000 (10000 years)' USING ERRCODE = '22023';
	END IF;
	RETURN QUERY
	SELECT h.client_id, c.name, h.host, h.port, o.id, a.not_after,
		   pg_catalog.floor(pg_catalog.date_part('epoch', a.not_after - pg_catalog.now()) / 86400)::integer,
		   a.verified, a.address
	FROM appguard.client_hosts h
		 JOIN appguard.clients c ON c.client_id = h.client_id
		 CROSS JOIN LATERAL (
			SELECT s.id, s.facts
			FROM appguard.snapshots s
			WHERE s.host = h.host AND s.port = h.port AND s.status = 'ok'
			ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) o
		 CROSS JOIN LATERAL (
			SELECT e ->> 'address' AS address, (e ->> 'not_after')::timestamptz AS not_after,
				   (e ->> 'verified')::boolean AS verified
			FROM pg_catalog.jsonb_array_elements(
					 CASE WHEN pg_catalog.jsonb_typeof(o.facts -> 'tls_addresses') = 'array'
						  THEN o.facts -> 'tls_addresses' ELSE '[]' END) e
			WHERE e ->> 'status' = 'ok' AND e ? 'not_after'
			UNION ALL
			SELECT o.facts -> 'tls' ->> 'address', (o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz,
				   (o.facts -> 'tls' ->> 'verified')::boolean
			WHERE NOT pg_catalog.jsonb_path_exists(o.facts, '$.tls_addresses[*] ? (@.status == "ok" && exists(@.not_after))')) a
	WHERE a.not_after < pg_catalog.now() + pg_catalog.make_interval(days => within_days)
	ORDER BY a.not_after, h.client_id, h.host, h.port, a.address;
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_expiring_certificates(integer) IS
	'Certificates of the hosts clients'' grants trust, at each address measured, that expire within N days (default 30)';

CREATE VIEW appguard.expiring_certificates AS
	SELECT * FROM @extschema@.appguard_expiring_certificates(30);
COMMENT ON VIEW appguard.expiring_certificates IS 'Certificates of watched hosts expiring within 30 days (appguard_expiring_certificates(N) for another horizon)';
REVOKE ALL ON FUNCTION @extschema@.appguard_expiring_certificates(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.appguard_expiring_certificates(integer) TO appguard_operator;
GRANT SELECT ON appguard.expiring_certificates TO appguard_operator;


-- ---- the consent screen's label in PL/pgSQL (as sql/parts/50_consent.sql) ----
CREATE OR REPLACE FUNCTION appguard.consent_label(app_name text, domain text, organization text,
									   location text, ownership_verified boolean,
									   OUT level text, OUT label text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	level := CASE WHEN consent_label.organization IS NOT NULL THEN 'organization'
				  WHEN consent_label.ownership_verified THEN 'domain'
				  ELSE 'unverified' END;
	label := consent_label.app_name || ' ' || pg_catalog.chr(8212) || ' ' || CASE level	-- an em dash
		WHEN 'organization' THEN consent_label.organization || coalesce(', ' || consent_label.location, '')
								 || ' (' || consent_label.domain
								 || CASE WHEN consent_label.ownership_verified
										 THEN ', domain ownership verified' ELSE '' END || ')'
		WHEN 'domain' THEN consent_label.domain || ' (domain ownership verified; organization not verified)'
		ELSE consent_label.domain || ' (organization and domain ownership not verified)' END;
END
$$;


-- ---- the snapshots trigger in C, for the rows no client watches (as sql/parts/33_suspension.sql) ----
CREATE FUNCTION appguard.snapshot_inserted_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_snapshot_inserted_check'
LANGUAGE C;
REVOKE ALL ON FUNCTION appguard.snapshot_inserted_check() FROM PUBLIC;
DROP TRIGGER appguard_evaluate ON appguard.snapshots;
CREATE TRIGGER appguard_evaluate AFTER INSERT ON appguard.snapshots
	FOR EACH ROW EXECUTE FUNCTION appguard.snapshot_inserted_check();


-- ---- the C<->SQL contract lists appguard.client_hosts' plain index (as sql/parts/34_refresh.sql) ----
-- keyread_contract() gains index_is_primary: its result type changes, so
-- it is made again, with the install script's privileges (99_privileges:
-- nobody but its owner may execute it).
DROP FUNCTION appguard.keyread_contract();
CREATE FUNCTION appguard.keyread_contract(OUT table_name text, OUT index_name text,
										  OUT index_is_primary boolean,
										  OUT key_columns text[], OUT columns text[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'appguard_keyread_contract'
LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION appguard.keyread_contract() FROM PUBLIC;


-- ---- a fan-out writes the host rows of a held baseline's grants, not the grants (issue 11) ----
-- An applied suspension holds its baseline (appguard.clients.held_baselines,
-- appguard.baseline_hold); appguard.grant_states shows an active grant on a
-- held baseline suspended.  The rows of 0.1.0 take that shape: the
-- baselines of applied suspensions are held; an active grant on one (the
-- host re-enabled it) records the suspension it was let go from; a grant
-- suspended on a held baseline is active in appguard.grants, its
-- suspension read from the hold.  (The functions this change rewrote that
-- the script makes further up are made there in their final form; here:
-- what is new, the functions it had not touched before, and the views,
-- which read appguard.grant_states.)
ALTER TABLE appguard.clients ADD COLUMN held_baselines bigint[] NOT NULL DEFAULT '{}';

CREATE FUNCTION appguard.baseline_hold(p_client_id text, p_baseline bigint)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT s.id FROM appguard.suspensions s
	WHERE s.client_id = p_client_id AND s.baseline_snapshot_id = p_baseline AND s.state = 'applied'
	ORDER BY s.id DESC LIMIT 1
$$;

REVOKE ALL ON FUNCTION appguard.baseline_hold(text, bigint) FROM PUBLIC;

CREATE FUNCTION appguard.baseline_unheld(p_client_id text, p_baseline bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM appguard.clients c
				   WHERE c.client_id = p_client_id AND p_baseline = ANY (c.held_baselines)) THEN
		RETURN true;
	END IF;
	RETURN EXISTS (SELECT FROM appguard.grants r
				   WHERE r.client_id = p_client_id AND r.baseline_snapshot_id = p_baseline
					 AND r.state = 'active'
					 AND r.suspension_id = appguard.baseline_hold(p_client_id, p_baseline));
END
$$;

REVOKE ALL ON FUNCTION appguard.baseline_unheld(text, bigint) FROM PUBLIC;

CREATE VIEW appguard.grant_states AS
SELECT g.token_table, g.token_key, g.client_id,
	   CASE WHEN h.id IS NOT NULL THEN 'suspended' ELSE g.state END AS state,
	   g.baseline_snapshot_id,
	   coalesce(h.id, g.suspension_id) AS suspension_id,
	   CASE WHEN h.id IS NOT NULL THEN GREATEST(h.applied_at, g.created_at)
			ELSE g.suspended_at END AS suspended_at,
	   coalesce(h.error_uri, g.error_uri) AS error_uri,
	   g.created_at, g.reapproved_at, g.subject, g.grant_key
FROM appguard.grants g
	 LEFT JOIN appguard.clients c
		 ON g.state = 'active' AND c.client_id = g.client_id
		AND g.baseline_snapshot_id = ANY (c.held_baselines)
	 LEFT JOIN LATERAL (
		SELECT x.id, x.applied_at, x.error_uri
		FROM (SELECT s.id, s.applied_at, s.error_uri FROM appguard.suspensions s
			  WHERE s.client_id = g.client_id AND s.baseline_snapshot_id = g.baseline_snapshot_id
				AND s.state = 'applied'
			  ORDER BY s.id DESC LIMIT 1) x
		WHERE x.id IS DISTINCT FROM g.suspension_id) h ON c.client_id IS NOT NULL;

COMMENT ON VIEW appguard.grant_states IS 'Every grant as its state is: an active grant on a baseline held by an applied suspension is suspended';

REVOKE ALL ON appguard.grant_states FROM PUBLIC;
GRANT SELECT ON appguard.grant_states TO appguard_operator;

CREATE FUNCTION appguard.grant_effective(g appguard.grants)
RETURNS appguard.grants
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	shown appguard.grants;
BEGIN
	SELECT gs.* INTO shown FROM appguard.grant_states gs
	WHERE gs.token_table = g.token_table AND gs.token_key = g.token_key;
	IF NOT FOUND THEN
		RETURN g;				-- (no row under the key: nothing to show)
	END IF;
	RETURN shown;
END
$$;

REVOKE ALL ON FUNCTION appguard.grant_effective(appguard.grants) FROM PUBLIC;

UPDATE appguard.clients c SET held_baselines = h.baselines
FROM (SELECT s.client_id,
			 pg_catalog.array_agg(DISTINCT s.baseline_snapshot_id ORDER BY s.baseline_snapshot_id) AS baselines
	  FROM appguard.suspensions s WHERE s.state = 'applied' GROUP BY s.client_id) h
WHERE c.client_id = h.client_id;
UPDATE appguard.grants g SET suspension_id = appguard.baseline_hold(g.client_id, g.baseline_snapshot_id)
FROM appguard.clients c
WHERE g.state = 'active' AND c.client_id = g.client_id AND g.baseline_snapshot_id = ANY (c.held_baselines);
UPDATE appguard.grants g SET state = 'active', suspension_id = NULL, suspended_at = NULL, error_uri = NULL
FROM appguard.clients c
WHERE g.state = 'suspended' AND c.client_id = g.client_id AND g.baseline_snapshot_id = ANY (c.held_baselines);

DROP FUNCTION appguard.write_host_suspensions(regclass, text[], text);

CREATE FUNCTION appguard.write_host_suspensions(p_tbl regclass, p_keys text[], p_uri text,
												p_count_only boolean DEFAULT false,
												p_held_again bigint[] DEFAULT '{}')
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
	partitioned boolean;
	rows_of text;			-- the rows of the keys: FROM/WHERE of both statements
	write_sql text;
	written text[];
	still text[];
	again text[];
BEGIN
	IF coalesce(pg_catalog.cardinality(p_keys), 0) = 0 THEN
		RETURN CASE WHEN p_count_only THEN '{0}' ELSE '{}' END::text[];
	END IF;
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	IF cfg.table_name IS NULL THEN
		RAISE EXCEPTION 'the columns appguard writes in table % are gone', p_tbl
			USING ERRCODE = '42703';
	END IF;
	-- A partitioned table: a key found through the primary key is looked up
	-- in every partition (appguard does not know which holds it), so the
	-- keys are joined with the table instead, and the planner chooses
	-- between those look-ups and one read of the table.
	partitioned := (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = p_tbl) = 'p';
	rows_of := pg_catalog.format(
		CASE WHEN partitioned THEN '%1$s h, pg_catalog.unnest($1::%3$s[]) AS k(k) WHERE h.%2$I = k.k'
			 ELSE '%1$s h WHERE h.%2$I = ANY ($1::%3$s[])' END,
		pg_catalog.format('%I.%I', cfg.schema_name, cfg.table_name), cfg.key_name, cfg.key_type);
	write_sql := pg_catalog.format(
		'WITH w AS (UPDATE %1$s SET %2$I = %3$L::%4$s %5$s %6$s AND h.%2$I = %7$L::%4$s RETURNING h.%8$I) '
		'SELECT %9$s FROM w',
		pg_catalog.format('%I.%I h', cfg.schema_name, cfg.table_name),
		cfg.status_name, cfg.suspended_value, cfg.status_type,
		CASE WHEN cfg.error_uri_name IS NOT NULL
			 THEN pg_catalog.format(', %I = $2[1]', cfg.error_uri_name) ELSE '' END,
		CASE WHEN partitioned THEN pg_catalog.format('FROM pg_catalog.unnest($1::%s[]) AS k(k) WHERE h.%I = k.k',
													   cfg.key_type, cfg.key_name)
			 ELSE pg_catalog.format('WHERE h.%I = ANY ($1::%s[])', cfg.key_name, cfg.key_type) END,
		cfg.active_value, cfg.key_name,
		CASE WHEN p_count_only THEN 'ARRAY[pg_catalog.count(*)::pg_catalog.text]'
			 ELSE pg_catalog.format('pg_catalog.array_agg(w.%I::pg_catalog.text)', cfg.key_name) END);
	written := coalesce(appguard.as_table_owner_keys(p_tbl, write_sql, p_keys, ARRAY[p_uri]), '{}');
	IF (CASE WHEN p_count_only THEN written[1]::bigint ELSE pg_catalog.cardinality(written) END)
	   >= pg_catalog.cardinality(p_keys) THEN
		RETURN written;
	END IF;
	-- Rows that did not have the active value: the host may be writing one
	-- of them right now (re-enabling a row that the statement above saw
	-- suspended).  The rows are locked, waiting for such a write, and their
	-- grants read again as they are now: a grant the host re-enabled as we
	-- wrote is left alone (appguard.grant_status let it go), unless it was
	-- let go by one of the suspensions p_held_again, which are being
	-- applied again and hold it again; the rows of the grants still held
	-- that have the active value now are written.  (The host's trigger,
	-- waiting for the rows this statement wrote, reads the suspension once
	-- it commits.)
	PERFORM appguard.as_table_owner_keys(p_tbl, pg_catalog.format(
		'WITH l AS (SELECT FROM %s FOR UPDATE OF h) SELECT ARRAY[pg_catalog.count(*)::pg_catalog.text] FROM l',
		rows_of), p_keys, NULL);
	IF pg_catalog.cardinality(p_held_again) > 0 THEN
		EXECUTE 'UPDATE appguard.grants g SET suspension_id = NULL '
				'WHERE g.token_table = $1 AND g.token_key = ANY ($2) AND g.state = ''active'' '
				'AND g.suspension_id = ANY ($3)'
			USING p_tbl, p_keys, p_held_again;
	END IF;
	EXECUTE 'SELECT pg_catalog.array_agg(g.token_key) FROM appguard.grant_states g '
			'WHERE g.token_table = $1 AND g.token_key = ANY ($2) AND g.state = ''suspended'''
		INTO still USING p_tbl, p_keys;
	again := coalesce(appguard.as_table_owner_keys(p_tbl, write_sql, coalesce(still, '{}'), ARRAY[p_uri]),
					  CASE WHEN p_count_only THEN '{0}' ELSE '{}' END::text[]);
	RETURN CASE WHEN p_count_only
				THEN ARRAY[(written[1]::bigint + again[1]::bigint)::text]
				ELSE written || again END;
END
$$;

REVOKE ALL ON FUNCTION appguard.write_host_suspensions(regclass, text[], text, boolean, bigint[]) FROM PUBLIC;



CREATE FUNCTION appguard.host_row_active(p_tbl regclass, p_row_key text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
BEGIN
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	IF cfg.table_name IS NULL THEN
		RETURN false;
	END IF;
	RETURN coalesce(pg_catalog.cardinality(appguard.as_table_owner(p_tbl, pg_catalog.format(
		'SELECT true FROM %I.%I h WHERE h.%I = $1::%s AND h.%I = %L::%s',
		cfg.schema_name, cfg.table_name, cfg.key_name, cfg.key_type,
		cfg.status_name, cfg.active_value, cfg.status_type), ARRAY[p_row_key])), 0) > 0;
END
$$;

REVOKE ALL ON FUNCTION appguard.host_row_active(regclass, text) FROM PUBLIC;

CREATE FUNCTION appguard.write_host_active(p_tbl regclass, p_row_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cfg record;
BEGIN
	SELECT * INTO cfg FROM appguard.protected_table_columns(p_tbl);
	RETURN coalesce(pg_catalog.cardinality(appguard.as_table_owner(p_tbl, pg_catalog.format(
		'UPDATE %I.%I h SET %I = %L::%s %s WHERE h.%I = $1::%s AND h.%I = %L::%s RETURNING true',
		cfg.schema_name, cfg.table_name, cfg.status_name, cfg.active_value, cfg.status_type,
		CASE WHEN cfg.error_uri_name IS NOT NULL
			 THEN pg_catalog.format(', %I = NULL', cfg.error_uri_name) ELSE '' END,
		cfg.key_name, cfg.key_type, cfg.status_name, cfg.suspended_value, cfg.status_type),
		ARRAY[p_row_key])), 0) > 0;
END
$$;

REVOKE ALL ON FUNCTION appguard.write_host_active(regclass, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION appguard.recheck_table(p_tbl regclass, p_context text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
	had text;
	rec record;
	written bigint;
BEGIN
	SELECT pt.problem INTO had FROM appguard.protected_tables pt WHERE pt.tbl = p_tbl FOR UPDATE;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	problem := appguard.protection_problem(p_tbl);
	IF problem IS NOT NULL THEN
		PERFORM appguard.record_table_problem(p_tbl, problem, '55000', p_context);
		RETURN problem;
	END IF;
	IF had IS NULL THEN
		RETURN NULL;
	END IF;
	-- The rows appguard suspended meanwhile, per error_uri (one per suspension)
	BEGIN
		PERFORM appguard.set_applying(true);
		written := 0;
		FOR rec IN
			SELECT r.error_uri, pg_catalog.array_agg(r.token_key) AS keys
			FROM appguard.grant_states r WHERE r.token_table = p_tbl AND r.state = 'suspended'
			GROUP BY r.error_uri
		LOOP
			written := written + pg_catalog.cardinality(
				appguard.write_host_suspensions(p_tbl, rec.keys, rec.error_uri));
		END LOOP;
		PERFORM appguard.set_applying(false);
	EXCEPTION WHEN OTHERS THEN
		PERFORM appguard.record_table_problem(p_tbl, SQLERRM, SQLSTATE, p_context);
		RETURN SQLERRM;
	END;
	UPDATE appguard.protected_tables pt SET problem = NULL, problem_sqlstate = NULL, problem_at = NULL
	WHERE pt.tbl = p_tbl;
	PERFORM appguard.log_event('table_problem_cleared',
		detail => pg_catalog.jsonb_build_object('problem', had, 'found_by', p_context,
												'rows_written', written),
		token_table => p_tbl::text);
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION appguard.grant_of(p_tbl regclass, p_row_key text)
RETURNS appguard.grants
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r appguard.grants;
BEGIN
	IF p_tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	IF p_row_key IS NULL THEN
		RAISE EXCEPTION 'row_key must not be null' USING ERRCODE = '22023';
	END IF;
	IF NOT EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = p_tbl) THEN
		RAISE EXCEPTION 'table % is not protected by appguard', p_tbl
			USING ERRCODE = '22023',
				  HINT = 'Protect it with appguard_protect.';
	END IF;
	SELECT * INTO r FROM appguard.grants g WHERE g.token_table = p_tbl AND g.token_key = p_row_key;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no row with key "%" in protected table %', pg_catalog.left(p_row_key, 100), p_tbl
			USING ERRCODE = 'P0002',
				  HINT = 'Give the row''s primary key as text.';
	END IF;
	RETURN appguard.grant_effective(r);
END
$$;

CREATE OR REPLACE FUNCTION appguard.check_row_refresh_full(tbl regclass, row_key text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r appguard.grants;
	blocking bigint;
BEGIN
	r := appguard.grant_of(tbl, row_key);
	IF r.state = 'active' THEN
		blocking := appguard.verify_grant(r.client_id, r.baseline_snapshot_id);
		IF blocking IS NOT NULL THEN
			RETURN appguard.refusal(true, (SELECT s.error_uri FROM appguard.suspensions s
										   WHERE s.id = blocking));
		END IF;
		r := appguard.grant_of(tbl, row_key);
		IF r.state = 'active' THEN
			RETURN '{"allowed": true}'::jsonb;
		END IF;
	END IF;
	IF r.state = 'suspended' THEN
		-- a grant its baseline's hold suspends whose host row still has the
		-- active value (it committed as the fan-out ran): its row is written
		-- now.  No lock of the app is taken (the host holds this row): the
		-- write locks the row, then the grant is read again, and if a
		-- re-approval committed meanwhile the row is given its active value
		-- back.  Counted as the suspension's; a table appguard cannot write
		-- now is left to appguard_recheck_table.
		IF EXISTS (SELECT FROM appguard.grants g
				   WHERE g.token_table = tbl AND g.token_key = row_key AND g.state = 'active')
		   AND NOT EXISTS (SELECT FROM appguard.protected_tables pt
						   WHERE pt.tbl = check_row_refresh_full.tbl AND pt.problem IS NOT NULL)
		   AND appguard.host_row_active(tbl, row_key) THEN
			PERFORM appguard.set_applying(true);
			IF pg_catalog.cardinality(
				   appguard.write_host_suspensions_or_record(tbl, ARRAY[row_key], r.error_uri)) > 0 THEN
				IF (appguard.grant_of(tbl, row_key)).state <> 'suspended' THEN
					PERFORM appguard.write_host_active(tbl, row_key);
					PERFORM appguard.set_applying(false);
					RETURN appguard.check_row_refresh_full(tbl, row_key);	-- re-approved meanwhile
				END IF;
				UPDATE appguard.suspensions s SET tokens_suspended = s.tokens_suspended + 1
				WHERE s.id = r.suspension_id;
			END IF;
			PERFORM appguard.set_applying(false);
		END IF;
		RETURN appguard.refusal(true, r.error_uri);
	END IF;
	RETURN appguard.refusal(false, NULL);		-- the host's own decision
END
$$;

-- the drift state of every watched host (its grants read in appguard.grant_states)
CREATE OR REPLACE VIEW appguard.client_status AS
	SELECT c.client_id, c.name, c.host, c.port, c.registrable_domain,
		   c.last_snapshot_id AS latest_snapshot_id, c.last_snapshot_at AS latest_snapshot_at,
		   c.last_status AS latest_status,
		   c.last_ok_snapshot_id AS latest_ok_snapshot_id, c.last_ok_at AS latest_ok_at,
		   (o.facts -> 'tls' ->> 'verified')::boolean AS verified,
		   (o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz AS certificate_expires_at,
		   pg_catalog.floor(pg_catalog.date_part('epoch',
				(o.facts -> 'tls' -> 'leaf' ->> 'not_after')::timestamptz - pg_catalog.now()) / 86400)::integer
				AS days_until_expiry,
		   CASE WHEN c.last_ok_snapshot_id IS NULL THEN 'unmeasured'
				WHEN d.drifting THEN 'drifting'
				WHEN d.warn THEN 'warn'
				ELSE 'ok' END AS drift_state,
		   coalesce(g.active, 0) AS active_grants,
		   coalesce(g.suspended, 0) AS suspended_grants,
		   coalesce(g.pending, 0) AS pending_baselines,
		   (SELECT pg_catalog.count(*) FROM appguard.suspensions s
			WHERE s.client_id = c.client_id AND s.state = 'held') AS held_suspensions
	FROM appguard.clients c
		 LEFT JOIN appguard.snapshots o ON o.id = c.last_ok_snapshot_id
		 LEFT JOIN LATERAL (
			-- (every watched host's verdicts)
			SELECT pg_catalog.bool_or(bs.drifting) AS drifting,
				   pg_catalog.bool_or(bs.last_diff @> '[{"severity": "warn"}]') AS warn
			FROM (SELECT bs.client_id, bs.baseline_snapshot_id, bs.drifting, bs.last_diff
				  FROM appguard.baseline_state bs
				  UNION ALL
				  SELECT bh.client_id, bh.baseline_snapshot_id, bh.drifting, bh.last_diff
				  FROM appguard.baseline_host_state bh) bs
			WHERE bs.client_id = c.client_id
			  AND bs.baseline_snapshot_id IN (SELECT gr.baseline_snapshot_id FROM appguard.grant_states gr
											  WHERE gr.client_id = c.client_id AND gr.state = 'active')
		 ) d ON true
		 LEFT JOIN LATERAL (
			SELECT pg_catalog.count(*) FILTER (WHERE gr.state = 'active') AS active,
				   pg_catalog.count(*) FILTER (WHERE gr.state = 'suspended') AS suspended,
				   pg_catalog.count(*) FILTER (WHERE gr.state = 'active' AND gr.baseline_snapshot_id IS NULL) AS pending
			FROM appguard.grant_states gr WHERE gr.client_id = c.client_id
		 ) g ON true;

CREATE OR REPLACE VIEW appguard.open_suspensions AS
	SELECT s.id AS suspension_id, s.client_id, c.name, s.reasons, s.applied_at AS suspended_at,
		   s.baseline_snapshot_id, s.snapshot_id, s.error_uri, s.tokens_suspended,
		   n.still_suspended
	FROM appguard.suspensions s
		 JOIN (SELECT gr.suspension_id, pg_catalog.count(*) AS still_suspended
			   FROM appguard.grant_states gr
			   WHERE gr.state = 'suspended' AND gr.suspension_id IS NOT NULL
			   GROUP BY gr.suspension_id) n ON n.suspension_id = s.id
		 LEFT JOIN appguard.clients c ON c.client_id = s.client_id
	WHERE s.state = 'applied';

CREATE OR REPLACE VIEW appguard.held_suspensions AS
	SELECT h.id AS hold_id, h.opened_at, h.hosts_measured, h.hosts_drifted, h.threshold,
		   s.id AS suspension_id, s.client_id, c.name, c.host, s.reasons, s.diff,
		   s.created_at AS detected_at, s.sweep_id,
		   (SELECT pg_catalog.count(*) FROM appguard.grant_states gr
			WHERE gr.client_id = s.client_id AND gr.state = 'active'
			  AND gr.baseline_snapshot_id = s.baseline_snapshot_id) AS active_grants
	FROM appguard.suspensions s
		 JOIN appguard.holds h ON h.id = s.hold_id
		 LEFT JOIN appguard.clients c ON c.client_id = s.client_id
	WHERE s.state = 'held';

CREATE OR REPLACE VIEW appguard.table_problems AS
	SELECT pt.tbl AS token_table, pt.problem, pt.problem_sqlstate, pt.problem_at,
		   (SELECT pg_catalog.count(*) FROM appguard.grant_states r
			WHERE r.token_table = pt.tbl AND r.state = 'suspended') AS rows_suspended
	FROM appguard.protected_tables pt
	WHERE pt.problem IS NOT NULL;
