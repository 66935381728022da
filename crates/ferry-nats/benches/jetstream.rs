//! What JetStream costs ferry, measured on a real nats-server (one node, file storage):
//!
//! - publish throughput of 1 KB events, one message per event with a `Nats-Msg-Id` (as a
//!   collector publishes), for requests of 1 and of 100 events, several requests at once;
//! - nats-server memory per message id held in the duplicate window: RSS after publishing
//!   N events with distinct ids, against N events without ids, on fresh servers.
//!
//! `FERRY_TEST_NATS_SERVER=/usr/sbin/nats-server cargo bench -p ferry-nats --bench jetstream`
//! (`BENCH_IDS` sets N, default 500000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_log_contract::{Log, Record};
use ferry_nats::testing::{NatsNode, rss_kib, server_binary};
use ferry_nats::{Cluster, NatsConfig};

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn event(id: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"bench-{id}","userId":"u{}","properties":{{"revenue":19.99,"currency":"USD","pad":"{}"}}}}"#,
        id % 1000,
        "x".repeat(880)
    )
    .into_bytes()
}

async fn cluster(node: &NatsNode, window: Duration) -> Cluster {
    let mut config = NatsConfig::new(vec![node.url()]);
    config.replicas = 1;
    config.duplicate_window = window;
    config.max_age = Duration::from_secs(7 * 24 * 3600);
    config.max_bytes = 8 << 30;
    let cluster = Cluster::connect(config).await.expect("connect");
    cluster.ensure_stream().await.expect("stream");
    cluster
}

/// Publish `requests` requests of `size` events from `concurrency` tasks; events/s.
async fn throughput(c: &Cluster, size: usize, requests: usize, concurrency: usize, ids: bool, from: u64) -> f64 {
    let started = Instant::now();
    let per_task = requests / concurrency;
    let mut tasks = Vec::new();
    // Without ids: published as quarantine items (no `Nats-Msg-Id`).
    let log = Arc::new(if ids { c.events().await } else { c.quarantine().await }.expect("subject"));
    for t in 0..concurrency {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..per_task {
                let base = from + ((t * per_task + r) * size) as u64;
                let records: Vec<Record> = (0..size as u64)
                    .map(|i| {
                        let id = base + i;
                        Record { key: ids.then(|| format!("bench-{id}").into_bytes()), payload: event(id) }
                    })
                    .collect();
                log.append(records).await.expect("publish");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (per_task * concurrency * size) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(binary) = server_binary("jetstream bench") else { return };
    let n: u64 = std::env::var("BENCH_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    println!("## JetStream as ferry uses it (nats-server {}, one node, file storage)\n", version(&binary));

    // Throughput, with ids (as collectors publish).
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, dir.path());
    let c = cluster(&node, Duration::from_secs(2 * 60)).await;
    println!("| request | concurrent requests | events/s | nats-server CPU µs per event |");
    println!("|---|---:|---:|---:|");
    let pid = node_pid(&node);
    let mut from = 0;
    for (size, requests, concurrency) in [(1usize, 20_000usize, 64usize), (100, 1_000, 16)] {
        let cpu_before = pid.map_or(0.0, cpu_s);
        let eps = throughput(&c, size, requests, concurrency, true, from).await;
        let cpu = pid.map_or(0.0, cpu_s) - cpu_before;
        from += (size * requests) as u64;
        println!("| {size} event(s) | {concurrency} | {eps:.0} | {:.1} |", 1e6 * cpu / (size * requests) as f64);
    }
    drop(c);
    drop(node);

    // Memory per id in the duplicate window: the same events with and without ids.
    let mut rss = Vec::new();
    for ids in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let node = NatsNode::single(&binary, dir.path());
        let c = Arc::new(cluster(&node, Duration::from_secs(24 * 3600)).await);
        let pid = node_pid(&node).expect("nats-server pid");
        let before = rss_kib(pid);
        throughput(&c, 100, (n / 100) as usize, 16, ids, 0).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(pid);
        rss.push((before, after));
    }
    let (plain, keyed) = (rss[0].1.saturating_sub(rss[0].0), rss[1].1.saturating_sub(rss[1].0));
    println!(
        "\n{n} events: nats-server RSS grew {:.1} MB without ids, {:.1} MB with ids in a 24 h duplicate window: {:.0} B per id.",
        plain as f64 / 1024.0,
        keyed as f64 / 1024.0,
        (keyed.saturating_sub(plain) * 1024) as f64 / n as f64
    );
}

fn node_pid(node: &NatsNode) -> Option<u32> {
    node.pid()
}

fn version(binary: &std::path::Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
