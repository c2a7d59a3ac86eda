---------------------------------------------------------------------------
-- Lifecycle, part 3: grants, and the token tables that hold them
--
-- One model for every token table.  appguard_protect guards a token table
-- without altering it (no column is added); appguard.refresh_tokens,
-- appguard's own table for auth servers that start fresh, is protected
-- the same way at install (38_refresh_tokens).  appguard keeps its state of
-- each grant (client, baseline, suspension, error_uri) in appguard.grants,
-- keyed by the table and the row's primary key as text, kept in step by
-- row triggers on the token table:
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
--
-- Nothing of the table's owner runs with appguard's rights: the triggers
-- read the key, client and status columns through their types' output
-- functions (appguard.row_texts, src/hostrow.c), never through casts,
-- operators or to_jsonb of the row; every statement on the host table,
-- and every evaluation of a value of its types (the active and suspended
-- values, its CHECK constraints), runs as the table's owner in a
-- security-restricted operation (appguard.as_table_owner, 25_table_owner).
-- Values are compared as the text their type's output function prints.
--
-- Failures stay with their table.  appguard_protect refuses a status
-- column that is generated, or whose type or CHECK constraints reject the
-- suspended value.  DDL that later breaks that (a dropped or altered
-- status column, a new CHECK, disabled triggers) is found by an event
-- trigger, and a fan-out whose write to the host table fails anyway keeps
-- that failure to the table: appguard.record_table_problem records it
-- (protected_tables.problem), raises a WARNING and a NOTIFY
-- appguard_table_problem, and still suspends the rows in its own state, so
-- their refresh checks answer not allowed; other tables, apps and the
-- sweep go on.  Once the problem is gone (the next DDL, or
-- appguard_recheck_table), the host rows are written.
---------------------------------------------------------------------------

-- Read by C (src/keyread.c, KT_PROTECTED_TABLES): index
-- protected_tables_pkey on (tbl); columns key_attnum, client_attnum,
-- status_attnum, active_value, subject_attnum, grant_attnum.
CREATE TABLE appguard.protected_tables (
	tbl					regclass PRIMARY KEY,
	key_attnum			smallint NOT NULL,
	client_attnum		smallint NOT NULL,
	status_attnum		smallint NOT NULL,
	error_uri_attnum	smallint,
	subject_attnum		smallint,			-- the patient (subject) of a row: its consent
	grant_attnum		smallint,			-- equal values: one grant (rotated rows)
	active_value		text NOT NULL,		-- as the status column's type prints it
	suspended_value		text NOT NULL,
	protected_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	protected_by		text NOT NULL DEFAULT session_user,
	problem				text,				-- why appguard cannot write the table now, or NULL
	problem_sqlstate	text,
	problem_at			timestamptz
);
COMMENT ON TABLE appguard.protected_tables IS 'Token tables of an auth server guarded by appguard_protect';

-- The state of every guarded grant, one row per row of a protected table
-- (appguard.refresh_tokens is one, protected at install): its client,
-- appguard's state of it (active; suspended by appguard; inactive: the host
-- gave it any other status, or wrote its status itself), the baseline the
-- patient consented against (NULL: pending, the client's next successful
-- snapshot becomes it), and the suspension that holds it.
-- Read by C (src/keyread.c, KT_GRANTS): index grants_pkey on
-- (token_table, token_key); columns state, client_id, baseline_snapshot_id,
-- created_at, subject, grant_key (src/grantwrite.c inserts them),
-- suspension_id.
CREATE TABLE appguard.grants (
	token_table				regclass NOT NULL,	-- a protected table (no foreign key: it would
												-- lock that table's row at every consent; its
												-- grants go with it in appguard_unprotect and
												-- when the table is dropped)
	token_key				text NOT NULL,		-- the row's primary key, as its type prints it
	client_id				text,
	state					text NOT NULL CHECK (state IN ('active', 'suspended', 'inactive')),
	baseline_snapshot_id	bigint,
	suspension_id			bigint,
	suspended_at			timestamptz,
	error_uri				text,
	created_at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	reapproved_at			timestamptz,
	subject					text,				-- the row's subject (its consent), if the table names one
	grant_key				text,				-- the row's grant (rotated rows share it), if named
	PRIMARY KEY (token_table, token_key)
);
COMMENT ON TABLE appguard.grants IS 'Every guarded grant (a row of a protected token table, appguard.refresh_tokens included): state, baseline, suspension, error_uri';
COMMENT ON COLUMN appguard.grants.baseline_snapshot_id IS 'Snapshot the grant consented against; NULL = pending (the client''s next successful snapshot becomes it)';
-- Evaluations read the distinct baselines of a client's active grants and
-- suspend the grants of drifted baselines through this index.
CREATE INDEX grants_client_baseline
	ON appguard.grants (client_id, baseline_snapshot_id) WHERE state = 'active';
