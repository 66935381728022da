//! The load generator, plus a probe of the disk's fdatasync latency.
//!
//! `loadgen run --target 127.0.0.1:PORT --mode single|batch` sends analytics.js-like `track`
//! events (about 1 KB each, see `ferry_bench::events`) over keep-alive HTTP/1.1 connections,
//! one per request to `/v1/t` or in batches to `/v1/batch`:
//!
//! - closed loop (default): each of `--connections` sends its next request as soon as the
//!   previous answer arrives, for `--duration` seconds; this finds the maximum throughput;
//! - open loop (`--rate R`): R requests per second in total, spread evenly over the
//!   connections; latency counts from each request's *scheduled* send time whenever the
//!   connection was still waiting for the server then, so a stalled server is charged for
//!   the requests it delayed (no coordinated omission, as in wrk2), but not for the lateness
//!   of this program's own timer.
//!
//! All requests are built before the clock starts; during the run each send is a copy of a
//! pre-built request with fresh message ids stamped in. The run is bounded (at most
//! `--duration` plus one `--timeout`) and only targets loopback addresses. One JSON line on
//! stdout reports requests/s, events/s, latency percentiles, answers by status, errors and,
//! with `--server-pid`, the server's CPU seconds and peak RSS over the run, and how much CPU
//! everything else on the machine used meanwhile (`other_cpu_cores`).
//!
//! `loadgen fsync-probe --dir DIR` appends 4 KiB blocks to a file in DIR, each followed by
//! `fdatasync`, and prints the latency percentiles as one JSON line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferry_bench::events::{PoolSpec, Shape, Template, build_pool};
use ferry_bench::http::{Parse, parse_response};
use ferry_bench::{procfs, stats};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "HTTP load generator for ferry's benchmark, and an fdatasync probe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send track events to a server on this machine and report throughput and latency.
    Run(RunArgs),
    /// Measure fdatasync latency of the disk holding a directory.
    FsyncProbe(ProbeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One event per request, to /v1/t.
    Single,
    /// `--batch-size` events per request, to /v1/batch.
    Batch,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Server address; loopback only.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum, default_value = "single")]
    mode: Mode,
    /// Events per request with `--mode batch`.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds to send for (at most 600).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Open loop: requests per second over all connections. 0 = closed loop, as fast as
    /// the server answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The server's process id: report its CPU seconds and peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Distinct pre-built requests (default 1024 single, 32 batch).
    #[arg(long)]
    pool: Option<usize>,
    /// Write key, sent as `Authorization: Basic` and in the body.
    #[arg(long, default_value = "wk_bench")]
    write_key: String,
    /// Seconds to wait for one answer before counting a timeout and reconnecting.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Seed of the property values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Directory on the disk to probe (a temporary file is created and removed there).
    #[arg(long)]
    dir: PathBuf,
    /// Number of write + fdatasync rounds.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Bytes appended before each fdatasync.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::FsyncProbe(args) => fsync_probe(&args),
    }
}

/// What one connection saw.
#[derive(Default)]
struct ConnStats {
    /// Nanoseconds from the send (closed loop) or from the scheduled send time (open loop,
    /// see `connection`) to the end of the answer.
    latencies: Vec<u64>,
    /// Open loop only: how late this program's timer woke for sends on an idle connection.
    lags: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    events_ok: u64,
    bytes_sent: u64,
    io_errors: u64,
    timeouts: u64,
    reconnects: u64,
}

