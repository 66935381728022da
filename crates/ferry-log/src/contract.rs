//! The log contract ([`ferry_log_contract`]) on the embedded log.
//!
//! - Appends are [`Log::append`], with the log's errors told apart as the contract's: a
//!   spent disk budget is [`AppendError::Full`], anything else (poisoned, closed)
//!   [`AppendError::Unavailable`].
//! - A consumer is a durable cursor named `delivery.<name>` in `cursors.json`: a lease is
//!   the batch after the position handed out last, settling commits the cursor past it, and
//!   releasing hands the batch out again. While a consumer catches up (a full batch already
//!   waits behind the one leased), the next batch is read in the background meanwhile.
//! - With stable batches the end of each batch is written down before it is handed out
//!   (`delivery-batch.<name>`), so after a crash the same batch comes again.
//! - [`ReadOnly`] is a log directory read beside the process that writes it.
//!
//! The log's own calls block (file I/O): here they run on tokio's blocking threads, but for
//! [`ReadOnly`], which the commands read on a runtime of their own.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_log_contract::{
    self as contract, Appended, Backlog, BatchLimits, BoxFuture, ConsumerOptions, Lease, Leased, Positioned, Record,
    Start,
};
use tokio::task::JoinHandle;

use crate::{AppendError, Log, inspect};

/// What clients are told to wait when the log cannot write at all (poisoned or closed).
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long a lease waits for a first record before it answers that there is none.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// The cursor of consumer `name`: the next position it reads.
pub fn cursor_name(consumer: &str) -> String {
    format!("delivery.{consumer}")
}

/// Where the batch handed to a consumer with stable batches ends (a cursor, so it is
/// durable; never behind the consumer's own).
pub fn batch_cursor_name(consumer: &str) -> String {
    format!("delivery-batch.{consumer}")
}

/// Run the log's blocking `work` on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| io::Error::other(format!("log task failed: {error}")))?
}

impl contract::Reader for Log {
    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, io::Result<Vec<Positioned>>> {
        let log = self.clone();
        Box::pin(blocking(move || Log::read(&log, from, max)))
    }

    fn end(&self) -> BoxFuture<'_, io::Result<u64>> {
        let end = self.next_offset();
        Box::pin(async move { Ok(end) })
    }
}

impl contract::Log for Log {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<Vec<Appended>, contract::AppendError>> {
        Box::pin(async move {
            Log::append(self, records).await.map_err(|error| match error {
                AppendError::DiskFull { retry_after } => {
                    contract::AppendError::Full { retry_after, reason: error.to_string() }
                }
                other => contract::AppendError::Unavailable {
                    retry_after: UNAVAILABLE_RETRY_AFTER,
                    reason: other.to_string(),
                },
            })
        })
    }

    fn writable(&self) -> bool {
        Log::writable(self)
    }

    fn consumer(&self, name: &str, options: ConsumerOptions) -> BoxFuture<'_, io::Result<Arc<dyn contract::Consumer>>> {
        let (log, name) = (self.clone(), name.to_owned());
        Box::pin(async move {
            let consumer = blocking(move || Consumer::open(log, &name, options)).await?;
            Ok(Arc::new(consumer) as Arc<dyn contract::Consumer>)
        })
    }
}

impl Log {
    /// When the record at `offset` was appended (ms since the Unix epoch), if it is held.
    pub fn appended_ms(&self, offset: u64) -> Option<u64> {
        // Chunks and their frames are in offset order: two binary searches (a consumer's
        // backlog asks at every batch, and a chunk holds many frames).
        let chunks = self.shared.chunks.read().ok()?;
        let chunk = chunks.get(chunks.partition_point(|c| c.end_offset() <= offset))?;
        let frame = chunk.frames.get(chunk.frames.partition_point(|f| f.header.end_offset() <= offset))?;
        (frame.header.first_offset <= offset).then_some(frame.header.appended_ms)
    }
}

/// A consumer of the embedded log: its cursor, and what it has handed out.
pub struct Consumer {
    inner: Arc<Inner>,
}

