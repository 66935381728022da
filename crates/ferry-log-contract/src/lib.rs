//! The log contract: what ferry asks of the log its events and quarantined items go to.
//! Two logs implement it: the embedded `ferry-log` (files on this machine) and NATS
//! JetStream (`ferry-nats`, cluster mode). Ingestion, delivery, replay, the admin API and
//! the CLI are written once against it.
//!
//! A log holds records at positions that only grow. It does three things:
//!
//! - **append** ([`Log::append`]): store a request's records, each with an optional dedupe
//!   key; a record whose key the log has seen inside its dedupe window is answered
//!   [`Appended::Duplicate`] and not stored again. `Ok` means durable under the log's
//!   policy (the embedded log's sync policy; JetStream's acknowledgement at the stream's
//!   replication).
//! - **consume** ([`Log::consumer`]): a named consumer leases a batch from its position
//!   ([`Consumer::lease`]), extends the lease while it works on it ([`Lease::extend`]), and
//!   settles it ([`Lease::settle`]) once every record is dealt with, or gives it back
//!   ([`Lease::release`]). In the embedded log a lease is "the batch after the cursor" and
//!   settling commits the cursor; in JetStream a durable consumer shared by many processes
//!   leases each batch to one of them until it is acknowledged or its lease runs out.
//! - **read** ([`Reader::read`]): any range, by position, for replays, the quarantine pages
//!   and `ferry log cat`.
//!
//! Positions are the embedded log's offsets (contiguous) or the stream's sequences (with
//! gaps: the stream holds other subjects too). Nothing here knows Segment: records are
//! opaque bytes.
//!
//! This crate depends on no other crate of the project.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future, so that the traits stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A record and its position.
pub type Positioned = (u64, Vec<u8>);

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The dedupe key (ferry's: the message id); `None`: never a duplicate.
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// What became of one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position.
    At(u64),
    /// Its key was seen inside the dedupe window; not stored again.
    Duplicate,
}

/// Why an append stored nothing that the caller may count on. Either way the caller is
/// told to try again later: nothing is buffered instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log is at its byte budget.
    #[error("the log is full: {reason}")]
    Full { retry_after: Duration, reason: String },
    /// The log cannot write now: poisoned by a failed write, closed, disconnected, too slow.
    #[error("the log is unavailable: {reason}")]
    Unavailable { retry_after: Duration, reason: String },
}

impl AppendError {
    /// How long the caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            AppendError::Full { retry_after, .. } | AppendError::Unavailable { retry_after, .. } => *retry_after,
        }
    }
}

/// Reading a log by position.
pub trait Reader: Send + Sync {
    /// Up to `max` records at positions `>= from`, in order; records retention removed are
    /// skipped.
    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, io::Result<Vec<Positioned>>>;

    /// One past the last position, as of now.
    fn end(&self) -> BoxFuture<'_, io::Result<u64>>;
}

/// A log that is written and consumed: the events, or the quarantine.
pub trait Log: Reader {
    /// Store `records`; `Ok` once every one is durable or answered as a duplicate, with
    /// what became of each, in order.
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<Vec<Appended>, AppendError>>;

    /// Whether an append can succeed now (for `/ready`).
    fn writable(&self) -> bool;

    /// The consumer `name`, created at `options.start` when it is new (an existing one
    /// keeps its position). Call it before appends begin, so that `Start::End` means
    /// "records stored after this call".
    fn consumer(&self, name: &str, options: ConsumerOptions) -> BoxFuture<'_, io::Result<Arc<dyn Consumer>>>;
}

/// Where a new consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record the log still holds.
    Beginning,
    /// Only records stored from now on.
    End,
}

/// How a consumer is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOptions {
    pub start: Start,
    /// A batch handed out and not settled before a crash is handed out again exactly as it
    /// was (for a destination that names its output after the batch). Only a log whose
    /// consumer is not shared can promise it; the others refuse the option.
    pub stable_batches: bool,
}

/// How big a leased batch may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many records (at least one).
    pub records: usize,
    /// At most about this many bytes of records (always at least one record).
    pub bytes: usize,
    /// How long to wait for a full batch once a first record is there.
    pub linger: Duration,
}

/// One consumer of a log: a destination's worker reads through it.
pub trait Consumer: Send + Sync {
    /// The next batch. Waits for a first record (`Ok(None)` after a few seconds without
    /// one, so that the caller can look around), then up to `linger` for more. A caller may
    /// lease the next batch before it settles the one in hand (to prepare it meanwhile), but
    /// settles them in the order it leased them; releasing a batch gives back every batch
    /// leased after it too, once those are released.
    fn lease(&self, limits: BatchLimits) -> BoxFuture<'_, io::Result<Option<Leased>>>;

    /// The consumer's backlog as last known (never waits: for `/metrics`).
    fn backlog(&self) -> Backlog;

    /// The consumer's backlog, asked of the log now.
    fn refresh(&self) -> BoxFuture<'_, io::Result<Backlog>>;
}

/// Records leased to this consumer.
pub struct Leased {
    pub records: Vec<Positioned>,
    /// Positions right before this batch that the consumer will never get: retention
    /// removed their records before it read them (never expected). Always 0 where positions
    /// have gaps anyway (JetStream).
    pub missed: u64,
    pub lease: Arc<dyn Lease>,
}

/// A lease on a batch: keep it, settle it, or give it back.
pub trait Lease: Send + Sync {
    /// How often [`Lease::extend`] must be called while the batch is worked on; `None`
    /// when the lease never runs out.
    fn extend_every(&self) -> Option<Duration>;

    /// Keep the batch a while longer (it is being sent, or waits for a retry).
    fn extend(&self) -> BoxFuture<'_, io::Result<()>>;

    /// Every record of the batch is dealt with: never lease it again. Safe to call again
    /// after an error.
    fn settle(&self) -> BoxFuture<'_, io::Result<()>>;

    /// Give the batch back at once: it is leased again (shutdown while it waited).
    fn release(&self) -> BoxFuture<'_, io::Result<()>>;
}

/// What a consumer has not settled yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// The position the consumer reads next: its committed cursor (embedded), or one past
    /// the last position every lease before it settled (JetStream's ack floor).
    pub position: u64,
    /// Records stored and not yet settled.
    pub records: u64,
    /// How long ago the oldest of them was stored (zero when there is none).
    pub oldest: Duration,
    /// Where the log ends, when this consumer alone reads every position in order, so that
    /// `end - start` is what it must account for; `None` when positions are shared.
    pub end: Option<u64>,
}