-- The rows of one consent (re-approval finds a grant's newest row)
CREATE INDEX grants_consent ON appguard.grants (client_id, subject, created_at)
	WHERE subject IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('appguard.grants', '');

-- A patient's consent to a client: what the patient approved, which every
-- grant (token row) of that patient for that client is held to.  A row of
-- a table protected with a subject column joins its subject's consent: a
-- rotated token, or a new grant after a remembered approval, takes the
-- consent's baseline, never the client's latest snapshot, and is inserted
-- suspended when that baseline's suspension is applied.  The baseline
-- moves only when the patient approves again: a consent screen shown by
-- appguard_consent_info(client_id, subject) and followed by a token within
-- appguard.consent_window (shown_snapshot_id becomes the baseline), or
-- appguard_reapprove.  Kept while any of its grants lives (appguard_prune
-- removes the others).
-- Read by C (src/keyread.c, KT_CONSENTS): index consents_pkey on
-- (client_id, subject); columns baseline_snapshot_id, shown_snapshot_id,
-- shown_at, approved_at, created_at.  A first consent is inserted by C
-- (src/grantwrite.c) when the table is as declared here: no trigger, no
-- row security, no default but created_at's now() and approved_at's.
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

-- Whether tbl is a table Citus manages (distributed, reference or Citus
-- local: pg_dist_partition), or one of its shards.  Read through dynamic
-- SQL: Citus is optional, and its catalog exists only where it is
-- installed.
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

-- Tables Citus must not take (docs/citus.md).  Citus makes a table a
-- reference, distributed or Citus local table by creating its shards,
-- named <table>_<shard id>, beside it on the nodes that hold them, or, for
-- a Citus local table (citus_add_local_table_to_metadata, or a foreign key
-- to a reference table), by renaming the table so on the coordinator and
-- putting a shell in its place.  Refused here, on the node that makes the
-- shard, so that Citus aborts the command on every node:
--   * appguard's own tables.  appguard's C code reads them by name through
--     their indexes, so a table Citus took would be read empty (its shell)
--     while SQL statements reached its shards; and an extension's table
--     that Citus took cannot be given back (undistribute_table: "cannot
--     alter table because an extension depends on it"), and blocks every
--     ALTER EXTENSION UPDATE.  (No table of appguard's own has a name
--     ending in _<digits>.)
--   * a protected table, or a partition of one, renamed to a shard's name
--     (it would become a Citus local table's shard, its record and grants
--     following it, the auth server's statements going to the shell), and
--     a shard of one created on this node (a reference table's, or a
--     distributed table's on a node that holds shards).  A shard's name
--     ends in an id Citus has drawn from pg_dist_shardid_seq.  The shards a
--     distributed table gets on workers, which know nothing of the table's
--     protection, refuse every token INSERT instead (src/refresh.c).
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
CREATE FUNCTION appguard.grant_baseline(p_client_id text)
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
			- appguard.setting('appguard.baseline_max_age')::interval THEN
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
CREATE FUNCTION appguard.grant_track(p_tbl regclass, p_key text, p_client_id text,
											 p_active boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO appguard.grants AS r
		(token_table, token_key, client_id, state, baseline_snapshot_id)
	VALUES (p_tbl, p_key, p_client_id, CASE WHEN p_active THEN 'active' ELSE 'inactive' END,
			CASE WHEN p_active THEN appguard.grant_baseline(p_client_id) END)
	ON CONFLICT (token_table, token_key) DO UPDATE
	SET client_id = EXCLUDED.client_id, state = EXCLUDED.state,
		baseline_snapshot_id = EXCLUDED.baseline_snapshot_id,
		suspension_id = NULL, suspended_at = NULL, error_uri = NULL,
		created_at = pg_catalog.now(), reapproved_at = NULL;
END
$$;

-- Write the host rows of table p_tbl of one consent (p_client_id,
-- p_subject) on baseline p_baseline that suspension p_suspension_id
-- holds (appguard.grant_states) but that still have the active value: rows
-- that joined the consent while its suspension was being applied.  Their
-- grants are suspended already (the baseline is held); this makes their
-- host rows say so.  Returns the number of host rows written.
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

-- A new active row of a table protected with a subject column, when the
-- consent trigger could not settle it in C (src/refresh.c: it settles a
-- row whose subject's consent exists, was not just shown a consent screen,
-- and whose baseline no applied suspension holds).  The row joins its
-- subject's consent (appguard.consents):
--   * a consent screen shown to the subject within appguard.consent_window
--     (appguard_consent_info(client_id, subject)): the patient approved what
--     it showed, which becomes the consent's baseline;
--   * else an existing consent: its baseline (a rotation, or a remembered
--     approval), and if the latest suspension of that baseline is applied,
--     the row is suspended at once (its status and error_uri written as
--     the table's owner);
--   * else a new consent, with the baseline a grant issued now takes
--     (appguard.grant_baseline).
-- An unregistered client's row is tracked without a consent (left alone).
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

-- The host wrote a row's status itself.
CREATE FUNCTION appguard.grant_status(p_tbl regclass, p_key text, p_client_id text,
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

-- AFTER INSERT on every protected table: track the new row as a grant
-- (src/refresh.c: it runs at every consent).  Not SECURITY DEFINER, and no
-- SET clause: the C code becomes the function's owner itself, only to write
-- appguard's state, and pins search_path around the SQL it runs (fmgr's
-- wrapper, set up again for every INSERT statement, cost a measurable part
-- of a rotation).
CREATE FUNCTION appguard.grant_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_grant_insert'
LANGUAGE C;

-- The trigger function of every protected table but for INSERT (that is
-- appguard.grant_insert, in C: it runs at every consent); TG_ARGV[0] says
-- which trigger fired.  In C (src/refresh.c): appguard's own writes return
-- at once, a host retiring an active row, at every rotation, is done
-- there; the rest is grant_sync_sql's (SECURITY DEFINER itself).  Not
-- SECURITY DEFINER, and no SET clause, as grant_insert: the C code becomes
-- the function's owner only to write appguard's state (fmgr's wrapper was
-- set up for every statement, and ran for every row of a fan-out).
CREATE FUNCTION appguard.grant_sync()
RETURNS trigger
AS 'MODULE_PATHNAME', 'appguard_grant_sync'
LANGUAGE C;

-- What appguard.grant_sync leaves to SQL, called by it with the trigger's
-- data.  The key, client and status of the row are read as text by
-- appguard.row_texts (see the top of this part: never to_jsonb of the
-- row, which could call a cast its owner wrote, as superuser).
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

-- Key types appguard keys its rows by: the server's own types whose text
-- output identifies a value (and domains over them, on which no cast of
-- an ordinary role's takes effect).
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

-- A value given as text, as the column's type reads and prints it (the
-- text its output function prints, which is what the triggers compare).
-- Evaluated as the table's owner: a domain's CHECK or a cast of the
-- column's type runs with the owner's rights, never appguard's.
CREATE FUNCTION appguard.column_value(p_tbl regclass, p_attnum smallint, p_value text, p_what text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	typ text;
	printed text[];
BEGIN
	IF p_value IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_what USING ERRCODE = '22023';
	END IF;
	SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO typ
	FROM pg_catalog.pg_attribute a WHERE a.attrelid = p_tbl AND a.attnum = p_attnum;
	BEGIN
		printed := appguard.as_table_owner(p_tbl,
			pg_catalog.format('SELECT pg_catalog.format(''%%s'', $1::%s)', typ), ARRAY[p_value]);
	EXCEPTION WHEN OTHERS THEN
		RAISE EXCEPTION '% "%" is not a value of type %', p_what, p_value, typ
			USING ERRCODE = '22023',
				  DETAIL = SQLERRM;
	END;
	RETURN printed[1];
END
$$;

-- The names of the triggers appguard_protect creates.
CREATE FUNCTION appguard.protect_trigger_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ARRAY['appguard_protect_insert', 'appguard_protect_key', 'appguard_protect_status',
				 'appguard_protect_delete', 'appguard_protect_truncate']
$$;

-- Why appguard could not guard protected table p_tbl now, or NULL: a
-- column it reads or writes is gone, the status column is generated, its
-- type no longer reads the active and suspended values as they were
-- given, a CHECK constraint on the status column alone rejects the
-- suspended value (evaluated as the table's owner), or one of appguard's
-- triggers is missing or disabled.  A CHECK constraint that involves other
-- columns too can only be judged on real rows: a fan-out it makes fail is
-- kept to the table all the same (appguard.apply_suspensions).
CREATE FUNCTION appguard.protection_problem(p_tbl regclass)
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

-- Record that appguard cannot write protected table p_tbl (p_context:
-- what found it): protected_tables.problem, an event, a NOTIFY
-- appguard_table_problem (payload the table) and a WARNING.  The event and
-- the NOTIFY only when the problem is new.
CREATE FUNCTION appguard.record_table_problem(p_tbl regclass, p_problem text, p_sqlstate text,
											  p_context text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE appguard.protected_tables pt
	SET problem = p_problem, problem_sqlstate = p_sqlstate, problem_at = pg_catalog.clock_timestamp()
	WHERE pt.tbl = p_tbl AND pt.problem IS DISTINCT FROM p_problem;
	IF FOUND THEN
		PERFORM appguard.log_event('table_problem',
			detail => pg_catalog.jsonb_build_object('problem', p_problem, 'sqlstate', p_sqlstate,
													'found_by', p_context),
			token_table => p_tbl::text);
		PERFORM pg_catalog.pg_notify('appguard_table_problem', p_tbl::text);
	END IF;
	RAISE WARNING 'appguard cannot suspend rows of protected table %: %', p_tbl, p_problem
		USING DETAIL = 'appguard suspends the rows in its own state, so their refresh checks answer not allowed; other tables are not affected.',
			  HINT = pg_catalog.format('Fix the table, then call appguard_recheck_table(%L) (DDL on the table rechecks it too).', p_tbl::text);
END
$$;

-- Write the suspended value (and error_uri p_uri, where the table has the
-- column) into the rows p_keys of protected table p_tbl that still have
-- the active value, as the table's owner: its triggers never run as
-- appguard's owner.  Returns the keys written, or with p_count_only their
-- number, as a one-element array (a fan-out of 100,000 rows needs no
-- array of their keys).  The caller has raised appguard.set_applying.  The
-- rows are found by key = ANY (keys), planned with the keys (src/asowner.c):
-- the planner chooses between a look-up of each key through the primary
-- key and one read of the table with the keys hashed.
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

-- write_host_suspensions for a fan-out: a failure that is the table's
-- (its CHECK rejects the suspended value, its status column is gone, ...)
-- is recorded and reported (record_table_problem) and the caller goes on,
-- its grants suspended in appguard's state; a transient error (a
-- deadlock, a serialization failure, a lock not available, a cancel) is
-- not the table's and is raised.  The caller has raised set_applying.
-- Returns what write_host_suspensions returns (no key, and a count of 0
-- with p_count_only, when the failure is recorded).
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

-- Check protected table p_tbl again (p_context: who asks).  A problem
-- found is recorded (record_table_problem).  When a recorded problem is
-- gone, it is cleared and the host rows appguard suspended in its own
-- state meanwhile are written.  Returns the problem, or NULL.
CREATE FUNCTION appguard.recheck_table(p_tbl regclass, p_context text)
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

-- For operators: check a protected table again after fixing it.
CREATE FUNCTION @extschema@.appguard_recheck_table(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = '22023';
	END IF;
	IF NOT EXISTS (SELECT FROM appguard.protected_tables pt WHERE pt.tbl = appguard_recheck_table.tbl) THEN
		RAISE EXCEPTION 'table % is not protected by appguard', tbl USING ERRCODE = '22023';
	END IF;
	problem := appguard.recheck_table(tbl, 'appguard_recheck_table');
	RETURN pg_catalog.jsonb_build_object('table', tbl::text, 'ok', problem IS NULL, 'problem', problem);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_recheck_table(regclass) IS
	'Check a protected table again; when its recorded problem is gone, write the suspensions appguard kept in its own state';

-- For the statements appguard builds on a host table: column c of its
-- row h as the column's type prints it (NULL stays NULL), or NULL when no
-- column is named.
CREATE FUNCTION appguard.printed_column(c name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $1 IS NULL THEN 'NULL'
				ELSE pg_catalog.format('CASE WHEN h.%1$I IS NULL THEN NULL ELSE pg_catalog.format(''%%s'', h.%1$I) END', $1)
		   END
$$;

---------------------------------------------------------------------------
-- Partitioned token tables
--
-- A partitioned table is protected as one table, at its root: appguard's
-- record of it (protected_tables) and its grants name the root, and a key
-- column is accepted when it leads the primary key, followed by the
-- partition key only: appguard keys its state by the key column alone, so
-- key values must be unique across the whole table (random token ids are).
-- A partition cannot be protected on its own, nor a partitioned table one
-- of whose partitions is.
--
-- PostgreSQL clones the row triggers of the root to every partition, those
-- created or attached later included, and drops them from a partition that
-- is detached.  The trigger functions see the partition as the trigger's
-- table: they map it to its protected root (appguard.protected_root here;
-- protected_table_of in src/refresh.c), and read its columns by name, as a
-- partition may number them differently.  TRUNCATE triggers are not
-- cloned: appguard puts a BEFORE TRUNCATE trigger of its own on every leaf
-- partition (cover_partitions), which forgets the grants of that
-- partition's rows.  Partitions come and go by DDL (pg_partman's
-- maintenance, or by hand), which the event triggers below follow
-- (partitions_changed): a new or attached partition is covered and its
-- rows adopted; a dropped or detached one takes its rows' grants with it.
-- A row moved to another partition (an UPDATE of its partition key) is a
-- DELETE and an INSERT to the row triggers: it becomes a new grant.
---------------------------------------------------------------------------

-- The protected table whose rows relation p_rel holds: p_rel itself when
-- it is protected, else its nearest protected ancestor (partitions), else
-- NULL.  PL/pgSQL for its cached plans (the row triggers call it).
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

-- The numbers, in partition p_rel, of the columns named p_names.
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

-- Put appguard's BEFORE TRUNCATE trigger on every leaf partition of
-- protected table p_tbl that lacks it.  Returns the partitions covered.
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

-- Track the rows of p_from (protected table p_tbl, or one of its
-- partitions) that appguard does not track yet, read as p_from's owner
-- (key, client, status, subject and grant as their types print them, as
-- the triggers read them).  Active rows of a subject join (or start) its
-- consent: the consent's baseline if it has one, else the client's latest
-- successful snapshot when recent enough, else pending.  Returns the
-- number of rows adopted.
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

-- Forget the grants of protected table p_tbl whose row is gone (a dropped
-- or detached partition took it): the grants' keys that no row of the
-- table prints as, found by one read of the table as its owner.  Returns
-- the number of grants forgotten.
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

-- Partitions of protected table p_tbl were created, attached, detached or
-- dropped (p_context: the DDL): cover the new leaves and adopt their rows;
-- a leaf that left every protected table (detached) loses appguard's
-- TRUNCATE trigger, and the grants of rows no partition holds any more
-- are forgotten.  p_tbl NULL: only the latter (a partition was dropped).
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

-- Guard a token table: what appguard_protect does, without its event
-- (appguard.refresh_tokens is protected by it at install, 38_refresh_tokens).
-- Rows already in the table are tracked at once: active rows of
-- registered clients get the client's latest successful snapshot as
-- baseline when it is younger than appguard.baseline_max_age, else their
-- baseline is pending (the next successful snapshot).
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

-- Guard an auth server's existing token table (see the top of this part).
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

-- Remove everything appguard_protect added: the triggers and appguard's
-- state of the rows.  Rows appguard suspended keep the host's suspended
-- value (re-enabling them silently would undo a security decision); their
-- number is returned and reported.
CREATE FUNCTION @extschema@.appguard_unprotect(tbl regclass)
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
COMMENT ON FUNCTION @extschema@.appguard_unprotect(regclass) IS
	'Remove appguard''s triggers and row state from a protected table';

-- A protected table dropped by the host takes its appguard state with it.
-- A dropped trigger may be one of appguard's: the protected tables are
-- checked again (appguard.recheck_table).  Never fails the DROP: problems
-- become a WARNING.
CREATE FUNCTION appguard.protected_table_dropped()
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
CREATE EVENT TRIGGER appguard_protected_table_dropped ON sql_drop
	EXECUTE FUNCTION appguard.protected_table_dropped();

-- DDL on a protected table, or on a type or domain one may use, can take
-- away what appguard needs to suspend its rows (a dropped or altered
-- status column, a new CHECK constraint, disabled triggers), or give it
-- back: every protected table it may concern is checked again
-- (appguard.recheck_table).  Never fails the DDL: problems become a
-- WARNING, and a recorded problem.
CREATE FUNCTION appguard.protected_table_altered()
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
CREATE EVENT TRIGGER appguard_protected_table_altered ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER DOMAIN', 'ALTER TYPE', 'ALTER TRIGGER')
	EXECUTE FUNCTION appguard.protected_table_altered();
