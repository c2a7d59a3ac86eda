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
-- last_ok_snapshot_id, last_ok_at.
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
	last_ok_at			timestamptz
);
COMMENT ON TABLE appguard.clients IS 'OAuth clients appguard watches: the primary redirect URI''s host and port, and their latest snapshots';
CREATE INDEX clients_host ON appguard.clients (host, port);
SELECT pg_catalog.pg_extension_config_dump('appguard.clients', '');

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
-- https://host[:port]/... with a DNS host name (it is the host appguard
-- measures); the others may be any absolute URI without a fragment
-- (native apps use private-use schemes), but http(s) ones need a host.
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
	IF NOT is_primary THEN
		RETURN;
	END IF;
	IF pg_catalog.strpos(authority, '@') > 0 THEN
		RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'A redirect URI must not carry user information before the host.';
	END IF;
	IF pg_catalog.left(authority, 1) = '[' THEN
		RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'The primary redirect URI must name its host, not an IP address.';
	END IF;
	m := pg_catalog.regexp_match(authority, '^([^:]*)(:([0-9]*))?$');
	IF m IS NULL THEN
		RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
			USING ERRCODE = '22023',
				  DETAIL = 'The authority is host or host:port.';
	END IF;
	hostpart := m[1];
	portpart := m[3];
	IF m[2] IS NOT NULL AND (portpart = '' OR pg_catalog.length(portpart) > 5
							 OR portpart::integer NOT BETWEEN 1 AND 65535) THEN
		RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
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
			RAISE EXCEPTION 'invalid primary redirect URI "%"', pg_catalog.left(uri, 200)
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

CREATE FUNCTION appguard.client_json(client_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.jsonb_build_object(
		'client_id', c.client_id, 'name', c.name, 'redirect_uris', pg_catalog.to_jsonb(c.redirect_uris),
		'host', c.host, 'port', c.port, 'registrable_domain', c.registrable_domain,
		'registered_at', c.registered_at, 'updated_at', c.updated_at)
	FROM appguard.clients c WHERE c.client_id = $1
$$;

-- Register a client.  The watched host is the primary (first) redirect
-- URI's host.  Tokens of the client that were issued before it was
-- registered (baseline pending) get the client's next successful snapshot
-- as their baseline.
CREATE FUNCTION @extschema@.appguard_register_client(client_id text, name text, redirect_uris text[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target record;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	SELECT * INTO target FROM appguard.check_client_fields(name, redirect_uris);
	IF EXISTS (SELECT FROM appguard.clients c WHERE c.client_id = appguard_register_client.client_id) THEN
		RAISE EXCEPTION 'client "%" is already registered', client_id
			USING ERRCODE = '23505',
				  HINT = 'Use appguard_update_client to change its name or redirect URIs.';
	END IF;
	INSERT INTO appguard.clients (client_id, name, redirect_uris, host, port, registrable_domain)
	VALUES (client_id, pg_catalog.btrim(name), redirect_uris, target.host, target.port,
			appguard.registrable_domain_of(target.host));
	PERFORM appguard.refresh_client_cache(client_id);
	PERFORM appguard.log_event('client_registered', client_id,
							   appguard.client_json(client_id));
	RETURN appguard.client_json(client_id);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_register_client(text, text, text[]) IS
	'Register an OAuth client: its name and redirect URIs; the first URI''s host is watched';

-- Change a client's name and/or redirect URIs (NULL keeps the current
-- value).  When the primary host changes, existing grants keep their
-- baselines: they are compared with the new host's facts, so a move to a
-- host run by another organization suspends them (patients re-approve).
CREATE FUNCTION @extschema@.appguard_update_client(client_id text, name text DEFAULT NULL,
												redirect_uris text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old record;
	target record;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	IF name IS NULL AND redirect_uris IS NULL THEN
		RAISE EXCEPTION 'nothing to update for client "%"', client_id
			USING ERRCODE = '22023',
				  HINT = 'Give a new name, new redirect URIs, or both.';
	END IF;
	SELECT * INTO old FROM appguard.clients c
	WHERE c.client_id = appguard_update_client.client_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'client "%" is not registered', client_id
			USING ERRCODE = 'P0002',
				  HINT = 'Register it with appguard_register_client.';
	END IF;
	SELECT * INTO target
	FROM appguard.check_client_fields(coalesce(name, old.name), coalesce(redirect_uris, old.redirect_uris));
	UPDATE appguard.clients c
	SET name = pg_catalog.btrim(coalesce(appguard_update_client.name, old.name)),
		redirect_uris = coalesce(appguard_update_client.redirect_uris, old.redirect_uris),
		host = target.host, port = target.port,
		registrable_domain = CASE WHEN target.host = old.host THEN old.registrable_domain
							 ELSE appguard.registrable_domain_of(target.host) END,
		updated_at = pg_catalog.now()
	WHERE c.client_id = appguard_update_client.client_id;
	IF target.host <> old.host OR target.port <> old.port THEN
		UPDATE appguard.clients c
		SET last_snapshot_id = NULL, last_snapshot_at = NULL, last_status = NULL,
			last_ok_snapshot_id = NULL, last_ok_at = NULL
		WHERE c.client_id = appguard_update_client.client_id;
		PERFORM appguard.refresh_client_cache(client_id);
	END IF;
	PERFORM appguard.log_event('client_updated', client_id,
							   pg_catalog.jsonb_build_object(
								   'old', pg_catalog.jsonb_build_object('name', old.name,
									   'redirect_uris', pg_catalog.to_jsonb(old.redirect_uris),
									   'host', old.host, 'port', old.port),
								   'new', appguard.client_json(client_id)));
	RETURN appguard.client_json(client_id);
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_update_client(text, text, text[]) IS
	'Change a client''s name and/or redirect URIs (NULL keeps the current value)';

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
