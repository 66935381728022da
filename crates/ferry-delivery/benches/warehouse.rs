//! Warehouse load benchmark: realistic track events (20 properties, 10 event names,
//! analytics.js context, ~1.3 KB stored) into SQLite and PostgreSQL.
//!
//! 1. load: `Destination::send` of 10,000-event batches into existing tables (sustained).
//! 2. pipeline: log → delivery worker → warehouse, draining 200,000 stored events.
//! 3. latency: events appended to the log at 10,000/s for 20 s (each appended when its
//!    `receivedAt` says, as the API would); the time from append (the 2xx) to the
//!    warehouse commit that made its row visible, p50/p99/max.
//!
//! PostgreSQL runs when `FERRY_BENCH_POSTGRES_URL` (or `FERRY_TEST_POSTGRES_URL`) is set.
//! Run: `cargo bench -p ferry-delivery --bench warehouse` (`-- quick` for one round).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_delivery::{DeadLetters, Start, Worker, WorkerConfig};
use ferry_destinations::warehouse::{PostgresConfig, PostgresWarehouse, SqliteConfig, SqliteWarehouse};
use ferry_destinations::{BoxFuture, Destination, Event, Outcome};
use ferry_log::{Log, LogConfig, Record, SyncPolicy};

/// As in the ferry binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "stored.rs"]
mod stored;
use stored::stored;

fn events(source: &str, from: u64, n: u64) -> Vec<Arc<Event>> {
    let now = jiff::Timestamp::now();
    (from..from + n).map(|i| Arc::new(Event::decode(stored(source, i, now).as_bytes()).unwrap())).collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Sustained load rate (median over rounds) and CPU per event: ferry's, the database's.
async fn load_rate(destination: &dyn Destination, source: &str, rounds: usize, per_round: u64) -> (f64, f64, f64) {
    // Create the tables and columns first: the rounds measure sustained loading.
    assert_all_delivered(&destination.send(&events(source, 0, 1000)).await);
    let mut rates = Vec::new();
    let mut cpu = Vec::new();
    let mut db_cpu = Vec::new();
    for round in 0..rounds {
        let batches: Vec<Vec<Arc<Event>>> = (0..per_round / 10_000)
            .map(|b| events(source, 1_000_000 * (round as u64 + 1) + b * 10_000, 10_000))
            .collect();
        let (wall, cpu_before, db_before) = (Instant::now(), cpu_seconds(), postgres_cpu_seconds());
        for batch in &batches {
            assert_all_delivered(&destination.send(batch).await);
        }
        rates.push(per_round as f64 / wall.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - cpu_before);
        db_cpu.push(postgres_cpu_seconds() - db_before);
    }
    let per_event = |v: Vec<f64>| median(v) / per_round as f64 * 1e6;
    (median(rates), per_event(cpu), per_event(db_cpu))
}

fn assert_all_delivered(outcomes: &[Outcome]) {
    if let Some(bad) = outcomes.iter().find(|o| **o != Outcome::Delivered) {
        panic!("load failed: {bad:?}");
    }
}

/// CPU time (user + system) of every `postgres` process, from /proc: the database's share.
fn postgres_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres") {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            total += fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        }
    }
    total / 100.0
}

/// This process's CPU time (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn temp_log(dir: &std::path::Path) -> Log {
    Log::open(LogConfig { dir: dir.join("log"), sync: SyncPolicy::Never, ..LogConfig::default() }).unwrap().0
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        batch_events: 10_000,
        batch_bytes: 32 << 20,
        linger: Duration::from_secs(1),
        start: Start::Beginning,
        timeout: Duration::from_secs(120),
        ..WorkerConfig::new("warehouse")
    }
}

async fn pipeline_rate(destination: Arc<dyn Destination>, source: &str, n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = temp_log(dir.path());
    let now = jiff::Timestamp::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let records =
            chunk.iter().map(|i| Record { key: None, payload: stored(source, *i, now).into_bytes() }).collect();
        log.append(records).await.unwrap();
    }
    let dead_letters = Arc::new(DeadLetters::open(&dir.path().join("dl.db")).unwrap());
    let worker = Worker::open(worker_config(), &log, destination, dead_letters).await.unwrap();
    let status = worker.status();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let began = Instant::now();
    let task = tokio::spawn(worker.run(stopped));
    while status.position.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    task.await.unwrap();
    rate
}

/// A destination that notes, for every delivered event, how long after its receipt the
/// warehouse commit returned.
struct Timed {
    inner: Arc<dyn Destination>,
    latencies: Mutex<Vec<f64>>,
}

