//! `ferry import FILE.jsonl[.gz]`: backfill events from a file through a running
//! server's batch path (`POST /v1/batch`), so they are validated, enriched, deduplicated
//! and stored exactly as live traffic is.
//!
//! Lines are read on a thread and packed into batches below the batch endpoint's size
//! limit; a few batches are in flight at once; 429, 503 and transport errors are retried
//! with backoff (honouring `Retry-After`). A line without a `messageId` gets one derived
//! from its line number and content, so a retried batch, or the whole import run again,
//! stores each event once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use crate::cmd::ProgressLine;
use crate::cmd::client::{self, ServerArgs};
use crate::config::Config;

/// A line longer than this is not read (an event may be at most 32 KB anyway).
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Below Segment's 500 KB batch limit (and ferry's default body limit).
const MAX_BATCH_BYTES: usize = 480 * 1024;
/// Rejections printed one by one; the rest are counted.
const SHOWN_REJECTIONS: usize = 10;
/// A batch is given up after this long of retrying.
const RETRY_FOR: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
#[command(after_help = "Each line is one Segment message (a JSON object with `type`); blank lines are skipped.
gzip files are recognised by their content, whatever their name.

Exit status: 0 when every event was accepted (duplicates included), 2 when some lines
were rejected or unreadable (rejected ones are in quarantine), 1 when some could not be
sent at all (run the import again: what is already stored counts as duplicates).

Examples:
  ferry import events.jsonl
  ferry import export-2026-11.jsonl.gz --write-key wk_backfill
  ferry import events.jsonl --url http://ferry.internal:8088 --concurrency 8")]
pub(crate) struct ImportArgs {
    /// The file: JSON Lines, plain or gzip.
    file: PathBuf,
    /// The source's write key (default: the first one configured).
    #[arg(long, env = "FERRY_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    /// Events per batch request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_events: u64,
    /// Batch requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: u64,
    #[command(flatten)]
    server: ServerArgs,
}

/// A batch ready to send: its body and the file line of each event.
struct Batch {
    body: Vec<u8>,
    lines: Vec<u64>,
}

/// What the reader found that never reached the server.
#[derive(Debug, Default)]
struct Unreadable {
    count: u64,
    shown: Vec<String>,
}

impl Unreadable {
    fn add(&mut self, line: u64, why: &str) {
        self.count += 1;
        if self.shown.len() < SHOWN_REJECTIONS {
            self.shown.push(format!("line {line}: {why}"));
        }
    }
}

/// The server's answer to a batch (see ferry-api's collect).
#[derive(Debug, Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<RejectedItem>,
}

#[derive(Debug, Deserialize)]
struct RejectedItem {
    index: usize,
    code: String,
    message: String,
}

/// Counters shared by the senders and the progress line.
#[derive(Debug, Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

/// Only whether a line has a message id; everything else is skipped (but checked to be JSON).
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a serde_json::value::RawValue>,
}

/// A stable message id for a line without one: FNV-1a (two seeds) of the line number
/// and its bytes.
fn derived_id(line: u64, bytes: &[u8]) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for b in line.to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    format!("import-{:016x}{:016x}", hash(0xcbf2_9ce4_8422_2325), hash(0x6c62_272e_07bb_0142))
}

/// Read the file into batches, sending each to `out`; what could not be read is counted.
fn read_batches(
    reader: impl BufRead,
    batch_events: usize,
    out: tokio::sync::mpsc::Sender<Batch>,
) -> anyhow::Result<Unreadable> {
    let mut reader = reader;
    let mut unreadable = Unreadable::default();
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut batch = Batch { body: b"{\"batch\":[".to_vec(), lines: Vec::new() };
    let flush = |batch: &mut Batch| -> bool {
        if batch.lines.is_empty() {
            return true;
        }
        batch.body.extend_from_slice(b"]}");
        let full = std::mem::replace(batch, Batch { body: b"{\"batch\":[".to_vec(), lines: Vec::new() });
        out.blocking_send(full).is_ok()
    };
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .context("cannot read the file")?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = reader.by_ref().take(64 * 1024).read_until(b'\n', &mut rest)?;
                if n == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            unreadable.add(number, &format!("longer than {MAX_LINE_BYTES} bytes"));
            continue;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        if text.first() != Some(&b'{') {
            unreadable.add(number, "not a JSON object");
            continue;
        }
        let peek = match serde_json::from_slice::<Peek>(text) {
            Ok(peek) => peek,
            Err(error) => {
                unreadable.add(number, &format!("not JSON: {error}"));
                continue;
            }
        };
        let extra = if peek.message_id.is_none() { 80 } else { 0 };
        let full = batch.body.len() + text.len() + extra + 3 > MAX_BATCH_BYTES || batch.lines.len() >= batch_events;
        if full && !flush(&mut batch) {
            break;
        }
        if !batch.lines.is_empty() {
            batch.body.push(b',');
        }
        if peek.message_id.is_none() {
            batch.body.extend_from_slice(b"{\"messageId\":\"");
            batch.body.extend_from_slice(derived_id(number, text).as_bytes());
            batch.body.extend_from_slice(b"\"");
            let inner = text[1..].trim_ascii_start();
            if inner.first() != Some(&b'}') {
                batch.body.push(b',');
            }
            batch.body.extend_from_slice(inner);
        } else {
            batch.body.extend_from_slice(text);
        }
        batch.lines.push(number);
    }
    flush(&mut batch);
    Ok(unreadable)
}

