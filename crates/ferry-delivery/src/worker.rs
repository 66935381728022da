//! One worker per destination: lease a batch from the destination's consumer of the log,
//! send it, retry what the destination asks to retry, dead-letter what it refuses (or
//! what runs out of time), and only then settle the batch (the embedded log moves the
//! destination's cursor; JetStream acknowledges the batch's messages). One loop serves
//! both logs: the log contract's consumer is all it sees.
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
use ferry_log_contract::{BatchLimits, Consumer, ConsumerOptions, Lease, Leased, Log, Positioned, Start};
use ferry_tap::{DeliverySeen, Observation, Tap};
use tokio::sync::watch;

use crate::dead_letter::{Attempt, DeadLetters, NewDeadLetter, now_iso};
use crate::retry::{Backoff, unit_draw};

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

/// A delivery worker.
pub struct Worker {
    config: WorkerConfig,
    consumer: Arc<dyn Consumer>,
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
    pending: Vec<Pending>,
    /// Events `integrations` switched off for this destination.
    filtered: u64,
    /// Their message ids, kept only while the tap is watched.
    filtered_ids: Vec<String>,
    /// Records that are not events.
    dead: Vec<NewDeadLetter>,
    first_attempt_at: String,
}

/// How long a lease under way when shutdown comes may still take to finish.
const LEASE_AT_STOP: Duration = Duration::from_millis(250);

/// A batch leased and decoded, and one past its last position.
struct Taken {
    lease: Arc<dyn Lease>,
    batch: Option<Batch>,
    end: u64,
}