impl Destination for Timed {
    fn follows_integrations(&self) -> bool {
        self.inner.follows_integrations()
    }
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = self.inner.send(events).await;
            let now = jiff::Timestamp::now().as_millisecond();
            let mut latencies = self.latencies.lock().unwrap();
            for (event, outcome) in events.iter().zip(&outcomes) {
                if *outcome == Outcome::Delivered {
                    latencies.push((now - event.received_at.as_millisecond()) as f64 / 1000.0);
                }
            }
            outcomes
        })
    }
}

async fn latency(destination: Arc<dyn Destination>, source: &str, rate: u64, seconds: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let log = temp_log(dir.path());
    let timed = Arc::new(Timed { inner: destination, latencies: Mutex::new(Vec::new()) });
    let dead_letters = Arc::new(DeadLetters::open(&dir.path().join("dl.db")).unwrap());
    let worker = Worker::open(worker_config(), &log, timed.clone(), dead_letters).await.unwrap();
    let status = worker.status();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(worker.run(stopped));
    let total = rate * seconds;
    let per_tick = rate / 100;
    let began = tokio::time::Instant::now();
    let mut i = 0;
    while i < total {
        // Open loop: each 10 ms tick appends its share, stamped with the time it is sent.
        tokio::time::sleep_until(began + Duration::from_millis(10 * (i / per_tick))).await;
        let now = jiff::Timestamp::now();
        let records =
            (i..i + per_tick).map(|k| Record { key: None, payload: stored(source, k, now).into_bytes() }).collect();
        log.append(records).await.unwrap();
        i += per_tick;
    }
    while status.position.load(std::sync::atomic::Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let mut latencies = std::mem::take(&mut *timed.latencies.lock().unwrap());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.5), at(0.99), *latencies.last().unwrap())
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let postgres = std::env::var("FERRY_BENCH_POSTGRES_URL").or_else(|_| std::env::var("FERRY_TEST_POSTGRES_URL")).ok();
    let sample = stored("bench", 1, jiff::Timestamp::now());
    println!("events: {} bytes stored, 20 properties, 10 event names; batches of 10,000", sample.len());
    println!();
    println!(
        "| warehouse | load events/s (rows/s) | CPU µs/event: ferry / database server | log → worker → warehouse events/s | latency at 10,000 events/s: p50 / p99 / max |"
    );
    println!("|---|---|---|---|---|");
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(".").unwrap();
        let path = dir.path().join("warehouse.db");
        let sqlite: Arc<dyn Destination> = Arc::new(SqliteWarehouse::open(&SqliteConfig { path }).unwrap());
        let (rate, cpu, _) = load_rate(sqlite.as_ref(), "bench_load", rounds, 100_000).await;
        let pipeline = pipeline_rate(sqlite.clone(), "bench_pipe", 200_000).await;
        let (p50, p99, max) = latency(sqlite.clone(), "bench_latency", 10_000, if quick { 5 } else { 20 }).await;
        println!(
            "| SQLite (WAL, synchronous=full; in ferry's process) | {rate:.0} ({:.0}) | {cpu:.1} / – | {pipeline:.0} | {p50:.2} s / {p99:.2} s / {max:.2} s |",
            rate * 2.0
        );
        if let Some(url) = postgres {
            let schemas = ["bench_load", "bench_pipe", "bench_latency"];
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for schema in schemas {
                client.batch_execute(&format!("drop schema if exists {schema} cascade")).await.unwrap();
            }
            let pg: Arc<dyn Destination> =
                Arc::new(PostgresWarehouse::new(PostgresConfig { url, connect_timeout: Duration::from_secs(10) }));
            let (rate, cpu, db) = load_rate(pg.as_ref(), "bench_load", rounds, 100_000).await;
            let pipeline = pipeline_rate(pg.clone(), "bench_pipe", 200_000).await;
            let (p50, p99, max) = latency(pg.clone(), "bench_latency", 10_000, if quick { 5 } else { 20 }).await;
            println!(
                "| PostgreSQL 15 (local, binary COPY) | {rate:.0} ({:.0}) | {cpu:.1} / {db:.1} | {pipeline:.0} | {p50:.2} s / {p99:.2} s / {max:.2} s |",
                rate * 2.0
            );
            for schema in schemas {
                client.batch_execute(&format!("drop schema if exists {schema} cascade")).await.unwrap();
            }
        } else {
            println!("| PostgreSQL | skipped: set FERRY_BENCH_POSTGRES_URL | | | |");
        }
    });
}