/// Counts the bytes read from the file (compressed ones, for gzip), for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Send one batch until the server answers it for good.
async fn send(
    http: &ferry_destinations::http::HttpClient,
    url: &str,
    base: &str,
    headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    batch: &Batch,
) -> Result<Answer, String> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let body = bytes::Bytes::copy_from_slice(&batch.body);
        let reply =
            http.send_reading(hyper::Method::POST, url, headers, body, client::REQUEST_TIMEOUT, 8 * 1024 * 1024).await;
        let retry_after = match reply {
            Ok(reply) if reply.status == 200 => {
                return serde_json::from_slice(&reply.body).map_err(|e| format!("unexpected answer from ferry: {e}"));
            }
            Ok(reply) if matches!(reply.status, 429 | 500 | 502 | 503 | 504) => reply.retry_after,
            Ok(reply) => return Err(client::explain(reply.status, &reply.body)),
            Err(error) if started.elapsed() < RETRY_FOR => {
                tracing::debug!(%error, attempt, "batch failed; retrying");
                None
            }
            Err(error) => return Err(client::unreachable(base, &error).to_string()),
        };
        if started.elapsed() >= RETRY_FOR {
            return Err(format!("ferry was still overloaded after {RETRY_FOR:?}"));
        }
        let backoff = Duration::from_millis(100 << attempt.min(6));
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(Duration::from_secs(30))).await;
    }
}

