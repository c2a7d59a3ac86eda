---------------------------------------------------------------------------
-- Lifecycle, part 1: roles, the audit trail, clients
--
-- The lifecycle parts (30_ .. 37_) build on the snapshots (10_) and on the
-- drift interface (20_: appguard.policy, appguard.client_policy,
-- appguard_facts_diff, appguard_diff).  Conventions of these parts:
--   * every function is SET search_path = pg_catalog, pg_temp and names
--     appguard objects schema-qualified, so an object planted earlier in a
--     caller's search_path is never called;
--   * bad input raises 22023 (invalid_parameter_value), unknown objects
--     P0002 (no_data_found), duplicates 23505, wrong state 55000, always
--     before anything is changed;
--   * helpers that only other appguard functions call are not granted to
--     anyone (the 99_ part revokes everything from PUBLIC);
--   * no code of a table's owner, or of any role that is not a superuser,
--     runs with appguard's rights.  A SECURITY DEFINER function evaluates
--     nothing on a value of a type an ordinary role can create or alter --
--     no cast (to_jsonb and row_to_json of a row call casts to json, ::text
--     calls a cast to text), no operator, no domain check, no format() of
--     such a value: every statement on a host table, and every evaluation
--     of its values (the status values, its CHECK constraints), runs as the
--     table's owner in a security-restricted operation
--     (appguard.as_table_owner); the row triggers read the columns they
--     need through their types' output functions (appguard.row_texts),
--     and compare the printed text.
---------------------------------------------------------------------------

---------------------------------------------------------------------------
-- Audit: one row per thing that happened
---------------------------------------------------------------------------

