---------------------------------------------------------------------------
-- Consent: what the patient is shown about an app, and what was shown
--
-- appguard_consent_info(client_id) gives the consent screen what it shows
-- about the app, from the snapshot a grant issued now takes as its
-- baseline (appguard.baseline_for: the client's latest successful
-- snapshot when younger than appguard.baseline_max_age, else one measured
-- live within appguard.baseline_timeout_ms, else none):
--   domain              registrable domain of the primary redirect URI, always
--   app_name            the name the client was registered with
--   organization        subject O of the certificate \  only when the chain
--   location            L, ST, C of the certificate  /  is trusted and OV or EV
--   ownership_verified  the TXT record <appguard.ownership_prefix>=<client_id>
--                       is present at the registrable domain
--   level, label        derived from the above (appguard.consent_label)
-- What was shown is recorded per (client, snapshot) in
-- appguard.consent_shown, so that appguard_explain can say "you were shown
-- X, it is now Y" for a suspended grant whose baseline is that snapshot
-- (appguard.consent_change).  A baseline nobody was shown (the auth server
-- does not call appguard_consent_info, or, without the patient's own screen
-- (appguard_consent_info(client_id, subject)), a newer snapshot arrived
-- between the consent screen and the token) is described from its snapshot.
---------------------------------------------------------------------------

CREATE TABLE appguard.consent_shown (
	client_id		text NOT NULL REFERENCES appguard.clients ON DELETE CASCADE,
	snapshot_id		bigint NOT NULL REFERENCES appguard.snapshots ON DELETE CASCADE,
	shown			jsonb NOT NULL,
	first_shown_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (client_id, snapshot_id)
);
COMMENT ON TABLE appguard.consent_shown IS 'What appguard_consent_info showed patients about a client, per snapshot (kept while the snapshot is kept)';
-- appguard_prune deletes snapshots; their consent rows go with them
CREATE INDEX consent_shown_snapshot ON appguard.consent_shown (snapshot_id);
SELECT pg_catalog.pg_extension_config_dump('appguard.consent_shown', '');

