// Drives the registry's web dashboard in Debian's Chromium, against a real registry,
// router and hosts that tests/tests/dashboard.rs starts (it sets every variable below).
// Each step waits at most 20 s for what it expects; the first that fails saves
// failure.png, prints the page's text and exits 1. One line per passed step.
//
//   DASHBOARD_URL  http://127.0.0.1:PORT/dashboard
//   A_EMAIL, A_PASSWORD, B_EMAIL, B_PASSWORD   members of accounts A and B
//   WASMESH_BIN, REGISTRY, A_DEPLOY_KEY        to deploy a new version with the CLI
//   APP_NAME, APP_MANIFEST                     A's app and its wasmesh.toml
//   PAUSED_NODE    a node id that was paused;  WARM_MODEL   a model warm on some node
//   SCREENSHOTS    where the screenshots go;   CHROMIUM     the browser (/usr/bin/chromium)

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const STEP_TIMEOUT_MS = 20_000;

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`dashboard.mjs: ${name} is not set (tests/tests/dashboard.rs sets it)`);
    process.exit(2);
  }
  return value;
}

const cfg = Object.fromEntries(
  [
    'DASHBOARD_URL', 'A_EMAIL', 'A_PASSWORD', 'B_EMAIL', 'B_PASSWORD', 'WASMESH_BIN', 'REGISTRY',
    'A_DEPLOY_KEY', 'APP_NAME', 'APP_MANIFEST', 'PAUSED_NODE', 'WARM_MODEL', 'SCREENSHOTS',
  ].map((name) => [name, need(name)]),
);
mkdirSync(cfg.SCREENSHOTS, { recursive: true });

class StepFailed extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value (returned), or fails naming `what`; a StepFailed ends it at once. */
async function until(what, check, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last = null;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = null;
    } catch (e) {
      if (e instanceof StepFailed) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new StepFailed(`${what}: not so within ${timeout / 1000} s${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(200);
  }
}

/** A CSS attribute selector's value, quoted. */
const q = (value) => JSON.stringify(String(value));

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.SCREENSHOTS, name), fullPage: true });
}

/** The error banner's text, or null when it is hidden. */
async function banner(page) {
  const b = page.locator('#banner');
  return (await b.isVisible()) ? (await b.textContent()).trim() : null;
}

/** Opens a page from the nav bar and waits until its first fetch finished, without an error banner. */
async function open(page, name) {
  await page.locator(`#nav a[data-route=${q(name)}]`).click();
  await until(`the ${name} page loads`, async () => {
    const error = await banner(page);
    if (error) throw new Error(`error banner: ${error}`);
    return (await page.locator(`#page[data-page=${q(name)}][data-testid="loaded"]`).count()) === 1;
  });
}

async function signIn(page, email, password) {
  await page.goto(cfg.DASHBOARD_URL);
  await page.locator('#email').fill(email);
  await page.locator('#password').fill(password);
  await page.locator('#password-submit').click();
  await until(`${email} is signed in`, async () => {
    const refused = page.locator('#sign-in-message');
    if (await refused.isVisible()) {
      throw new StepFailed(`${email} cannot sign in: ${(await refused.textContent()).trim()}`);
    }
    return page.locator('#top').isVisible();
  });
  const who = (await page.locator('[data-testid="who"]').textContent()).trim();
  return who;
}

/** The current version app APP_NAME shows (0 while it is not listed). */
async function currentVersion(page) {
  const current = page.locator(`[data-testid="app"][data-app=${q(cfg.APP_NAME)}] [data-testid="app-current"]`);
  if ((await current.count()) !== 1) return 0;
  const version = Number(await current.getAttribute('data-version'));
  const text = await current.textContent();
  if (!text.includes(String(version))) throw new Error(`app-current says '${text}' but data-version=${version}`);
  return version;
}

async function noHorizontalOverflow(page, where) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  if (scrollWidth > innerWidth + 1) {
    throw new StepFailed(`${where}: the page is ${scrollWidth} px wide on a ${innerWidth} px screen (horizontal overflow)`);
  }
}