struct Inner {
    log: Log,
    cursor: String,
    /// With stable batches: where the batch handed out ends.
    batch_cursor: Option<String>,
    /// The committed cursor, for the backlog.
    committed: AtomicU64,
    handed: tokio::sync::Mutex<Handed>,
}

/// What the consumer has handed out.
struct Handed {
    /// The position the next lease starts at.
    next: u64,
    /// A batch handed out before a crash or a release, to hand out again exactly (stable
    /// batches): it ends here.
    again_until: Option<u64>,
    /// The next batch, being read while the last one is worked on.
    prefetch: Option<Prefetch>,
}

struct Prefetch {
    from: u64,
    read: JoinHandle<io::Result<Vec<Positioned>>>,
}

impl Consumer {
    /// Open consumer `name`, committing its start when it has no cursor yet.
    fn open(log: Log, name: &str, options: ConsumerOptions) -> io::Result<Consumer> {
        let cursor = cursor_name(name);
        let next = match log.cursor(&cursor) {
            Some(position) => position,
            None => {
                let start = match options.start {
                    Start::Beginning => 0,
                    Start::End => log.next_offset(),
                };
                log.commit_cursor(&cursor, start)?;
                start
            }
        };
        let batch_cursor = options.stable_batches.then(|| batch_cursor_name(name));
        let again_until = batch_cursor.as_deref().and_then(|c| log.cursor(c)).filter(|&end| end > next);
        let handed = Handed { next, again_until, prefetch: None };
        let inner = Inner {
            log,
            cursor,
            batch_cursor,
            committed: AtomicU64::new(next),
            handed: tokio::sync::Mutex::new(handed),
        };
        Ok(Consumer { inner: Arc::new(inner) })
    }
}

impl contract::Consumer for Consumer {
    fn lease(&self, limits: BatchLimits) -> BoxFuture<'_, io::Result<Option<Leased>>> {
        Box::pin(self.inner.clone().lease(limits))
    }

    fn backlog(&self) -> Backlog {
        let log = &self.inner.log;
        let position = self.inner.committed.load(Ordering::Relaxed);
        let end = log.next_offset();
        let oldest = match log.appended_ms(position).filter(|_| position < end) {
            Some(ms) => Duration::from_millis(crate::system_clock_ms().saturating_sub(ms)),
            None => Duration::ZERO,
        };
        Backlog { position, records: end.saturating_sub(position), oldest, end: Some(end) }
    }

    fn refresh(&self) -> BoxFuture<'_, io::Result<Backlog>> {
        let backlog = contract::Consumer::backlog(self);
        Box::pin(async move { Ok(backlog) })
    }
}

impl Inner {
    async fn lease(self: Arc<Self>, limits: BatchLimits) -> io::Result<Option<Leased>> {
        let mut handed = self.handed.lock().await;
        let from = handed.next;
        if self.log.next_offset() <= from {
            match tokio::time::timeout(IDLE_WAIT, self.log.wait_for(from)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(io::Error::other(error)),
                Err(_) => return Ok(None),
            }
        }
        let max = limits.records.max(1);
        let records = match (handed.again_until, handed.prefetch.take()) {
            (Some(end), _) => {
                let mut records = self.read(from, end.saturating_sub(from).max(1) as usize).await?;
                records.retain(|(position, _)| *position < end);
                records
            }
            (None, Some(prefetch)) if prefetch.from == from => {
                let records = prefetch.read.await.map_err(io::Error::other)??;
                keep_bytes(records, limits.bytes)
            }
            (None, stale) => {
                if let Some(stale) = stale {
                    stale.read.abort();
                }
                self.linger(from, max, limits.linger).await;
                keep_bytes(self.read(from, max).await?, limits.bytes)
            }
        };
        let (Some(&(first, _)), Some(&(last, _))) = (records.first(), records.last()) else { return Ok(None) };
        let end = last + 1;
        if let Some(batch_cursor) = &self.batch_cursor {
            // The cursor lock is held while another consumer's commit syncs: not here.
            let (log, batch_cursor) = (self.log.clone(), batch_cursor.clone());
            blocking(move || {
                if log.cursor(&batch_cursor) == Some(end) { Ok(()) } else { log.commit_cursor(&batch_cursor, end) }
            })
            .await?;
        }
        handed.next = end;
        handed.again_until = None;
        // Catching up: read the next batch while this one is worked on.
        if self.log.next_offset().saturating_sub(end) >= max as u64 {
            let log = self.log.clone();
            let read = tokio::task::spawn_blocking(move || Log::read(&log, end, max));
            handed.prefetch = Some(Prefetch { from: end, read });
        }
        let lease = Arc::new(LogLease { inner: self.clone(), start: from, end });
        Ok(Some(Leased { records, missed: first - from, lease }))
    }