-- Snapshots (appguard.snapshots), drifts (appguard.drifts) and suspensions
-- (appguard.suspensions) are rows of their own; this table records every
-- decision and action around them: registrations, baselines, suspensions
-- applied or held, holds released or discarded, re-approvals, protect,
-- sweeps, policy changes, prunes.
CREATE TABLE appguard.events (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	kind			text NOT NULL,
	client_id		text,
	token_table		text,			-- the token table of the grant concerned
	token_key		text,			-- token_id, or the protected row's key
	snapshot_id		bigint,
	suspension_id	bigint,
	hold_id			bigint,
	sweep_id		bigint,
	actor			text NOT NULL DEFAULT session_user,
	detail			jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE appguard.events IS 'Audit trail of the lifecycle: registrations, baselines, suspensions, holds, re-approvals, sweeps, prunes';
CREATE INDEX events_at ON appguard.events (at);
CREATE INDEX events_client ON appguard.events (client_id, at) WHERE client_id IS NOT NULL;
CREATE INDEX events_suspension ON appguard.events (suspension_id) WHERE suspension_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('appguard.events', '');
SELECT pg_catalog.pg_extension_config_dump('appguard.events_id_seq', '');

CREATE FUNCTION appguard.log_event(kind text, client_id text DEFAULT NULL,
								   detail jsonb DEFAULT '{}',
								   snapshot_id bigint DEFAULT NULL,
								   suspension_id bigint DEFAULT NULL,
								   hold_id bigint DEFAULT NULL,
								   sweep_id bigint DEFAULT NULL,
								   token_table text DEFAULT NULL,
								   token_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO appguard.events (kind, client_id, detail, snapshot_id, suspension_id,
								 hold_id, sweep_id, token_table, token_key)
	VALUES ($1, $2, coalesce($3, '{}'), $4, $5, $6, $7, $8, $9)
	RETURNING id
$$;

---------------------------------------------------------------------------
-- Clients
---------------------------------------------------------------------------

-- One row per OAuth client appguard watches.  The watched host is the host
-- of the primary (first) redirect URI, with its port; snapshots are keyed
-- by (host, port), so clients sharing a host share its snapshots.  The
-- last_* columns cache the client's latest evaluated snapshot and latest
-- successful one: the token-issuing trigger reads them instead of
-- searching appguard.snapshots.
-- Read by C (src/keyread.c, KT_CLIENTS): index clients_pkey on
-- (client_id); columns last_snapshot_id, last_snapshot_at,
-- last_ok_snapshot_id, last_ok_at, hosts_undecided, hosts_drifted,
-- held_baselines.
CREATE TABLE appguard.clients (
	client_id			text PRIMARY KEY,
	name				text NOT NULL,
	redirect_uris		text[] NOT NULL,
	host				text NOT NULL,
	port				integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
	registrable_domain	text,
	registered_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	last_snapshot_id	bigint,
	last_snapshot_at	timestamptz,
	last_status			text,
	last_ok_snapshot_id	bigint,
	last_ok_at			timestamptz,
	metadata			jsonb NOT NULL DEFAULT '{}',	-- the metadata URLs appguard watches (jwks_uri, ...)
	-- Read by the refresh check's C fast path: true while one of the
	-- client's other watched hosts may have an undecided (pending, or
	-- failed) suspension, which sends every refresh of the client to the
	-- full check (appguard.verify_grant, appguard.other_host_blocking).
	-- Set with the pending suspension, cleared when a sweep closes.
	hosts_undecided		boolean NOT NULL DEFAULT false,
	-- Read by the refresh check's and the consent trigger's C fast paths:
	-- true while one of the client's other watched hosts is drifted from
	-- a baseline it keeps verdicts for (appguard.baseline_host_state).  A
	-- grant of that baseline -- a rotated token, a remembered approval, a
	-- new grant -- must join its applied suspension, which C does not
	-- know of: every grant of the client then takes the SQL paths
	-- (appguard.consent_grant, appguard.verify_grant and
	-- appguard.other_host_blocking).  Kept by appguard.note_hosts_drifted.
	hosts_drifted		boolean NOT NULL DEFAULT false,
	-- The client's baselines held by an applied suspension (part 4,
	-- appguard.baseline_hold): every active grant on one of them is
	-- suspended -- the fan-out writes the grants' host rows, not the
	-- grants -- until the patient approves again.  Read by the C fast
	-- paths, which leave such grants to SQL.  Set by
	-- appguard.apply_suspensions, emptied of baselines no grant holds any
	-- more by appguard_prune.
	held_baselines		bigint[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE appguard.clients IS 'OAuth clients appguard watches: the primary redirect URI''s host and port, and their latest snapshots';
CREATE INDEX clients_host ON appguard.clients (host, port);
SELECT pg_catalog.pg_extension_config_dump('appguard.clients', '');

-- Every host a client's grants trust: each https redirect URI's host and
-- the hosts of its metadata URLs (jwks_uri, ...), one row per distinct
-- (host, port) with the roles it plays.  The primary host (the first
-- redirect URI's, is_primary) is also appguard.clients' host and port:
-- grants' and consents' baselines are snapshots of it.  The other hosts'
-- baselines hang off those (appguard.baseline_hosts, part 4).
-- Read by C (src/keyread.c, KT_CLIENT_HOSTS, for src/snapshot_trigger.c,
-- the snapshots trigger): index client_hosts_host below, a plain btree
-- index on (host, port), text and integer, on every row (not partial):
-- whether a row exists.
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

-- Per-client policy overrides live in the drift part's table; they go with
-- the client.
ALTER TABLE appguard.client_policy
	ADD FOREIGN KEY (client_id) REFERENCES appguard.clients (client_id) ON DELETE CASCADE;

-- Policy changes decide whether tokens keep working: audit them.
CREATE FUNCTION appguard.policy_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM appguard.log_event(
		'policy_' || pg_catalog.lower(TG_OP),
		client_id => CASE WHEN TG_TABLE_NAME = 'client_policy'
					 THEN coalesce(pg_catalog.to_jsonb(NEW), pg_catalog.to_jsonb(OLD)) ->> 'client_id' END,
		detail => pg_catalog.jsonb_build_object('table', TG_TABLE_NAME,
												'old', pg_catalog.to_jsonb(OLD),
												'new', pg_catalog.to_jsonb(NEW)));
	RETURN NULL;
END
$$;
CREATE TRIGGER appguard_policy_audit AFTER INSERT OR UPDATE OR DELETE ON appguard.policy
	FOR EACH ROW EXECUTE FUNCTION appguard.policy_audit();
CREATE TRIGGER appguard_policy_audit AFTER INSERT OR UPDATE OR DELETE ON appguard.client_policy
	FOR EACH ROW EXECUTE FUNCTION appguard.policy_audit();

-- Parse and check one redirect URI.  The primary one must be
-- https://host[:port]/... with a DNS host name; the others may be any
-- absolute URI without a fragment (native apps use private-use schemes),
-- but http(s) ones need a host.  Every https URI names a host appguard
-- watches, so its host must be a DNS host name: host and port are
-- returned for it (NULL for other schemes).
CREATE FUNCTION appguard.parse_redirect_uri(uri text, is_primary boolean,
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

-- The registrable domain (eTLD+1) of a host, by the public suffix list.
CREATE FUNCTION appguard.registrable_domain_of(host text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN @extschema@.appguard_registrable_domain(host);

CREATE FUNCTION appguard.check_client_id(client_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF client_id IS NULL THEN
		RAISE EXCEPTION 'client_id must not be null' USING ERRCODE = '22023';
	END IF;
	IF client_id = '' OR pg_catalog.length(client_id) > 255 OR client_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid client_id "%"', pg_catalog.left(client_id, 100)
			USING ERRCODE = '22023',
				  DETAIL = 'A client_id has 1 to 255 characters and no control characters.';
	END IF;
END
$$;

-- Check a name and a redirect URI list; returns the primary host and port.
CREATE FUNCTION appguard.check_client_fields(name text, redirect_uris text[],
											 OUT host text, OUT port integer)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	i integer;
	ignored record;
BEGIN
	IF name IS NULL OR pg_catalog.btrim(name) = '' OR pg_catalog.length(name) > 200 THEN
		RAISE EXCEPTION 'invalid client name'
			USING ERRCODE = '22023',
				  DETAIL = 'The name is what patients see: 1 to 200 characters, not blank.';
	END IF;
	IF redirect_uris IS NULL OR pg_catalog.cardinality(redirect_uris) = 0 THEN
		RAISE EXCEPTION 'redirect_uris must contain at least one URI'
			USING ERRCODE = '22023',
				  HINT = 'The first one is the primary redirect URI: its host is the one appguard watches.';
	END IF;
	IF pg_catalog.array_ndims(redirect_uris) > 1 THEN
		RAISE EXCEPTION 'redirect_uris must be a one-dimensional array' USING ERRCODE = '22023';
	END IF;
	SELECT p.host, p.port INTO host, port
	FROM appguard.parse_redirect_uri(redirect_uris[pg_catalog.array_lower(redirect_uris, 1)], true) p;
	FOR i IN pg_catalog.array_lower(redirect_uris, 1) + 1 .. pg_catalog.array_upper(redirect_uris, 1) LOOP
		SELECT * INTO ignored FROM appguard.parse_redirect_uri(redirect_uris[i], false);
	END LOOP;
END
$$;

-- The RFC 7591 client metadata URLs appguard watches, with the role each
-- gives its host.  Other metadata keys are ignored (RFC 7591, section 2).
CREATE FUNCTION appguard.metadata_url_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ARRAY['jwks_uri', 'initiate_login_uri', 'sector_identifier_uri', 'client_uri',
				 'logo_uri', 'policy_uri', 'tos_uri']
$$;

-- Check RFC 7591 client metadata (a JSON object): client_name a string,
-- redirect_uris an array of strings, each watched metadata URL an https
-- URL with a DNS host name.  Returns the watched metadata URLs only.
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

-- Every host a client's grants trust, from its redirect URIs and watched
-- metadata URLs (checked before): one row per distinct (host, port), its
-- roles in order (primary_redirect, redirect, then the metadata keys).
-- The same redirect URI twice, and more than 20 hosts, are refused.
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

-- The order a host's roles are told in (the primary redirect first)
CREATE FUNCTION appguard.role_rank(role text)
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE $1 WHEN 'primary_redirect' THEN 0 WHEN 'redirect' THEN 1
		   ELSE 2 + coalesce(pg_catalog.array_position(appguard.metadata_url_keys(), $1), 99) END
$$;

-- Fill the cached latest-snapshot columns of a client from appguard.snapshots.
CREATE FUNCTION appguard.refresh_client_cache(client_id text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE appguard.clients c
	SET last_snapshot_id = l.id, last_snapshot_at = l.taken_at, last_status = l.status,
		last_ok_snapshot_id = o.id, last_ok_at = o.taken_at,
		registrable_domain = coalesce(c.registrable_domain,
									  o.facts -> 'dns' ->> 'registrable_domain',
									  l.facts -> 'dns' ->> 'registrable_domain')
	FROM appguard.clients c2
		 LEFT JOIN LATERAL (SELECT s.id, s.taken_at, s.status, s.facts FROM appguard.snapshots s
							WHERE s.host = c2.host AND s.port = c2.port
							ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) l ON true
		 LEFT JOIN LATERAL (SELECT s.id, s.taken_at, s.facts FROM appguard.snapshots s
							WHERE s.host = c2.host AND s.port = c2.port AND s.status = 'ok'
							ORDER BY s.taken_at DESC, s.id DESC LIMIT 1) o ON true
	WHERE c.client_id = $1 AND c2.client_id = $1
$$;

-- (the registration's fields, as events record them; the functions that
-- register return the watched hosts too)
CREATE FUNCTION appguard.client_json(client_id text)
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

-- A client's watched hosts as a JSON array, the primary first
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

-- The baselines a client's grants and consents hold (snapshots of its
-- primary host): what a newly watched host's baseline is taken into.
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

-- Make a client's watched hosts those of its redirect URIs and metadata
-- URLs (checked before).  Re-registration that adds or removes a host is
-- recorded (host_added, host_removed).  A host added is watched from now
-- on, and its latest successful snapshot is taken into the baselines the
-- client's grants hold (host_baselines_taken): nobody approved it, so its
-- first facts cannot be a change.  A host removed takes its per-host
-- baselines and verdicts with it; the grants keep theirs (snapshots of
-- the primary host).  When the primary host changes, grants keep their
-- baselines and are compared with the new primary's facts (a move to a
-- host run by another organization suspends them); the old primary, if
-- still watched, keeps them as its own baselines.
-- Returns {"added": [...], "removed": [...]}.
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

-- Record hosts added and removed by a re-registration (after the
-- client_updated event), and take each added secondary host's latest
-- successful snapshot into the client's baselines.
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

-- Register a client: its name, redirect URIs and watched metadata URLs
-- (checked before).  Every https redirect URI's host and every metadata
-- URL's host is watched (appguard.client_hosts); the primary (first)
-- redirect URI's host is the one grants' baselines are snapshots of.
-- Tokens of the client that were issued before it was registered
-- (baseline pending) get the client's next successful snapshot as their
-- baseline.
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

CREATE FUNCTION @extschema@.appguard_register_client(client_id text, name text, redirect_uris text[])
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT appguard.register_client($1, $2, $3, '{}')
$$;
COMMENT ON FUNCTION @extschema@.appguard_register_client(text, text, text[]) IS
	'Register an OAuth client: its name and redirect URIs; every https redirect URI''s host is watched';

-- The same from RFC 7591 client metadata: client_name (else the
-- client_id), redirect_uris, and the metadata URLs appguard watches
-- (jwks_uri, initiate_login_uri, sector_identifier_uri, client_uri,
-- logo_uri, policy_uri, tos_uri); other keys are ignored.
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

-- Change a client's name, redirect URIs and/or watched metadata URLs
-- (NULL keeps the current value), after they were checked.  Hosts added
-- and removed are recorded and handled by set_client_hosts.
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

-- When the primary host changes, existing grants keep their baselines:
-- they are compared with the new host's facts, so a move to a host run by
-- another organization suspends them (patients re-approve).
CREATE FUNCTION @extschema@.appguard_update_client(client_id text, name text DEFAULT NULL,
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
COMMENT ON FUNCTION @extschema@.appguard_update_client(text, text, text[]) IS
	'Change a client''s name and/or redirect URIs (NULL keeps the current value)';

-- Re-registration from RFC 7591 client metadata (RFC 7592 replaces the
-- whole registration): redirect_uris and the watched metadata URLs are
-- replaced (a metadata URL left out is no longer watched); client_name,
-- if given, renames the client.  (Not an overload of
-- appguard_update_client: an untyped literal would go to its name.)
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

-- Stop watching a client.  Its tokens stay as they are (suspended ones stay
-- suspended) but are no longer guarded; its per-client policy goes.
CREATE FUNCTION @extschema@.appguard_unregister_client(client_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old jsonb;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	old := appguard.client_json(client_id);
	IF old IS NULL THEN
		RAISE EXCEPTION 'client "%" is not registered', client_id USING ERRCODE = 'P0002';
	END IF;
	DELETE FROM appguard.clients c WHERE c.client_id = appguard_unregister_client.client_id;
	PERFORM appguard.log_event('client_unregistered', client_id, old);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_unregister_client(text) IS
	'Stop watching a client; its tokens are left as they are, unguarded';
