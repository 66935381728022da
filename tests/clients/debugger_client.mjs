// Drive ferry's debugger page (GET /debugger) in headless Chromium (Debian's) while
// @segment/analytics-node sends events to the same ferry.
// Usage: node debugger_client.mjs BASE_URL WRITE_KEY ADMIN_TOKEN DESTINATION SCREENSHOT.png
// Checks: events appear live, newest first; the event-name and type filters; the detail
// view shows the item as sent beside the stored, enriched event, with the warnings
// highlighted and the destination's delivery outcome; a rejected item shows its reason;
// pause holds new events back and resume shows them. Saves a screenshot of the detail view.
// The last stdout line is JSON {"messageIds": {...}}. Exits non-zero on any failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Analytics } from '@segment/analytics-node';
import { chromium } from 'playwright-core';

const [base, writeKey, token, destination, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node debugger_client.mjs BASE_URL WRITE_KEY ADMIN_TOKEN DESTINATION SCREENSHOT.png');
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error('debugger client: not done within 50 s');
  process.exit(3);
}, 50000);

// The real client, flushing each call at once.
const analytics = new Analytics({ writeKey, host: base, flushAt: 1, flushInterval: 50, maxRetries: 3 });
const sendErrors = [];
analytics.on('error', (err) => sendErrors.push(`${err?.code ?? 'error'}: ${err?.reason ?? err?.message ?? err}`));
function send(call, message) {
  return new Promise((resolve, reject) => {
    analytics[call](message, (err, ctx) => (err ? reject(new Error(`${call}: ${err?.reason ?? err}`)) : resolve(ctx.event.messageId)));
  });
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-debugger-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 20000,
  viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
const ids = {};
try {
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.setDefaultTimeout(15000);
  tab.on('pageerror', (err) => failures.push(`page error: ${err.message}`));
  const rows = tab.locator('[data-testid="event-row"]');
  const texts = async () => rows.allInnerTexts();

  // Without the token the page is refused; with it, the stream connects.
  const refused = await tab.goto(`${base}/debugger`);
  check(refused.status() === 401, `GET /debugger without the token answered ${refused.status()}`);
  await tab.goto(`${base}/debugger?token=${encodeURIComponent(token)}`);
  await tab.locator('#status', { hasText: 'live' }).waitFor();

  // Events from the real client appear, newest first.
  ids.identify = await send('identify', { userId: 'debug-user', traits: { plan: 'pro' } });
  ids.signedUp = await send('track', { userId: 'debug-user', event: 'Signed Up', properties: { via: 'debugger test' } });
  ids.order = await send('track', {
    userId: 'debug-user', event: 'Order Completed',
    properties: { revenue: '19.99', currency: 'dollars', order_id: 'o-1' },
  });
  ids.page = await send('page', { anonymousId: 'anon-debug', name: 'Pricing', properties: { url: 'https://example.com/pricing' } });
  // An item ferry rejects (a track without an event name): the real client will not send
  // one, so it goes straight to the batch endpoint.
  const rejected = await fetch(`${base}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}` },
    body: JSON.stringify({ batch: [{ type: 'track', userId: 'debug-user', messageId: 'debug-rejected-1', properties: { oops: true } }] }),
  });
  check(rejected.status === 200, `batch with a rejected item answered ${rejected.status}`);

  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length >= 5);
  const order = await rows.evaluateAll((els) => els.map((e) => e.dataset.messageId));
  const expected = ['debug-rejected-1', ids.page, ids.order, ids.signedUp, ids.identify];
  check(JSON.stringify(order) === JSON.stringify(expected), `rows not newest first: ${JSON.stringify(order)} vs ${JSON.stringify(expected)}`);

  // Filter by event name, then open the event.
  await tab.fill('#f-event', 'order');
  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length === 1);
  const only = await texts();
  check(only.length === 1 && only[0].includes('Order Completed'), `event filter shows ${JSON.stringify(only)}`);
  await rows.first().click();
  const title = await tab.locator('[data-testid="detail-title"]').innerText();
  check(title.includes('Order Completed'), `detail title ${title}`);
  const raw = await tab.locator('[data-testid="raw"]').innerText();
  const stored = await tab.locator('[data-testid="stored"]').innerText();
  check(raw.includes('"revenue": "19.99"'), `raw item lacks the revenue string as sent: ${raw}`);
  check(stored.includes('"revenue": 19.99') && stored.includes('"receivedAt"') && stored.includes(ids.order),
    `stored event lacks the enrichment: ${stored}`);
  const warnings = await tab.locator('[data-testid="warnings"]').innerText();
  check(warnings.includes('invalid_currency') && warnings.includes('revenue_not_number'), `warnings: ${warnings}`);
  // The destination's outcome for this event arrives over the same stream.
  await tab.locator('[data-testid="deliveries"]', { hasText: destination }).waitFor();
  const deliveries = await tab.locator('[data-testid="deliveries"]').innerText();
  check(deliveries.includes('delivered'), `deliveries: ${deliveries}`);
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await tab.screenshot({ path: screenshot });

  // The type filter finds the rejected item, and its reason.
  await tab.fill('#f-event', '');
  await tab.selectOption('#f-type', 'rejected');
  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length === 1);
  await rows.first().click();
  const rejection = await tab.locator('[data-testid="rejection"]').innerText();
  check(rejection.includes('event'), `rejection reason: ${rejection}`);
  await tab.selectOption('#f-type', '');
  await tab.fill('#f-user', 'anon-debug');
  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length === 1);
  check((await rows.first().getAttribute('data-message-id')) === ids.page, 'user filter does not find the page by anonymousId');
  await tab.fill('#f-user', '');

  // Pause holds new events back; resume shows them.
  await tab.click('#pause');
  ids.paused = await send('track', { userId: 'debug-user', event: 'While Paused' });
  await tab.locator('#status', { hasText: '1 new held' }).waitFor();
  check((await rows.count()) === 5, `a paused page shows ${await rows.count()} rows`);
  await tab.click('#pause');
  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length === 6);
  check((await rows.first().getAttribute('data-message-id')) === ids.paused, 'the held event is not first after resume');

  // Untrusted text stays text: an event name with markup is shown, not run.
  ids.markup = await send('track', { userId: 'debug-user', event: '<img src=x onerror="window.__owned=1">' });
  await tab.waitForFunction(() => document.querySelectorAll('[data-testid="event-row"]').length === 7);
  check(!(await tab.evaluate(() => window.__owned)), 'an event name ran as markup');
} catch (e) {
  failures.push(`debugger test: ${e?.stack ?? e}`);
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  await analytics.closeAndFlush({ timeout: 5000 }).catch(() => {});
}
failures.push(...sendErrors);
clearTimeout(watchdog);
if (failures.length) {
  console.error(`debugger client failed:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(JSON.stringify({ messageIds: ids }));
