//! The admin API's work in this process: destinations and their workers, dead letters, the
//! quarantine, and replay and redrive jobs running in the background.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_api::BoxFuture;
use ferry_api::admin::{
    Admin, AdminError, DeadLetterFilter, DeadLetterList, DeadLetterView, DestinationList, DestinationState, Job,
    JobKind, JobList, JobState, QuarantineItem, QuarantinePage, ReplayStart, TimedError,
};
use ferry_delivery::{Backoff, DeadLetter, DeadLetters, Filter, Progress, ReplayRequest, WorkerStatus};
use ferry_destinations::Destination;
use ferry_log_contract::Consumer;

use crate::backend::Logs;

/// One running destination, as the admin API and `/metrics` see it.
pub(crate) struct Handle {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) target: String,
    pub(crate) status: Arc<WorkerStatus>,
    /// Its consumer of the log (its backlog).
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) batch_events: usize,
    pub(crate) backoff: Backoff,
}

/// How far behind a destination is.
pub(crate) struct Lag {
    /// Events not yet completed.
    pub(crate) events: u64,
    /// The age of the oldest, in seconds.
    pub(crate) seconds: f64,
    /// Where the log ends, when the destination reads a log of its own.
    pub(crate) log_end: Option<u64>,
}

impl Handle {
    /// How far behind it is: from the worker's position on a log of its own (as its
    /// counters count), from the shared consumer otherwise.
    pub(crate) fn lag(&self) -> Lag {
        let backlog = self.consumer.backlog();
        let position = self.status.position.load(Ordering::Relaxed);
        let events = backlog.end.map_or(backlog.records, |end| end.saturating_sub(position));
        Lag { events, seconds: backlog.oldest.as_secs_f64(), log_end: backlog.end }
    }
}

/// A replay or a redrive.
struct RunningJob {
    id: u64,
    kind: JobKind,
    destination: Option<String>,
    started_at: String,
    progress: Mutex<Progress>,
    state: Mutex<(JobState, Option<String>)>,
    cancel: AtomicBool,
}

impl RunningJob {
    fn view(&self) -> Job {
        let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let (state, finished_at) = self.state.lock().map(|s| s.clone()).unwrap_or((JobState::Running, None));
        Job {
            id: self.id,
            kind: self.kind,
            state,
            destination: self.destination.clone(),
            scanned: p.scanned,
            total: p.total,
            delivered: p.delivered,
            skipped: p.skipped,
            failed: p.failed,
            last_error: p.last_error,
            started_at: self.started_at.clone(),
            finished_at,
        }
    }

    /// Whether to go on, after noting `progress`.
    fn note(&self, progress: &Progress) -> bool {
        if let Ok(mut p) = self.progress.lock() {
            *p = progress.clone();
        }
        !self.cancel.load(Ordering::Relaxed)
    }

    fn finish(&self, report: Result<Progress, String>) {
        let now = ferry_event::format_time(jiff::Timestamp::now());
        let state = match report {
            Ok(p) => {
                let state = if p.cancelled { JobState::Cancelled } else { JobState::Done };
                if let Ok(mut progress) = self.progress.lock() {
                    *progress = p;
                }
                state
            }
            Err(error) => {
                tracing::warn!(job = self.id, %error, "a job failed");
                if let Ok(mut progress) = self.progress.lock() {
                    progress.last_error = Some(error);
                }
                JobState::Failed
            }
        };
        if let Ok(mut s) = self.state.lock() {
            *s = (state, Some(now));
        }
    }
}

/// The admin API's view of this process.
pub(crate) struct ProcessAdmin {
    logs: Logs,
    destinations: Vec<Arc<Handle>>,
    dead_letters: Arc<DeadLetters>,
    jobs: Mutex<Vec<Arc<RunningJob>>>,
    next_job: AtomicU64,
}

impl ProcessAdmin {
    pub(crate) fn new(logs: Logs, destinations: Vec<Arc<Handle>>, dead_letters: Arc<DeadLetters>) -> ProcessAdmin {
        ProcessAdmin { logs, destinations, dead_letters, jobs: Mutex::default(), next_job: AtomicU64::new(1) }
    }

