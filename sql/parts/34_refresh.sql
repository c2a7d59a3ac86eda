---------------------------------------------------------------------------
-- Lifecycle, part 5: the refresh check, the explanation, re-approval
---------------------------------------------------------------------------

-- The OAuth body of a refused refresh (RFC 6749, section 5.2).  Only a
-- refusal appguard caused carries an error_uri.
CREATE FUNCTION appguard.refusal(p_suspended boolean, p_error_uri text, p_why text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.jsonb_build_object('allowed', false, 'error',
		CASE WHEN $1 THEN
			pg_catalog.jsonb_build_object(
				'error', 'invalid_grant',
				'error_description', 'Access for this app has been suspended because its security information changed since you approved it.',
				'error_uri', $2)
		ELSE
			pg_catalog.jsonb_build_object(
				'error', 'invalid_grant',
				'error_description', coalesce($3, 'The refresh token is not active.'))
		END)
$$;

-- Lock what a drift evaluation of a client locks, in its order (an open
-- hold, then the client's row), without waiting, for the refresh check's
-- slow path.  The host asks the check while it holds its grant's row
-- (SELECT ... FOR UPDATE); an evaluation or a re-approval of the same app
-- holds the client's row and may be waiting for that very grant row, so
-- waiting here could deadlock -- and the deadlock detector might then
-- abort the evaluation, a sweep's work.  Failing at once lets the host
-- retry, and the evaluation goes on.  Held to the end of the transaction.
CREATE FUNCTION appguard.lock_client_for_refresh(p_client_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM FROM appguard.holds h WHERE h.state = 'open' FOR SHARE NOWAIT;
	PERFORM FROM appguard.clients c WHERE c.client_id = p_client_id FOR NO KEY UPDATE NOWAIT;
EXCEPTION WHEN lock_not_available THEN
	RAISE EXCEPTION 'appguard is busy with the grants of client "%"; retry the refresh', p_client_id
		USING ERRCODE = '55P03',
			  DETAIL = 'A drift evaluation, a re-approval or a hold release of this app is in progress; '
					   'the refresh holds its grant''s row, and waiting could deadlock with it.',
			  HINT = 'Answer the refresh with a temporary error (HTTP 503 with Retry-After), or retry it.';
END
$$;

-- Whether row p_row_key of protected table p_tbl has the active value (read
-- as the table's owner).
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

-- Give row p_row_key of protected table p_tbl its active value back (and
-- clear its error_uri column), if it has the suspended value, as the
-- table's owner.  The caller has raised appguard.set_applying.
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

-- Make sure an active grant's baseline has been compared with its
-- client's latest snapshot, and found not confirmed drifted, before the
-- grant is allowed to refresh:
--   * appguard.refresh_max_age > 0 and the latest snapshot is older: a live
--     snapshot first (within appguard.baseline_timeout_ms; its evaluation
--     suspends what drifted);
--   * a grant the fan-out missed (issued while the latest snapshot was
--     being evaluated) gets what the other grants on its baseline got: the
--     applied suspension is applied to it too; a held one covers it (the
--     operator decides: allowed meanwhile); a discarded or superseded one
--     leaves it alone;
--   * a baseline never compared with the latest snapshot is compared now,
--     which suspends the grant when it should be (during a running sweep
--     that measured the snapshot, the suspension waits for the sweep's
--     end like the sweep's own).
-- Each of these first takes the client's locks without waiting
-- (lock_client_for_refresh: 55P03 if busy).
-- Fails closed: when the baseline is confirmed drifted and its latest
-- suspension is pending (a sweep has not decided it yet) or failed (its
-- sweep failed to close, so nothing was applied), returns that
-- suspension's id, and the caller refuses the refresh with its error_uri
-- without changing the grant.  Otherwise NULL: the caller re-reads the
-- grant's status.
CREATE FUNCTION appguard.verify_grant(p_client_id text, p_baseline bigint)
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

-- The refresh check for appguard.refresh_tokens, in full: the check of a
-- row of a protected table (check_row_refresh_full), and an allowed
-- refresh recorded (last_refreshed_at) by an UPDATE that re-checks the
-- status, so a suspension committing concurrently is waited for and
-- honoured.  Called by appguard_check_refresh only (no one may execute it).
CREATE FUNCTION appguard.check_refresh_full(token_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	verdict jsonb;
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null' USING ERRCODE = '22023';
	END IF;
	IF NOT EXISTS (SELECT FROM appguard.refresh_tokens t WHERE t.token_id = check_refresh_full.token_id) THEN
		RAISE EXCEPTION 'unknown refresh token'
			USING ERRCODE = 'P0002',
				  DETAIL = 'No row of appguard.refresh_tokens has this token_id.';
	END IF;
	verdict := appguard.check_row_refresh_full('appguard.refresh_tokens', token_id);
	IF (verdict ->> 'allowed')::boolean THEN
		UPDATE appguard.refresh_tokens t SET last_refreshed_at = pg_catalog.now()
		WHERE t.token_id = check_refresh_full.token_id AND t.status = 'active';
		IF NOT FOUND THEN
			RETURN appguard.check_row_refresh_full('appguard.refresh_tokens', token_id);
		END IF;
	END IF;
	RETURN verdict;
END
$$;

-- The refresh check for appguard.refresh_tokens.  Its common case -- an
-- active grant whose baseline is pending, whose client is not registered,
-- or whose baseline has been compared with the client's latest snapshot
-- and is not confirmed drifted, with no live snapshot due -- is answered
-- in C after a few primary-key lookups, and the refresh recorded; the
-- rest by appguard.check_refresh_full.
CREATE FUNCTION @extschema@.appguard_check_refresh(token_id text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'appguard_check_refresh_token'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.appguard_check_refresh(text) IS
	'At refresh: {"allowed": true}, or {"allowed": false, "error": <the OAuth invalid_grant body>}';

-- appguard's state of the grant row_key of token table p_tbl, as
-- appguard.grant_states shows it (suspended by its baseline's hold).
CREATE FUNCTION appguard.grant_of(p_tbl regclass, p_row_key text)
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

-- The refresh check for a row of a protected table, in full (see
-- check_refresh_full).  Reads appguard's state of the row only, which the
-- triggers keep in step with the host's status column.  SECURITY DEFINER:
-- appguard_check_refresh(regclass, text), which calls it, runs as its
-- caller.
CREATE FUNCTION appguard.check_row_refresh_full(tbl regclass, row_key text)
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

-- The refresh check for a row of a protected table (row_key: the primary
-- key as text): the same answer as appguard_check_refresh(token_id), the
-- common case in C, the rest by appguard.check_row_refresh_full.  Only for
-- a caller who may SELECT that row: the table's SELECT privilege, and
-- where row-level security is enabled, a policy that shows the row
-- (src/hostrow.c).  The
-- host's refresh transaction is fastest when it asks in the statement
-- that reads and locks the grant:
--   SELECT status, appguard_check_refresh('tbl', id::text)
--   FROM tbl WHERE id = $1 FOR UPDATE;
-- Not SECURITY DEFINER, and no SET clause, which would cost a fifth of
-- the check: the fast path reads appguard's tables by primary key, which
-- takes no privilege and resolves no name through the search_path
-- (src/keyread.c), and answers only "allowed"; everything else is
-- check_row_refresh_full's, which is SECURITY DEFINER with its
-- search_path pinned.
CREATE FUNCTION @extschema@.appguard_check_refresh(tbl regclass, row_key text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'appguard_check_refresh_row'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.appguard_check_refresh(regclass, text) IS
	'At refresh of a protected table''s row: the same answer as appguard_check_refresh(token_id)';

-- What a difference means, in words.  A further address of the host
-- (tls_address_mismatch) is named: tls_addresses[192.0.2.7].subject_o.
CREATE FUNCTION appguard.field_label(field text)
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

CREATE FUNCTION appguard.value_text(v jsonb, field text)
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

-- What a watched host is to the patient, in plain words, from its roles
-- (appguard.client_hosts): "the address your login is sent to", ...
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

-- Everything the error_uri page shows, as jsonb: the app, its domain,
-- each change in words with old -> new (each fact once), when, and how to
-- re-approve.
CREATE FUNCTION @extschema@.appguard_explain(suspension_id bigint)
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
COMMENT ON FUNCTION @extschema@.appguard_explain(bigint) IS
	'Everything the error_uri page shows about a suspension, as jsonb';

-- Re-approval of appguard.refresh_tokens' token: reactivates a token
-- appguard suspended, with a new baseline (the client's current snapshot,
-- taken live if none is recent enough; pending if that fails), as for any
-- token table (reapprove_row_full).  A revoked token stays revoked.
-- Re-approving an active token changes nothing.
CREATE FUNCTION @extschema@.appguard_reapprove(token_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null' USING ERRCODE = '22023';
	END IF;
	IF NOT EXISTS (SELECT FROM appguard.refresh_tokens t WHERE t.token_id = appguard_reapprove.token_id) THEN
		RAISE EXCEPTION 'unknown refresh token'
			USING ERRCODE = 'P0002',
				  DETAIL = 'No row of appguard.refresh_tokens has this token_id.';
	END IF;
	RETURN appguard.reapprove_row_full('appguard.refresh_tokens', token_id);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_reapprove(text) IS
	'Reactivate a token appguard suspended, with a new baseline; recorded';

-- Re-approval of a protected table's row, in full: sets the host's status
-- back to the active value only if appguard suspended the row and the host
-- has not written its status since.  A row of a table with a subject
-- column stands for its grant: with a grant column, the grant's newest
-- row is the one restored, and if the host disabled that row itself (a
-- reused token breaking the chain), nothing is; without one, the
-- patient's newest row appguard suspended is.  The subject's consent
-- takes the new baseline.  Called by appguard_reapprove(regclass,
-- text) only, after it checked that its caller may SELECT the row (no one
-- may execute this one).
CREATE FUNCTION appguard.reapprove_row_full(tbl regclass, row_key text)
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

-- Re-approval of a protected table's row: only for a caller who may
-- SELECT that row (the table's privilege and its row-level security,
-- src/hostrow.c); then reapprove_row_full.  Not SECURITY DEFINER, so that
-- the check sees the caller; no SET clause: the C code resolves no name
-- through the search_path.
CREATE FUNCTION @extschema@.appguard_reapprove(tbl regclass, row_key text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'appguard_reapprove_row'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.appguard_reapprove(regclass, text) IS
	'Re-enable a protected table''s row appguard suspended, with a new baseline; recorded';

-- What the C code reads by name, straight through indexes (src/keyread.c):
-- tables, the index read (the primary key's, or a plain index's when
-- index_is_primary is false), key columns and the columns read, one row
-- per table.  Each of those tables says so in a comment; the regression
-- test c_contract checks this list against the catalog.
CREATE FUNCTION appguard.keyread_contract(OUT table_name text, OUT index_name text,
										  OUT index_is_primary boolean,
										  OUT key_columns text[], OUT columns text[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'appguard_keyread_contract'
LANGUAGE C STABLE;
