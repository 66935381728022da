//! Micro-benchmark of the ingest hot path: `parse` + `process` (decode, validate, enrich,
//! serialize the stored event) on one core, for a 100-event browser-like batch and for
//! single browser events, built from the analytics-next captures. No criterion: it runs
//! each case for a fixed time and prints events per second of this thread's CPU time.
//!
//! `cargo bench -p ferry-event --bench process [-- batch | single]`
//!
//! With `ITERATIONS=n` each case runs n rounds instead of a fixed time, for instruction
//! counts: `ITERATIONS=200 valgrind --tool=callgrind --toggle-collect='*run_once*' <bench> batch`
//! counts only the calls of `run_once` (callgrind_annotate's total over its call count).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry_event::{CallType, Ctx, Limits, Route, parse, process};
use serde_json::value::RawValue;

const BATCHING: &str = include_str!("../tests/data/real-clients/segment-analytics-next-batching.jsonl");
const STANDARD: &str = include_str!("../tests/data/real-clients/segment-analytics-next.jsonl");

#[derive(serde::Deserialize)]
struct Capture<'a> {
    method: &'a str,
    path: &'a str,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// The browser's batch items, repeated to `n`, each with its own messageId.
fn browser_batch(n: usize) -> String {
    let body = BATCHING
        .lines()
        .map(|line| serde_json::from_str::<Capture<'_>>(line).unwrap())
        .find(|c| c.method == "POST" && c.path == "/v1/b")
        .and_then(|c| c.body)
        .unwrap();
    let items = serde_json::from_str::<Batch<'_>>(body.get()).unwrap().batch;
    let mut out = String::from(r#"{"writeKey":"wk_bench","sentAt":"2026-11-28T10:37:36.689Z","batch":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let item = items[i % items.len()].get();
        let (before, after) = item.split_once(r#""messageId": ""#).unwrap();
        out.push_str(before);
        out.push_str(&format!(r#""messageId": "bench-{i}-"#));
        out.push_str(after);
    }
    out.push_str("]}");
    out
}

/// The browser's single track calls (`POST /v1/t`).
fn browser_singles() -> Vec<String> {
    STANDARD
        .lines()
        .map(|line| serde_json::from_str::<Capture<'_>>(line).unwrap())
        .filter(|c| c.method == "POST" && c.path == "/v1/t")
        .map(|c| c.body.unwrap().get().to_owned())
        .collect()
}

/// Parse and process `body` once; the number of accepted events.
#[inline(never)]
fn run_once(body: &[u8], route: Route, limits: &Limits, received_at: jiff::Timestamp) -> usize {
    let parsed = parse(body, route, limits).unwrap();
    let mut ids = || "generated".to_owned();
    let mut ctx = Ctx {
        received_at,
        source_id: "src_bench",
        client_ip: Some(std::net::IpAddr::from([203, 0, 113, 7])),
        limits,
        new_message_id: &mut ids,
        describe: false,
    };
    let processed = process(parsed, &mut ctx);
    assert!(processed.rejected.is_empty());
    black_box(&processed.events);
    processed.events.len()
}

/// Nanoseconds this thread has been on a CPU (Linux), so that other load on the machine
/// does not count against us; `None` elsewhere.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Run `bodies` round-robin for about `time`; print and return events per CPU-second.
fn measure(label: &str, bodies: &[(Vec<u8>, Route)], time: Duration) -> f64 {
    let limits = Limits::default();
    let received_at: jiff::Timestamp = "2026-11-28T10:37:36.726Z".parse().unwrap();
    // Warm up.
    for (body, route) in bodies {
        run_once(body, *route, &limits, received_at);
    }
    let start = Instant::now();
    let cpu_start = cpu_ns();
    let (mut events, mut requests, mut bytes) = (0usize, 0usize, 0usize);
    let rounds: Option<usize> = std::env::var("ITERATIONS").ok().and_then(|n| n.parse().ok());
    let mut round = 0;
    while rounds.map_or(start.elapsed() < time, |rounds| round < rounds) {
        round += 1;
        for (body, route) in bodies {
            events += run_once(black_box(body), *route, &limits, received_at);
            requests += 1;
            bytes += body.len();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let secs = match (cpu_start, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => wall,
    };
    let rate = events as f64 / secs;
    println!(
        "{label:<24} {rate:>8.0} events/s  {:>7.0} requests/s  {:>4.0} MB/s  {:>5.2} µs/event  ({} B/event; on CPU {:.0}% of wall)",
        requests as f64 / secs,
        bytes as f64 / secs / 1e6,
        1e6 / rate,
        bytes / events.max(1),
        100.0 * secs / wall,
    );
    rate
}

fn main() {
    // `-- batch` or `-- single` runs one case (cargo passes `--bench` too).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |label: &str| only.is_empty() || only.iter().any(|o| label.contains(o.as_str()));
    let time = Duration::from_secs(3);
    if wanted("batch") {
        let batch = browser_batch(100);
        measure("batch of 100 (browser)", &[(batch.into_bytes(), Route::Batch)], time);
    }
    if wanted("single") {
        let singles: Vec<_> =
            browser_singles().into_iter().map(|b| (b.into_bytes(), Route::Single(CallType::Track))).collect();
        measure("single track (browser)", &singles, time);
    }
}