    fn start_job(&self, kind: JobKind, destination: Option<String>) -> Arc<RunningJob> {
        let job = Arc::new(RunningJob {
            id: self.next_job.fetch_add(1, Ordering::Relaxed),
            kind,
            destination,
            started_at: ferry_event::format_time(jiff::Timestamp::now()),
            progress: Mutex::default(),
            state: Mutex::new((JobState::Running, None)),
            cancel: AtomicBool::new(false),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            // Keep the last 100.
            if jobs.len() >= 100 {
                jobs.remove(0);
            }
            jobs.push(job.clone());
        }
        job
    }

    fn find_job(&self, id: u64) -> Result<Arc<RunningJob>, AdminError> {
        let job = self.jobs.lock().ok().and_then(|j| j.iter().find(|j| j.id == id).cloned());
        job.ok_or_else(|| AdminError::NotFound(format!("no job {id}")))
    }
}

/// The dead letter store's filter from the API's (times in ISO-8601) or the command
/// line's (`parse` reads each time as that caller takes it).
pub(crate) fn store_filter(
    filter: &DeadLetterFilter,
    parse: impl Fn(&str) -> Option<jiff::Timestamp>,
) -> Result<Filter, AdminError> {
    let time = |text: &Option<String>, name: &str| -> Result<Option<String>, AdminError> {
        let Some(text) = text.as_deref() else { return Ok(None) };
        let Some(time) = parse(text) else {
            return Err(AdminError::Invalid {
                code: "invalid_filter",
                message: format!("`{name}` is not a time: {text:?}"),
            });
        };
        Ok(Some(ferry_event::format_time(time)))
    };
    Ok(Filter {
        destination: filter.destination.clone(),
        error: filter.error.clone(),
        event: filter.event.clone(),
        since: time(&filter.since, "since")?,
        until: time(&filter.until, "until")?,
        include_redriven: filter.all,
        limit: filter.limit,
    })
}

/// A dead letter as the admin API and `ferry dlq` show it (its stored event only with
/// `with_payload`).
pub(crate) fn dead_letter_view(letter: &DeadLetter, with_payload: bool) -> DeadLetterView {
    let payload = with_payload.then(|| {
        serde_json::from_str(&letter.payload).unwrap_or_else(|_| serde_json::Value::String(letter.payload.clone()))
    });
    DeadLetterView {
        id: letter.id,
        destination: letter.destination.clone(),
        position: letter.position,
        message_id: letter.message_id.clone(),
        kind: letter.kind.clone(),
        event: letter.event.clone(),
        source_id: letter.source_id.clone(),
        received_at: letter.received_at.clone(),
        first_attempt_at: letter.first_attempt_at.clone(),
        dead_at: letter.dead_at.clone(),
        reason: letter.reason.clone(),
        attempts: letter.attempts.iter().map(|a| TimedError { at: a.at.clone(), error: a.error.clone() }).collect(),
        redriven_at: letter.redriven_at.clone(),
        redrive_attempts: letter.redrive_attempts,
        payload,
    }
}

/// A quarantine record as the admin API shows it (the record as JSON when it is).
fn quarantine_item(offset: u64, record: &[u8]) -> QuarantineItem {
    let record = serde_json::from_slice(record)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(record).into_owned()));
    QuarantineItem { offset, record }
}

/// Run blocking work of the dead letter store on a blocking thread.
async fn in_store<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ferry_delivery::dead_letter::DeadLetterError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work).await.map_err(AdminError::internal)?.map_err(AdminError::internal)
}

impl Admin for ProcessAdmin {
    fn destinations(&self) -> BoxFuture<'_, Result<DestinationList, AdminError>> {
        Box::pin(async move {
            let letters = self.dead_letters.clone();
            let dead: std::collections::HashMap<String, u64> =
                in_store(move || letters.counts()).await?.into_iter().collect();
            let destinations = self
                .destinations
                .iter()
                .map(|h| {
                    let s = &h.status;
                    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    let lag = h.lag();
                    let last_error = s.last_error.lock().ok().and_then(|e| e.clone());
                    DestinationState {
                        name: h.name.clone(),
                        kind: h.kind.to_owned(),
                        target: h.target.clone(),
                        position: get(&s.position),
                        lag_events: lag.events,
                        lag_seconds: lag.seconds,
                        delivered: get(&s.delivered),
                        filtered: get(&s.filtered),
                        skipped: get(&s.skipped),
                        rejected: get(&s.rejected),
                        dead_lettered: get(&s.dead_lettered),
                        retried: get(&s.retried),
                        retrying: s.retrying.load(Ordering::Relaxed),
                        last_error: last_error.map(|(at, error)| TimedError { at, error }),
                        dead_letters: dead.get(&h.name).copied().unwrap_or(0),
                    }
                })
                .collect();
            Ok(DestinationList { destinations })
        })
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<DeadLetterList, AdminError>> {
        Box::pin(async move {
            let mut filter = store_filter(&filter, ferry_event::parse_time)?;
            filter.limit = Some(filter.limit.unwrap_or(100).min(1000));
            let dead_letters = self.dead_letters.clone();
            let letters = in_store(move || dead_letters.list(&filter)).await?;
            Ok(DeadLetterList { dead_letters: letters.iter().map(|l| dead_letter_view(l, false)).collect() })
        })
    }

