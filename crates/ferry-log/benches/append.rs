//! `cargo bench -p ferry-log`: durable append throughput and latency of the log, next to
//! the raw limits of this disk measured in the same run — sequential write bandwidth,
//! fdatasync latency, and a minimal group-commit loop (one thread: take everything queued,
//! one write, one fdatasync) at the same concurrency. Also dedupe lookups per second.
//!
//! Records are ~1 KB analytics events with varied values. Each figure is the median of
//! `ROUNDS` runs of `RUN_FOR`; set `BENCH_DIR` to measure another disk.
//!
//! Then the dedupe index growing (`cargo bench -p ferry-log --bench append -- dedupe` runs
//! only this part; `DEDUPE_GROWTH_KEYS` sets how far, 5 M by default): from 0 keys with a
//! memory cap of 250 K ids, so that keys keep moving to run files and the filters keep
//! being rebuilt, (1) the writer's dedupe work per group commit, timed alone, with its
//! worst time on a CPU and waiting for one, and (2) durable append latency (p50 to max) of
//! 16 writers × 100 fresh keyed records, next to the same without keys.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_log::{Log, LogConfig, Record, SyncPolicy};

const ROUNDS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);

fn event(i: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"track","messageId":"ajs-next-{i}-5b1f2c3d-1e2f-4a5b-8c9d-{i:012}","anonymousId":"a{}","event":"Product Viewed","properties":{{"product_id":"sku-{}","price":{}.99,"currency":"EUR","name":"Item {}","category":"Shoes"}},"context":{{"library":{{"name":"analytics.js","version":"npm:next-1.84.3"}},"page":{{"path":"/shop/{}","url":"https://shop.example.com/shop/{}","title":"Shop"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36","locale":"en-US","timezone":"Europe/Berlin","campaign":{{"source":"newsletter","medium":"email","name":"launch"}},"ip":"203.0.113.{}"}},"integrations":{{}},"originalTimestamp":"2026-11-28T10:37:14.{:03}Z","sentAt":"2026-11-28T10:37:14.900Z","timestamp":"2026-11-28T10:37:14.{:03}Z","receivedAt":"2026-11-28T10:37:15.000Z","version":2,"sourceId":"wk_5db73a61bc500563","_metadata":{{"bundled":["Segment.io"],"unbundled":[]}}}}"#,
        i % 9973,
        i % 503,
        i % 300,
        i % 1000,
        i % 57,
        i % 57,
        i % 250,
        i % 1000,
        i % 1000
    )
    .into_bytes()
}

struct Run {
    appends_per_s: f64,
    mb_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.appends_per_s.total_cmp(&b.appends_per_s));
    runs.swap_remove(runs.len() / 2)
}

/// `writers` threads each append `batch` records at a time for `RUN_FOR`, through `append`.
fn drive(writers: usize, batch: usize, append: &(dyn Fn(Vec<Vec<u8>>) + Sync)) -> Run {
    let start = Instant::now();
    let results: Vec<(u64, u64, Vec<Duration>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let (mut records, mut bytes) = (0u64, 0u64);
                    let mut i = (w as u64) << 40;
                    while start.elapsed() < RUN_FOR {
                        let batch: Vec<Vec<u8>> = (0..batch)
                            .map(|_| {
                                i += 1;
                                event(i)
                            })
                            .collect();
                        bytes += batch.iter().map(|r| r.len() as u64).sum::<u64>();
                        records += batch.len() as u64;
                        let t = Instant::now();
                        append(batch);
                        latencies.push(t.elapsed());
                    }
                    (records, bytes, latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let records: u64 = results.iter().map(|r| r.0).sum();
    let bytes: u64 = results.iter().map(|r| r.1).sum();
    let mut latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
    latencies.sort();
    Run {
        appends_per_s: records as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

/// The minimal group-commit loop: one thread takes everything queued, one write, one
/// fdatasync, then acknowledges all of it.
fn minimal_loop(path: &Path, writers: usize, batch: usize) -> Run {
    let (tx, rx) = mpsc::channel::<(Vec<Vec<u8>>, mpsc::Sender<()>)>();
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(path).unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            buf.clear();
            for (records, _) in &group {
                for r in records {
                    buf.extend_from_slice(r);
                }
            }
            file.write_all(&buf).unwrap();
            file.sync_data().unwrap();
            for (_, ack) in group {
                let _ = ack.send(());
            }
        }
    });
    let tx = std::sync::Mutex::new(tx);
    let run = drive(writers, batch, &|records| {
        let (ack, done) = mpsc::channel();
        tx.lock().unwrap().send((records, ack)).unwrap();
        done.recv().unwrap();
    });
    drop(tx);
    writer.join().unwrap();
    run
}

fn ferry_log(dir: &Path, writers: usize, batch: usize) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    let config = LogConfig { dir: dir.to_owned(), sync: SyncPolicy::Always, ..LogConfig::default() };
    let (log, _) = Log::open(config).unwrap();
    let run = drive(writers, batch, &|records| {
        let records = records.into_iter().map(|payload| Record { key: None, payload }).collect();
        log.append_blocking(records).unwrap();
    });
    log.close();
    run
}

/// What appending keyed records did while the dedupe index grew.
struct Growth {
    keys: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    /// Keys stored when the slowest append started.
    max_at_keys: u64,
}

/// Durable keyed appends (`writers` threads × `batch` records, every id fresh) while the
/// dedupe index grows from 0 to `total` keys with a memory cap of `cap` ids, so that keys
/// keep moving to run files and the disk layer's filter keeps growing. The append latency
/// includes every pause of the log's writer.
fn dedupe_growth(dir: &Path, total: u64, cap: usize, writers: usize, batch: u64, keyed: bool) -> Growth {
    let _ = std::fs::remove_dir_all(dir);
    let config =
        LogConfig { dir: dir.to_owned(), sync: SyncPolicy::Always, dedupe_max_ids: cap, ..LogConfig::default() };
    let (log, _) = Log::open(config).unwrap();
    let next = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    let mut latencies: Vec<(Duration, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::new();
                    loop {
                        let first = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                        if first >= total {
                            return latencies;
                        }
                        let records: Vec<Record> = (first..first + batch)
                            .map(|i| Record {
                                key: keyed.then(|| format!("growth-{i}").into_bytes()),
                                payload: event(i),
                            })
                            .collect();
                        let t = Instant::now();
                        let answers = log.append_blocking(records).unwrap();
                        latencies.push((t.elapsed(), first));
                        assert!(answers.iter().all(|a| matches!(a, ferry_log::Appended::At(_))));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    log.close();
    let _ = std::fs::remove_dir_all(dir);
    latencies.sort();
    let only: Vec<Duration> = latencies.iter().map(|l| l.0).collect();
    let (max, max_at_keys) = latencies.last().copied().unwrap_or_default();
    Growth {
        keys: total,
        seconds,
        p50: percentile(&only, 0.5),
        p99: percentile(&only, 0.99),
        p999: percentile(&only, 0.999),
        max,
        max_at_keys,
    }
}

/// How long the writer spent on the dedupe index per group commit.
struct Pauses {
    groups: usize,
    /// Expire, the group's lookups and inserts, and upkeep.
    all: [Duration; 4],
    /// Expire, and the group's lookups and inserts alone.
    own: [Duration; 4],
    /// Upkeep alone (`maintain`, `make_room`): the part that is not the group's own work.
    upkeep: [Duration; 4],
    /// Upkeep of one group, the longest time not spent waiting for a CPU (wall time less
    /// the time the writer was runnable while other threads ran, which
    /// `/proc/thread-self/schedstat` counts exactly), and the longest such wait.
    upkeep_max_running: Duration,
    upkeep_max_runqueue: Duration,
    stats: ferry_log::dedupe::Stats,
    disk_keys: u64,
}

/// How long this thread has been runnable but waiting for a CPU, in total. (The file's
/// first field, time on a CPU, is updated only at scheduler ticks: too coarse here.)
fn runqueue_wait() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// p50, p99, p99.9 and max of `values`.
fn spread(mut values: Vec<Duration>) -> [Duration; 4] {
    values.sort();
    [percentile(&values, 0.5), percentile(&values, 0.99), percentile(&values, 0.999), percentile(&values, 1.0)]
}

/// The dedupe work of the log's writer, timed alone, while the index grows from 0 to `total`
/// fresh keys with a memory cap of `cap` ids: for each group commit of `group` keys, what
/// the writer does (expire, check-and-insert each key, then upkeep and maybe start a spill),
/// then `pace` standing in for the group's write and fdatasync, during which the background
/// spill and filter threads run as they would. With `prefetch`, the group's keys are
/// prefetched first, as the writer does.
fn dedupe_pauses(dir: &Path, total: u64, cap: usize, group: u64, pace: Duration, prefetch: bool) -> Pauses {
    let _ = std::fs::remove_dir_all(dir);
    let day_ms = 24 * 3600 * 1000;
    let mut dedupe = ferry_log::dedupe::Dedupe::open(dir, day_ms, cap, 0).unwrap();
    let groups = (total / group) as usize;
    let (mut all, mut own, mut upkeep) =
        (Vec::with_capacity(groups), Vec::with_capacity(groups), Vec::with_capacity(groups));
    let (mut max_running, mut max_runqueue) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for g in 0..groups as u64 {
        let keys: Vec<u128> = (g * group..(g + 1) * group)
            .map(|i| xxhash_rust::xxh3::xxh3_128(format!("growth-{i}").as_bytes()))
            .collect();
        let now = start.elapsed().as_millis() as u64;
        let t = Instant::now();
        dedupe.expire(now);
        if prefetch {
            dedupe.prefetch(keys.iter().copied());
        }
        for key in keys {
            assert!(dedupe.insert(key, now));
        }
        let waited_before = runqueue_wait();
        let inserted = Instant::now();
        dedupe.maintain();
        if dedupe.over_cap() {
            dedupe.make_room();
        }
        let done = Instant::now();
        let waited = runqueue_wait() - waited_before;
        max_running = max_running.max((done - inserted).saturating_sub(waited));
        max_runqueue = max_runqueue.max(waited);
        all.push(done - t);
        own.push(inserted - t);
        upkeep.push(done - inserted);
        // Like an fdatasync, this leaves the core to the background threads.
        std::thread::sleep(pace);
    }
    dedupe.settle();
    let (stats, disk_keys) = (dedupe.stats(), dedupe.disk_len());
    drop(dedupe);
    let _ = std::fs::remove_dir_all(dir);
    Pauses {
        groups,
        all: spread(all),
        own: spread(own),
        upkeep: spread(upkeep),
        upkeep_max_running: max_running,
        upkeep_max_runqueue: max_runqueue,
        stats,
        disk_keys,
    }
}

fn sequential_write_mb_s(path: &Path) -> f64 {
    let block = vec![7u8; 1 << 20];
    let mut file = File::create(path).unwrap();
    let start = Instant::now();
    for _ in 0..256 {
        file.write_all(&block).unwrap();
    }
    file.sync_data().unwrap();
    256.0 * 1.048_576 / start.elapsed().as_secs_f64()
}

fn fsync_latency(path: &Path) -> (Duration, Duration) {
    let mut file = File::create(path).unwrap();
    let block = vec![1u8; 4096];
    let mut latencies: Vec<Duration> = (0..300)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
            t.elapsed()
        })
        .collect();
    latencies.sort();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

fn dedupe_lookups_per_s() -> f64 {
    let mut dedupe = ferry_log::dedupe::Dedupe::new(u64::MAX, 10_000_000);
    let keys: Vec<u128> = (0..1_000_000u64).map(mixed).collect();
    for (i, k) in keys.iter().enumerate() {
        dedupe.insert(*k, i as u64);
    }
    let start = Instant::now();
    let mut hits = 0u64;
    for round in 0..4u64 {
        for k in &keys {
            hits += u64::from(dedupe.contains(k ^ u128::from(round & 1)));
        }
    }
    assert!(hits > 0);
    4_000_000.0 / start.elapsed().as_secs_f64()
}

fn mixed(i: u64) -> u128 {
    u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ u128::from(i)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; `-- dedupe` runs only the dedupe growth measurement.
    let only_dedupe = std::env::args().any(|a| a == "dedupe");
    let root: PathBuf =
        std::env::var_os("BENCH_DIR").map_or_else(|| std::env::temp_dir().join("ferry-log-bench"), PathBuf::from);
    std::fs::create_dir_all(&root).unwrap();
    let raw = root.join("raw.bin");
    if only_dedupe {
        let (fsync_p50, fsync_p99) = fsync_latency(&raw);
        println!("disk: 4 KiB write + fdatasync p50 {} ms, p99 {} ms", ms(fsync_p50), ms(fsync_p99));
        dedupe_growth_report(&root);
        let _ = std::fs::remove_dir_all(&root);
        return;
    }

    let mut seq: Vec<f64> = (0..ROUNDS).map(|_| sequential_write_mb_s(&raw)).collect();
    let (fsync_p50, fsync_p99) = fsync_latency(&raw);
    println!(
        "disk: sequential write {:.0} MB/s; 4 KiB write + fdatasync p50 {} ms, p99 {} ms",
        median(&mut seq),
        ms(fsync_p50),
        ms(fsync_p99)
    );
    println!();
    println!(
        "| workload | minimal loop appends/s | ferry-log appends/s | ratio | ferry-log MB/s (raw) | ferry-log p50 ms | p99 ms | minimal p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (writers, batch) in [(1, 1), (16, 1), (64, 1), (1, 100), (16, 100)] {
        let mut minimal = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..ROUNDS {
            minimal.push(minimal_loop(&raw, writers, batch));
            ours.push(ferry_log(&root.join("log"), writers, batch));
        }
        let (minimal, ours) = (median_run(minimal), median_run(ours));
        println!(
            "| {writers} writer(s) × {batch} record(s) | {:.0} | {:.0} | {:.2}× | {:.1} | {} | {} | {} / {} |",
            minimal.appends_per_s,
            ours.appends_per_s,
            ours.appends_per_s / minimal.appends_per_s,
            ours.mb_per_s,
            ms(ours.p50),
            ms(ours.p99),
            ms(minimal.p50),
            ms(minimal.p99)
        );
    }
    println!();
    println!("dedupe: {:.1} M lookups/s on one core (1 M keys held)", dedupe_lookups_per_s() / 1e6);
    println!();
    dedupe_growth_report(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// The dedupe index growing from 0 to `DEDUPE_GROWTH_KEYS` (5 M by default) keys with a
/// memory cap of 250 K ids: the writer's dedupe pauses alone, then durable append latency
/// with keys and, as a control, without.
fn dedupe_growth_report(root: &Path) {
    let total = std::env::var("DEDUPE_GROWTH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
    let cap = 250_000;
    let (group, pace) = (200, Duration::from_micros(500));
    println!(
        "dedupe writer pauses: 0 → {} M fresh keys, memory cap {} K ids, groups of {group} keys, {} ms per group for the write + fdatasync",
        total / 1_000_000,
        cap / 1000,
        ms(pace)
    );
    let p = dedupe_pauses(&root.join("pauses"), total, cap, group, pace, true);
    let fmt = |d: [Duration; 4]| format!("{} / {} / {} / {}", ms(d[0]), ms(d[1]), ms(d[2]), ms(d[3]));
    println!("dedupe work per group commit, p50 / p99 / p99.9 / max ms: {}", fmt(p.all));
    let unfetched = dedupe_pauses(&root.join("pauses"), total, cap, group, pace, false);
    let us = |d: [Duration; 4]| d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e6)).join(" / ");
    println!(
        "of which the group's own lookups and inserts, p50 / p99 / p99.9 / max µs: {} (without prefetching the keys: {})",
        us(p.own),
        us(unfetched.own)
    );
    println!("of which upkeep (spills, filters, memory), p50 / p99 / p99.9 / max ms: {}", fmt(p.upkeep));
    println!(
        "upkeep of one group: at most {} ms not waiting for a CPU, at most {} ms runnable waiting for one",
        ms(p.upkeep_max_running),
        ms(p.upkeep_max_runqueue)
    );
    println!(
        "{} groups; {:.2} M keys ended in run files; {} runs, {} filter rebuilds, {} waits for a spill, {} memory grows, at most {} keys of upkeep in one group",
        p.groups,
        p.disk_keys as f64 / 1e6,
        p.stats.spills,
        p.stats.rebuilds,
        p.stats.full_waits,
        p.stats.grows,
        p.stats.max_step_keys
    );
    println!();
    println!(
        "dedupe growth: 16 writers × 100 fresh keyed records, sync = always, 0 → {} M keys, memory cap {} K ids",
        total / 1_000_000,
        cap / 1000
    );
    println!("| records | append p50 ms | p99 | p99.9 | max (at M records) | records/s |");
    println!("|---|---|---|---|---|---|");
    for (keyed, name) in [(true, "keyed (dedupe)"), (false, "no key (control)")] {
        let g = dedupe_growth(&root.join("growth"), total, cap, 16, 100, keyed);
        println!(
            "| {name} | {} | {} | {} | {} ({:.2}) | {:.0} |",
            ms(g.p50),
            ms(g.p99),
            ms(g.p999),
            ms(g.max),
            g.max_at_keys as f64 / 1e6,
            g.keys as f64 / g.seconds
        );
    }
}