struct Plan {
    target: SocketAddr,
    pool: Vec<Template>,
    start: Instant,
    end: Instant,
    /// Open loop: time between two sends on one connection.
    interval: Option<Duration>,
    connections: usize,
    timeout: Duration,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.target.ip().is_loopback(), "loadgen only sends to loopback addresses, not {}", args.target);
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 600.0, "--duration must be in (0, 600] seconds");
    anyhow::ensure!(args.connections > 0 && args.connections <= 4096, "--connections must be in 1..=4096");
    anyhow::ensure!(args.rate >= 0.0 && args.timeout > 0.0, "--rate and --timeout must not be negative");
    let shape = match args.mode {
        Mode::Single => Shape::Single,
        Mode::Batch => Shape::Batch(args.batch_size.max(1)),
    };
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let spec = PoolSpec {
        shape,
        requests: args.pool.unwrap_or(if shape == Shape::Single { 1024 } else { 32 }),
        write_key: args.write_key.clone(),
        run: format!("{}-{:x}", since_epoch.as_millis(), std::process::id()),
        seed: args.seed ^ since_epoch.as_nanos() as u64,
    };
    let pool = build_pool(&spec);
    let mean_body = pool.iter().map(|t| t.body_len).sum::<usize>() / pool.len();
    let mean_event = pool.iter().map(|t| t.body_len as u64 / t.events()).sum::<u64>() / pool.len() as u64;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut streams = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let stream = tokio::time::timeout(Duration::from_secs(5), connect(args.target))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
                .flatten()
                .with_context(|| format!("cannot connect to {}", args.target))?;
            streams.push(stream);
        }
        let server_cpu_before = args.server_pid.map(|pid| procfs::cpu_seconds(Some(pid))).transpose()?;
        let own_cpu_before = procfs::cpu_seconds(None)?;
        let machine_before = procfs::machine_busy_seconds()?;
        let start = Instant::now();
        let plan = Arc::new(Plan {
            target: args.target,
            pool,
            start,
            end: start + Duration::from_secs_f64(args.duration),
            interval: (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate)),
            connections: args.connections,
            timeout: Duration::from_secs_f64(args.timeout),
        });
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(index, stream)| tokio::spawn(connection(plan.clone(), index, stream)))
            .collect();
        let mut all = Vec::with_capacity(tasks.len());
        for task in tasks {
            all.push(task.await?);
        }
        let seconds = start.elapsed().as_secs_f64();
        let own_cpu = procfs::cpu_seconds(None)? - own_cpu_before;
        let server_cpu = match (args.server_pid, server_cpu_before) {
            (Some(pid), Some(before)) => Some(procfs::cpu_seconds(Some(pid))? - before),
            _ => None,
        };
        let server_rss = args.server_pid.map(procfs::peak_rss_bytes).transpose()?;
        // CPU other processes (and kernel threads) used meanwhile, in cores: on a shared
        // machine this says whether the run can be trusted.
        let others =
            (procfs::machine_busy_seconds()? - machine_before - own_cpu - server_cpu.unwrap_or(0.0)).max(0.0) / seconds;

        let mut latencies: Vec<u64> = all.iter().flat_map(|c| c.latencies.iter().copied()).collect();
        latencies.sort_unstable();
        let mut lags: Vec<u64> = all.iter().flat_map(|c| c.lags.iter().copied()).collect();
        lags.sort_unstable();
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for c in &all {
            for (status, n) in &c.statuses {
                *statuses.entry(*status).or_default() += n;
            }
        }
        let requests = latencies.len() as u64;
        let events: u64 = all.iter().map(|c| c.events_ok).sum();
        let ms = |ns: u64| ns as f64 / 1e6;
        let report = json!({
            "mode": if shape == Shape::Single { "single" } else { "batch" },
            "events_per_request": match shape { Shape::Single => 1, Shape::Batch(n) => n },
            "connections": args.connections,
            "target_rate": args.rate,
            "seconds": seconds,
            "requests": requests,
            "events": events,
            "rps": requests as f64 / seconds,
            "eps": events as f64 / seconds,
            "p50_ms": ms(stats::percentile(&latencies, 0.50)),
            "p90_ms": ms(stats::percentile(&latencies, 0.90)),
            "p99_ms": ms(stats::percentile(&latencies, 0.99)),
            "p999_ms": ms(stats::percentile(&latencies, 0.999)),
            "max_ms": ms(latencies.last().copied().unwrap_or(0)),
            "timer_lag_p99_ms": ms(stats::percentile(&lags, 0.99)),
            "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "io_errors": all.iter().map(|c| c.io_errors).sum::<u64>(),
            "timeouts": all.iter().map(|c| c.timeouts).sum::<u64>(),
            "reconnects": all.iter().map(|c| c.reconnects).sum::<u64>(),
            "mean_body_bytes": mean_body,
            "mean_event_bytes": mean_event,
            "mb_sent_per_s": all.iter().map(|c| c.bytes_sent).sum::<u64>() as f64 / seconds / 1e6,
            "loadgen_cpu_s": own_cpu,
            "other_cpu_cores": others,
            "server_cpu_s": server_cpu,
            "server_events_per_cpu_s": server_cpu.map(|cpu| events as f64 / cpu.max(1e-9)),
            "server_peak_rss_mb": server_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        });
        eprintln!(
            "{} {}: {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, statuses {:?}, errors {}",
            report["mode"].as_str().unwrap_or_default(),
            if args.rate > 0.0 { format!("at {:.0} req/s", args.rate) } else { "closed loop".to_owned() },
            report["rps"].as_f64().unwrap_or_default(),
            report["eps"].as_f64().unwrap_or_default(),
            report["p50_ms"].as_f64().unwrap_or_default(),
            report["p99_ms"].as_f64().unwrap_or_default(),
            report["max_ms"].as_f64().unwrap_or_default(),
            statuses,
            report["io_errors"].as_u64().unwrap_or_default() + report["timeouts"].as_u64().unwrap_or_default(),
        );
        println!("{report}");
        anyhow::Ok(())
    })
}

