-- appguard_explain_html: the patient's error_uri page.  What the patient
-- was shown and what is true now, each change in words, the domain, the
-- re-approval link (appguard.reapprove_uri_template); every value escaped,
-- hostile names included; unknown, foreign, malformed and pruned ids; a
-- suspension re-approved by some or all of its patients, and one never
-- applied; languages; a fact two reasons report, given once.  No
-- network: snapshots are handcrafted facts (lifecycle_helpers.inc).
-- Everything runs in one transaction that is
-- rolled back, so the tests that share this database afterwards see none
-- of it.  Ids and times differ from run to run: pages are shown with
-- them masked (public.page).
\set ECHO none
\i sql/lifecycle_helpers.inc
\set ECHO all
BEGIN;
SET LOCAL search_path = appguard, public;
SELECT appguard.setting('appguard.allowed_ports') IS NOT NULL AS loaded;
SET LOCAL appguard.allowed_ports = '';
-- the built-in default: no link
SHOW appguard.reapprove_uri_template;
SET LOCAL appguard.reapprove_uri_template = 'https://auth.example.org/reapprove?suspension={suspension_id}&client={client_id}';

-- A page with the suspension id and the times masked
CREATE FUNCTION public.page(s bigint, client text, lang text DEFAULT 'en') RETURNS text LANGUAGE sql AS $$
	SELECT replace(replace(regexp_replace(appguard_explain_html(s, client, lang),
										  '[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC', 'TIME', 'g'),
						   'suspension ' || s || ' of app', 'suspension ID of app'),
				   'suspension=' || s || '&amp;', 'suspension=ID&amp;')
$$;
-- The distinct tags of a page: only the page's own may appear
CREATE FUNCTION public.tags(html text) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(DISTINCT m[1], ' ' ORDER BY m[1])
	FROM regexp_matches(html, '<(/?[A-Za-z!][A-Za-z0-9]*)', 'g') AS m
$$;

-- An app whose organization changes after two patients consented
SELECT appguard_register_client('heart', 'Heart Tracker', ARRAY['https://app.heart.example.org/cb']) IS NOT NULL;
SELECT snap('app.heart.example.org', 443, '{"dns.ownership_ids": ["heart"], "dns.registrable_domain": "example.org"}') IS NOT NULL;
SELECT appguard_consent_info('heart', 'patient-1') ->> 'label' AS shown;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t1', 'heart', 'patient-1');
SELECT appguard_consent_info('heart', 'patient-2') IS NOT NULL;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t2', 'heart', 'patient-2');
SELECT snap('app.heart.example.org', 443, '{"dns.ownership_ids": ["heart"], "dns.registrable_domain": "example.org",
	"tls.leaf.subject.O": "Data Harvest Ltd", "tls.leaf.subject.L": "Road Town", "tls.leaf.subject.ST": null,
	"tls.leaf.subject.C": "VG", "tls.leaf.issuer.O": "Other CA"}') IS NOT NULL AS drifted;
SELECT token_id, status FROM public.tokens WHERE client_id = 'heart' ORDER BY 1;
SELECT suspension_id AS heart FROM public.tokens WHERE token_id = 't1' \gset

-- The whole page, ids and times masked (printed as is)
\pset format unaligned
\pset tuples_only on
SELECT page(:heart, 'heart');
\pset format aligned
\pset tuples_only off
-- what it must contain: old and new organization, the domain, the link
-- with its values URL-encoded and the & of the URL escaped, one h1
SELECT position('<td>Example Health, Inc.</td>' IN p) > 0 AS old_organization,
	   position('<td>Data Harvest Ltd</td>' IN p) > 0 AS new_organization,
	   position('<strong>example.org</strong>' IN p) > 0 AS domain,
	   position('<a href="https://auth.example.org/reapprove?suspension=' || :heart || '&amp;client=heart">Approve Heart Tracker again</a>' IN p) > 0 AS link,
	   (SELECT count(*) FROM regexp_matches(p, '<h1>', 'g')) AS h1,
	   p ~ '^<!DOCTYPE html>\n<html lang="en">' AS doctype_lang,
	   position('<meta name="viewport" content="width=device-width, initial-scale=1">' IN p) > 0 AS viewport,
	   p !~* '<script|<link|<img|<iframe|<object|src=|url\(|@import|https?://(?!auth\.example\.org/reapprove)' AS self_contained