/// Decode records and route them by `integrations` (when the destination follows it).
fn decode(records: Vec<Positioned>, name: &str, routed: bool, watched: bool) -> Batch {
    let first_attempt_at = now_iso();
    let mut batch = Batch {
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
    /// A worker for destination `config.name` on `log`: its consumer is opened (created at
    /// `config.start` when it is new) now, so call this before ingestion begins and
    /// `Start::End` means "events stored after this point", not "after the worker task
    /// happened to be scheduled".
    pub async fn open(
        config: WorkerConfig,
        log: &dyn Log,
        destination: Arc<dyn Destination>,
        dead_letters: Arc<DeadLetters>,
    ) -> std::io::Result<Worker> {
        let options = ConsumerOptions { start: config.start, stable_batches: destination.needs_stable_batches() };
        let consumer = log.consumer(&config.name, options).await?;
        Ok(Worker::new(config, consumer, destination, dead_letters))
    }

    /// A worker reading through `consumer`.
    pub fn new(
        config: WorkerConfig,
        consumer: Arc<dyn Consumer>,
        destination: Arc<dyn Destination>,
        dead_letters: Arc<DeadLetters>,
    ) -> Worker {
        let status = WorkerStatus::default();
        let position = consumer.backlog().position;
        status.start.store(position, Ordering::Relaxed);
        status.position.store(position, Ordering::Relaxed);
        Worker { config, consumer, destination, dead_letters, status: Arc::new(status), tap: None }
    }

    /// The consumer the worker reads through (its backlog, for the admin API and metrics).
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        self.consumer.clone()
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

    /// Deliver until `shutdown` turns true: lease a batch, keep the lease while it is sent
    /// and retried, and settle it once every event is delivered, filtered or dead-lettered.
    /// A batch being sent when shutdown comes is finished (and settled); a batch waiting for
    /// a retry is given back (delivered again later, or by another worker).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = self.config.name.clone();
        let position = self.status.position.load(Ordering::Relaxed);
        tracing::info!(destination = %name, position, "delivery worker started");
        let limits = BatchLimits {
            records: self.config.batch_events.max(1),
            bytes: self.config.batch_bytes,
            linger: self.config.linger,
        };
        // A batch leased (and decoded) while the one before it was sent, when a full batch
        // already waited behind that one on a log of this consumer's own.
        let mut ahead: Option<Taken> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let taken = match ahead.take() {
                Some(taken) => taken,
                None => {
                    let take = self.take(limits);
                    tokio::pin!(take);
                    let next = tokio::select! {
                        next = &mut take => next,
                        _ = shutdown.changed() => {
                            // A lease under way may have taken records already (a shared
                            // consumer's stay taken until their lease runs out): let it
                            // finish a moment, and give back what it got.
                            if let Ok(Ok(Some(taken))) = tokio::time::timeout(LEASE_AT_STOP, take).await {
                                let _ = taken.lease.release().await;
                            }
                            continue;
                        }
                    };
                    match next {
                        Ok(Some(taken)) => taken,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::error!(destination = %name, %error, "cannot read the log; trying again in 1 s");
                            self.status.error(&format!("cannot read the log: {error}"));
                            sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                            continue;
                        }
                    }
                }
            };
            let Taken { lease, batch, end } = taken;
            let keep = lease.extend_every().map(|every| tokio::spawn(keep_alive(lease.clone(), every, name.clone())));
            let finished = match batch {
                Some(batch) if self.look_ahead(end) => {
                    let (finished, next) = tokio::join!(self.deliver(batch, &mut shutdown), self.take(limits));
                    ahead = next.ok().flatten();
                    finished
                }
                Some(batch) => self.deliver(batch, &mut shutdown).await,
                None => Finished::Abandoned,
            };
            // The lease is kept until the batch is settled or given back: a settle that
            // takes a while must not let the batch go to another worker meanwhile.
            let stop_keeping = || {
                if let Some(keep) = &keep {
                    keep.abort();
                }
            };
            match finished {
                Finished::Done(tally) => {
                    self.settle(lease.as_ref(), &mut shutdown).await;
                    stop_keeping();
                    self.count(&tally, end);
                }
                Finished::Abandoned => {
                    stop_keeping();
                    // This batch and the one leased after it, in that order.
                    for lease in std::iter::once(lease).chain(ahead.take().map(|a| a.lease)) {
                        if let Err(error) = lease.release().await {
                            tracing::warn!(destination = %name, %error, "cannot give a batch back; it comes again after a restart or once its lease runs out");
                        }
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                }
            }
        }
        if let Some(ahead) = ahead {
            // Leased while the last batch was sent, never started: given back.
            let _ = ahead.lease.release().await;
        }
        tracing::info!(destination = %name, "delivery worker stopped");
        self.destination.close().await;
    }

    /// Lease the next batch and decode it (`batch` is `None` when decoding failed: the
    /// batch is to be given back).
    async fn take(&self, limits: BatchLimits) -> std::io::Result<Option<Taken>> {
        let Some(Leased { records, missed, lease }) = self.consumer.lease(limits).await? else { return Ok(None) };
        let (Some(&(first, _)), Some(&(last, _))) = (records.first(), records.last()) else { return Ok(None) };
        if missed > 0 {
            self.status.deleted.fetch_add(missed, Ordering::Relaxed);
            tracing::warn!(
                destination = %self.config.name,
                from = first - missed,
                to = first,
                "log records were deleted before this destination read them"
            );
        }
        Ok(Some(Taken { lease, batch: self.decode(records).await, end: last + 1 }))
    }

    /// Whether to lease the batch after the one that ends at `end` while that one is sent:
    /// only on a log of this consumer's own (a shared consumer's batches are better left
    /// to other workers), only when a full batch already waits, and never for a destination
    /// that needs its batches the same after a crash (the batch ahead would move the end
    /// written down for the one in hand).
    fn look_ahead(&self, end: u64) -> bool {
        let waiting = self.consumer.backlog().end.map_or(0, |log_end| log_end.saturating_sub(end));
        !self.destination.needs_stable_batches() && waiting >= self.config.batch_events.max(1) as u64
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

    /// Decode and route a batch on a blocking thread; `None` if that task failed.
    async fn decode(&self, records: Vec<Positioned>) -> Option<Batch> {
        let name = self.config.name.clone();
        let routed = self.destination.follows_integrations();
        let watched = self.tap.as_ref().is_some_and(|t| t.watched());
        match tokio::task::spawn_blocking(move || decode(records, &name, routed, watched)).await {
            Ok(batch) => Some(batch),
            Err(error) => {
                tracing::error!(destination = %self.config.name, %error, "decoding a batch failed; giving it back");
                None
            }
        }
    }

    /// Settle a batch, trying again until the log takes it or shutdown comes (a batch left
    /// unsettled is delivered again, and idempotent destinations absorb it).
    async fn settle(&self, lease: &dyn Lease, shutdown: &mut watch::Receiver<bool>) {
        loop {
            let Err(error) = lease.settle().await else { return };
            tracing::error!(destination = %self.config.name, %error, "cannot settle a batch; trying again in 1 s");
            self.status.error(&format!("cannot settle a batch: {error}"));
            if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                tracing::warn!(destination = %self.config.name, "a settled batch stays unsettled; it will be delivered again");
                return;
            }
        }
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
}

/// Extend a lease for as long as this task runs (it is aborted when the batch is settled).
async fn keep_alive(lease: Arc<dyn Lease>, every: Duration, destination: String) {
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
