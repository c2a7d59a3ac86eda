// The patient's side of test/t/070_oidc_provider.pl: Debian's Chromium,
// headless, driven by puppeteer-core, and the app's token requests.  Not
// part of the example server.
//
//   node walk.js job.json      prints one JSON document: what it saw
//
// job.json: { "base": "http://<addr>:<port>", "out_dir": ..., "profile": <user data dir>,
//   "steps": [ { "do": "authorize", "name": ..., "client_id", "redirect_uri", "username",
//                "password", "screenshot": "consent.png" },
//              { "do": "refresh", "name", "client_id", "refresh_token" },
//              { "do": "page", "name", "url", "screenshot", "axe": true, "no_csp": true } ] }
// A refresh_token of "@name" is the latest refresh token of step "name".
//
// Chromium is started so that it reaches nothing but the test's loopback
// server: every host name maps to NOTFOUND (the machine's resolver is never
// asked), background networking is off, and the app's redirect URI is
// answered inside the browser (request interception) without a connection.
// Its net log is kept and summed up (hosts, resolver jobs) in the result.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const b64url = (buf) => buf.toString('base64url');
const netlog = path.join(job.out_dir, `netlog-${job.label ?? 'walk'}.json`);

// a new profile without the password manager (it would look the test
// password up in Google's leak check)
if (!existsSync(path.join(job.profile, 'Default', 'Preferences')))
{
	mkdirSync(path.join(job.profile, 'Default'), { recursive: true });
	writeFileSync(path.join(job.profile, 'Default', 'Preferences'), JSON.stringify({
		credentials_enable_service: false,
		profile: { password_manager_enabled: false, password_manager_leak_detection: false },
		signin: { allowed: false },
	}));
}

const browser = await puppeteer.launch({
	executablePath: job.chromium ?? '/usr/bin/chromium',
	headless: true,
	userDataDir: job.profile,
	args: [
		'--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--no-default-browser-check',
		'--disable-background-networking', '--disable-component-update', '--disable-sync',
		'--disable-default-apps', '--disable-extensions', '--disable-domain-reliability',
		'--disable-client-side-phishing-detection', '--metrics-recording-only', '--no-pings',
		'--disable-breakpad', '--password-store=basic', '--use-mock-keychain',
		'--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,'
			+ 'CertificateTransparencyComponentUpdater,AutofillServerCommunication,InterestFeedContentSuggestions,'
			+ 'NetworkTimeServiceQuerying,DnsOverHttps,AccountConsistency,SafeBrowsing,PrivacySandboxSettings4,'
			+ 'PasswordLeakDetection,PasswordManagerEnableSenderService',
		'--dns-prefetch-disable', '--disable-signin-promo', '--safebrowsing-disable-auto-update',
		`--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${new URL(job.base).hostname}`,
		`--log-net-log=${netlog}`, '--net-log-capture-mode=Default',
		'--window-size=800,1000',
	],
	defaultViewport: { width: 800, height: 1000 },
});

const result = { steps: {} };
const tokens = { ...(job.tokens ?? {}) };

async function newPage(interceptPrefixes = [])
{
	const page = await browser.newPage();
	const seen = { dialogs: [], console: [], requests: [], csp: [] };
	page.on('dialog', async (d) => { seen.dialogs.push(d.message()); await d.dismiss(); });
	page.on('console', (m) => seen.console.push(m.text()));
	page.on('request', (r) => seen.requests.push(r.url()));
	await page.setRequestInterception(true);
	page.on('request', (r) =>
	{
		if (interceptPrefixes.some((p) => r.url().startsWith(p)))
			r.respond({ status: 200, contentType: 'text/plain', body: 'the app received the code' });
		else
			r.continue();
	});
	// any blocked script, image or style is a CSP violation event
	await page.evaluateOnNewDocument(() =>
	{
		document.addEventListener('securitypolicyviolation',
			(e) => { (window.__csp ??= []).push(`${e.violatedDirective} ${e.blockedURI}`); });
	});
	return { page, seen };
}

