// The test page's script: analytics-next as a site would bundle it. `runFerryTest` loads
// the library from ferry (settings document from cdnURL) and makes the common calls.
import { AnalyticsBrowser } from '@segment/analytics-next';

window.runFerryTest = async (base, writeKey, apiHost, run) => {
  const analytics = AnalyticsBrowser.load(
    { writeKey, cdnURL: base },
    { integrations: { 'Segment.io': { apiHost, protocol: 'http' } } },
  );
  const options = { context: { test_run: run } };
  await analytics.track('Anonymous Event', { k: 'v' }, options);
  await analytics.identify('user_123', { email: 'peter@example.com', name: 'Peter Gibbons', createdAt: new Date('2024-01-15T10:00:00Z') }, options);
  await analytics.track('Course Started', { course_in_series: 1, course_format: 'pass/fail', title: 'Intro to' }, options);
  await analytics.track('Order Completed', { revenue: 19.99, currency: 'EUR', value: 5 }, options);
  await analytics.page('Docs', 'Getting Started', {}, options);
  await analytics.screen('Home', { variant: 'a' }, options);
  await analytics.group('group_42', { name: 'Initech', employees: 120 }, options);
  await analytics.alias('user_123', 'anon_abc', options);
  await analytics.track('Backfilled Event', { source: 'import' }, { ...options, timestamp: new Date('2023-06-01T12:34:56.789Z') });
  await analytics.track('Mixpanel Only', { plan: 'pro' }, { ...options, integrations: { All: false, Mixpanel: true } });
  return 'done';
};
