//! `cargo bench -p ferry-log`: durable append throughput and latency of the log, next to
//! the raw limits of this disk measured in the same run — sequential write bandwidth,
//! fdatasync latency, and a minimal group-commit loop (one thread: take everything queued,
//! one write, one fdatasync) at the same concurrency. Also dedupe lookups per second.
//!
//! Records are ~1 KB analytics events with varied values. Each figure is the median of
//! `ROUNDS` runs of `RUN_FOR`; set `BENCH_DIR` to measure another disk.

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
    // `cargo bench` passes `--bench`; nothing else is read.
    let root: PathBuf =
        std::env::var_os("BENCH_DIR").map_or_else(|| std::env::temp_dir().join("ferry-log-bench"), PathBuf::from);
    std::fs::create_dir_all(&root).unwrap();
    let raw = root.join("raw.bin");

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
    let _ = std::fs::remove_dir_all(&root);
}
