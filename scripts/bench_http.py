"""Orchestrates the HTTP benchmark (see scripts/bench-http.sh): start each server pinned
to core 0, drive it with target/release/loadgen pinned to core 1, read the server's CPU
time and peak RSS from /proc, report medians of ROUNDS runs."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "3")
TARGET = os.environ.get("CARGO_TARGET_DIR", "target") + "/release"
TICK = os.sysconf("SC_CLK_TCK")
PIN = shutil.which("taskset") is not None


def pinned(core, argv):
    return (["taskset", "-c", str(core)] if PIN else []) + argv


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(argv):
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    addr = line.rsplit("http://", 1)[1]
    return proc, addr


def load(addr, mode, connections, rate=0.0):
    argv = pinned(1, [f"{TARGET}/loadgen", "--target", addr, "--mode", mode, "--connections", str(connections),
                      "--duration", DURATION, "--rate", str(rate)])
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def measure(proc, addr, mode, connections):
    runs = []
    for _ in range(ROUNDS):
        before = cpu_seconds(proc.pid)
        result = load(addr, mode, connections)
        result["cpu_s"] = cpu_seconds(proc.pid) - before
        result["events_per_cpu_s"] = result["events"] / max(result["cpu_s"], 1e-9)
        runs.append(result)
    runs.sort(key=lambda r: r["eps"])
    return runs[len(runs) // 2]


def fsync_probe(directory):
    path = os.path.join(directory, "probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    lat = []
    for _ in range(300):
        t = time.perf_counter()
        os.write(fd, b"x" * 4096)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1e3)
    os.close(fd)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def main():
    work = tempfile.mkdtemp(prefix="ferry-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    fsync_p50, fsync_p99 = fsync_probe(work)
    servers = [
        ("no-op", [f"{TARGET}/noop-server", "--threads", "1"]),
        ("durable no-op", [f"{TARGET}/durable-noop-server", "--threads", "1", "--file", f"{work}/durable.bin"]),
        ("ferry sync=always", [f"{TARGET}/ferry", "serve", "--listen", "127.0.0.1:0", "--threads", "1",
                               "--data-dir", f"{work}/always", "--sync", "always"]),
        ("ferry sync=interval", [f"{TARGET}/ferry", "serve", "--listen", "127.0.0.1:0", "--threads", "1",
                                 "--data-dir", f"{work}/interval", "--sync", "interval"]),
    ]
    results = {}
    for name, argv in servers:
        proc, addr = start(argv)
        try:
            single = measure(proc, addr, "single", 32)
            batch = measure(proc, addr, "batch", 8)
            half = None
            if name.startswith("ferry"):
                half = load(addr, "single", 32, rate=single["rps"] / 2)
            results[name] = {"single": single, "batch": batch, "half": half, "rss_mb": peak_rss_mb(proc.pid)}
        finally:
            proc.terminate()
            proc.wait()
    shutil.rmtree(work, ignore_errors=True)

    print(f"fdatasync (4 KiB write + fdatasync): p50 {fsync_p50:.2f} ms, p99 {fsync_p99:.2f} ms; "
          f"{ROUNDS} rounds of {DURATION} s, medians; server pinned to core 0, loadgen to core 1" + ("" if PIN else " (NOT pinned: no taskset)"))
    print()
    print("| server | single req/s | single p50/p99 ms | single events/CPU-s | batch events/s | batch p50/p99 ms | batch events/CPU-s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s, b = r["single"], r["batch"]
        print(f"| {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | {s['events_per_cpu_s']:.0f} | "
              f"{b['eps']:.0f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {b['events_per_cpu_s']:.0f} | {r['rss_mb']:.1f} |")
    print()
    noop, durable = results["no-op"], results["durable no-op"]
    always, interval = results["ferry sync=always"], results["ferry sync=interval"]
    ratio = lambda a, b: a / b if b else float("nan")
    print(f"- sync=always single vs durable ceiling: {ratio(always['single']['rps'], durable['single']['rps']):.2f}x (goal >= 0.8)")
    print(f"- sync=always batch vs durable ceiling: {ratio(always['batch']['eps'], durable['batch']['eps']):.2f}x (goal >= 0.8)")
    print(f"- sync=interval single vs no-op ceiling: {ratio(interval['single']['rps'], noop['single']['rps']):.2f}x (goal >= 0.5)")
    for name in ("ferry sync=always", "ferry sync=interval"):
        h = results[name]["half"]
        print(f"- {name}: p99 at half the max single rate ({h['rps']:.0f} req/s): {h['p99_ms']:.2f} ms "
              f"(goal <= 2 x fsync p99 + 5 = {2 * fsync_p99 + 5:.1f} ms)")
    for name in ("ferry sync=always", "ferry sync=interval"):
        print(f"- {name}: events per CPU-second single {results[name]['single']['events_per_cpu_s']:.0f} (PostHog capture 11 K), "
              f"batch {results[name]['batch']['events_per_cpu_s']:.0f} (PostHog 68 K); peak RSS {results[name]['rss_mb']:.1f} MB (goal < 100)")
    bad = [f"{n}: {r[m]['statuses']}" for n, r in results.items() for m in ("single", "batch") if set(r[m]["statuses"]) - {"200"}]
    if bad:
        print("non-200 answers: " + "; ".join(bad))


if __name__ == "__main__":
    sys.exit(main())