    fn dead_letter(&self, id: i64) -> BoxFuture<'_, Result<DeadLetterView, AdminError>> {
        Box::pin(async move {
            let dead_letters = self.dead_letters.clone();
            let letter = in_store(move || dead_letters.get(id)).await?;
            let letter = letter.ok_or_else(|| AdminError::NotFound(format!("no dead letter {id}")))?;
            Ok(dead_letter_view(&letter, true))
        })
    }

    fn redrive(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async move {
            let filter = store_filter(&filter, ferry_event::parse_time)?;
            let job = self.start_job(JobKind::Redrive, filter.destination.clone());
            let destinations: Vec<(String, Arc<dyn Destination>)> =
                self.destinations.iter().map(|h| (h.name.clone(), h.destination.clone())).collect();
            let store = self.dead_letters.clone();
            let running = job.clone();
            tokio::spawn(async move {
                let lookup = |name: &str| destinations.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone());
                let report = ferry_delivery::redrive(&store, &filter, &lookup, 500, &mut |p| running.note(p)).await;
                running.finish(report.map_err(|e| e.to_string()));
            });
            Ok(job.view())
        })
    }

    fn quarantine(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<QuarantinePage, AdminError>> {
        Box::pin(async move {
            let records = self.logs.quarantine.read(from, limit).await.map_err(AdminError::internal)?;
            let next = records.last().map_or(from, |(offset, _)| offset + 1);
            let items = records.iter().map(|(offset, record)| quarantine_item(*offset, record)).collect();
            Ok(QuarantinePage { items, next })
        })
    }

    fn quarantine_item(&self, offset: u64) -> BoxFuture<'_, Result<QuarantineItem, AdminError>> {
        Box::pin(async move {
            let records = self.logs.quarantine.read(offset, 1).await.map_err(AdminError::internal)?;
            let found = records.first().filter(|(o, _)| *o == offset);
            let (offset, record) =
                found.ok_or_else(|| AdminError::NotFound(format!("no quarantined item at offset {offset}")))?;
            Ok(quarantine_item(*offset, record))
        })
    }

    fn start_replay(&self, request: ReplayStart) -> BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async move {
            let invalid = |message: String| AdminError::Invalid { code: "invalid_replay", message };
            let Some(handle) = self.destinations.iter().find(|h| h.name == request.destination).cloned() else {
                let names: Vec<&str> = self.destinations.iter().map(|h| h.name.as_str()).collect();
                return Err(invalid(format!(
                    "no destination named {:?}; configured: {}",
                    request.destination,
                    names.join(", ")
                )));
            };
            let time = |text: &str, name: &str| {
                ferry_event::parse_time(text).ok_or_else(|| invalid(format!("`{name}` is not an iso-8601 time")))
            };
            let since = time(&request.since, "since")?;
            let until = request.until.as_deref().map(|u| time(u, "until")).transpose()?;
            if until.is_some_and(|u| u <= since) {
                return Err(invalid("`until` must be later than `since`".to_owned()));
            }
            let events = self.logs.events.clone();
            let job = self.start_job(JobKind::Replay, Some(handle.name.clone()));
            let running = job.clone();
            tokio::spawn(async move {
                let request = ReplayRequest {
                    destination: handle.name.clone(),
                    since,
                    until,
                    batch_events: handle.batch_events.max(1),
                    retries: 5,
                    backoff: handle.backoff,
                };
                let destination = handle.destination.as_ref();
                let report = ferry_delivery::replay(&*events, destination, &request, &mut |p| running.note(p)).await;
                running.finish(report.map_err(|e| e.to_string()));
            });
            Ok(job.view())
        })
    }

    fn jobs(&self) -> BoxFuture<'_, Result<JobList, AdminError>> {
        let jobs = self.jobs.lock().map(|j| j.iter().map(|j| j.view()).collect()).unwrap_or_default();
        Box::pin(async move { Ok(JobList { jobs }) })
    }

    fn job(&self, id: u64) -> BoxFuture<'_, Result<Job, AdminError>> {
        let job = self.find_job(id).map(|j| j.view());
        Box::pin(async move { job })
    }

    fn cancel_job(&self, id: u64) -> BoxFuture<'_, Result<Job, AdminError>> {
        let job = self.find_job(id).map(|job| {
            job.cancel.store(true, Ordering::Relaxed);
            job.view()
        });
        Box::pin(async move { job })
    }
}
