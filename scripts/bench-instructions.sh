#!/usr/bin/env bash
# User-space instructions per stored event of `ferry serve`, counted by callgrind: a
# measure that a shared, noisy machine does not move, for comparing two builds (run it on
# each). The server runs under valgrind with one runtime worker; the load generator sends
# a fixed rate for a fixed time; the count covers the whole process, start-up included.
#
#   scripts/bench-instructions.sh                       # batches of 100, sync=always
#   scripts/bench-instructions.sh single interval       # MODE (single|batch) SYNC (always|interval|never)
#   FERRY_BIN=/path/to/other/ferry scripts/bench-instructions.sh batch always
#   RATE=20 SECONDS_OF_LOAD=10 scripts/bench-instructions.sh   # requests/s (default 20 batch, 400 single)
#   KEEP=/tmp/ferry.callgrind scripts/bench-instructions.sh   # keep the profile (callgrind_annotate it)
#
# Needs valgrind (Debian: `apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-batch}"
sync="${2:-always}"
rate="${RATE:-$([ "$mode" = batch ] && echo 20 || echo 400)}"
seconds="${SECONDS_OF_LOAD:-10}"
port="${PORT:-18490}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ferry -p ferry-bench >&2
ferry="${FERRY_BIN:-$target_dir/release/ferry}"
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/ferry-instructions.XXXXXX")"
trap 'if [ -n "${KEEP:-}" ]; then cp "$work/callgrind.out" "$KEEP" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
echo 'destinations = []' >"$work/ferry.toml"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$ferry" --config "$work/ferry.toml" \
    --data-dir "$work/data" serve --sync "$sync" --listen "127.0.0.1:$port" --threads 1 \
    >"$work/stdout" 2>"$work/stderr" &
server=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
done
"$target_dir/release/loadgen" run --target "127.0.0.1:$port" --mode "$mode" --connections 8 \
    --duration "$seconds" --rate "$rate" >"$work/load.json"
kill -TERM "$server"
wait "$server" || true
events="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$work/load.json")"
instructions="$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
echo "$mode, sync=$sync, $rate requests/s for $seconds s: $events events, $instructions instructions, $((instructions / events)) per event ($ferry)"