// What a page shows, and whether anything ran that should not have.
async function inspect(page, seen)
{
	return page.evaluate((s) => ({
		title: document.title,
		text: document.body ? document.body.innerText : '',
		lang: document.documentElement.lang,
		pwned: window.__pwned ?? null,
		scripts: document.scripts.length,
		images: document.images.length,
		csp_violations: window.__csp ?? [],
		dialogs: s.dialogs,
	}), seen);
}

async function axe(page)
{
	await page.evaluate(axeSource);
	const r = await page.evaluate(async () =>
	{
		const res = await window.axe.run(document, { resultTypes: ['violations'] });
		return {
			violations: res.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help })),
			passes: res.passes.length,
		};
	});
	return r;
}

async function token(params)
{
	const res = await fetch(`${job.base}/token`, {
		method: 'POST',
		headers: { 'content-type': 'application/x-www-form-urlencoded' },
		body: new URLSearchParams(params),
	});
	const text = await res.text();
	let body;
	try { body = JSON.parse(text); } catch { body = text; }
	return { status: res.status, body, headers: Object.fromEntries(res.headers) };
}

// login (when the browser has no session), the consent screen, the code,
// and its exchange with PKCE
async function authorize(step)
{
	const verifier = b64url(randomBytes(32));
	const challenge = b64url(createHash('sha256').update(verifier).digest());
	const state = b64url(randomBytes(12));
	const url = new URL(`${job.base}/auth`);
	for (const [k, v] of Object.entries({
		response_type: 'code', client_id: step.client_id, redirect_uri: step.redirect_uri,
		scope: 'openid offline_access', prompt: 'consent', state,
		code_challenge: challenge, code_challenge_method: 'S256' }))
		url.searchParams.set(k, v);
	const { page, seen } = await newPage([step.redirect_uri]);
	if (step.no_csp)
		await page.setBypassCSP(true);
	const out = { logged_in: false };
	await page.goto(url.href, { waitUntil: 'load' });
	if (await page.$('#password'))
	{
		await page.type('#username', step.username);
		await page.type('#password', step.password);
		await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')]);
		out.logged_in = true;
	}
	out.consent = await inspect(page, seen);
	out.consent.organization = await page.$eval('#organization', (e) => e.textContent).catch(() => null);
	out.consent.label = await page.$eval('#appguard-label', (e) => e.textContent).catch(() => null);
	out.consent.heading = await page.$eval('h1', (e) => e.textContent).catch(() => null);
	if (step.screenshot)
	{
		out.screenshot = path.join(job.out_dir, step.screenshot);
		await page.screenshot({ path: out.screenshot, fullPage: true });
	}
	if (step.axe)
		out.axe = await axe(page);
	await Promise.all([
		page.waitForRequest((r) => r.url().startsWith(step.redirect_uri), { timeout: 15000 }),
		page.click('button[value=allow]'),
	]);
	const redirected = new URL(seen.requests.find((u) => u.startsWith(step.redirect_uri)));
	out.state_ok = redirected.searchParams.get('state') === state;
	const code = redirected.searchParams.get('code');
	out.error = redirected.searchParams.get('error');
	out.dialogs = seen.dialogs;
	await page.close();
	if (!code)
		return out;
	// PKCE: without the verifier the code is refused
	const without = await token({ grant_type: 'authorization_code', code: 'x' + code, client_id: step.client_id,
		redirect_uri: step.redirect_uri });
	out.bad_code_status = without.status;
	const t0 = performance.now();
	const ex = await token({ grant_type: 'authorization_code', code, client_id: step.client_id,
		redirect_uri: step.redirect_uri, code_verifier: verifier });
	out.exchange = { status: ex.status, ms: performance.now() - t0, error: ex.body.error,
		has_refresh_token: Boolean(ex.body.refresh_token), scope: ex.body.scope };
	if (ex.body.refresh_token)
		tokens[step.name] = ex.body.refresh_token;
	out.refresh_token = ex.body.refresh_token;
	return out;
}

async function refresh(step)
{
	let rt = step.refresh_token;
	if (rt.startsWith('@'))
		rt = tokens[rt.slice(1)];
	const r = await token({ grant_type: 'refresh_token', refresh_token: rt, client_id: step.client_id });
	const out = { status: r.status, body: r.status === 200 ? { has_access_token: Boolean(r.body.access_token) } : r.body,
		presented: rt, content_type: r.headers['content-type'] };
	if (r.status === 200)
	{
		out.refresh_token = r.body.refresh_token;
		out.rotated = Boolean(r.body.refresh_token) && r.body.refresh_token !== rt;
		if (step.keep !== false)
			tokens[step.for ?? step.refresh_token.replace(/^@/, '')] = r.body.refresh_token;
	}
	return out;
}

