#!/usr/bin/env bash
# Seed the fuzz corpus from the real-client captures: each request body, prefixed with a
# route byte (0 = batch, 1.. = single routes), as the target expects.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/decode_validate
python3 - <<'PY'
import json, glob, os, hashlib
files = glob.glob("../crates/ferry-event/tests/data/real-clients/**/*.jsonl", recursive=True)
singles = {"/v1/t": 1, "/v1/track": 1, "/v1/i": 2, "/v1/identify": 2, "/v1/p": 3, "/v1/page": 3,
           "/v1/s": 4, "/v1/screen": 4, "/v1/g": 5, "/v1/group": 5, "/v1/a": 6, "/v1/alias": 6}
n = 0
for f in files:
    for line in open(f):
        c = json.loads(line)
        if c.get("body") is None:
            continue
        route = singles.get(c["path"], 0)
        data = bytes([route]) + json.dumps(c["body"]).encode()
        name = hashlib.sha1(data).hexdigest()
        open(f"corpus/decode_validate/{name}", "wb").write(data)
        n += 1
print(f"seeded {n} inputs")
PY