async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive connection's loop, until the plan's end.
async fn connection(plan: Arc<Plan>, index: usize, stream: TcpStream) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut stream = Some(stream);
    // Connections draw message ids from disjoint ranges of 2^40.
    let mut next_id = (index as u64) << 40;
    let mut template = index.wrapping_mul(7_919) % plan.pool.len();
    let offset = plan.interval.map(|i| i.mul_f64(index as f64 / plan.connections as f64));
    let mut request = Vec::new();
    let mut response = Vec::with_capacity(8 * 1024);
    let mut previous_done = plan.start;
    for k in 0u32.. {
        let scheduled = match (plan.interval, offset) {
            (Some(every), Some(offset)) => plan.start + offset + every * k,
            _ => Instant::now(),
        };
        if scheduled >= plan.end {
            break;
        }
        // Open loop: latency counts from the scheduled time when this connection was still
        // busy with the previous answer then (the server's delay, which a closed loop would
        // hide), else from the actual send, so that the lateness of this program's own timer
        // (1 ms granularity, and a shared core) is not charged to the server.
        let mut sent_from = scheduled;
        if plan.interval.is_some() && previous_done <= scheduled {
            tokio::time::sleep_until(scheduled.into()).await;
            sent_from = Instant::now();
            stats.lags.push((sent_from - scheduled).as_nanos() as u64);
        }
        let t = &plan.pool[template];
        template = (template + 1) % plan.pool.len();
        t.stamp(&mut request, &mut next_id);
        let live = match stream.as_mut() {
            Some(live) => live,
            None => match tokio::time::timeout(plan.timeout, connect(plan.target)).await {
                Ok(Ok(fresh)) => {
                    stats.reconnects += 1;
                    stream.insert(fresh)
                }
                _ => {
                    stats.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        stats.bytes_sent += request.len() as u64;
        match tokio::time::timeout(plan.timeout, exchange(live, &request, &mut response)).await {
            Ok(Ok((status, close))) => {
                previous_done = Instant::now();
                stats.latencies.push((previous_done - sent_from).as_nanos() as u64);
                *stats.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    stats.events_ok += t.events();
                }
                if close {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                stats.io_errors += 1;
                stream = None;
            }
            Err(_) => {
                stats.timeouts += 1;
                stream = None;
            }
        }
    }
    stats
}

/// Send one request and read its answer: (status, whether the server closes).
async fn exchange(stream: &mut TcpStream, request: &[u8], response: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    stream.write_all(request).await?;
    response.clear();
    loop {
        match parse_response(response).map_err(std::io::Error::other)? {
            Parse::Complete { status, len, close } => {
                // Anything after the answer would be a response nobody asked for.
                return Ok((status, close || response.len() > len));
            }
            Parse::Incomplete => {
                if stream.read_buf(response).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

fn fsync_probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let path = args.dir.join(format!("fsync-probe-{}.bin", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = vec![b'x'; args.size.max(1)];
    let mut samples = Vec::with_capacity(args.samples);
    let result = (|| -> std::io::Result<()> {
        for _ in 0..args.samples.max(1) {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            samples.push(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("write + fdatasync in {}", args.dir.display()))?;
    samples.sort_unstable();
    let ms = |p: f64| stats::percentile(&samples, p) as f64 / 1e6;
    println!(
        "{}",
        json!({
            "samples": samples.len(),
            "bytes": args.size,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "max_ms": ms(1.0),
        })
    );
    Ok(())
}
