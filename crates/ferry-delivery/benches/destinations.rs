//! Webhook and file destination throughput, with realistic ~1.3 KB track events.
//!
//! - files: `Destination::send` of 100,000-event batches (one gzip JSON Lines file per
//!   partition per batch), at gzip level 6 (the default) and 1; events/s, MB/s of JSON in,
//!   MB/s of gzip out.
//! - webhook: a local receiver (axum, answers 200 after reading the body) in the same
//!   process; batch mode (1,000 events a request) and one event a request (32 in flight).
//!
//! Run: `cargo bench -p ferry-delivery --bench destinations` (`-- quick` for one round).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_destinations::files::{Files, FilesConfig};
use ferry_destinations::webhook::{Webhook, WebhookConfig};
use ferry_destinations::{Destination, Event, Outcome};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn stored(i: u64) -> String {
    let at = "2026-11-28T10:37:14.899Z";
    format!(
        concat!(
            r#"{{"type":"track","messageId":"bench-{i}","anonymousId":"a{anon:08x}-3c1f-4e8b-9b1a-5d2e8f7c6a90","userId":"user_{user}","event":"Order Completed","#,
            r#""properties":{{"product_id":"sku-{i}","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","brand":"Hasbro","variant":"200 pieces","price":18.99,"quantity":{q},"coupon":"MAYDEALS","currency":"USD","position":3,"value":18.99,"revenue":18.99,"url":"https://www.example.com/product/path","image_url":"https://www.example.com/product/path.jpg","in_stock":true,"rating":4.5,"reviews":{rv},"discount":2.5,"list_id":"hot_deals_1"}},"#,
            r#""context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"npm:next-1.84.3"}},"locale":"en-US","page":{{"path":"/shop/index.html","referrer":"https://www.google.com/","search":"?utm_source=newsletter","title":"Shop","url":"https://www.example.com/shop/index.html?utm_source=newsletter"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36","campaign":{{"source":"newsletter","medium":"email","name":"launch"}},"timezone":"Europe/Paris"}},"#,
            r#""integrations":{{}},"channel":"browser","originalTimestamp":"{at}","sentAt":"{at}","timestamp":"{at}","receivedAt":"{at}","version":2,"sourceId":"web"}}"#
        ),
        i = i,
        anon = i * 2_654_435_761 % 0xffff_ffff,
        user = i % 5000,
        q = 1 + i % 5,
        rv = i % 1000,
        at = at,
    )
}

fn events(from: u64, n: u64) -> Vec<Arc<Event>> {
    (from..from + n).map(|i| Arc::new(Event::decode(stored(i).as_bytes()).unwrap())).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn dir_bytes(root: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

async fn files(level: u32, rounds: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let files = Files::open(FilesConfig { root: dir.path().to_path_buf(), level }).unwrap();
    let n = 100_000u64;
    let json_bytes: usize = (0..n).map(|i| stored(i).len() + 1).sum();
    let (mut rates, mut out_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let batch = events(round as u64 * n, n);
        let before = dir_bytes(dir.path());
        let start = Instant::now();
        let outcomes = files.send(&batch).await;
        let seconds = start.elapsed().as_secs_f64();
        assert!(outcomes.iter().all(|o| *o == Outcome::Delivered));
        rates.push(n as f64 / seconds);
        out_rates.push((dir_bytes(dir.path()) - before) as f64 / seconds / 1e6);
    }
    let rate = median(rates);
    (rate, rate * (json_bytes as f64 / n as f64) / 1e6, median(out_rates))
}

async fn receiver() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(body.len() as u64, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

async fn webhook(batch: bool, rounds: usize) -> f64 {
    let (url, _) = receiver().await;
    let config = WebhookConfig {
        batch: batch.then_some((1000, 4 << 20)),
        shared_secret: Some("bench".into()),
        timeout: Duration::from_secs(10),
        ..WebhookConfig::new(url)
    };
    let webhook = Webhook::new(config).unwrap();
    let n = if batch { 100_000 } else { 20_000 };
    let mut rates = Vec::new();
    for round in 0..rounds {
        let batch_events = events(round as u64 * n, n);
        let start = Instant::now();
        // As the delivery worker sends them: batches of 1,000 events.
        for chunk in batch_events.chunks(1000) {
            let outcomes = webhook.send(chunk).await;
            assert!(outcomes.iter().all(|o| *o == Outcome::Delivered), "{:?}", outcomes.first());
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    median(rates)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!("events: {} bytes of JSON each", stored(1).len());
        println!();
        println!("| destination | events/s | MB/s in (JSON) | MB/s out (gzip) |");
        println!("|---|---|---|---|");
        for level in [6, 1] {
            let (rate, mb_in, mb_out) = files(level, rounds).await;
            println!("| files, gzip level {level}, 100,000-event batches | {rate:.0} | {mb_in:.1} | {mb_out:.1} |");
        }
        let rate = webhook(true, rounds).await;
        println!("| webhook, batch mode (1,000 events a request), signed | {rate:.0} | | |");
        let rate = webhook(false, rounds).await;
        println!("| webhook, one event a request (32 in flight), signed | {rate:.0} | | |");
    });
}
