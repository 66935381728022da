#!/usr/bin/env bash
# ferry's HTTP load benchmark, in one run (about 2.5 minutes plus the build):
# the no-op and durable no-op ceilings of this machine, then `ferry serve --sync always` and
# `--sync interval`, each pinned to core 0 with one runtime worker while the load generator
# runs on core 1. Prints a markdown report (see BENCHMARKS-http.md for how to read it).
#
#   scripts/bench-http.sh                      # everything, defaults
#   scripts/bench-http.sh --rounds 5 --json /tmp/bench.json
#   BENCH_DIR=/mnt/data scripts/bench-http.sh  # put the data directories on another disk
#   scripts/bench-http.sh --help               # every option
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ferry -p ferry-bench >&2
exec "$target_dir/release/bench-http" --bin-dir "$target_dir/release" "$@"
