// An example auth server for deployers: node-oidc-provider 9 with its
// refresh tokens in PostgreSQL, guarded by appguard.  docs/oidc-provider.md
// walks through it; test/t/070_oidc_provider.pl drives it with a browser.
//
//   node server.js config.json        (PostgreSQL from PGHOST, PGPORT, PGDATABASE, PGUSER)
//
// config.json: { "issuer": "http://127.0.0.1:4600", "listen": { "host": ..., "port": ... },
//   "clients": [{ "client_id", "client_name", "redirect_uris": [...], "initiate_login_uri" }],
//   "accounts": { "<username>": { "password": ..., "name": ... } },
//   "cookie_keys": [...], "appguard": true, "refresh_check": true }
//
// What appguard adds to a plain oidc-provider server, and where:
//   adapter.js       refresh tokens in a table appguard protects (protect.sql); at the
//                    token endpoint's refresh the token is read with appguard's verdict
//   provider.use     the token endpoint answers appguard's invalid_grant body (with
//                    error_uri) when appguard refused
//   registerClients  each client registered with appguard (its redirect URI host is watched)
//   consentPage      the organization the patient approves, from appguard_consent_info
//   explainPage      the error_uri page: appguard_explain_html, under a strict CSP
//   reapprovePage    the page's re-approval link: to the app, which asks again
//   reapproveGrant   a fresh consent re-approves the suspended grant, retires its old token
// With "appguard": false (the benchmark's baseline) none of these run.  The
// app asks with prompt=consent: the consent screen records what it showed
// (appguard_consent_info with the patient) and the token that follows takes
// that as the consent's baseline (docs/consent.md).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';
import pg from 'pg';

import { makeAdapter } from './adapter.js';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const useAppguard = config.appguard !== false;
// "refresh_check": false leaves the token endpoint as oidc-provider has it
// (the table stays protected; the benchmark's middle case)
const checkRefresh = useAppguard && config.refresh_check !== false;
const pool = new pg.Pool({ max: config.pool_size ?? 10 });
const TOKEN_TABLE = 'oidc_refresh_tokens';

// ------------------------------------------------------------------ the provider

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
	.export({ format: 'jwk' });

const provider = new Provider(config.issuer, {
	adapter: makeAdapter(pool, { guardRefresh: checkRefresh }),
	clients: config.clients.map((c) => ({
		client_id: c.client_id,
		client_name: c.client_name,
		redirect_uris: c.redirect_uris,
		token_endpoint_auth_method: 'none',          // a public client (a SMART patient app)
		grant_types: ['authorization_code', 'refresh_token'],
		response_types: ['code'],
		...(c.initiate_login_uri ? { initiate_login_uri: c.initiate_login_uri } : {}),
	})),
	// PKCE (S256) is required of public clients by default
	scopes: ['openid', 'offline_access'],
	claims: { openid: ['sub'], profile: ['name'] },
	rotateRefreshToken: true,                        // every refresh rotates (one-time use)
	ttl: { RefreshToken: 14 * 24 * 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 14 * 24 * 3600 },
	jwks: { keys: [{ ...signingKey, use: 'sig', kid: 'k1' }] },
	cookies: { keys: config.cookie_keys ?? [randomBytes(32).toString('hex')] },
	features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
	interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
	async findAccount(ctx, id)
	{
		const account = config.accounts[id];
		if (!account)
			return undefined;
		return { accountId: id, claims: async () => ({ sub: id, name: account.name }) };
	},
});

// The token endpoint answers appguard's refusal.  The adapter checks a
// refresh with appguard_check_refresh in the statement that reads the token
// (adapter.js) and, when appguard refuses, keeps the refusal on the request
// and reports the token as not found; oidc-provider then fails the grant
// with invalid_grant, and this post-processing puts appguard's body in
// its place: {"error": "invalid_grant", "error_description": ...,
// "error_uri": ...}.  55P03 (appguard busy with the app's grants) is a 503
// with Retry-After.
provider.use(async (ctx, next) =>
{
	await next();
	if (ctx.oidc?.route !== 'token')
		return;
	if (ctx.state.appguardRefusal && ctx.status === 400)
		ctx.body = ctx.state.appguardRefusal;
	else if (ctx.state.appguardBusy && ctx.status === 500)
	{
		ctx.status = 503;
		ctx.set('Retry-After', '1');
		ctx.body = { error: 'temporarily_unavailable', error_description: 'Try again in a moment.' };
	}
});

