// Send the common scenario with @segment/analytics-node to BASE_URL.
// Usage: node node_client.mjs BASE_URL WRITE_KEY RUN_ID
// Every call carries context.test_run = RUN_ID; exits non-zero on any delivery error.
import { Analytics } from '@segment/analytics-node';

const [base, writeKey, run] = process.argv.slice(2);
const errors = [];
const analytics = new Analytics({ writeKey, host: base, flushAt: 20, flushInterval: 200, maxRetries: 5 });
analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.message ?? err)));
const context = { test_run: run };
const userId = 'user_123';

analytics.identify({ userId, context, traits: { email: 'peter@example.com', name: 'Peter Gibbons', createdAt: new Date('2024-01-15T10:00:00Z') } });
analytics.track({ userId, context, event: 'Course Started', properties: { course_in_series: 1, course_format: 'pass/fail', title: 'Intro to' } });
analytics.track({ userId, context, event: 'Order Completed', properties: { revenue: 19.99, currency: 'EUR', value: 5 } });
analytics.page({ userId, context, category: 'Docs', name: 'Getting Started', properties: { url: 'https://example.com/docs/start' } });
analytics.screen({ userId, context, name: 'Home', properties: { variant: 'a' } });
analytics.group({ userId, context, groupId: 'group_42', traits: { name: 'Initech', employees: 120 } });
analytics.alias({ userId, previousId: 'anon_abc', context });
analytics.track({ userId, context, event: 'Backfilled Event', properties: { source: 'import' }, timestamp: new Date('2023-06-01T12:34:56.789Z') });
analytics.track({ userId, context, event: 'Mixpanel Only', properties: { plan: 'pro' }, integrations: { All: false, Mixpanel: true } });
analytics.track({ anonymousId: 'anon_abc', context, event: 'Anonymous Event', properties: { k: 'v' } });

await analytics.closeAndFlush({ timeout: 20000 });
if (errors.length) {
  console.error('delivery errors: ' + errors.join('; '));
  process.exit(1);
}
console.log('sent 10 events');
