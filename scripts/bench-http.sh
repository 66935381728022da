#!/usr/bin/env bash
# The HTTP load benchmark: ferry (sync=always, sync=interval) against two ceilings of this
# machine (a no-op server and a durable no-op server), in one run. Servers are pinned to
# core 0, the load generator to core 1. Prints a markdown table; about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ferry -p ferry-bench
exec python3 scripts/bench_http.py "$@"
