// Drive @segment/analytics-next in headless Chromium (Debian's) from a page on another
// origin than ferry, so every call is cross-origin and needs ferry's CORS answers.
// Usage: node browser_client.mjs BASE_URL WRITE_KEY RUN_ID [SCREENSHOT.png]
// Checks that the settings document came from ferry with apiHost pointing back at it, and
// waits until ferry answered 200 (with Access-Control-Allow-Origin) to all ten event POSTs.
// The last stdout line is JSON {"messageIds": {"<call>": "<messageId>", ...}}.
// Exits non-zero on any failure.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [base, writeKey, run, screenshot] = process.argv.slice(2);
if (!run) {
  console.error('usage: node browser_client.mjs BASE_URL WRITE_KEY RUN_ID [SCREENSHOT.png]');
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error('browser client: not done within 45 s');
  process.exit(3);
}, 45000);

const here = path.dirname(fileURLToPath(import.meta.url));
const bundle = fs.readFileSync(path.join(here, 'bundle', 'analytics.js'));
const html = `<!doctype html><html><head><meta charset="utf-8"><title>ferry browser test</title></head>
<body style="font-family: sans-serif"><h1>ferry browser test</h1><p id="status">loading</p><ul id="log"></ul>
<script src="/analytics.js"></script></body></html>`;

// The shop: another origin (another port) than ferry.
const shop = http.createServer((req, res) => {
  if (req.url.startsWith('/analytics.js')) {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(bundle);
  } else if (req.url.startsWith('/shop/')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
const shopOrigin = `http://127.0.0.1:${shop.address().port}`;
const shopUrl = `${shopOrigin}/shop/index.html?utm_source=newsletter&utm_medium=email&utm_campaign=launch`;
const ferry = new URL(base);
const apiHost = `${ferry.host}/v1`;

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 20000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const failures = [];
const delivered = new Map(); // messageId -> path
let settings = null;
let ids = null;
try {
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.setDefaultTimeout(20000);
  tab.on('pageerror', (err) => failures.push(`page error: ${err.message}`));
  tab.on('requestfailed', (request) => failures.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
  tab.on('response', async (response) => {
    const url = new URL(response.url());
    if (url.host !== ferry.host) return;
    const method = response.request().method();
    const where = `${method} ${url.pathname} -> ${response.status()}`;
    const allowOrigin = response.headers()['access-control-allow-origin'];
    if (allowOrigin !== shopOrigin && allowOrigin !== '*') failures.push(`${where}: Access-Control-Allow-Origin ${allowOrigin}`);
    if (method === 'GET' && url.pathname === `/v1/projects/${writeKey}/settings`) {
      if (response.status() !== 200) failures.push(`${where}: settings not loaded`);
      else settings = await response.json().catch((e) => failures.push(`settings not JSON: ${e}`));
    } else if (method === 'POST' && /^\/v1\/[tipsga]$/.test(url.pathname)) {
      let messageId = null;
      try {
        messageId = JSON.parse(response.request().postData()).messageId;
      } catch (e) {
        failures.push(`${where}: body not JSON: ${e}`);
      }
      if (response.status() !== 200) failures.push(`${where}: ${await response.text().catch(() => '')}`);
      else if (delivered.has(messageId)) failures.push(`${where}: ${messageId} sent twice`);
      else delivered.set(messageId, url.pathname);
    }
  });
  await tab.goto(shopUrl);
  ids = await tab.evaluate(([b, k, h, r]) => window.runFerryTest(b, k, h, r), [base, writeKey, apiHost, run]);
  const deadline = Date.now() + 15000;
  while (delivered.size < 10 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const summary = `${delivered.size}/10 events delivered to ferry (${base}) from ${shopOrigin}`;
  await tab.evaluate(([text, lines]) => {
    document.getElementById('status').textContent = text;
    for (const line of lines) {
      const li = document.createElement('li');
      li.textContent = line;
      document.getElementById('log').appendChild(li);
    }
  }, [summary, [...delivered].map(([id, p]) => `${p} 200 ${id}`)]);
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await tab.screenshot({ path: screenshot });
  }
} catch (e) {
  failures.push(`browser test: ${e?.stack ?? e}`);
} finally {
  await context.close().catch(() => {});
  shop.close();
  fs.rmSync(profile, { recursive: true, force: true });
}

const segment = settings?.integrations?.['Segment.io'];
if (!segment) failures.push(`settings document without integrations["Segment.io"]: ${JSON.stringify(settings)}`);
else if (segment.apiHost !== apiHost) failures.push(`settings apiHost ${segment.apiHost}, expected ${apiHost}`);
for (const [name, id] of Object.entries(ids ?? {})) {
  if (!delivered.has(id)) failures.push(`${name} (${id}) not delivered with 200`);
}
if (!ids || Object.keys(ids).length !== 10 || delivered.size !== 10) failures.push(`delivered ${delivered.size}/10`);
clearTimeout(watchdog);
if (failures.length) {
  console.error(`browser client failed:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(JSON.stringify({ settings: segment, messageIds: ids }));
