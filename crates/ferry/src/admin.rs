//! The admin API's work in the embedded process: destinations and their workers, dead
//! letters, the quarantine, and replay and redrive jobs running in the background.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_api::BoxFuture;
use ferry_api::admin::{Admin, DeadLetterFilter, ReplayStart};
use ferry_delivery::{Backoff, DeadLetters, Filter, Progress, ReplayRequest, WorkerStatus};
use ferry_destinations::Destination;
use ferry_log_contract::Consumer;
use serde_json::{Value, json};

use crate::backend::Logs;

/// One running destination, as the admin API sees it.
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

/// A replay or a redrive.
struct Job {
    id: u64,
    kind: &'static str,
    destination: Option<String>,
    started_at: String,
    progress: Mutex<Progress>,
    /// `running`, `done`, `failed`, `cancelled`.
    state: Mutex<(&'static str, Option<String>)>,
    cancel: AtomicBool,
}

impl Job {
    fn json(&self) -> Value {
        let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let (state, finished_at) = self.state.lock().map(|s| s.clone()).unwrap_or(("running", None));
        json!({
            "id": self.id,
            "kind": self.kind,
            "state": state,
            "destination": self.destination,
            "scanned": p.scanned,
            "total": p.total,
            "delivered": p.delivered,
            "skipped": p.skipped,
            "failed": p.failed,
            "last_error": p.last_error,
            "started_at": self.started_at,
            "finished_at": finished_at,
        })
    }

    fn finish(&self, report: Result<Progress, String>) {
        let now = ferry_event::format_time(jiff::Timestamp::now());
        let state = match report {
            Ok(p) => {
                let state = if p.cancelled { "cancelled" } else { "done" };
                if let Ok(mut progress) = self.progress.lock() {
                    *progress = p;
                }
                state
            }
            Err(error) => {
                if let Ok(mut progress) = self.progress.lock() {
                    progress.last_error = Some(error);
                }
                "failed"
            }
        };
        if let Ok(mut s) = self.state.lock() {
            *s = (state, Some(now));
        }
    }
}

/// The admin API's view of this process.
pub(crate) struct ProcessAdmin {
    pub(crate) logs: Logs,
    pub(crate) destinations: Vec<Arc<Handle>>,
    pub(crate) dead_letters: Arc<DeadLetters>,
    jobs: Mutex<Vec<Arc<Job>>>,
    next_job: AtomicU64,
}

impl ProcessAdmin {
    pub(crate) fn new(logs: Logs, destinations: Vec<Arc<Handle>>, dead_letters: Arc<DeadLetters>) -> ProcessAdmin {
        ProcessAdmin { logs, destinations, dead_letters, jobs: Mutex::default(), next_job: AtomicU64::new(1) }
    }