// ------------------------------------------------------------------ HTML

function escapeHtml(value)
{
	return String(value ?? '').replace(/[&<>"']/g, (c) => ({
		'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// The interaction pages load nothing and run no script.
const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";
const STYLE = `body{font-family:system-ui,sans-serif;overflow-wrap:anywhere;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a;background:#fff;line-height:1.5}
label{display:block;margin-top:1rem;font-weight:600}input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}
button{font-size:1rem;padding:.5rem 1.2rem;margin:1rem .5rem 0 0;border-radius:.3rem;border:1px solid #0b4f8a}
.primary{background:#0b4f8a;color:#fff}.secondary{background:#fff;color:#0b4f8a}
.org{border:2px solid #0b4f8a;border-radius:.4rem;padding:.8rem 1rem;margin:1rem 0}
.warn{color:#8a1c0b}dt{font-weight:600}dd{margin:0 0 .5rem 0}`;

function sendHtml(res, status, title, body, extraHeaders = {})
{
	const html = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><main>${body}</main></body></html>`;
	res.writeHead(status, {
		'Content-Type': 'text/html; charset=utf-8',
		'Content-Security-Policy': PAGE_CSP,
		'X-Content-Type-Options': 'nosniff',
		'Referrer-Policy': 'no-referrer',
		'Cache-Control': 'no-store',
		...extraHeaders,
	});
	res.end(html);
}

function loginPage(res, uid, client, error)
{
	sendHtml(res, error ? 401 : 200, 'Sign in', `
<h1>Sign in</h1>
<p>${escapeHtml(client.clientName ?? client.clientId)} asks to connect to your health records.</p>
${error ? `<p class="warn" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="primary" type="submit">Sign in</button>
</form>`);
}

// What the patient approves: the app's name, and who is behind it as
// appguard measured it (appguard_consent_info with the patient records
// that this was shown, so the token that follows takes it as baseline).
async function consentPage(res, uid, client, accountId, scopes)
{
	let info = null;
	let note = '';
	if (useAppguard)
	{
		try
		{
			const { rows } = await pool.query('SELECT appguard_consent_info($1, $2) AS info',
				[client.clientId, accountId]);
			info = rows[0].info;
		}
		catch (e)
		{
			// P0002: a client appguard does not know; say so rather than fail
			if (e.code !== 'P0002')
				throw e;
			note = 'The organization behind this app could not be verified.';
		}
	}
	const facts = info ? `
<section class="org" aria-labelledby="who">
<h2 id="who">Who you are connecting to</h2>
<p id="appguard-label">${escapeHtml(info.label)}</p>
<dl>
<dt>Organization</dt><dd id="organization">${escapeHtml(info.organization ?? 'not stated in its certificate')}</dd>
<dt>Location</dt><dd>${escapeHtml(info.location ?? 'not stated')}</dd>
<dt>Web site</dt><dd>${escapeHtml(info.domain)}</dd>
<dt>App identifier</dt><dd>${escapeHtml(client.clientId)}</dd>
</dl>
</section>` : `<p class="warn">${escapeHtml(note)}</p>`;
	sendHtml(res, 200, 'Allow access?', `
<h1>Allow ${escapeHtml(client.clientName ?? client.clientId)} to access your health records?</h1>
${facts}
<p>It asks for: ${scopes.map((s) => `<span class="scope">${escapeHtml(s)}</span>`).join(', ')}.</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
<button class="primary" type="submit" name="decision" value="allow">Allow</button>
<button class="secondary" type="submit" name="decision" value="deny">Deny</button>
</form>`);
}

// ------------------------------------------------------------------ request helpers

const BODY_LIMIT = 56 * 1024;

async function readBody(req)
{
	const chunks = [];
	let size = 0;
	for await (const chunk of req)
	{
		size += chunk.length;
		if (size > BODY_LIMIT)
			throw Object.assign(new Error('request body too large'), { status: 413 });
		chunks.push(chunk);
	}
	return Buffer.concat(chunks);
}


// ------------------------------------------------------------------ appguard

// Each configured client is registered with appguard: the host of its
// first redirect URI is then watched.
async function registerClients()
{
	for (const c of config.clients)
	{
		try
		{
			await pool.query('SELECT appguard_register_client($1, $2, $3)',
				[c.client_id, c.client_name, c.redirect_uris]);
		}
		catch (e)
		{
			if (e.code !== '23505')              // already registered
				throw e;
		}
	}
}

// The error_uri page: /appguard/suspensions/<id>?client=<client_id>[&lang=xx].
// appguard builds the whole page; it has no script and no outside
// resource, so it is served under a CSP that allows neither.
async function explainPage(req, res, url, id)
{
	const EXPLAIN_CSP = "default-src 'none'; style-src 'unsafe-inline'";
	const client = url.searchParams.get('client') ?? '';
	const lang = (url.searchParams.get('lang')
		?? (req.headers['accept-language'] ?? 'en').split(/[,;-]/)[0]).toLowerCase().trim() || 'en';
	const fail = (status, title, text) => sendHtml(res, status, title,
		`<h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p>`, { 'Content-Security-Policy': EXPLAIN_CSP });
	if (!/^[1-9][0-9]{0,17}$/.test(id))
		return fail(400, 'Not a valid link', 'This link does not name a suspension. Check that it was copied whole.');
	try
	{
		const { rows } = await pool.query('SELECT appguard_explain_html($1::bigint, $2, $3) AS html',
			[id, client, /^[a-z]{2,3}$/.test(lang) ? lang : 'en']);
		res.writeHead(200, {
			'Content-Type': 'text/html; charset=utf-8',
			'Content-Security-Policy': EXPLAIN_CSP,
			'X-Content-Type-Options': 'nosniff',
			'Referrer-Policy': 'no-referrer',
			'Cache-Control': 'no-store',
		});
		res.end(rows[0].html);
	}
	catch (e)
	{
		if (e.code === 'P0002')                  // unknown, pruned, or another client's
			return fail(404, 'Nothing found', 'There is no suspension of this app under this link.');
		if (e.code === '22023')
			return fail(400, 'Not a valid link', 'This link does not name a suspension. Check that it was copied whole.');
		throw e;
	}
}

// The re-approval link of the error_uri page
// (appguard.reapprove_uri_template = '<issuer>/appguard/reapprove/{suspension_id}?client={client_id}'):
// re-approval is a new authorization, which only the app can start, so the
// patient is sent to the app's initiate_login_uri (OpenID Connect's
// third-party-initiated login, with iss); the app asks again with
// prompt=consent and the consent screen shows what is true now.
async function reapprovePage(req, res, url)
{
	const client = await provider.Client.find(url.searchParams.get('client') ?? '');
	if (client?.initiateLoginUri)
	{
		const target = new URL(client.initiateLoginUri);
		target.searchParams.set('iss', config.issuer);
		res.writeHead(303, { Location: target.href, 'Cache-Control': 'no-store' });
		return res.end();
	}
	return sendHtml(res, client ? 200 : 404, 'Approve the app again',
		`<h1>Approve the app again</h1><p>${client
			? `Open ${escapeHtml(client.clientName ?? client.clientId)} and sign in again: you will be asked to approve it.`
			: 'There is no such app.'}</p>`);
}

// The patient approved the app again on a fresh consent screen.  The token
// this authorization issues joins the patient's consent with what that
// screen showed (appguard_consent_info with the patient: docs/consent.md).
// The grant's rows appguard suspended are settled in one transaction:
// appguard_reapprove records the re-approval against the suspension (its
// error_uri page then says access is restored), and the server retires the
// old token, which the app replaces with the new one (a write of the status
// column: the server's own decision, which appguard keeps).
async function reapproveGrant(grantId)
{
	const db = await pool.connect();
	try
	{
		await db.query('BEGIN');
		const { rows } = await db.query(
			`SELECT id FROM ${TOKEN_TABLE} WHERE grant_id = $1 AND status = 'suspended' ORDER BY created_at DESC LIMIT 1`,
			[grantId]);
		for (const { id } of rows)
		{
			await db.query(`SELECT appguard_reapprove('${TOKEN_TABLE}', $1)`, [id]);
			await db.query(`UPDATE ${TOKEN_TABLE} SET status = 'revoked' WHERE grant_id = $1 AND status IN ('active', 'suspended')`,
				[grantId]);
		}
		await db.query('COMMIT');
	}
	catch (e)
	{
		await db.query('ROLLBACK');
		throw e;
	}
	finally
	{
		db.release();
	}
}

// ------------------------------------------------------------------ routes

async function interaction(req, res, url)
{
	const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/);
	if (!m)
		return false;
	const details = await provider.interactionDetails(req, res);
	const { uid, prompt, params, session } = details;
	if (m[1] !== uid)
		return sendHtml(res, 400, 'Expired', '<h1>This sign-in has expired</h1><p>Start again from the app.</p>');
	const client = await provider.Client.find(params.client_id);
	if (req.method === 'GET' && !m[2])
	{
		if (prompt.name === 'login')
			return loginPage(res, uid, client);
		return consentPage(res, uid, client, session.accountId,
			String(params.scope ?? '').split(' ').filter(Boolean));
	}
	if (req.method !== 'POST')
		return sendHtml(res, 405, 'Not allowed', '<h1>Not allowed</h1>');
	const form = querystring.parse((await readBody(req)).toString('utf8'));
	if (m[2] === 'login' && prompt.name === 'login')
	{
		const account = config.accounts[form.username];
		if (!account || account.password !== form.password)
			return loginPage(res, uid, client, 'Wrong username or password.');
		return provider.interactionFinished(req, res, { login: { accountId: String(form.username) } },
			{ mergeWithLastSubmission: false });
	}
	if (m[2] === 'confirm' && prompt.name === 'consent')
	{
		if (form.decision !== 'allow')
			return provider.interactionFinished(req, res,
				{ error: 'access_denied', error_description: 'The patient denied access.' },
				{ mergeWithLastSubmission: false });
		let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
		grant ??= new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
		const missing = prompt.details;
		if (missing.missingOIDCScope)
			grant.addOIDCScope(missing.missingOIDCScope.join(' '));
		if (missing.missingOIDCClaims)
			grant.addOIDCClaims(missing.missingOIDCClaims);
		for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {}))
			grant.addResourceScope(indicator, scopes.join(' '));
		const grantId = await grant.save();
		if (useAppguard)
			await reapproveGrant(grantId);
		return provider.interactionFinished(req, res, { consent: { grantId } },
			{ mergeWithLastSubmission: true });
	}
	return sendHtml(res, 400, 'Out of step', '<h1>This step does not fit</h1><p>Start again from the app.</p>');
}