-- The label and level of what is shown; the label changes whenever any
-- shown field does.  level and label ("--" is an em dash, U+2014):
--   organization  a trusted OV or EV certificate names the organization:
--                 "<app> -- <organization>[, <location>] (<domain>[, domain ownership verified])"
--   domain        no verified organization, but the ownership TXT record
--                 ties the domain to this client_id:
--                 "<app> -- <domain> (domain ownership verified; organization not verified)"
--   unverified    neither:
--                 "<app> -- <domain> (organization and domain ownership not verified)"
-- (PL/pgSQL, not SQL: a SQL function with a SET clause is not inlined,
-- and its body was parsed and planned again at every consent screen)
CREATE FUNCTION appguard.consent_label(app_name text, domain text, organization text,
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

-- What the consent screen shows about a client from one snapshot (NULL:
-- no snapshot).  The displayed fields only: no ids or times.
CREATE FUNCTION appguard.consent_view(p_client_id text, p_snapshot_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cli record;
	facts jsonb;
	leaf jsonb;
	app_name text;
	app_domain text;
	organization text;
	location text;
	ownership boolean;
	shown record;
BEGIN
	SELECT c.name, c.host, c.registrable_domain INTO cli
	FROM appguard.clients c WHERE c.client_id = p_client_id;
	SELECT s.facts INTO facts FROM appguard.snapshots s WHERE s.id = p_snapshot_id;
	app_name := coalesce(cli.name, p_client_id);
	app_domain := coalesce(cli.registrable_domain,
						   @extschema@.appguard_registrable_domain(cli.host),
						   facts -> 'dns' ->> 'registrable_domain',
						   cli.host, facts ->> 'host');
	leaf := facts -> 'tls' -> 'leaf';
	-- the organization counts only when a CA vetted it and the chain is trusted
	IF (facts -> 'tls' -> 'verified') = 'true'::jsonb
	   AND leaf ->> 'validation' IN ('OV', 'EV')
	   AND pg_catalog.btrim(coalesce(leaf -> 'subject' ->> 'O', '')) <> '' THEN
		organization := leaf -> 'subject' ->> 'O';
		location := nullif(pg_catalog.concat_ws(', ', nullif(leaf -> 'subject' ->> 'L', ''),
												nullif(leaf -> 'subject' ->> 'ST', ''),
												nullif(leaf -> 'subject' ->> 'C', '')), '');
	END IF;
	ownership := coalesce((facts -> 'dns' -> 'ownership_ids') @> pg_catalog.jsonb_build_array(p_client_id),
						  false);
	SELECT * INTO shown FROM appguard.consent_label(app_name, app_domain, organization, location, ownership);
	RETURN pg_catalog.jsonb_build_object(
		'app_name', app_name, 'domain', app_domain, 'organization', organization,
		'location', location, 'ownership_verified', ownership,
		'level', shown.level, 'label', shown.label);
END
$$;

CREATE FUNCTION @extschema@.appguard_consent_info(client_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	snapshot bigint;
	info jsonb;
BEGIN
	PERFORM appguard.check_client_id(client_id);
	IF NOT EXISTS (SELECT FROM appguard.clients c WHERE c.client_id = appguard_consent_info.client_id) THEN
		RAISE EXCEPTION 'client "%" is not registered', client_id
			USING ERRCODE = 'P0002',
				  HINT = 'Register it with appguard_register_client.';
	END IF;
	snapshot := appguard.baseline_for(client_id);
	info := appguard.consent_view(client_id, snapshot);
	IF snapshot IS NOT NULL THEN
		INSERT INTO appguard.consent_shown (client_id, snapshot_id, shown)
		VALUES (client_id, snapshot, info)
		ON CONFLICT DO NOTHING;
	END IF;
	RETURN info || pg_catalog.jsonb_build_object(
		'client_id', client_id,
		'snapshot_id', snapshot,
		'measured_at', (SELECT s.taken_at FROM appguard.snapshots s WHERE s.id = snapshot));
END
$$;
COMMENT ON FUNCTION @extschema@.appguard_consent_info(text) IS
	'What the consent screen shows about an app: domain, app name, verified organization and location, ownership, label';

-- The consent screen for one patient (subject): the same, and a record
-- that this subject was shown it (appguard.consents.shown_snapshot_id,
-- shown_at).  A token of that (client, subject) issued within
-- appguard.consent_window takes exactly the shown snapshot as the
-- consent's baseline: the patient approved what was shown, not a newer
-- snapshot.  Without a call (a remembered approval: no screen), a new
-- token keeps the consent's baseline.
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

-- A shown value in words.
CREATE FUNCTION appguard.consent_value_text(v jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $1 IS NULL OR $1 = 'null'::jsonb THEN 'nothing (not verified)'
				WHEN $1 = 'true'::jsonb THEN 'verified'
				WHEN $1 = 'false'::jsonb THEN 'not verified'
				ELSE '"' || ($1 #>> '{}') || '"' END
$$;

-- For appguard_explain: what the patient was shown at consent (recorded,
-- else described from the baseline snapshot) against what the same screen
-- shows from the snapshot that confirmed the drift.
CREATE FUNCTION appguard.consent_change(p_client_id text, p_baseline bigint, p_snapshot bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	shown jsonb;
	now_shown jsonb;
	changes jsonb;
BEGIN
	SELECT cs.shown INTO shown FROM appguard.consent_shown cs
	WHERE cs.client_id = p_client_id AND cs.snapshot_id = p_baseline;
	shown := coalesce(shown, appguard.consent_view(p_client_id, p_baseline));
	now_shown := appguard.consent_view(p_client_id, p_snapshot);
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
			   'field', f.field, 'shown', shown -> f.field, 'now', now_shown -> f.field,
			   'text', pg_catalog.format('%s: you were shown %s, it is now %s', f.what,
										 appguard.consent_value_text(shown -> f.field),
										 appguard.consent_value_text(now_shown -> f.field)))
			   ORDER BY f.ord), '[]')
	INTO changes
	FROM (VALUES (1, 'organization', 'organization'), (2, 'location', 'location'),
				 (3, 'domain', 'domain'), (4, 'ownership_verified', 'domain ownership'),
				 (5, 'app_name', 'app name')) AS f(ord, field, what)
	WHERE (shown -> f.field) IS DISTINCT FROM (now_shown -> f.field);
	RETURN pg_catalog.jsonb_build_object(
		'shown', shown, 'now', now_shown, 'changes', changes,
		'text', CASE WHEN shown ->> 'label' IS DISTINCT FROM now_shown ->> 'label'
				THEN pg_catalog.format('You were shown "%s"; it is now "%s".',
									   shown ->> 'label', now_shown ->> 'label')
				ELSE pg_catalog.format('What you were shown has not changed: "%s".', shown ->> 'label') END);
END
$$;

