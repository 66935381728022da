//! One worker per destination: read a batch from the log at the destination's own cursor,
//! send it, retry what the destination asks to retry, dead-letter what it refuses (or
//! what runs out of time), and only then move the cursor.
//!
//! Because each destination has its own cursor and its own task, a slow or failing
//! destination holds back only itself: ingestion and the other destinations go on. (It
//! does hold back retention of the log, like any consumer: a destination down for longer
//! than the disk budget lasts eventually turns ingestion into 429s, never into loss.)
//!
//! Within a destination, delivery is in log order, one batch at a time: while a batch
//! waits for its retries, the destination gets nothing newer. That keeps the cursor one
//! number, keeps retries honest towards a rate-limited destination (its `Retry-After`
//! holds for every event), and bounds memory to one batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_destinations::{Destination, Event, Outcome};
use ferry_tap::{DeliverySeen, Observation, Tap};
use tokio::sync::watch;

use crate::dead_letter::{Attempt, DeadLetters, NewDeadLetter, now_iso};
use crate::feed::{Feed, Lease, Leased, SharedFeed};
use crate::retry::{Backoff, unit_draw};

/// Where a destination without a cursor starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest event the log still holds (warehouses: the retained history).
    Beginning,
    /// Only events stored from now on.
    End,
}

/// How one destination is fed.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The destination's name: its key in `integrations`, and its cursor.
    pub name: String,
    /// A batch holds at most this many events...
    pub batch_events: usize,
    /// ...and at most this many bytes of stored events (at least one event).
    pub batch_bytes: usize,
    /// How long to wait for a batch to fill once its first event is there.
    pub linger: Duration,
    /// Retry an event for at least this long after its first attempt, then dead-letter it.
    pub max_age: Duration,
    pub backoff: Backoff,
    /// Give up on one send after this long (counted as a retry).
    pub timeout: Duration,
    pub start: Start,
}

impl WorkerConfig {
    /// Defaults for a destination named `name`: batches of 100 events or 1 MiB after at
    /// most 200 ms, retries for 4 hours (as Segment), 30 s per send.
    pub fn new(name: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            name: name.into(),
            batch_events: 100,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            max_age: Duration::from_secs(4 * 3600),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(30),
            start: Start::End,
        }
    }
}

/// The cursor name of a destination in the log.
pub fn cursor_name(destination: &str) -> String {
    format!("delivery.{destination}")
}

/// For destinations that need stable batches: where the batch being sent ends (a cursor,
/// so it is durable, and never behind the destination's own).
pub fn batch_cursor_name(destination: &str) -> String {
    format!("delivery-batch.{destination}")
}

/// What a worker has done; shared with metrics, the admin API and tests. The event
/// counters move when a batch's cursor is committed, so at any moment
/// `end − start = delivered + filtered + skipped + dead_lettered + deleted + (end − position)`.
#[derive(Debug)]
pub struct WorkerStatus {
    /// The position the worker started at.
    pub start: AtomicU64,
    /// Records retention deleted before this destination read them (never expected: a
    /// cursor holds retention back; kept so the sums above stay true).
    pub deleted: AtomicU64,
    /// How long each send took (one attempt of one batch).
    pub send_seconds: ferry_metrics::Histogram,
    /// Events per send.
    pub send_events: ferry_metrics::Histogram,
    pub delivered: AtomicU64,
    /// Events skipped because `integrations` turned this destination off.
    pub filtered: AtomicU64,
    /// Events the destination has no counterpart for (it answered `Skipped`).
    pub skipped: AtomicU64,
    /// Events the destination rejected (and so dead-lettered).
    pub rejected: AtomicU64,
    /// Events dead-lettered, for any reason.
    pub dead_lettered: AtomicU64,
    /// Sends of an event that were answered with a retry.
    pub retried: AtomicU64,
    /// Batches completed.
    pub batches: AtomicU64,
    /// The position the worker reads next (its committed cursor).
    pub position: AtomicU64,
    /// Whether the current batch is waiting to be retried.
    pub retrying: AtomicBool,
    /// The last error a send produced, with its time.
    pub last_error: Mutex<Option<(String, String)>>,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            start: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            send_seconds: ferry_metrics::Histogram::latency(),
            send_events: ferry_metrics::Histogram::sizes(),
            delivered: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            position: AtomicU64::new(0),
            retrying: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }
}

