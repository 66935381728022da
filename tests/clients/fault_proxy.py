"""A fault-injecting HTTP proxy in front of ferry, for the retry tests.

Usage: fault_proxy.py UPSTREAM_BASE MODE   (MODE: 500 or 429)

Prints "listening on http://127.0.0.1:PORT", then one JSON line per request it handled:
{"method", "path", "upstream": status ferry gave, "answered": status the client got,
 "injected": bool, "retry_count": X-Retry-Count header or null, "message_ids": [...]}.

The first POST is forwarded to ferry (so its events are stored) but the client is told
500 (or 429 with Retry-After: 1); every later request passes through unchanged. The
library then retries the same batch, with the same messageIds: ferry must deduplicate.
Uses only the standard library, so it runs with any python3.
"""
import gzip
import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

upstream, mode = sys.argv[1].rstrip("/"), sys.argv[2]
if mode not in ("500", "429"):
    sys.exit(f"unknown mode {mode!r}: use 500 or 429")
state = {"faulted": False}
lock = threading.Lock()
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


def message_ids(body, encoding):
    """The messageIds of a Segment request body (single event or batch envelope)."""
    try:
        if encoding == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        doc = json.loads(body)
    except (OSError, ValueError):
        return []
    items = doc.get("batch") if isinstance(doc, dict) and isinstance(doc.get("batch"), list) else [doc]
    return [item.get("messageId") for item in items if isinstance(item, dict)]


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        request = urllib.request.Request(upstream + self.path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload, upstream_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, payload, upstream_headers = error.code, error.read(), error.headers
        with lock:
            injected = method == "POST" and not state["faulted"]
            state["faulted"] = state["faulted"] or injected
        answered = int(mode) if injected else status
        if injected:
            payload = json.dumps({"success": False, "code": f"injected_{mode}",
                                  "message": "injected by the test proxy"}).encode()
        self.send_response(answered)
        self.send_header("Content-Type", "application/json" if injected
                         else upstream_headers.get("Content-Type", "application/json"))
        if injected and mode == "429":
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        record = {
            "method": method,
            "path": self.path,
            "upstream": status,
            "answered": answered,
            "injected": injected,
            "retry_count": self.headers.get("X-Retry-Count"),
            "message_ids": message_ids(body, self.headers.get("Content-Encoding")) if body else [],
        }
        print(json.dumps(record), flush=True)

    def do_POST(self):
        self.forward("POST")

    def do_GET(self):
        self.forward("GET")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
server.daemon_threads = True
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