    fn job(&self, kind: &'static str, destination: Option<String>) -> Arc<Job> {
        let job = Arc::new(Job {
            id: self.next_job.fetch_add(1, Ordering::Relaxed),
            kind,
            destination,
            started_at: ferry_event::format_time(jiff::Timestamp::now()),
            progress: Mutex::default(),
            state: Mutex::new(("running", None)),
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

    fn filter(filter: &DeadLetterFilter) -> Result<Filter, String> {
        let time = |t: &Option<String>, name: &str| -> Result<Option<String>, String> {
            t.as_deref()
                .map(|t| {
                    ferry_event::parse_time(t)
                        .map(ferry_event::format_time)
                        .ok_or(format!("`{name}` is not an iso-8601 time"))
                })
                .transpose()
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
}

fn ok<T: Send + 'static>(value: T) -> BoxFuture<'static, Result<T, String>> {
    Box::pin(async move { Ok(value) })
}

impl Admin for ProcessAdmin {
    fn destinations(&self) -> BoxFuture<'_, Result<Value, String>> {
        let dead: std::collections::HashMap<String, u64> =
            self.dead_letters.counts().unwrap_or_default().into_iter().collect();
        let list: Vec<Value> = self
            .destinations
            .iter()
            .map(|h| {
                let s = &h.status;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let position = get(&s.position);
                let backlog = h.consumer.backlog();
                let lag_events = backlog.end.map_or(backlog.records, |end| end.saturating_sub(position));
                let lag_seconds = backlog.oldest.as_secs_f64();
                let last_error = s
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .map(|(at, error)| json!({"at": at, "error": error}));
                json!({
                    "name": h.name,
                    "type": h.kind,
                    "target": h.target,
                    "position": position,
                    "lag_events": lag_events,
                    "lag_seconds": lag_seconds,
                    "delivered": get(&s.delivered),
                    "filtered": get(&s.filtered),
                    "skipped": get(&s.skipped),
                    "rejected": get(&s.rejected),
                    "dead_lettered": get(&s.dead_lettered),
                    "retried": get(&s.retried),
                    "retrying": s.retrying.load(Ordering::Relaxed),
                    "last_error": last_error,
                    "dead_letters": dead.get(&h.name).copied().unwrap_or(0),
                })
            })
            .collect();
        ok(json!({ "destinations": list }))
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let mut filter = Self::filter(&filter)?;
            filter.limit = Some(filter.limit.unwrap_or(100).min(1000));
            let letters = self.dead_letters.list(&filter).map_err(|e| e.to_string())?;
            let list: Vec<Value> = letters.iter().map(|l| crate::cmd::dlq::to_json(l, false)).collect();
            Ok(json!({ "dead_letters": list }))
        })
    }

    fn dead_letter(&self, id: i64) -> BoxFuture<'_, Result<Option<Value>, String>> {
        Box::pin(async move {
            let letter = self.dead_letters.get(id).map_err(|e| e.to_string())?;
            Ok(letter.map(|l| crate::cmd::dlq::to_json(&l, true)))
        })
    }

    fn redrive(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let filter = Self::filter(&filter)?;
            let job = self.job("redrive", filter.destination.clone());
            let destinations: Vec<(String, Arc<dyn Destination>)> =
                self.destinations.iter().map(|h| (h.name.clone(), h.destination.clone())).collect();
            let store = self.dead_letters.clone();
            let running = job.clone();
            tokio::spawn(async move {
                let lookup = |name: &str| destinations.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone());
                let report = ferry_delivery::redrive(&store, &filter, &lookup, 500, &mut |p| {
                    if let Ok(mut progress) = running.progress.lock() {
                        *progress = p.clone();
                    }
                    !running.cancel.load(Ordering::Relaxed)
                })
                .await;
                running.finish(report.map_err(|e| e.to_string()));
            });
            Ok(job.json())
        })
    }

    fn quarantine(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let records = self.logs.quarantine.read(from, limit).await.map_err(|e| e.to_string())?;
            let next = records.last().map_or(from, |(offset, _)| offset + 1);
            let items: Vec<Value> = records.iter().map(|(offset, record)| quarantine_json(*offset, record)).collect();
            Ok(json!({ "items": items, "next": next }))
        })
    }

    fn quarantine_item(&self, offset: u64) -> BoxFuture<'_, Result<Option<Value>, String>> {
        Box::pin(async move {
            let records = self.logs.quarantine.read(offset, 1).await.map_err(|e| e.to_string())?;
            Ok(records.first().filter(|(o, _)| *o == offset).map(|(o, record)| quarantine_json(*o, record)))
        })
    }

    fn start_replay(&self, request: ReplayStart) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let Some(handle) = self.destinations.iter().find(|h| h.name == request.destination).cloned() else {
                let names: Vec<&str> = self.destinations.iter().map(|h| h.name.as_str()).collect();
                return Err(format!(
                    "no destination named {:?}; configured: {}",
                    request.destination,
                    names.join(", ")
                ));
            };
            let since = ferry_event::parse_time(&request.since).ok_or("`since` is not an iso-8601 time")?;
            let until = request
                .until
                .as_deref()
                .map(|u| ferry_event::parse_time(u).ok_or("`until` is not an iso-8601 time"))
                .transpose()?;
            if until.is_some_and(|u| u <= since) {
                return Err("`until` must be later than `since`".into());
            }
            let records = self.logs.events.clone();
            let job = self.job("replay", Some(handle.name.clone()));
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
                let report = ferry_delivery::replay(&*records, handle.destination.as_ref(), &request, &mut |p| {
                    if let Ok(mut progress) = running.progress.lock() {
                        *progress = p.clone();
                    }
                    !running.cancel.load(Ordering::Relaxed)
                })
                .await;
                running.finish(report.map_err(|e| e.to_string()));
            });
            Ok(job.json())
        })
    }

    fn jobs(&self) -> BoxFuture<'_, Result<Value, String>> {
        let jobs: Vec<Value> = self.jobs.lock().map(|j| j.iter().map(|j| j.json()).collect()).unwrap_or_default();
        ok(json!({ "jobs": jobs }))
    }

    fn job(&self, id: u64) -> BoxFuture<'_, Result<Option<Value>, String>> {
        let job = self.jobs.lock().ok().and_then(|j| j.iter().find(|j| j.id == id).map(|j| j.json()));
        ok(job)
    }

    fn cancel_job(&self, id: u64) -> BoxFuture<'_, Result<Option<Value>, String>> {
        let job = self.jobs.lock().ok().and_then(|j| j.iter().find(|j| j.id == id).cloned());
        if let Some(job) = &job {
            job.cancel.store(true, Ordering::Relaxed);
        }
        ok(job.map(|j| j.json()))
    }
}

/// `{"offset", "record"}` of a quarantine record (the record as JSON when it is).
fn quarantine_json(offset: u64, record: &[u8]) -> Value {
    let record =
        serde_json::from_slice(record).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(record).into_owned()));
    json!({ "offset": offset, "record": record })
}