FROM (SELECT appguard_explain_html(:heart, 'heart') AS p) x;
-- the auth server's role may call it (it reads appguard's tables as
-- their owner: SECURITY DEFINER); a role without grants may not
CREATE ROLE ag_html_auth NOLOGIN IN ROLE appguard_auth_server;
CREATE ROLE ag_html_nobody NOLOGIN;
SELECT appguard_explain_html(:heart, 'heart') AS superuser_page \gset
SET LOCAL ROLE ag_html_auth;
SELECT appguard_explain_html(:heart, 'heart') = :'superuser_page' AS auth_server_gets_the_page;
SET LOCAL ROLE ag_html_nobody;
SELECT try(format('SELECT appguard_explain_html(%s, %L)', :heart, 'heart')) AS no_grant;
RESET ROLE;
-- the page is the explanation's: its plain words per reason
SELECT position(appguard.html_escape(c ->> 'description') IN appguard_explain_html(:heart, 'heart')) > 0 AS shown,
	   c ->> 'severity' AS severity, c ->> 'reason' AS reason
FROM jsonb_array_elements(appguard_explain(:heart) -> 'changes') c ORDER BY 3;

-- Hostile names: a client id, an app name and an organization with markup,
-- quotes and ampersands come out as text
SELECT appguard_register_client($$<script>alert(1)</script>"'&$$, $$Evil <script>alert(1)</script> "App" & 'Co'$$,
	ARRAY['https://evil.example.net/cb']) IS NOT NULL;