const steps = [
  async function nodes(page) {
    const who = await signIn(page, cfg.A_EMAIL, cfg.A_PASSWORD);
    await open(page, 'nodes');
    const rows = page.locator('[data-testid="node"]');
    await until('the Nodes page lists at least 2 nodes', async () => (await rows.count()) >= 2);
    await until(`${cfg.WARM_MODEL} is shown warm on some node`, async () =>
      (await page.locator(`[data-testid="node-models"] [data-model=${q(cfg.WARM_MODEL)}]`).count()) > 0);
    const status = page.locator(`[data-testid="node"][data-node-id=${q(cfg.PAUSED_NODE)}] [data-testid="node-status"]`);
    await until(`node ${cfg.PAUSED_NODE} shows status 'paused'`, async () =>
      (await status.count()) === 1 && (await status.textContent()).trim() === 'paused');
    await shot(page, 'nodes.png');
    return `signed in as ${cfg.A_EMAIL} (${who}); ${await rows.count()} nodes, ${cfg.WARM_MODEL} warm, ${cfg.PAUSED_NODE} paused`;
  },

  async function apps(page) {
    await open(page, 'apps');
    const n = await until(`app ${cfg.APP_NAME} is listed with its current version`, () => currentVersion(page));
    // A reload would lose this mark: the page must update in place.
    await page.evaluate(() => (window.__notReloaded = true));
    const out = execFileSync(
      cfg.WASMESH_BIN,
      ['deploy', '-f', cfg.APP_MANIFEST, '--registry', cfg.REGISTRY, '--key', cfg.A_DEPLOY_KEY, '--json'],
      { encoding: 'utf8', timeout: 120_000, env: { ...process.env, WASMESH_CONFIG: '/nonexistent/wasmesh-config.toml' } },
    );
    const deployed = JSON.parse(out).version;
    if (deployed !== n + 1) throw new StepFailed(`the CLI deployed version ${deployed}, expected ${n + 1}: ${out}`);
    await until(`the current version of ${cfg.APP_NAME} becomes v${n + 1} without a reload`, async () =>
      (await currentVersion(page)) === n + 1);
    await shot(page, 'apps.png');
    await page.locator(`[data-testid="app"][data-app=${q(cfg.APP_NAME)}] [data-testid="rollback"][data-version=${q(n)}]`).click();
    // A rollback makes version n current again (no new version is made).
    await until(`the current version of ${cfg.APP_NAME} is v${n} again after Rollback`, async () =>
      (await currentVersion(page)) === n);
    const versions = await page.locator(`[data-testid="app"][data-app=${q(cfg.APP_NAME)}] [data-testid="version"]`).count();
    if (versions !== n + 1) throw new StepFailed(`after the rollback ${versions} versions are listed, expected ${n + 1}`);
    if (!(await page.evaluate(() => window.__notReloaded === true))) throw new StepFailed('the page reloaded');
    await shot(page, 'apps-rolled-back.png');
    return `${cfg.APP_NAME}: v${n}, deployed v${n + 1} (shown live), rolled back to v${n}`;
  },

  async function modelsAndUsage(page) {
    await open(page, 'models');
    await until(`${cfg.WARM_MODEL} is listed on the Models page`, async () =>
      (await page.locator(`[data-testid="model"][data-model=${q(cfg.WARM_MODEL)}]`).count()) === 1);
    await shot(page, 'models.png');
    await open(page, 'usage');
    await until('the balance is shown', () => page.locator('[data-testid="balance-available"]').isVisible());
    await shot(page, 'usage.png');
    return 'Models and Usage pages render without an error';
  },

  async function phone(page) {
    await page.setViewportSize({ width: 390, height: 844 });
    for (const name of ['apps', 'models', 'usage', 'nodes']) {
      await open(page, name);
      await noHorizontalOverflow(page, `the ${name} page at 390 px`);
    }
    await until('the phone Nodes page lists nodes', async () => (await page.locator('[data-testid="node"]').count()) >= 2);
    await noHorizontalOverflow(page, 'the nodes page at 390 px');
    await shot(page, 'phone-nodes.png');
    await page.setViewportSize({ width: 1280, height: 900 });
    return 'no horizontal overflow at 390 px';
  },

  async function otherAccount(page) {
    await page.locator('#sign-out').click();
    await until('sign-out shows the sign-in form', () => page.locator('#password-form').isVisible());
    const left = await page.evaluate(() => sessionStorage.length);
    if (left !== 0) throw new StepFailed(`sign-out left ${left} items in sessionStorage`);
    const who = await signIn(page, cfg.B_EMAIL, cfg.B_PASSWORD);
    await open(page, 'apps');
    const theirs = await page.locator(`[data-app=${q(cfg.APP_NAME)}]`).count();
    const text = await page.locator('#page').innerText();
    if (theirs !== 0 || text.includes(cfg.APP_NAME)) {
      throw new StepFailed(`${cfg.B_EMAIL} sees account A's app ${cfg.APP_NAME}:\n${text}`);
    }
    await shot(page, 'b-apps.png');
    return `signed in as ${cfg.B_EMAIL} (${who}); ${cfg.APP_NAME} not shown`;
  },
];

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const scriptErrors = [];
  page.on('pageerror', (e) => scriptErrors.push(e.message));
  let failed = false;
  for (const [i, step] of steps.entries()) {
    try {
      const said = await step(page);
      if (scriptErrors.length) throw new StepFailed(`the page threw: ${scriptErrors.join('; ')}`);
      console.log(`ok ${i + 1} ${step.name}: ${said}`);
    } catch (e) {
      failed = true;
      console.log(`FAILED ${i + 1} ${step.name}: ${e instanceof StepFailed ? e.message : e.stack || e}`);
      await page.screenshot({ path: path.join(cfg.SCREENSHOTS, 'failure.png'), fullPage: true }).catch(() => {});
      const text = await page.evaluate(() => document.body.innerText).catch((err) => `(cannot read the page: ${err})`);
      console.log(`--- the page at ${page.url()} says:\n${text}\n---`);
      break;
    }
  }
  await browser.close();
  console.log(failed ? 'dashboard: FAILED' : `dashboard: all ${steps.length} steps passed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`dashboard: cannot run: ${e.stack || e}`);
  process.exit(1);
});
