// Send the common scenario with @segment/analytics-node to BASE_URL.
// Usage: node node_client.mjs BASE_URL WRITE_KEY RUN_ID
// Every call carries context.test_run = RUN_ID. The last stdout line is JSON
// {"messageIds": {"<call>": "<messageId>", ...}} with the ids the library generated.
// Exits non-zero on any delivery error (error event or a failed per-call callback).
import { Analytics } from '@segment/analytics-node';

const [base, writeKey, run] = process.argv.slice(2);
if (!run) {
  console.error('usage: node node_client.mjs BASE_URL WRITE_KEY RUN_ID');
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error('node client: no flush within 40 s');
  process.exit(3);
}, 40000);
process.on('unhandledRejection', (err) => {
  console.error(`node client: unhandled rejection: ${err?.stack ?? err}`);
  process.exit(4);
});

const errors = [];
const ids = {};
// flushInterval short so the test does not wait the default 10 s; one batch of 10.
const analytics = new Analytics({ writeKey, host: base, flushAt: 20, flushInterval: 200, maxRetries: 5 });
analytics.on('error', (err) => errors.push(`${err?.code ?? 'error'}: ${err?.reason ?? err?.message ?? err}`));
const done = (name) => (err, ctx) => {
  if (err) errors.push(`${name}: ${err?.reason ?? err?.message ?? err}`);
  if (ctx?.event?.messageId) ids[name] = ctx.event.messageId;
};
const context = { test_run: run };
const userId = 'user_123';
const createdAt = new Date('2024-01-15T10:00:00Z');

analytics.identify({ userId, context, traits: { email: 'peter@example.com', name: 'Peter Gibbons', createdAt } }, done('identify'));
analytics.track({ userId, context, event: 'Course Started', properties: { course_in_series: 1, course_format: 'pass/fail', title: 'Intro to' } }, done('Course Started'));
analytics.track({ userId, context, event: 'Order Completed', properties: { revenue: 19.99, currency: 'EUR', value: 5 } }, done('Order Completed'));
analytics.page({ userId, context, category: 'Docs', name: 'Getting Started', properties: { url: 'https://example.com/docs/start' } }, done('page'));
analytics.screen({ userId, context, name: 'Home', properties: { variant: 'a' } }, done('screen'));
analytics.group({ userId, context, groupId: 'group_42', traits: { name: 'Initech', employees: 120 } }, done('group'));
analytics.alias({ userId, previousId: 'anon_abc', context }, done('alias'));
analytics.track({ userId, context, event: 'Backfilled Event', properties: { source: 'import' }, timestamp: new Date('2023-06-01T12:34:56.789Z') }, done('Backfilled Event'));
analytics.track({ userId, context, event: 'Mixpanel Only', properties: { plan: 'pro' }, integrations: { All: false, Mixpanel: true } }, done('Mixpanel Only'));
analytics.track({ anonymousId: 'anon_abc', context, event: 'Anonymous Event', properties: { k: 'v' } }, done('Anonymous Event'));

await analytics.closeAndFlush({ timeout: 30000 });
clearTimeout(watchdog);
if (errors.length || Object.keys(ids).length !== 10) {
  console.error(`delivery errors: ${errors.join('; ')}; acknowledged ${Object.keys(ids).length}/10`);
  process.exit(1);
}
console.log(JSON.stringify({ messageIds: ids }));
