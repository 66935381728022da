// The test page's script: analytics-next as a site would bundle it (esbuild, see
// scripts/install-test-deps.sh). `runFerryTest` loads the library from ferry (the settings
// document comes from cdnURL = ferry), makes the common calls, each awaited, and returns
// the messageId of every call.
import { AnalyticsBrowser } from '@segment/analytics-next';

window.runFerryTest = async (base, writeKey, apiHost, run) => {
  const analytics = AnalyticsBrowser.load(
    { writeKey, cdnURL: base },
    { integrations: { 'Segment.io': { apiHost, protocol: 'http' } } },
  );
  const options = { context: { test_run: run } };
  const ids = {};
  const call = async (name, promise) => {
    const ctx = await promise;
    ids[name] = ctx.event.messageId;
  };
  // In a browser the anonymous call comes first, before identify.
  await call('Anonymous Event', analytics.track('Anonymous Event', { k: 'v' }, options));
  await call('identify', analytics.identify('user_123', { email: 'peter@example.com', name: 'Peter Gibbons', createdAt: new Date('2024-01-15T10:00:00Z') }, options));
  await call('Course Started', analytics.track('Course Started', { course_in_series: 1, course_format: 'pass/fail', title: 'Intro to' }, options));
  await call('Order Completed', analytics.track('Order Completed', { revenue: 19.99, currency: 'EUR', value: 5 }, options));
  await call('page', analytics.page('Docs', 'Getting Started', {}, options));
  await call('screen', analytics.screen('Home', { variant: 'a' }, options));
  await call('group', analytics.group('group_42', { name: 'Initech', employees: 120 }, options));
  await call('alias', analytics.alias('user_123', 'anon_abc', options));
  await call('Backfilled Event', analytics.track('Backfilled Event', { source: 'import' }, { ...options, timestamp: new Date('2023-06-01T12:34:56.789Z') }));
  await call('Mixpanel Only', analytics.track('Mixpanel Only', { plan: 'pro' }, { ...options, integrations: { All: false, Mixpanel: true } }));
  return ids;
};
