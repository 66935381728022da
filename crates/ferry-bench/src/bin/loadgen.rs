//! The load generator: realistic analytics.js `track` events (~1 KB, unique messageIds)
//! one per request to `/v1/t` or 100 per request to `/v1/batch`, over keep-alive HTTP/1.1
//! connections. Closed loop (as fast as the server answers) or open loop at a fixed rate,
//! where latency counts from the scheduled send time (no coordinated omission). Bounded
//! in time; only ever sends to the given loopback address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// Server address (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// `single` (one event per request to /v1/t) or `batch` (100 per request to /v1/batch).
    #[arg(long, default_value = "single")]
    mode: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Open loop: total requests per second (0 = closed loop, as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Events per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn event(id: u64, run: u64) -> String {
    let n = id % 1000;
    format!(
        r#"{{"timestamp":"2026-11-28T10:37:14.{n:03}Z","integrations":{{"Segment.io":true}},"type":"track","event":"Product Viewed","properties":{{"product_id":"sku-{}","price":{}.99,"currency":"EUR","name":"Item {n}","category":"Shoes","position":{}}},"context":{{"page":{{"path":"/shop/{n}","referrer":"https://www.google.com/","search":"?utm_source=newsletter","title":"Shop","url":"https://shop.example.com/shop/{n}?utm_source=newsletter"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36","userAgentData":{{"brands":[{{"brand":"Chromium","version":"156"}}],"mobile":false,"platform":"Linux"}},"locale":"en-US","library":{{"name":"analytics.js","version":"npm:next-1.84.3"}},"campaign":{{"source":"newsletter","medium":"email","name":"launch"}},"timezone":"Europe/Berlin"}},"messageId":"ajs-next-{run}-{id:016x}","anonymousId":"anon-{:08x}","writeKey":"wk_bench","userId":null,"sentAt":"2026-11-28T10:37:14.999Z","_metadata":{{"bundled":["Segment.io"],"unbundled":[],"bundledIds":[]}}}}"#,
        id % 503,
        id % 300,
        id % 20,
        id % 65_536,
    )
}

fn request(mode: &str, batch: usize, run: u64) -> (Vec<u8>, u64) {
    let (path, body, events) = if mode == "batch" {
        let items: Vec<String> = (0..batch).map(|_| event(NEXT_ID.fetch_add(1, Ordering::Relaxed), run)).collect();
        (
            "/v1/batch",
            format!(r#"{{"batch":[{}],"sentAt":"2026-11-28T10:37:15.000Z","writeKey":"wk_bench"}}"#, items.join(",")),
            batch,
        )
    } else {
        ("/v1/t", event(NEXT_ID.fetch_add(1, Ordering::Relaxed), run), 1)
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nAuthorization: Basic d2tfYmVuY2g6\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    (bytes, events as u64)
}

struct Stats {
    latencies: Vec<Duration>,
    events: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// Read one response; returns its status.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    args: Arc<Args>,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
    offset: Duration,
    run: u64,
) -> Stats {
    let mut stats = Stats { latencies: Vec::new(), events: 0, statuses: BTreeMap::new(), errors: 0 };
    let mut stream = match tokio::net::TcpStream::connect(args.target).await {
        Ok(s) => s,
        Err(_) => {
            stats.errors += 1;
            return stats;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut k: u32 = 0;
    loop {
        let scheduled = match interval {
            Some(every) => start + offset + every * k,
            None => Instant::now(),
        };
        if scheduled >= end {
            break;
        }
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        k += 1;
        let (bytes, events) = request(&args.mode, args.batch, run);
        if stream.write_all(&bytes).await.is_err() {
            stats.errors += 1;
            break;
        }
        match read_response(&mut stream, &mut buf).await {
            Ok(status) => {
                stats.latencies.push(scheduled.elapsed());
                *stats.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    stats.events += events;
                }
            }
            Err(_) => {
                stats.errors += 1;
                break;
            }
        }
    }
    stats
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(args.target.ip().is_loopback(), "loadgen only targets loopback addresses");
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    let (stats, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(args.duration);
        let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
        let tasks: Vec<_> = (0..args.connections)
            .map(|c| {
                let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / args.connections as f64));
                tokio::spawn(connection(args.clone(), start, end, interval, offset, run))
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.expect("connection task"));
        }
        (all, start.elapsed().as_secs_f64())
    });
    let mut latencies: Vec<Duration> = stats.iter().flat_map(|s| s.latencies.iter().copied()).collect();
    latencies.sort();
    let requests = latencies.len();
    let events: u64 = stats.iter().map(|s| s.events).sum();
    let errors: u64 = stats.iter().map(|s| s.errors).sum();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for s in &stats {
        for (k, v) in &s.statuses {
            *statuses.entry(*k).or_default() += v;
        }
    }
    let pct =
        |p: f64| latencies.get(((requests.max(1) - 1) as f64 * p) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!(
        r#"{{"requests":{requests},"events":{events},"seconds":{elapsed:.3},"rps":{:.1},"eps":{:.1},"p50_ms":{:.3},"p99_ms":{:.3},"max_ms":{:.3},"errors":{errors},"statuses":{{{}}}}}"#,
        requests as f64 / elapsed,
        events as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        statuses.join(",")
    );
    Ok(())
}