const oidc = provider.callback();

async function handle(req, res)
{
	const url = new URL(req.url, config.issuer);
	if (url.pathname.startsWith('/interaction/'))
		return interaction(req, res, url);
	const explain = url.pathname.match(/^\/appguard\/suspensions\/([^/]*)$/);
	if (useAppguard && explain && req.method === 'GET')
	{
		let id = '';
		try { id = decodeURIComponent(explain[1]); } catch { /* malformed: refused below */ }
		return explainPage(req, res, url, id);
	}
	if (useAppguard && /^\/appguard\/reapprove\/[^/]*$/.test(url.pathname) && req.method === 'GET')
		return reapprovePage(req, res, url);
	return oidc(req, res);
}

const server = http.createServer((req, res) =>
{
	handle(req, res).catch((e) =>
	{
		console.error(`${req.method} ${req.url}: ${e.stack ?? e}`);
		if (!res.headersSent)
			sendHtml(res, e.status ?? 500, 'Error', '<h1>Something went wrong</h1><p>Try again later.</p>');
		else
			res.end();
	});
});

if (useAppguard)
	await registerClients();
server.keepAliveTimeout = 30000;
server.listen(config.listen.port, config.listen.host, () =>
{
	console.log(`listening on ${config.listen.host}:${config.listen.port} (appguard ${useAppguard ? 'on' : 'off'}`
		+ `${useAppguard && !checkRefresh ? ', no refresh check' : ''})`);
});
for (const sig of ['SIGTERM', 'SIGINT'])
	process.on(sig, () => { server.close(); pool.end().finally(() => process.exit(0)); });
