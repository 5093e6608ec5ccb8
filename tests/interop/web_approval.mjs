// The approver page against real peers: a local OpenID Connect provider (npm
// `oidc-provider`, one client for Airlock, one user), Airlock over HTTP in front of
// `airlock demo-tools`, an MCP client (the official TypeScript SDK) whose call is held for
// approval, and headless Chromium (Debian's, driven by playwright-core) signing in through
// the provider and approving on the page.
//
// Checks: the sign-in goes through the provider (code + PKCE); the held call shows on the
// list; a GET of the decision URL decides nothing; a POST without the CSRF token is
// refused; a second window refreshes itself when the approval settles; Approve releases
// the held call, which completes; then the audit view as an auditor. Screenshots (desktop and
// phone) go to --screenshots DIR.
//
// Usage: node web_approval.mjs --airlock BIN --work DIR [--screenshots DIR]
// Prints PASS/FAIL/INFO lines; exits non-zero on the first failure.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

import Provider from 'oidc-provider';
import { chromium } from 'playwright-core';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const AIRLOCK_BIN = args.airlock ?? process.env.AIRLOCK_BIN;
const WORK = path.resolve(args.work ?? '.work/web');
const SHOTS = args.screenshots ? path.resolve(args.screenshots) : null;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!AIRLOCK_BIN) throw new Error('--airlock BIN (or AIRLOCK_BIN) is required');

const children = [];
let failed = false;
function pass(what) { console.log(`PASS ${what}`); }
function info(what) { console.log(`INFO ${what}`); }
function check(ok, what) {
  if (!ok) { console.log(`FAIL ${what}`); failed = true; throw new Error(what); }
  pass(what);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)); });
  });
}

// ---- the identity provider ------------------------------------------------------------------

const OIDC_PORT = await freePort();
const AIRLOCK_PORT = await freePort();
const ISSUER = `http://127.0.0.1:${OIDC_PORT}`;
const AIRLOCK = `http://127.0.0.1:${AIRLOCK_PORT}`;
const USER = 'reviewer';

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: 'airlock',
    // A public client: PKCE protects the code, no secret is shared.
    token_endpoint_auth_method: 'none',
    redirect_uris: [`${AIRLOCK}/approvals/oidc/callback`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  pkce: { required: () => true },
  // The `name` claim in the ID token itself (Airlock reads no userinfo endpoint).
  claims: { openid: ['sub'], profile: ['name'] },
  conformIdTokenClaims: false,
  // One user; the provider's development login form asks for it.
  async findAccount(ctx, id) {
    if (id !== USER) return undefined;
    // `name` is what the page shows; the principal (issuer#sub) goes beside it in small type.
    return { accountId: id, async claims() { return { sub: id, name: 'Riley Reviewer' }; } };
  },
  cookies: { keys: ['interop-only-not-a-secret'] },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
});
const idp = http.createServer(provider.callback());
await new Promise((resolve) => idp.listen(OIDC_PORT, '127.0.0.1', resolve));
info(`oidc-provider at ${ISSUER}`);

// ---- Airlock ----------------------------------------------------------------------------------

fs.rmSync(WORK, { recursive: true, force: true });
for (const dir of ['tool-manifests', 'policies', 'sandbox', 'profile']) fs.mkdirSync(path.join(WORK, dir), { recursive: true });
const AGENT_TOKEN = 'interop-agent-token';
const sha256 = (text) => createHash('sha256').update(text).digest('hex');
fs.writeFileSync(path.join(WORK, 'airlock.toml'), `
[gateway]
data_dir = "data"
[[identity.tokens]]
name = "agent"
sha256 = "${sha256(AGENT_TOKEN)}"
[[identity.oidc]]
issuer = "${ISSUER}"
audience = "airlock"
[approvals.web]
oidc_issuer = "${ISSUER}"
client_id = "airlock"
auditors = ["user:${ISSUER}#${USER}"]
`);
fs.writeFileSync(path.join(WORK, 'tool-manifests', 'demo.toml'),
  `name = "demo"\ncommand = ${JSON.stringify(AIRLOCK_BIN)}\nargs = ["demo-tools", "--sandbox", ${JSON.stringify(path.join(WORK, 'sandbox'))}]\n`);
fs.writeFileSync(path.join(WORK, 'policies', 'hold.toml'),
  '[[rule]]\nid = "echo-needs-a-human"\ntools = ["demo__echo"]\neffect = "approve"\nreason = "every echo is reviewed (interop)"\n');

const airlock = spawn(AIRLOCK_BIN, ['serve', '--config', path.join(WORK, 'airlock.toml'), '--http', `127.0.0.1:${AIRLOCK_PORT}`],
  { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, AIRLOCK_LOG: 'warn' } });
children.push(airlock);
await new Promise((resolve, reject) => {
  let seen = '';
  airlock.stderr.on('data', (chunk) => {
    process.stderr.write(`[airlock] ${chunk}`);
    seen += chunk;
    if (seen.includes('airlock: listening on')) resolve();
  });
  airlock.once('exit', (code) => reject(new Error(`airlock exited (${code}) before listening`)));
});
info(`airlock at ${AIRLOCK}`);

// ---- the held call ------------------------------------------------------------------------------

const MESSAGE = 'deploy <b>v2</b> & "restart"';
const mcp = new Client({ name: 'interop-web', version: '0' });
await mcp.connect(new StreamableHTTPClientTransport(new URL(`${AIRLOCK}/mcp`), {
  requestInit: { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } },
}));
const held = mcp.callTool({ name: 'demo__echo', arguments: { text: MESSAGE } }, undefined, { timeout: 600_000 });
let heldDone = false;
held.then(() => { heldDone = true; }, () => { heldDone = true; });
info('held call sent: demo__echo');