impl WorkerStatus {
    fn error(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((now_iso(), error.to_owned()));
        }
    }
}

/// What a worker reads from.
#[derive(Clone)]
enum Input {
    /// A log of its own, with a durable cursor (embedded mode).
    Log(Arc<dyn Feed>),
    /// A consumer shared with other worker processes (cluster mode).
    Shared(Arc<dyn SharedFeed>),
}

/// A delivery worker.
pub struct Worker {
    config: WorkerConfig,
    input: Input,
    destination: Arc<dyn Destination>,
    dead_letters: Arc<DeadLetters>,
    status: Arc<WorkerStatus>,
    /// Where the debugger learns what became of each batch (only while it watches).
    tap: Option<Arc<Tap>>,
}

/// One event of the batch in hand.
struct Pending {
    position: u64,
    event: Arc<Event>,
    attempts: Vec<Attempt>,
}

/// A batch read from the log, decoded and routed.
struct Batch {
    /// The first and last positions read (`None`: nothing was there).
    first: Option<u64>,
    last: u64,
    pending: Vec<Pending>,
    /// Events `integrations` switched off for this destination.
    filtered: u64,
    /// Their message ids, kept only while the tap is watched.
    filtered_ids: Vec<String>,
    /// Records that are not events.
    dead: Vec<NewDeadLetter>,
    first_attempt_at: String,
}

/// Decode records and route them by `integrations` (when the destination follows it).
fn decode(records: Vec<(u64, Vec<u8>)>, name: &str, routed: bool, watched: bool) -> Batch {
    let first_attempt_at = now_iso();
    let first = records.first().map(|r| r.0);
    let last = records.last().map_or(0, |r| r.0);
    let mut batch = Batch {
        first,
        last,
        pending: Vec::with_capacity(records.len()),
        filtered: 0,
        filtered_ids: Vec::new(),
        dead: Vec::new(),
        first_attempt_at,
    };
    for (position, record) in records {
        match Event::decode(&record) {
            Ok(event) => {
                if routed && !event.routes_to(name) {
                    batch.filtered += 1;
                    if watched {
                        batch.filtered_ids.push(event.message_id.clone());
                    }
                    continue;
                }
                batch.pending.push(Pending { position, event: Arc::new(event), attempts: Vec::new() });
            }
            Err(error) => {
                // Not an event ferry wrote: keep its bytes where an operator can see them.
                tracing::error!(destination = %name, position, %error, "undecodable log record");
                batch.dead.push(NewDeadLetter {
                    destination: name.to_owned(),
                    position,
                    message_id: format!("undecodable-{position}"),
                    kind: "unknown".to_owned(),
                    event: None,
                    source_id: None,
                    received_at: None,
                    first_attempt_at: batch.first_attempt_at.clone(),
                    reason: format!("undecodable log record: {error}"),
                    attempts: Vec::new(),
                    payload: String::from_utf8_lossy(&record).into_owned(),
                });
            }
        }
    }
    batch
}

/// What became of a batch's events.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    filtered: u64,
    skipped: u64,
    rejected: u64,
    dead_lettered: u64,
}