SELECT snap('evil.example.net', 443, $${"tls.leaf.subject.O": "Org <script>alert(1)</script> \"Q\" & 'A'"}$$) IS NOT NULL;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('t-evil', $$<script>alert(1)</script>"'&$$, 'patient-1');
SELECT snap('evil.example.net', 443, $${"tls.leaf.subject.O": "<img src=x onerror=alert(1)>"}$$) IS NOT NULL AS drifted;
SELECT suspension_id AS evil FROM public.tokens WHERE token_id = 't-evil' \gset
SELECT tags(p) AS tags,
	   p !~* '<script|<img' AS no_markup_from_values,
	   position('Evil &lt;script&gt;alert(1)&lt;/script&gt; &quot;App&quot; &amp; &#39;Co&#39;' IN p) > 0 AS name_escaped,
	   position('<td>Org &lt;script&gt;alert(1)&lt;/script&gt; &quot;Q&quot; &amp; &#39;A&#39;</td>' IN p) > 0 AS old_org_escaped,
	   position('<td>&lt;img src=x onerror=alert(1)&gt;</td>' IN p) > 0 AS new_org_escaped,
	   position('client=%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27%26">' IN p) > 0 AS link_encoded,
	   position('of app &lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;;' IN p) > 0 AS client_id_escaped
FROM (SELECT appguard_explain_html(:evil, $$<script>alert(1)</script>"'&$$) AS p) x \gx
-- the escaping helper itself
SELECT html_escape($$<a href="x" title='y'>&amp;</a>$$) AS escaped, html_escape(NULL) = '' AS null_is_empty;

-- Unknown and foreign ids: the same error, nothing about the other app
SELECT appguard_register_client('lung', 'Lung Diary', ARRAY['https://lung.example.co.uk/cb']) IS NOT NULL;
SELECT max(id) + 1000 AS unknown FROM appguard.suspensions \gset
SELECT replace(try(format('SELECT appguard_explain_html(%s, %L)', :unknown, 'lung')), :'unknown', 'N') AS unknown_id,
	   replace(try(format('SELECT appguard_explain_html(%s, %L)', :heart, 'lung')), :'heart', 'N') AS foreign_id;
SELECT try(format('SELECT appguard_explain_html(%s, %L)', :heart, 'lung'))
	   = replace(try(format('SELECT appguard_explain_html(%s, %L)', :unknown, 'lung')), :'unknown', :'heart')
	   AS foreign_same_as_unknown;
-- an unregistered client id is no different
SELECT replace(try(format('SELECT appguard_explain_html(%s, %L)', :heart, 'nobody')), :'heart', 'N') AS unregistered;

-- Malformed and NULL input
SELECT try(sql) FROM (VALUES
	($$SELECT appguard_explain_html(NULL, 'heart')$$),
	($$SELECT appguard_explain_html(0, 'heart')$$),
	($$SELECT appguard_explain_html(-5, 'heart')$$),
	($$SELECT appguard_explain_html(1, NULL)$$),
	($$SELECT appguard_explain_html(1, '')$$),
	($$SELECT appguard_explain_html(1, E'a\nb')$$),
	($$SELECT appguard_explain_html(1, 'heart', NULL)$$),
	($$SELECT appguard_explain_html(1, 'heart', 'e')$$),
	($$SELECT appguard_explain_html(1, 'heart', '<script>')$$),
	($$SELECT appguard_explain_html(1, 'heart', 'en-US-' || repeat('x', 40))$$)
) AS t(sql);

-- Languages: English; any other well-formed tag falls back to it
SELECT l AS lang, appguard_explain_html(:heart, 'heart', l) = appguard_explain_html(:heart, 'heart') AS english,
	   appguard_explain_html(:heart, 'heart', l) LIKE E'<!DOCTYPE html>\n<html lang="en">%' AS lang_en
FROM unnest(ARRAY['en', 'en-US', 'en_GB', 'de', 'es', 'zz-Latn-001']) l;

-- Without a re-approval template: no link; the page says to sign in again
SET LOCAL appguard.reapprove_uri_template = '';
SELECT position('<a ' IN p) = 0 AS no_link,
	   position('<p class="action">To approve it again, open Heart Tracker and sign in again, or contact the app''s support.</p>' IN p) > 0 AS sign_in_again
FROM (SELECT appguard_explain_html(:heart, 'heart') AS p) x;
-- a path on the auth server is a valid template; what would be unsafe in
-- an href is refused
SET LOCAL appguard.reapprove_uri_template = '/consent/again/{client_id}';
SELECT substring(appguard_explain_html(:heart, 'heart') FROM '<a href="[^"]*">') AS link;
SELECT try(format('SET appguard.reapprove_uri_template = %L', v)) AS refused
FROM unnest(ARRAY['javascript:alert(1)//{client_id}', 'data:text/html,x', 'https://a.example/ x',
				  'https://a.example/"onmouseover="x', 'https://a.example/<x>', 'auth.example.org/x',
				  '//evil.example/{client_id}', E'/\\evil.example/x', E'https://a.example\\@evil.example/']) v;
SET LOCAL appguard.reapprove_uri_template = 'https://auth.example.org/reapprove?suspension={suspension_id}&client={client_id}';

-- Re-approved by one of its two patients: still the suspended page (for
-- the other), which says that an approval already given restores access
SELECT appguard_reapprove('t1') ->> 'reapproved' AS reapproved;
SELECT position('<h1>Heart Tracker: access to your data suspended</h1>' IN p) > 0 AS suspended_page,
	   position('If you have already approved the app again' IN p) > 0 AS says_reapproval_restores
FROM (SELECT appguard_explain_html(:heart, 'heart') AS p) x;
-- re-approved by both: access restored, no link, the changes still told
SELECT appguard_reapprove('t2') ->> 'reapproved' AS reapproved;
\pset format unaligned
\pset tuples_only on
SELECT substring(page(:heart, 'heart') FROM '<main>.*</main>');
\pset format aligned
\pset tuples_only off
-- pruned (appguard_prune deletes a suspension no grant points to): as unknown
DELETE FROM appguard.suspensions WHERE id = :heart;
SELECT replace(try(format('SELECT appguard_explain_html(%s, %L)', :heart, 'heart')), :'heart', 'N') AS pruned;

-- A suspension the breaker holds, and one never applied (its state set by
-- hand here; test/t covers how they come about)
UPDATE appguard.suspensions SET state = 'held' WHERE id = :evil;
SELECT substring(p FROM '<h1>.*</h1>') AS h1, substring(p FROM '<p>.*?</p>') AS lead, position('<a ' IN p) = 0 AS no_link
FROM (SELECT appguard_explain_html(:evil, $$<script>alert(1)</script>"'&$$) AS p) x \gx
-- failed (its sweep failed to close): never applied, its grants refused
-- at refresh; the page says suspended, since the drift was confirmed
UPDATE appguard.suspensions SET state = 'failed', applied_at = NULL WHERE id = :evil;
SELECT substring(p FROM '<h1>.*</h1>') AS h1,
	   regexp_replace(substring(p FROM '<p>.*?</p>'), '[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC', 'TIME') AS lead,
	   position('<a href=' IN p) > 0 AS link
FROM (SELECT appguard_explain_html(:evil, $$<script>alert(1)</script>"'&$$) AS p) x \gx
UPDATE appguard.suspensions SET state = 'discarded' WHERE id = :evil;
SELECT substring(p FROM '<h1>.*</h1>') AS h1, substring(p FROM '<p>.*?</p>') AS lead, position('<a ' IN p) = 0 AS no_link
FROM (SELECT appguard_explain_html(:evil, $$<script>alert(1)</script>"'&$$) AS p) x \gx


-- One fact, two reasons: a chain that changed and now dangles is both
-- dns_cname_changed (warn) and dns_dangling_cname (suspend), of the same
-- field with the same values.  The explanation and the page give it once,
-- at the severity that applies (suspend), not again among the other
-- changes.  (A probe writes a host without an address as dns_failed, where
-- only the dangling rule runs; both documents are ok here.)
SELECT appguard_register_client('alias', 'Alias App', ARRAY['https://app.alias.example.org/cb']) IS NOT NULL;
SELECT snap('app.alias.example.org', 443, '{"dns.cname": ["edge.cdn.example.net"]}') IS NOT NULL;
INSERT INTO refresh_tokens (token_id, client_id, subject) VALUES ('a1', 'alias', 'patient-1');
SELECT snap('app.alias.example.org', 443, '{"dns.cname": ["gone.cdn.example.net"], "dns.a": [], "dns.aaaa": [],
	"dns.rcode": "NXDOMAIN", "dns.queries.A": "NXDOMAIN", "dns.queries.AAAA": "NXDOMAIN"}') IS NOT NULL AS dangling;
SELECT id AS alias FROM appguard.suspensions WHERE client_id = 'alias' \gset
SELECT e ->> 'reason' AS reason, e ->> 'severity' AS severity, e ->> 'field' AS field
FROM suspensions, jsonb_array_elements(diff) e WHERE id = :alias;
SELECT c ->> 'reason' AS reason, c ->> 'severity' AS severity, c ->> 'text' AS text
FROM jsonb_array_elements(appguard_explain(:alias) -> 'changes') c;
SELECT appguard_explain(:alias) ->> 'summary' AS summary;
SELECT (length(p) - length(replace(p, 'gone.cdn.example.net', ''))) / length('gone.cdn.example.net') AS chain_on_page,
	   position('Other changes' IN p) = 0 AS no_other_changes
FROM (SELECT appguard_explain_html(:alias, 'alias') AS p) x;

ROLLBACK;