// ---- the browser --------------------------------------------------------------------------------

const context = await chromium.launchPersistentContext(path.join(WORK, 'profile'), {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 860 },
});
async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  info(`screenshot ${name}.png`);
}

try {
  const page = context.pages()[0] ?? await context.newPage();
  await page.goto(`${AIRLOCK}/approvals`);
  check(await page.locator('a:has-text("Sign in with your identity provider")').count() === 1,
    'signed out, /approvals offers single sign-on');
  await shot(page, 'sign-in-desktop');

  await page.click('a:has-text("Sign in with your identity provider")');
  await page.waitForURL((url) => url.origin === ISSUER);
  const authorize = new URL(page.url());
  info(`at the provider: ${authorize.pathname}`);
  await page.fill('input[name=login]', USER);
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  // The provider asks for consent once per client.
  await page.waitForURL((url) => url.origin === AIRLOCK || url.pathname.includes('/interaction/'));
  if (new URL(page.url()).origin === ISSUER) await page.click('button[type=submit]');
  await page.waitForURL((url) => url.origin === AIRLOCK && url.pathname === '/approvals');
  const who = await page.locator('header .who').innerText();
  check(who.includes(`${ISSUER}#${USER}`), `signed in through the provider as ${ISSUER}#${USER}`);

  // The held call appears on the list (the call reaches the broker asynchronously).
  let cards = 0;
  for (let i = 0; i < 300 && cards === 0; i++) {
    await page.reload();
    cards = await page.locator('a.approval').count();
    if (cards === 0) await new Promise((r) => setTimeout(r, 200));
  }
  check(cards === 1, 'the held call is on the list');
  await shot(page, 'list-desktop');
  const href = await page.locator('a.approval').getAttribute('href');
  const id = href.split('/').pop();
  const detailUrl = `${AIRLOCK}/approvals/${id}`;
  const decisionUrl = `${detailUrl}/decision`;
  const state = async () => (await (await page.request.get(`${detailUrl}/state`)).json()).state;

  // A link scanner's GET decides nothing.
  const get = await page.goto(decisionUrl);
  check(get.status() === 405 && await state() === 'pending', 'GET of the decision URL decides nothing (405, still pending)');
  // A POST from this browser's session but without the page's CSRF token is refused.
  const noCsrf = await page.request.post(decisionUrl, { form: { decision: 'approve' }, headers: { origin: AIRLOCK } });
  check(noCsrf.status() === 403 && await state() === 'pending', 'POST without the CSRF token is refused (403, still pending)');
  const badCsrf = await page.request.post(decisionUrl, { form: { decision: 'approve', csrf: 'AAAA' }, headers: { origin: AIRLOCK } });
  check(badCsrf.status() === 403 && await state() === 'pending', 'POST with a wrong CSRF token is refused');
  check(!heldDone, 'the held call is still waiting');

  await page.goto(detailUrl);
  const args = await page.locator('#args').innerText();
  check(args.includes(JSON.stringify(MESSAGE)), 'the detail page shows the arguments as text (markup in them is not rendered)');
  await shot(page, 'approval-desktop');

  // A phone-sized window on the same approval: it must refresh itself when it settles.
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(detailUrl);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, 'the page fits a 390 px wide window');
  await shot(phone, 'approval-phone');
  await phone.goto(`${AIRLOCK}/approvals`);
  await shot(phone, 'list-phone');
  await phone.goto(detailUrl);

  await page.fill('#comment', 'reviewed in the interop run');
  await Promise.all([page.waitForURL(detailUrl), page.click('button.approve')]);
  check((await page.locator('#state').innerText()).trim() === 'approved', 'Approve on the page settles the approval');
  await phone.locator('#state', { hasText: 'approved' }).waitFor({ timeout: 60_000 });
  pass('the other window refreshed itself when the approval settled');
  await shot(page, 'approved-desktop');

  const result = await held;
  const text = (result.content ?? []).map((c) => c.text ?? '').join('\n');
  check(!result.isError && text.includes(MESSAGE), `the held call completed: ${JSON.stringify(text)}`);
  check((await page.locator('#display-name').innerText()).trim() === 'Riley Reviewer', 'the header shows the name claim');

  // The audit view, as the same signed-in person (an auditor here): the running log
  // verifies, the call is listed, and its chain holds every record of the hold.
  await page.goto(`${AIRLOCK}/audit`);
  check((await page.locator('#verification').getAttribute('data-status')) === 'intact', 'the audit view says the log is intact');
  check((await page.locator('tr.call').count()) >= 1, 'the audit view lists the call');
  await shot(page, 'audit');
  await Promise.all([page.waitForURL(/\/audit\/calls\//), page.locator('tr.call a').first().click()]);
  const kinds = await page.locator('tr.record').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  check(['approval_requested', 'approval_decided', 'approval_settled', 'call_completed'].every((k) => kinds.includes(k)),
    `the call's chain has every record of its hold: ${kinds.join(', ')}`);
  await shot(page, 'audit-call');
} finally {
  await context.close().catch(() => {});
  await mcp.close().catch(() => {});
  for (const child of children) child.kill('SIGTERM');
  idp.close();
}
if (failed) process.exit(1);
console.log('web approval interop: all checks passed');
process.exit(0);
