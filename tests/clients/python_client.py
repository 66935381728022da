"""Send the common scenario with segment-analytics-python to BASE_URL.

Usage: python_client.py BASE_URL WRITE_KEY RUN_ID

Every call carries context.test_run = RUN_ID so the test can find its events. The last
stdout line is JSON {"messageIds": {"<call>": "<messageId>", ...}} with the ids the
library generated. Exits non-zero if the library reports any delivery error (on_error).
"""
import datetime
import json
import sys
import threading

from segment.analytics import Client

if len(sys.argv) != 4:
    sys.exit("usage: python_client.py BASE_URL WRITE_KEY RUN_ID")
base, write_key, run = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []


def on_error(error, items):
    errors.append(f"{error!r} for {len(items)} items")


def watchdog():
    print("python client: no flush within 40 s", file=sys.stderr, flush=True)
    import os
    os._exit(3)


timer = threading.Timer(40, watchdog)
timer.daemon = True
timer.start()

# Defaults otherwise (gzip off, upload_size 100); a short upload_interval keeps the test fast.
client = Client(write_key, host=base, on_error=on_error, max_retries=5, upload_interval=0.2)
ctx = {"test_run": run}
utc = datetime.timezone.utc
calls = {
    "identify": lambda: client.identify("user_123", {
        "email": "peter@example.com", "name": "Peter Gibbons",
        "createdAt": datetime.datetime(2024, 1, 15, 10, 0, tzinfo=utc)}, context=ctx),
    "Course Started": lambda: client.track("user_123", "Course Started", {
        "course_in_series": 1, "course_format": "pass/fail", "title": "Intro to"}, context=ctx),
    "Order Completed": lambda: client.track("user_123", "Order Completed", {
        "revenue": 19.99, "currency": "EUR", "value": 5}, context=ctx),
    "page": lambda: client.page("user_123", "Docs", "Getting Started",
                                {"url": "https://example.com/docs/start"}, context=ctx),
    "screen": lambda: client.screen("user_123", None, "Home", {"variant": "a"}, context=ctx),
    "group": lambda: client.group("user_123", "group_42", {"name": "Initech", "employees": 120}, context=ctx),
    "alias": lambda: client.alias("anon_abc", "user_123", context=ctx),
    "Backfilled Event": lambda: client.track(
        "user_123", "Backfilled Event", {"source": "import"}, context=ctx,
        timestamp=datetime.datetime(2023, 6, 1, 12, 34, 56, 789000, tzinfo=utc)),
    "Mixpanel Only": lambda: client.track("user_123", "Mixpanel Only", {"plan": "pro"}, context=ctx,
                                          integrations={"All": False, "Mixpanel": True}),
    "Anonymous Event": lambda: client.track(event="Anonymous Event", properties={"k": "v"},
                                            anonymous_id="anon_abc", context=ctx),
}
ids = {}
for name, call in calls.items():
    queued, message = call()
    if not queued:
        errors.append(f"{name}: not queued")
    ids[name] = message["messageId"]
client.flush()
client.shutdown()
timer.cancel()
if errors:
    print("delivery errors: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print(json.dumps({"messageIds": ids}))
