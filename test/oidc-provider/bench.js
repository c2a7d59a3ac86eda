// Token-endpoint latency of two example servers, one without appguard and
// one with it, interleaved request by request (test/bench/oidc.sh runs it
// through bench.pl).  Not part of the example server.
//
//   node bench.js '{"servers": {"plain": "http://...", "guarded": "http://..."},
//                   "client_id": ..., "redirect_uri": ..., "username": ..., "password": ...,
//                   "requests": 300}'
//
// Each iteration, on each server (the order swapped every iteration): one
// authorization with login and consent over plain HTTP (not timed), the
// code exchange with PKCE (timed), then one refresh of the chain's token
// (timed; each refresh rotates: the old row is consumed, a new one
// inserted).  HTTP keep-alive, one connection per server.  Prints JSON:
// the medians and the ratios.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';

const job = JSON.parse(process.argv[2]);
const agents = {};

function request(base, method, path, { form, cookies } = {})
{
	const url = new URL(path, base);
	const body = form ? new URLSearchParams(form).toString() : undefined;
	agents[base] ??= new http.Agent({ keepAlive: true, maxSockets: 1 });
	return new Promise((resolve, reject) =>
	{
		const t0 = process.hrtime.bigint();
		const req = http.request(url, {
			method, agent: agents[base],
			headers: {
				...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
				...(cookies?.size ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}),
			},
		}, (res) =>
		{
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () =>
			{
				const ms = Number(process.hrtime.bigint() - t0) / 1e6;
				for (const c of [res.headers['set-cookie'] ?? []].flat())
				{
					const [pair] = c.split(';');
					const i = pair.indexOf('=');
					if (cookies)
						cookies.set(pair.slice(0, i), pair.slice(i + 1));
				}
				resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString(), ms });
			});
		});
		req.on('error', reject);
		if (body)
			req.write(body);
		req.end();
	});
}

// follow 30x redirects on the server itself; returns the response that
// leaves it (the redirect to the app) or a page
async function follow(base, res, cookies)
{
	while (res.status >= 300 && res.status < 400)
	{
		const loc = new URL(res.headers.location, base);
		if (loc.origin !== new URL(base).origin)
			return { res, location: loc };
		res = await request(base, 'GET', loc.pathname + loc.search, { cookies });
	}
	return { res };
}

// login (once per session) and consent, untimed; returns { code, verifier }
async function authorize(base, session)
{
	const verifier = randomBytes(32).toString('base64url');
	const challenge = createHash('sha256').update(verifier).digest('base64url');
	const q = new URLSearchParams({ response_type: 'code', client_id: job.client_id, redirect_uri: job.redirect_uri,
		scope: 'openid offline_access', prompt: 'consent', state: 's', code_challenge: challenge,
		code_challenge_method: 'S256' });
	let { res, location } = await follow(base, await request(base, 'GET', `/auth?${q}`, { cookies: session }), session);
	for (let i = 0; !location && i < 3; i++)
	{
		const action = res.text.match(/<form method="post" action="([^"]+)"/)?.[1];
		if (!action)
			throw new Error(`no form: ${res.status} ${res.text.slice(0, 300)}`);
		const form = action.endsWith('/login') ? { username: job.username, password: job.password } : { decision: 'allow' };
		({ res, location } = await follow(base, await request(base, 'POST', action, { form, cookies: session }), session));
	}
	const code = location?.searchParams.get('code');
	if (!code)
		throw new Error(`no code: ${location}`);
	return { code, verifier };
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

const modes = Object.keys(job.servers);
const state = Object.fromEntries(modes.map((m) => [m, { session: new Map(), rt: null, code: [], refresh: [] }]));
let failures = 0;

async function one(mode, record)
{
	const base = job.servers[mode];
	const s = state[mode];
	const { code, verifier } = await authorize(base, s.session);
	const ex = await request(base, 'POST', '/token', { form: { grant_type: 'authorization_code', code,
		client_id: job.client_id, redirect_uri: job.redirect_uri, code_verifier: verifier } });
	if (ex.status !== 200)
	{
		failures++;
		return;
	}
	if (record)
		s.code.push(ex.ms);
	// refresh the chain started by the first exchange (a long-lived grant)
	s.rt ??= JSON.parse(ex.text).refresh_token;
	const r = await request(base, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: s.rt,
		client_id: job.client_id } });
	if (r.status !== 200)
	{
		failures++;
		process.stderr.write(`${mode} refresh: ${r.status} ${r.text}\n`);
		return;
	}
	s.rt = JSON.parse(r.text).refresh_token;
	if (record)
		s.refresh.push(r.ms);
}

const t0 = Date.now();
for (let i = 0; i < 20; i++)
	for (const m of modes)
		await one(m, false);
for (let i = 0; i < job.requests; i++)
	for (const m of i % 2 ? modes : [...modes].reverse())
		await one(m, true);
const out = { requests: job.requests, seconds: (Date.now() - t0) / 1000, failures, median_ms: {} };
for (const m of modes)
	out.median_ms[m] = { refresh: median(state[m].refresh), code: median(state[m].code) };
process.stdout.write(JSON.stringify(out) + '\n');
for (const a of Object.values(agents))
	a.destroy();