/// How a batch ended.
enum Finished {
    /// Every event delivered, filtered or dead-lettered: the cursor may move, and then
    /// the tally counts (so the counters and the cursor always agree).
    Done(Tally),
    /// Shutdown came while the batch waited for a retry: leave the cursor; the batch is
    /// sent again after a restart.
    Abandoned,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        feed: Arc<dyn Feed>,
        destination: Arc<dyn Destination>,
        dead_letters: Arc<DeadLetters>,
    ) -> Worker {
        Worker { config, input: Input::Log(feed), destination, dead_letters, status: Arc::default(), tap: None }
    }

    /// A worker that shares its destination's work with other processes through `feed`
    /// (where reading starts is the shared consumer's business, not the worker's).
    pub fn shared(
        config: WorkerConfig,
        feed: Arc<dyn SharedFeed>,
        destination: Arc<dyn Destination>,
        dead_letters: Arc<DeadLetters>,
    ) -> Worker {
        Worker { config, input: Input::Shared(feed), destination, dead_letters, status: Arc::default(), tap: None }
    }

    /// Fix where a destination without a cursor starts, now: call it before ingestion
    /// begins, so `start = end` means "events stored after this point", not "after the
    /// worker task happened to be scheduled" (which could skip the first events).
    pub fn begin(&self) -> std::io::Result<()> {
        let Input::Log(feed) = &self.input else { return Ok(()) };
        let cursor = cursor_name(&self.config.name);
        if feed.cursor(&cursor).is_none() {
            feed.commit(&cursor, self.start_position(feed))?;
        }
        Ok(())
    }

    /// Tell `tap` what became of every batch (message ids by outcome).
    pub fn with_tap(mut self, tap: Arc<Tap>) -> Worker {
        self.tap = Some(tap);
        self
    }

    /// Publish an outcome for some of a batch's events, building nothing unless watched.
    fn observe(&self, outcome: &str, ids: impl FnOnce() -> Vec<String>, error: Option<&str>) {
        let Some(tap) = self.tap.as_ref().filter(|t| t.watched()) else {
            return;
        };
        let mut message_ids = ids();
        if message_ids.is_empty() {
            return;
        }
        let omitted = message_ids.len().saturating_sub(ferry_tap::MAX_DELIVERY_IDS);
        message_ids.truncate(ferry_tap::MAX_DELIVERY_IDS);
        tap.publish(Observation::Delivery(DeliverySeen {
            at: now_iso(),
            destination: self.config.name.clone(),
            outcome: outcome.to_owned(),
            message_ids,
            omitted,
            error: error.map(str::to_owned),
        }));
    }

    /// The worker's counters.
    pub fn status(&self) -> Arc<WorkerStatus> {
        self.status.clone()
    }

    /// Deliver until `shutdown` turns true. A batch being sent when it does is finished
    /// (its cursor committed); a batch waiting for a retry is abandoned (sent again later).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match self.input.clone() {
            Input::Log(feed) => self.run_log(feed, shutdown).await,
            Input::Shared(feed) => self.run_shared(feed, shutdown).await,
        }
        self.destination.close().await;
    }

    async fn run_log(&self, feed: Arc<dyn Feed>, mut shutdown: watch::Receiver<bool>) {
        let cursor = cursor_name(&self.config.name);
        let mut next = match feed.cursor(&cursor) {
            Some(position) => position,
            None => {
                let start = self.start_position(&feed);
                self.commit(&feed, &cursor, start, &mut shutdown).await;
                start
            }
        };
        // A destination that names its output after the batch (files) must get the very
        // batch it was sent before a crash again: its end was written down first.
        let stable = self.destination.needs_stable_batches();
        let batch_cursor = batch_cursor_name(&self.config.name);
        let mut exactly_until = if stable { feed.cursor(&batch_cursor).filter(|&end| end > next) } else { None };
        self.status.position.store(next, Ordering::Relaxed);
        self.status.start.store(next, Ordering::Relaxed);
        tracing::info!(destination = %self.config.name, position = next, "delivery worker started");
        let mut prefetched: Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Batch>> + Send + '_>>,
        > = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if feed.end() <= next {
                tokio::select! {
                    () = feed.wait(next) => {}
                    _ = shutdown.changed() => continue,
                }
            }
            let batch = match (prefetched.take(), exactly_until.take()) {
                (_, Some(end)) => self.read(&feed, next, Some(end)).await,
                (Some(read), None) => read.await,
                (None, None) => {
                    self.linger(&feed, next, &mut shutdown).await;
                    self.read(&feed, next, None).await
                }
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(destination = %self.config.name, %error, "cannot read the log; trying again in 1 s");
                    self.status.error(&format!("cannot read the log: {error}"));
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
            };
            let Some(first) = batch.first else { continue };
            if first > next {
                self.status.deleted.fetch_add(first - next, Ordering::Relaxed);
                tracing::warn!(
                    destination = %self.config.name,
                    from = next,
                    to = first,
                    "log records were deleted before this destination read them"
                );
            }
            let after = batch.last + 1;
            // Catching up (a full batch already waits behind this one): read and decode it
            // while this one is sent.
            if feed.end().saturating_sub(after) >= self.config.batch_events as u64 {
                prefetched = Some(Box::pin(self.read(&feed, after, None)));
            }
            if stable && feed.cursor(&batch_cursor) != Some(after) {
                self.commit(&feed, &batch_cursor, after, &mut shutdown).await;
            }
            match self.deliver(batch, &mut shutdown).await {
                Finished::Done(tally) => {
                    next = after;
                    self.commit(&feed, &cursor, next, &mut shutdown).await;
                    self.count(&tally, next);
                }
                Finished::Abandoned => break,
            }
        }
        tracing::info!(destination = %self.config.name, position = next, "delivery worker stopped");
    }

    /// Where a destination without a cursor starts on `feed`.
    fn start_position(&self, feed: &Arc<dyn Feed>) -> u64 {
        match self.config.start {
            Start::Beginning => 0,
            Start::End => feed.end(),
        }
    }

    /// A settled batch's events in the counters, and the position after it.
    fn count(&self, tally: &Tally, next: u64) {
        let s = &self.status;
        s.delivered.fetch_add(tally.delivered, Ordering::Relaxed);
        s.filtered.fetch_add(tally.filtered, Ordering::Relaxed);
        s.skipped.fetch_add(tally.skipped, Ordering::Relaxed);
        s.rejected.fetch_add(tally.rejected, Ordering::Relaxed);
        s.dead_lettered.fetch_add(tally.dead_lettered, Ordering::Relaxed);
        s.position.store(next, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Cluster mode: take batches leased from the shared consumer, keep each lease alive
    /// while its batch is sent and retried, and acknowledge the batch once every event is
    /// delivered, filtered or dead-lettered (a batch whose worker dies goes to another
    /// worker when its lease runs out). Positions are stream sequences.
    async fn run_shared(&self, feed: Arc<dyn SharedFeed>, mut shutdown: watch::Receiver<bool>) {
        let name = self.config.name.clone();
        tracing::info!(destination = %name, "delivery worker started on a shared consumer");
        let routed = self.destination.follows_integrations();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next = tokio::select! {
                next = feed.next_batch(self.config.batch_events.max(1), self.config.batch_bytes, self.config.linger) => next,
                _ = shutdown.changed() => continue,
            };
            let Leased { records, lease } = match next {
                Ok(Some(leased)) => leased,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(destination = %name, %error, "cannot read the stream; trying again in 1 s");
                    self.status.error(&format!("cannot read the stream: {error}"));
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
            };
            let Some(&(last, _)) = records.last() else { continue };
            let keep = tokio::spawn(keep_alive(lease.clone(), name.clone()));
            let watched = self.tap.as_ref().is_some_and(|t| t.watched());
            let decoding = name.clone();
            let batch = match tokio::task::spawn_blocking(move || decode(records, &decoding, routed, watched)).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(destination = %name, %error, "decoding a batch failed; giving it back");
                    keep.abort();
                    let _ = lease.release().await;
                    continue;
                }
            };
            let finished = self.deliver(batch, &mut shutdown).await;
            keep.abort();
            match finished {
                Finished::Done(tally) => {
                    if let Err(error) = lease.ack().await {
                        // Not lost: the batch is delivered again once the lease runs out,
                        // and idempotent destinations absorb it.
                        tracing::warn!(destination = %name, %error, "cannot acknowledge a settled batch; it will be delivered again");
                    }
                    self.count(&tally, last + 1);
                }
                Finished::Abandoned => {
                    if let Err(error) = lease.release().await {
                        tracing::warn!(destination = %name, %error, "cannot give a batch back; another worker gets it when its lease runs out");
                    }
                    break;
                }
            }
        }
        tracing::info!(destination = %name, "delivery worker stopped");
    }

    /// Wait until a full batch is there, the linger time passed, or shutdown.
    async fn linger(&self, feed: &Arc<dyn Feed>, next: u64, shutdown: &mut watch::Receiver<bool>) {
        let deadline = tokio::time::Instant::now() + self.config.linger;
        loop {
            let end = feed.end();
            if end.saturating_sub(next) >= self.config.batch_events as u64 || *shutdown.borrow() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = feed.wait(end) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The next batch from `next`: up to `batch_events` records and `batch_bytes` bytes
    /// (or, with `exactly_until`, every record before that position), decoded and routed,
    /// on a blocking thread. The read starts at once (it is spawned), so a prefetch runs
    /// beside the send of the batch before it.
    fn read(
        &self,
        feed: &Arc<dyn Feed>,
        next: u64,
        exactly_until: Option<u64>,
    ) -> impl std::future::Future<Output = std::io::Result<Batch>> + Send + 'static {
        let feed = feed.clone();
        let (max, max_bytes) = match exactly_until {
            Some(end) => (end.saturating_sub(next).max(1) as usize, usize::MAX),
            None => (self.config.batch_events.max(1), self.config.batch_bytes),
        };
        let name = self.config.name.clone();
        let routed = self.destination.follows_integrations();
        let watched = self.tap.as_ref().is_some_and(|t| t.watched());
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<Batch> {
            let mut records = feed.read(next, max)?;
            if let Some(end) = exactly_until {
                records.retain(|(position, _)| *position < end);
            }
            let mut bytes = 0;
            let keep = records
                .iter()
                .position(|(_, r)| {
                    bytes += r.len();
                    bytes > max_bytes
                })
                .unwrap_or(records.len())
                .max(1);
            records.truncate(keep);
            Ok(decode(records, &name, routed, watched))
        });
        async move { task.await.map_err(|e| std::io::Error::other(format!("log reader stopped: {e}")))? }
    }

    /// Send a batch until every event is delivered or dead-lettered.
    async fn deliver(&self, batch: Batch, shutdown: &mut watch::Receiver<bool>) -> Finished {
        let name = &self.config.name;
        let Batch { mut pending, filtered, filtered_ids, mut dead, first_attempt_at, .. } = batch;
        let mut tally = Tally { filtered, ..Tally::default() };
        self.observe("filtered", || filtered_ids, None);
        let started = Instant::now();
        let mut failures = 0u32;
        while !pending.is_empty() {
            let events: Vec<Arc<Event>> = pending.iter().map(|p| p.event.clone()).collect();
            let sent_at = Instant::now();
            let sent = tokio::time::timeout(self.config.timeout, self.destination.send(&events)).await;
            self.status.send_seconds.observe_duration(sent_at.elapsed());
            self.status.send_events.observe(events.len() as f64);
            let outcomes = match sent {
                Ok(outcomes) if outcomes.len() == events.len() => outcomes,
                Ok(outcomes) => {
                    let error = format!("destination returned {} outcomes for {} events", outcomes.len(), events.len());
                    tracing::error!(destination = %name, %error);
                    vec![Outcome::retry(error); events.len()]
                }
                Err(_) => vec![Outcome::retry(format!("timed out after {:?}", self.config.timeout)); events.len()],
            };
            if self.tap.as_ref().is_some_and(|t| t.watched()) {
                self.observe_outcomes(&pending, &outcomes);
            }
            let mut retry_after: Option<Duration> = None;
            let mut still = Vec::new();
            let mut last_error = None;
            for (mut p, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => tally.delivered += 1,
                    Outcome::Skipped { .. } => tally.skipped += 1,
                    Outcome::Reject { reason } => {
                        tally.rejected += 1;
                        last_error = Some(reason.clone());
                        p.attempts.push(Attempt { at: now_iso(), error: reason.clone() });
                        dead.push(self.letter(p, reason, &first_attempt_at));
                    }
                    Outcome::Retry { after, error } => {
                        self.status.retried.fetch_add(1, Ordering::Relaxed);
                        retry_after = retry_after.max(after);
                        p.attempts.push(Attempt { at: now_iso(), error: error.clone() });
                        last_error = Some(error);
                        still.push(p);
                    }
                }
            }
            if let Some(error) = &last_error {
                self.status.error(error);
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            failures += 1;
            if started.elapsed() >= self.config.max_age {
                tracing::warn!(destination = %name, events = pending.len(), "retries ran out; dead-lettering");
                let reason = last_error.as_deref().map(|e| format!("gave up after {failures} attempts: {e}"));
                self.observe(
                    "dead_lettered",
                    || pending.iter().map(|p| p.event.message_id.clone()).collect(),
                    reason.as_deref(),
                );
                for p in pending.drain(..) {
                    let last = p.attempts.last().map(|a| a.error.clone()).unwrap_or_default();
                    dead.push(self.letter(p, format!("gave up after {failures} attempts: {last}"), &first_attempt_at));
                }
                break;
            }
            let delay = self.config.backoff.delay(failures, unit_draw(), retry_after);
            tracing::debug!(destination = %name, events = pending.len(), ?delay, error = ?last_error, "retrying");
            self.status.retrying.store(true, Ordering::Relaxed);
            let stopped = sleep_or_shutdown(delay, shutdown).await;
            self.status.retrying.store(false, Ordering::Relaxed);
            if stopped {
                return Finished::Abandoned;
            }
        }
        if !dead.is_empty() {
            tally.dead_lettered = dead.len() as u64;
            self.dead_letter(dead, shutdown).await;
        }
        Finished::Done(tally)
    }

    /// One attempt's outcomes, grouped, for the tap (rejections are dead-lettered at once;
    /// events that run out of retries are published when they are dead-lettered).
    fn observe_outcomes(&self, pending: &[Pending], outcomes: &[Outcome]) {
        let ids = |want: fn(&Outcome) -> bool| {
            pending.iter().zip(outcomes).filter(|(_, o)| want(o)).map(|(p, _)| p.event.message_id.clone()).collect()
        };
        self.observe("delivered", || ids(|o| matches!(o, Outcome::Delivered)), None);
        self.observe("skipped", || ids(|o| matches!(o, Outcome::Skipped { .. })), None);
        let first_error = |want: fn(&Outcome) -> bool| {
            outcomes.iter().find(|o| want(o)).map(|o| match o {
                Outcome::Reject { reason } => reason.as_str(),
                Outcome::Retry { error, .. } => error.as_str(),
                _ => "",
            })
        };
        let rejected = |o: &Outcome| matches!(o, Outcome::Reject { .. });
        let retried = |o: &Outcome| matches!(o, Outcome::Retry { .. });
        self.observe("dead_lettered", || ids(rejected), first_error(rejected));
        self.observe("retrying", || ids(retried), first_error(retried));
    }

    fn letter(&self, p: Pending, reason: String, first_attempt_at: &str) -> NewDeadLetter {
        let event = &p.event;
        NewDeadLetter {
            destination: self.config.name.clone(),
            position: p.position,
            message_id: event.message_id.clone(),
            kind: event.kind.as_str().to_owned(),
            event: event.event.clone(),
            source_id: Some(event.source_id.clone()).filter(|s| !s.is_empty()),
            received_at: Some(ferry_event::format_time(event.received_at)),
            first_attempt_at: first_attempt_at.to_owned(),
            reason,
            attempts: p.attempts,
            payload: event.json().to_owned(),
        }
    }

    /// Store dead letters, trying again until the store takes them: the cursor must not
    /// pass an event that is neither delivered nor dead-lettered, shutdown or not.
    async fn dead_letter(&self, letters: Vec<NewDeadLetter>, shutdown: &mut watch::Receiver<bool>) {
        let letters = Arc::new(letters);
        loop {
            let (store, batch) = (self.dead_letters.clone(), letters.clone());
            let result = tokio::task::spawn_blocking(move || store.add(&batch))
                .await
                .unwrap_or_else(|e| Err(crate::dead_letter::DeadLetterError::Stopped(e.to_string())));
            match result {
                Ok(()) => {
                    for letter in letters.iter() {
                        tracing::warn!(destination = %self.config.name, message_id = %letter.message_id, reason = %letter.reason, "dead-lettered");
                    }
                    return;
                }
                Err(error) => {
                    tracing::error!(destination = %self.config.name, %error, "cannot store dead letters; trying again in 1 s");
                    self.status.error(&format!("cannot store dead letters: {error}"));
                    if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Commit the cursor, trying again until the log takes it.
    async fn commit(&self, feed: &Arc<dyn Feed>, cursor: &str, next: u64, shutdown: &mut watch::Receiver<bool>) {
        loop {
            let feed = feed.clone();
            let name = cursor.to_owned();
            let result = tokio::task::spawn_blocking(move || feed.commit(&name, next))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match result {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(destination = %self.config.name, %error, "cannot commit the cursor; trying again in 1 s");
                    if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                        // A cursor left behind only means redelivery after the restart.
                        return;
                    }
                }
            }
        }
    }
}

/// Extend a lease for as long as this task runs (it is aborted when the batch is settled).
async fn keep_alive(lease: Arc<dyn Lease>, destination: String) {
    let every = lease.extend_every();
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = lease.extend().await {
            tracing::warn!(%destination, %error, "cannot extend the lease of a batch in hand");
        }
    }
}

/// Sleep, or return early with `true` when shutdown is asked for.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}