// A page opened in the browser: what it shows, its CSP header, whether
// anything ran.  no_csp: the CSP is switched off (setBypassCSP), so that
// only escaping stands between injected values and the browser.
async function openPage(step)
{
	const { page, seen } = await newPage(step.intercept ? [step.intercept] : []);
	if (step.no_csp)
		await page.setBypassCSP(true);
	let url = step.url;
	if (url.startsWith('@'))
		url = result.steps[url.slice(1)]?.body?.error_uri;
	const res = await page.goto(url, { waitUntil: 'load' });
	const out = await inspect(page, seen);
	out.status = res.status();
	out.csp = res.headers()['content-security-policy'] ?? null;
	out.content_type = res.headers()['content-type'] ?? null;
	out.h1 = await page.$$eval('h1', (es) => es.map((e) => e.textContent));
	out.links = await page.$$eval('a', (es) => es.map((e) => ({ href: e.getAttribute('href'), text: e.textContent })));
	if (step.screenshot)
	{
		out.screenshot = path.join(job.out_dir, step.screenshot);
		await page.screenshot({ path: out.screenshot, fullPage: true });
	}
	if (step.axe)
		out.axe = await axe(page);
	if (step.mobile)
	{
		await page.setViewport({ width: 360, height: 740, isMobile: true });
		out.mobile_overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
	}
	// the re-approval link: followed to the app (intercepted, like a redirect URI)
	if (step.follow)
	{
		const link = await page.$(`a[href*="${step.follow}"]`);
		out.followed = null;
		if (link)
		{
			const [req] = await Promise.all([
				page.waitForRequest((r) => r.url().startsWith(step.intercept), { timeout: 15000 }),
				link.click(),
			]);
			out.followed = req.url();
		}
	}
	await page.close();
	return out;
}

try
{
	for (const step of job.steps)
	{
		const fn = { authorize, refresh, page: openPage }[step.do];
		if (!fn)
			throw new Error(`unknown step ${step.do}`);
		try
		{
			result.steps[step.name] = await fn(step);
		}
		catch (e)
		{
			result.steps[step.name] = { exception: String(e.stack ?? e) };
		}
	}
}
finally
{
	await browser.close();
}

// The net log: every URL Chromium dealt with (requests to Google's
// services that it makes on its own are among them: the host-resolver
// rule fails them before any lookup), every TCP connection it opened or
// tried, every UDP socket it connected (Chromium connects UDP sockets to
// probe routes, IPv6 reachability and address order: a connect of a UDP
// socket sends no packet), and every host-resolver job (a DNS lookup).
const summary = { file: netlog, url_hosts: [], tcp: [], udp_connect: [], resolver_jobs: 0 };
if (existsSync(netlog))
{
	const text = readFileSync(netlog, 'utf8');
	let log;
	try { log = JSON.parse(text); } catch { log = JSON.parse(text.replace(/,?\s*$/, ']}')); }
	const types = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([k, v]) => [v, k]));
	const hosts = new Set();
	const tcp = new Set();
	const udp = new Set();
	for (const e of log.events)
	{
		const type = types[e.type] ?? '';
		const p = e.params ?? {};
		if (typeof p.url === 'string')
			hosts.add(new URL(p.url).hostname);
		if (/^TCP_CONNECT(_ATTEMPT)?$/.test(type))
			for (const a of [p.address ?? p.address_list ?? []].flat())
				tcp.add(String(a));
		if (type === 'UDP_CONNECT')
			udp.add(String(p.address));
		if (type === 'HOST_RESOLVER_MANAGER_JOB' && p.host)
			summary.resolver_jobs++;
	}
	summary.url_hosts = [...hosts].sort();
	summary.tcp = [...tcp].sort();
	summary.udp_connect = [...udp].sort();
}
result.netlog = summary;
process.stdout.write(JSON.stringify(result) + '\n');
