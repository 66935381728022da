"""A fault-injecting HTTP proxy in front of ferry, for the retry tests.

Usage: fault_proxy.py UPSTREAM_BASE MODE   (MODE: 500 or 429)
Prints "listening on http://127.0.0.1:PORT". The first POST is forwarded to ferry (so
the events are stored) but the client is told 500 (or 429 with Retry-After: 1); every
later request passes through. The library retries the same batch: ferry must dedupe.
"""
import http.server
import sys
import urllib.request

upstream, mode = sys.argv[1], sys.argv[2]
state = {"faulted": False}


class Proxy(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        if not state["faulted"]:
            state["faulted"] = True
            self.send_response(int(mode))
            if mode == "429":
                self.send_header("Retry-After", "1")
            payload = b'{"success":false,"code":"injected","message":"injected by the test proxy"}'
        else:
            self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