    async fn read(&self, from: u64, max: usize) -> io::Result<Vec<Positioned>> {
        let log = self.log.clone();
        blocking(move || Log::read(&log, from, max)).await
    }

    /// Wait until a full batch is there or `linger` has passed.
    async fn linger(&self, from: u64, max: usize, linger: Duration) {
        let deadline = tokio::time::Instant::now() + linger;
        let full = from + max as u64;
        let _ = tokio::time::timeout_at(deadline, self.log.wait_for(full - 1)).await;
    }
}

/// The first records of `records` that fit in `max_bytes` (at least one).
fn keep_bytes(mut records: Vec<Positioned>, max_bytes: usize) -> Vec<Positioned> {
    let mut bytes = 0;
    let keep = records
        .iter()
        .position(|(_, record)| {
            bytes += record.len();
            bytes > max_bytes
        })
        .unwrap_or(records.len())
        .max(1);
    records.truncate(keep);
    records
}

/// A batch handed out: positions `start..end` (`start` may hold records retention
/// removed).
struct LogLease {
    inner: Arc<Inner>,
    start: u64,
    end: u64,
}

impl Lease for LogLease {
    fn extend_every(&self) -> Option<Duration> {
        None
    }

    fn extend(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn settle(&self) -> BoxFuture<'_, io::Result<()>> {
        let (log, cursor, end) = (self.inner.log.clone(), self.inner.cursor.clone(), self.end);
        Box::pin(async move {
            blocking(move || log.commit_cursor(&cursor, end)).await?;
            self.inner.committed.fetch_max(end, Ordering::Relaxed);
            Ok(())
        })
    }

    fn release(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut handed = self.inner.handed.lock().await;
            if let Some(prefetch) = handed.prefetch.take() {
                prefetch.read.abort();
            }
            // Released in lease order or not, the earliest batch given back comes first.
            if self.start <= handed.next {
                handed.next = self.start;
                if self.inner.batch_cursor.is_some() {
                    handed.again_until = Some(self.end);
                }
            }
            Ok(())
        })
    }
}

/// A log directory read beside the process that writes it (`ferry replay`, `ferry log
/// cat`): a read that reaches the end known so far looks for what was appended since.
pub struct ReadOnly {
    view: Mutex<inspect::LogView>,
}

impl ReadOnly {
    pub fn open(dir: &Path) -> io::Result<ReadOnly> {
        Ok(ReadOnly { view: Mutex::new(inspect::open_view(dir)?) })
    }

    fn view(&self) -> io::Result<std::sync::MutexGuard<'_, inspect::LogView>> {
        self.view.lock().map_err(|_| io::Error::other("log view lock poisoned"))
    }
}

impl contract::Reader for ReadOnly {
    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, io::Result<Vec<Positioned>>> {
        Box::pin(async move {
            let mut view = self.view()?;
            let mut records = view.read(from, max)?;
            if records.len() < max {
                view.refresh()?;
                let after = records.last().map_or(from, |(position, _)| position + 1);
                records.extend(view.read(after, max - records.len())?);
            }
            Ok(records)
        })
    }

    fn end(&self) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            let mut view = self.view()?;
            view.refresh()?;
            Ok(view.next_offset())
        })
    }
}
