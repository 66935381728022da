// Drive @segment/analytics-next in headless Chromium from a page on another origin.
// Usage: node browser_client.mjs BASE_URL WRITE_KEY RUN_ID [SCREENSHOT.png]
// Waits until ferry answered 200 to all ten event POSTs; exits non-zero otherwise.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [base, writeKey, run, screenshot] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const bundle = fs.readFileSync(path.join(here, 'bundle', 'analytics.js'));
const page = `<!doctype html><html><head><title>ferry browser test</title></head>
<body><h1>ferry browser test</h1><p id="status">loading</p><script src="/analytics.js"></script></body></html>`;

// The shop: a different origin (another port) than ferry, so every call is cross-origin.
const shop = http.createServer((req, res) => {
  if (req.url.startsWith('/analytics.js')) {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(bundle);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
const shopUrl = `http://127.0.0.1:${shop.address().port}/shop/index.html?utm_source=newsletter&utm_medium=email&utm_campaign=launch`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  // playwright gives every launch a fresh, empty profile of its own.
});
const failures = [];
const delivered = [];
try {
  const tab = await browser.newPage();
  tab.on('response', (response) => {
    const url = new URL(response.url());
    if (/^\/v1\/[tipsga]$/.test(url.pathname) && response.request().method() === 'POST') {
      (response.status() === 200 ? delivered : failures).push(`${url.pathname} ${response.status()}`);
    }
  });
  tab.on('requestfailed', (request) => failures.push(`${request.url()} ${request.failure()?.errorText}`));
  await tab.goto(shopUrl);
  const apiHost = `${new URL(base).host}/v1`;
  await tab.evaluate(([b, k, h, r]) => window.runFerryTest(b, k, h, r), [base, writeKey, apiHost, run]);
  const deadline = Date.now() + 20000;
  while (delivered.length < 10 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await tab.evaluate((n) => { document.getElementById('status').textContent = `${n} events delivered to ferry`; }, delivered.length);
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await tab.screenshot({ path: screenshot });
  }
} finally {
  await browser.close();
  shop.close();
}
if (delivered.length < 10 || failures.length) {
  console.error(`delivered ${delivered.length}/10; failures: ${failures.join(', ')}`);
  process.exit(1);
}
console.log(`delivered ${delivered.join(', ')}`);
