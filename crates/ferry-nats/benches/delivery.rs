//! Delivery from the JetStream stream (cluster mode) against delivery from the embedded
//! log, in one run: the same 200,000 stored events (~1.3 KB) drained by delivery workers
//! into the same kind of warehouse. The stream is one nats-server node with file storage
//! on this machine, sharing its cores with ferry and the database.
//!
//! `FERRY_TEST_NATS_SERVER=/usr/sbin/nats-server cargo bench -p ferry-nats --bench delivery`
//! (PostgreSQL too with `FERRY_BENCH_POSTGRES_URL` or `FERRY_TEST_POSTGRES_URL`;
//! `BENCH_EVENTS` sets the count).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_delivery::{DeadLetters, Start, Worker, WorkerConfig, WorkerStatus};
use ferry_destinations::Destination;
use ferry_destinations::warehouse::{PostgresConfig, PostgresWarehouse, SqliteConfig, SqliteWarehouse};
use ferry_log::{LogConfig, SyncPolicy};
use ferry_log_contract::{ConsumerOptions, Log, Record};
use ferry_nats::testing::{NatsNode, server_binary};
use ferry_nats::{Cluster, NatsConfig};

#[path = "../../ferry-delivery/benches/stored.rs"]
mod stored;

/// As in the ferry binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn worker_config(name: &str) -> WorkerConfig {
    WorkerConfig {
        batch_events: 10_000,
        batch_bytes: 32 << 20,
        linger: Duration::from_secs(1),
        start: Start::End,
        timeout: Duration::from_secs(120),
        ..WorkerConfig::new(name)
    }
}

/// Run workers until together they delivered `n` events; events/s.
async fn drain(workers: Vec<Worker>, n: u64) -> f64 {
    let statuses: Vec<Arc<WorkerStatus>> = workers.iter().map(Worker::status).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let began = Instant::now();
    let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run(stopped.clone()))).collect();
    while statuses.iter().map(|s| s.delivered.load(Ordering::Relaxed)).sum::<u64>() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    rate
}

/// Store `n` events in `log` (keyed as collectors key them), then drain them with one
/// worker per destination, all sharing one consumer; events/s.
async fn through(log: &dyn Log, destinations: Vec<Arc<dyn Destination>>, source: &str, n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    // The consumer exists before the events: it reads only these, not earlier cases'.
    let name = format!("warehouse_{source}");
    let options = ConsumerOptions { start: Start::End, stable_batches: false };
    let mut consumers = Vec::new();
    for _ in &destinations {
        consumers.push(log.consumer(&name, options).await.unwrap());
    }
    let now = jiff::Timestamp::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let records = chunk
            .iter()
            .map(|i| Record {
                key: Some(format!("{source}-{i}").into_bytes()),
                payload: stored::stored(source, *i, now).into_bytes(),
            })
            .collect();
        log.append(records).await.unwrap();
    }
    let mut workers = Vec::new();
    for (i, (destination, consumer)) in destinations.into_iter().zip(consumers).enumerate() {
        let dead_letters = Arc::new(DeadLetters::open(&dir.path().join(format!("dl{i}.db"))).unwrap());
        workers.push(Worker::new(worker_config(&name), consumer, destination, dead_letters));
    }
    drain(workers, n).await
}

fn main() {
    let Some(binary) = server_binary("delivery bench") else { return };
    let n: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let postgres = std::env::var("FERRY_BENCH_POSTGRES_URL").or_else(|_| std::env::var("FERRY_TEST_POSTGRES_URL")).ok();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, nats_dir.path());
    println!(
        "{n} stored events of {} bytes, batches of 10,000\n",
        stored::stored("bench", 1, jiff::Timestamp::now()).len()
    );
    println!(
        "| warehouse | from the embedded log, events/s | from the stream, 1 worker | ratio | from the stream, 2 workers | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    runtime.block_on(async {
        let mut config = NatsConfig::new(vec![node.url()]);
        config.replicas = 1;
        config.max_bytes = 8 << 30;
        let cluster = Cluster::connect(config).await.unwrap();
        cluster.ensure_stream().await.unwrap();
        let stream = cluster.events().await.unwrap();
        let log_dir = tempfile::tempdir().unwrap();
        let config = LogConfig { dir: log_dir.path().join("log"), sync: SyncPolicy::Never, ..LogConfig::default() };
        let embedded = ferry_log::Log::open(config).unwrap().0;

        let dir = tempfile::tempdir_in(".").unwrap();
        let sqlite = |name: &str| -> Arc<dyn Destination> {
            Arc::new(SqliteWarehouse::open(&SqliteConfig { path: dir.path().join(format!("{name}.db")) }).unwrap())
        };
        let log = through(&embedded, vec![sqlite("log")], "b_log", n).await;
        let one = through(&stream, vec![sqlite("one")], "b_one", n).await;
        let shared = sqlite("two");
        let two = through(&stream, vec![shared.clone(), shared], "b_two", n).await;
        println!(
            "| SQLite (one file; two workers share it) | {log:.0} | {one:.0} | {:.2}× | {two:.0} | {:.2}× |",
            one / log,
            two / log
        );
        let Some(url) = postgres else {
            println!("| PostgreSQL | skipped: set FERRY_BENCH_POSTGRES_URL | | | | |");
            return;
        };
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let schemas = ["p_log", "p_one", "p_two"];
        for schema in schemas {
            client.batch_execute(&format!("drop schema if exists {schema} cascade")).await.unwrap();
        }
        let pg = || -> Arc<dyn Destination> {
            Arc::new(PostgresWarehouse::new(PostgresConfig {
                url: url.clone(),
                connect_timeout: Duration::from_secs(10),
            }))
        };
        let log = through(&embedded, vec![pg()], "p_log", n).await;
        let one = through(&stream, vec![pg()], "p_one", n).await;
        let two = through(&stream, vec![pg(), pg()], "p_two", n).await;
        println!(
            "| PostgreSQL 15 (local, binary COPY) | {log:.0} | {one:.0} | {:.2}× | {two:.0} | {:.2}× |",
            one / log,
            two / log
        );
        for schema in schemas {
            client.batch_execute(&format!("drop schema if exists {schema} cascade")).await.unwrap();
        }
    });
}