pub(crate) fn run(config: &Config, args: ImportArgs) -> anyhow::Result<()> {
    let file = File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let consumed = Arc::new(AtomicU64::new(0));
    let mut counted = BufReader::with_capacity(256 * 1024, Counting { inner: file, read: consumed.clone() });
    let gzip = counted.fill_buf().context("cannot read the file")?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + Send> = if gzip {
        Box::new(BufReader::with_capacity(256 * 1024, flate2::bufread::MultiGzDecoder::new(counted)))
    } else {
        Box::new(counted)
    };
    let base = client::base_url(config, &args.server);
    let url = format!("{base}/v1/batch");
    let key = client::write_key(config, args.write_key.clone());
    let headers = vec![client::basic(&key)?, (hyper::header::CONTENT_TYPE, "application/json".parse()?)];
    let concurrency = args.concurrency as usize;
    let batch_events = args.batch_events as usize;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<Batch>(concurrency);
    let reading = std::thread::spawn(move || read_batches(reader, batch_events, batches));
    let totals = Arc::new(Totals::default());
    let mut rejections: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut progress = ProgressLine::new();
    let note = |t: &Totals| {
        format!(
            "events, {} accepted, {} duplicates, {} rejected, {} failed",
            t.accepted.load(Ordering::Relaxed),
            t.duplicates.load(Ordering::Relaxed),
            t.rejected.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed)
        )
    };
    runtime.block_on(async {
        let http = Arc::new(client::client()?);
        let mut inflight = tokio::task::JoinSet::new();
        let mut reading_done = false;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                batch = incoming.recv(), if !reading_done && inflight.len() < concurrency => {
                    let Some(batch) = batch else { reading_done = true; continue };
                    let (http, url, base, headers) = (http.clone(), url.clone(), base.clone(), headers.clone());
                    inflight.spawn(async move {
                        let answer = send(&http, &url, &base, &headers, &batch).await;
                        (batch.lines, answer)
                    });
                }
                Some(done) = inflight.join_next() => {
                    let (lines, answer) = done.context("an import task failed")?;
                    totals.sent.fetch_add(lines.len() as u64, Ordering::Relaxed);
                    match answer {
                        Ok(answer) => {
                            totals.accepted.fetch_add(answer.accepted.saturating_sub(answer.duplicates), Ordering::Relaxed);
                            totals.duplicates.fetch_add(answer.duplicates, Ordering::Relaxed);
                            totals.rejected.fetch_add(answer.rejected.len() as u64, Ordering::Relaxed);
                            for r in answer.rejected {
                                if rejections.len() < SHOWN_REJECTIONS {
                                    let line = lines.get(r.index).copied().unwrap_or_default();
                                    rejections.push(format!("line {line}: {}: {}", r.code, r.message));
                                }
                            }
                        }
                        Err(error) => {
                            if error.contains("401") {
                                anyhow::bail!("ferry refused the write key ({error}); pass a configured key with --write-key (or FERRY_WRITE_KEY)");
                            }
                            totals.failed.fetch_add(lines.len() as u64, Ordering::Relaxed);
                            if failures.len() < SHOWN_REJECTIONS {
                                failures.push(format!("lines {}-{}: {error}", lines.first().unwrap_or(&0), lines.last().unwrap_or(&0)));
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let fraction = if size == 0 { 1.0 } else { consumed.load(Ordering::Relaxed) as f64 / size as f64 };
                    progress.show_fraction(fraction, totals.sent.load(Ordering::Relaxed), &note(&totals), false);
                }
                else => break,
            }
            if reading_done && inflight.is_empty() {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    let unreadable = reading.join().map_err(|_| anyhow::anyhow!("the file reader panicked"))??;
    progress.show_fraction(1.0, totals.sent.load(Ordering::Relaxed), &note(&totals), true);

    let (accepted, duplicates, rejected, failed) = (
        totals.accepted.load(Ordering::Relaxed),
        totals.duplicates.load(Ordering::Relaxed),
        totals.rejected.load(Ordering::Relaxed),
        totals.failed.load(Ordering::Relaxed),
    );
    let seconds = started.elapsed().as_secs_f64();
    for line in rejections.iter().chain(&unreadable.shown).chain(&failures) {
        eprintln!("  {line}");
    }
    println!(
        "imported {}: {accepted} accepted, {duplicates} duplicates (already stored), {rejected} rejected, {} unreadable lines, {failed} not sent, in {seconds:.1} s ({:.0} events/s)",
        args.file.display(),
        unreadable.count,
        totals.sent.load(Ordering::Relaxed) as f64 / seconds.max(0.001),
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} events were not sent; run the same import again once ferry is reachable (what is already stored counts as duplicates)"
        );
    }
    if rejected > 0 || unreadable.count > 0 {
        if rejected > 0 {
            eprintln!(
                "rejected events are in quarantine: `ferry quarantine list`; fix them and re-submit from the admin api"
            );
        }
        std::process::exit(2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &str, per_batch: usize) -> (Vec<serde_json::Value>, Vec<Vec<u64>>, Unreadable) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let unreadable = read_batches(std::io::Cursor::new(input.as_bytes().to_vec()), per_batch, tx).unwrap();
        let mut bodies = Vec::new();
        let mut lines = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            bodies.push(serde_json::from_slice(&batch.body).expect("a batch body is JSON"));
            lines.push(batch.lines);
        }
        (bodies, lines, unreadable)
    }

    #[test]
    fn lines_become_batches_with_stable_ids_and_bad_lines_are_counted() {
        let input = "{\"type\":\"track\",\"event\":\"A\",\"messageId\":\"m1\"}\n\n  {\"type\":\"track\",\"event\":\"B\"}\r\n\
                     not json\n{\"type\":\n[1,2]\n{}\n{\"type\":\"page\"}";
        let (bodies, lines, unreadable) = batches(input, 2);
        assert_eq!(lines, [vec![1, 3], vec![7, 8]]);
        assert_eq!(bodies[0]["batch"][0]["messageId"], "m1");
        let derived = bodies[0]["batch"][1]["messageId"].as_str().unwrap().to_owned();
        assert!(derived.starts_with("import-") && derived.len() == 39, "{derived}");
        assert_eq!(bodies[0]["batch"][1]["event"], "B");
        assert_eq!(bodies[1]["batch"][0], serde_json::json!({"messageId": bodies[1]["batch"][0]["messageId"]}));
        assert_eq!(unreadable.count, 3);
        assert!(unreadable.shown[0].starts_with("line 4: not a JSON object"), "{:?}", unreadable.shown);
        assert!(unreadable.shown[1].starts_with("line 5: not JSON"), "{:?}", unreadable.shown);
        // The same input gives the same ids: a repeated import is deduplicated.
        let (again, _, _) = batches(input, 2);
        assert_eq!(again[0]["batch"][1]["messageId"], derived.as_str());
        assert_ne!(derived_id(3, b"x"), derived_id(4, b"x"));
    }

    #[test]
    fn batches_stay_under_the_size_limit_and_long_lines_are_skipped() {
        let event =
            format!("{{\"type\":\"track\",\"event\":\"E\",\"properties\":{{\"pad\":\"{}\"}}}}\n", "x".repeat(10_000));
        let mut input = event.repeat(120);
        input.push_str(&format!("{{\"pad\":\"{}\"}}\n", "y".repeat(MAX_LINE_BYTES + 10)));
        input.push_str(&event);
        let (bodies, lines, unreadable) = batches(&input, 10_000);
        assert_eq!(lines.iter().map(Vec::len).sum::<usize>(), 121);
        assert!(lines.len() >= 3);
        assert_eq!(unreadable.count, 1);
        assert!(unreadable.shown[0].contains("longer than"));
        for body in &bodies {
            assert!(body.to_string().len() <= MAX_BATCH_BYTES);
        }
    }
}
