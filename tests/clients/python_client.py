"""Send the common scenario with segment-analytics-python to BASE_URL.

Usage: python_client.py BASE_URL WRITE_KEY RUN_ID
Every call carries context.test_run = RUN_ID so the test can find its events.
Exits non-zero if the library reports any delivery error.
"""
import datetime
import sys

from segment.analytics import Client

base, write_key, run = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []


def on_error(error, items):
    errors.append(f"{error!r} for {len(items)} items")


client = Client(write_key, host=base, on_error=on_error, max_retries=5, upload_interval=0.2)
ctx = {"test_run": run}
client.identify("user_123", {"email": "peter@example.com", "name": "Peter Gibbons",
                             "createdAt": datetime.datetime(2024, 1, 15, 10, 0, tzinfo=datetime.timezone.utc)}, context=ctx)
client.track("user_123", "Course Started", {"course_in_series": 1, "course_format": "pass/fail", "title": "Intro to"}, context=ctx)
client.track("user_123", "Order Completed", {"revenue": 19.99, "currency": "EUR", "value": 5}, context=ctx)
client.page("user_123", "Docs", "Getting Started", {"url": "https://example.com/docs/start"}, context=ctx)
client.screen("user_123", None, "Home", {"variant": "a"}, context=ctx)
client.group("user_123", "group_42", {"name": "Initech", "employees": 120}, context=ctx)
client.alias("anon_abc", "user_123", context=ctx)
client.track("user_123", "Backfilled Event", {"source": "import"}, context=ctx,
             timestamp=datetime.datetime(2023, 6, 1, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc))
client.track("user_123", "Mixpanel Only", {"plan": "pro"}, context=ctx, integrations={"All": False, "Mixpanel": True})
client.track(event="Anonymous Event", properties={"k": "v"}, anonymous_id="anon_abc", context=ctx)
client.flush()
client.shutdown()
if errors:
    print("delivery errors: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print("sent 10 events")
