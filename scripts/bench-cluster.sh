#!/usr/bin/env bash
# End to end, embedded mode against cluster mode, in one run on this machine: the load
# generator sends 100-event batches (closed loop, 16 connections) for DURATION seconds, and
# the clock stops when the last acknowledged event is a row in PostgreSQL.
#
#   embedded: one `ferry serve` (sync=always) delivering to PostgreSQL;
#   cluster:  a one-node JetStream (file storage), one `ferry serve --role collector` and
#             one `ferry serve --role worker` delivering to PostgreSQL.
#
# Nothing is pinned: ferry, nats-server, PostgreSQL and the load generator share the
# cores, so the numbers say what one small machine does, not what separate machines do.
# Prints a markdown table: events acknowledged, ingest events/s, end-to-end events/s, and
# each process's CPU per 1,000 events.
#
#   scripts/bench-cluster.sh                       # DURATION=20 by default
#   FERRY_BENCH_POSTGRES_URL=postgres://... FERRY_BENCH_NATS_SERVER=/path/nats-server scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ferry -p ferry-bench >&2
bin="$target_dir/release"
pg="${FERRY_BENCH_POSTGRES_URL:-${FERRY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}"
nats_server="${FERRY_BENCH_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
duration="${DURATION:-20}"
work="$(mktemp -d "${BENCH_DIR:-/tmp}/ferry-bench-cluster-XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# start NAME ARGS...: run ferry, wait for its address; sets $addr and $pid.
start() {
  local name="$1"; shift
  FERRY_LOG=warn "$bin/ferry" "$@" --listen 127.0.0.1:0 >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    addr="$(sed -n 's#^ferry listening on http://##p' "$work/$name.out")"
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.err" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not start" >&2; exit 1
}

# run LABEL SCHEMA COLLECTOR_ADDR COLLECTOR_PID [PIDS...]: load, then wait for PostgreSQL.
run() {
  local label="$1" schema="$2" target="$3" collector="$4"; shift 4
  local others=("$@")
  psql -q "$pg" -c "drop schema if exists \"$schema\" cascade" >/dev/null
  declare -A before
  for p in "$collector" "${others[@]}"; do before[$p]="$(cpu_s "$p")"; done
  local started; started="$(date +%s.%N)"
  "$bin/loadgen" run --target "$target" --mode batch --connections 16 --duration "$duration" \
    --server-pid "$collector" --write-key "$schema" >"$work/$schema.json"
  local events; events="$(tail -1 "$work/$schema.json" | json '["events"]')"
  local ingest; ingest="$(tail -1 "$work/$schema.json" | json '["eps"]')"
  local rows=0
  for _ in $(seq 3000); do
    rows="$(psql -qtA "$pg" -c "select count(*) from \"$schema\".tracks" 2>/dev/null || echo 0)"
    [ "${rows:-0}" -ge "$events" ] && break
    sleep 0.1
  done
  local ended; ended="$(date +%s.%N)"
  [ "$rows" -ge "$events" ] || { echo "$label: only $rows of $events rows after 300 s" >&2; exit 1; }
  local cpu=""
  for p in "$collector" "${others[@]}"; do
    cpu+="$(python3 -c "print(f'{1e6 * ($(cpu_s "$p") - ${before[$p]}) / $events:.1f}')") ms / "
  done
  printf '| %s | %s | %.0f | %.0f | %s |\n' "$label" "$events" "$ingest" \
    "$(python3 -c "print($events / ($ended - $started))")" "${cpu% / }"
  psql -q "$pg" -c "drop schema if exists \"$schema\" cascade" >/dev/null
}

sources='[[sources]]
id = "bench_e2e_embedded"
write_keys = ["bench_e2e_embedded"]

[[sources]]
id = "bench_e2e_cluster"
write_keys = ["bench_e2e_cluster"]'
cat >"$work/embedded.toml" <<EOF
$sources

[[destinations]]
name = "warehouse"
type = "postgres"
url = "$pg"
EOF
nats_port="$(free_port)"
"$nats_server" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >/dev/null 2>&1 &
pids+=("$!")
nats_pid=$!
cat >"$work/cluster.toml" <<EOF
$sources

[log]
backend = "nats"

[nats]
urls = ["nats://127.0.0.1:$nats_port"]
replicas = 1

[[destinations]]
name = "warehouse"
type = "postgres"
url = "$pg"
EOF

echo "| mode | events | ingest events/s | end to end events/s | CPU per 1,000 events |"
echo "|---|---:|---:|---:|---|"
start embedded serve --config "$work/embedded.toml" --data-dir "$work/embedded" --sync always
run "embedded (ferry)" bench_e2e_embedded "$addr" "$pid"
kill "$pid"
start collector serve --config "$work/cluster.toml" --data-dir "$work/collector" --role collector
collector_addr="$addr" collector_pid="$pid"
start worker serve --config "$work/cluster.toml" --data-dir "$work/worker" --role worker
run "cluster (collector / worker / nats-server)" bench_e2e_cluster "$collector_addr" "$collector_pid" "$pid" "$nats_pid"
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg); ${duration} s of load; nothing pinned"
