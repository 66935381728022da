//! The log as a delivery worker sees it: records by position, a durable per-consumer
//! cursor, and a wake-up when new records arrive. The embedded [`ferry_log::Log`] is one
//! implementation; cluster mode adds another.

use std::future::Future;
use std::io;
use std::pin::Pin;

/// A boxed future, for the object-safe [`Feed`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The event log, read by named consumers.
pub trait Feed: Send + Sync + 'static {
    /// Up to `max` records at positions `>= from`, in order (records retention removed
    /// are skipped). Blocking I/O: call it from a blocking context.
    fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>>;
    /// The position the next record will get.
    fn end(&self) -> u64;
    /// Resolves once a record at `position` or later exists (or the log closed).
    fn wait(&self, position: u64) -> BoxFuture<'_, ()>;
    /// The position `consumer` reads next, if it has a cursor.
    fn cursor(&self, consumer: &str) -> Option<u64>;
    /// Durably move `consumer`'s cursor to `next`.
    fn commit(&self, consumer: &str, next: u64) -> io::Result<()>;
    /// The first position appended at or after `ms` (Unix ms), for replays by time.
    fn position_at(&self, ms: u64) -> u64;
}

impl Feed for ferry_log::Log {
    fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        ferry_log::Log::read(self, from, max)
    }

    fn end(&self) -> u64 {
        self.next_offset()
    }

    fn wait(&self, position: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.wait_for(position).await;
        })
    }

    fn cursor(&self, consumer: &str) -> Option<u64> {
        ferry_log::Log::cursor(self, consumer)
    }

    fn commit(&self, consumer: &str, next: u64) -> io::Result<()> {
        self.commit_cursor(consumer, next)
    }

    fn position_at(&self, ms: u64) -> u64 {
        self.offset_at_time(ms)
    }
}

/// A read-only view of a log directory (what `ferry replay` reads while `ferry serve` holds
/// the log): records and positions, no cursors, no waiting.
pub struct LogView {
    view: std::sync::Mutex<ferry_log::inspect::LogView>,
}

impl LogView {
    /// Open the log directory read-only.
    pub fn open(dir: &std::path::Path) -> io::Result<LogView> {
        Ok(LogView { view: std::sync::Mutex::new(ferry_log::inspect::open_view(dir)?) })
    }

    /// Up to `max` records at positions `>= from`, after looking for new chunks.
    pub fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut view = self.view.lock().map_err(|_| io::Error::other("log view lock poisoned"))?;
        view.refresh()?;
        view.read(from, max)
    }

    /// One past the last record.
    pub fn end(&self) -> u64 {
        self.view.lock().map(|v| v.next_offset()).unwrap_or(0)
    }
}

/// A log whose consumers are shared by many worker processes (cluster mode): the server
/// leases each batch to one worker; what is not acknowledged before its lease runs out is
/// leased to another. Positions are only labels here (dead letters, the debugger).
pub trait SharedFeed: Send + Sync + 'static {
    /// The next batch for this consumer: waits for a first record (`Ok(None)` after a
    /// while without any, so the caller can look around), then up to `linger` for more,
    /// up to `max` records and about `max_bytes` bytes.
    fn next_batch(
        &self,
        max: usize,
        max_bytes: usize,
        linger: std::time::Duration,
    ) -> BoxFuture<'_, io::Result<Option<Leased>>>;
}

/// Records leased to this worker.
pub struct Leased {
    pub records: Vec<(u64, Vec<u8>)>,
    pub lease: std::sync::Arc<dyn Lease>,
}

/// A lease on a batch: keep it, settle it, or give it back.
pub trait Lease: Send + Sync + 'static {
    /// How often [`Lease::extend`] must be called while the batch is being worked on.
    fn extend_every(&self) -> std::time::Duration;
    /// Keep the batch a while longer (it is being sent or waits for a retry).
    fn extend(&self) -> BoxFuture<'_, io::Result<()>>;
    /// The batch is settled (delivered, filtered or dead-lettered): never lease it again.
    fn ack(&self) -> BoxFuture<'_, io::Result<()>>;
    /// Give the batch back at once (shutdown while it waited for a retry).
    fn release(&self) -> BoxFuture<'_, io::Result<()>>;
}
