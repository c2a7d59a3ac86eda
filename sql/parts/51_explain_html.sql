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
