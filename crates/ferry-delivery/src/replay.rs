//! Replay (send a time range of the log to one destination again) and redrive (send dead
//! letters again). Both run beside a live `ferry serve`: they read the log (any
//! [`Reader`]: the live log, a log directory read beside the server, or the stream) and
//! talk to the destination directly, and idempotent destinations (the warehouses, keyed
//! by message id) absorb what was delivered before.

use std::sync::Arc;
use std::time::Duration;

use ferry_destinations::{Destination, Event, Outcome};
use ferry_log_contract::Reader;

use crate::dead_letter::{DeadLetterError, DeadLetters, Filter};
use crate::retry::{Backoff, unit_draw};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The destination's configured name (for `integrations`).
    pub destination: String,
    /// Events whose `receivedAt` is at or after this...
    pub since: jiff::Timestamp,
    /// ...and before this (default: everything stored).
    pub until: Option<jiff::Timestamp>,
    pub batch_events: usize,
    /// Retry a batch this many times before counting its events as failed.
    pub retries: u32,
    pub backoff: Backoff,
}

/// How far a replay (or redrive) got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Records looked at (replay: log positions covered).
    pub scanned: u64,
    /// Records to look at in all, when known.
    pub total: u64,
    pub delivered: u64,
    /// Skipped: outside the time range, or switched off by `integrations`.
    pub skipped: u64,
    /// Not delivered: rejected, or still failing after the retries.
    pub failed: u64,
    /// The last failure, for the summary.
    pub last_error: Option<String>,
    /// The progress callback asked to stop.
    pub cancelled: bool,
}

/// Receive times are set as records are appended, so they rise with the position but
/// not strictly (concurrent requests); the search for the first position steps this much
/// further back, and the scan filters exactly.
const CLOCK_SLACK_MS: i64 = 60_000;

/// Re-send the events of a time range to `destination`, reporting progress after every
/// batch; `progress` returning `false` stops it (`cancelled`).
pub async fn replay(
    records: &dyn Reader,
    destination: &dyn Destination,
    request: &ReplayRequest,
    progress: &mut (dyn FnMut(&Progress) -> bool + Send),
) -> std::io::Result<Progress> {
    let since_ms = request.since.as_millisecond();
    let until_ms = request.until.map(|u| u.as_millisecond());
    let start = first_position_at(records, since_ms - CLOCK_SLACK_MS).await?;
    let end = records.end().await?;
    let mut report = Progress { total: end.saturating_sub(start), ..Progress::default() };
    let mut next = start;
    'scan: while next < end {
        let batch = records.read(next, request.batch_events.max(1)).await?;
        let Some(&(last, _)) = batch.last() else { break };
        let mut events = Vec::with_capacity(batch.len());
        for (position, record) in batch {
            if position >= end {
                break;
            }
            report.scanned = position + 1 - start;
            let Ok(event) = Event::decode(&record) else {
                report.failed += 1;
                report.last_error = Some(format!("undecodable log record at position {position}"));
                continue;
            };
            let at = event.received_at.as_millisecond();
            if until_ms.is_some_and(|u| at >= u + CLOCK_SLACK_MS) {
                send_with_retries(destination, &events, request, &mut report).await;
                break 'scan;
            }
            let in_range = at >= since_ms && until_ms.is_none_or(|u| at < u);
            if !in_range || (destination.follows_integrations() && !event.routes_to(&request.destination)) {
                report.skipped += 1;
                continue;
            }
            events.push(Arc::new(event));
        }
        send_with_retries(destination, &events, request, &mut report).await;
        next = last + 1;
        if !progress(&report) {
            report.cancelled = true;
            return Ok(report);
        }
    }
    report.scanned = report.total;
    progress(&report);
    Ok(report)
}

async fn send_with_retries(
    destination: &dyn Destination,
    events: &[Arc<Event>],
    request: &ReplayRequest,
    report: &mut Progress,
) {
    let mut pending: Vec<Arc<Event>> = events.to_vec();
    let mut failures = 0;
    while !pending.is_empty() {
        let outcomes = destination.send(&pending).await;
        let mut again = Vec::new();
        let mut after = None;
        for (event, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Skipped { .. } => report.skipped += 1,
                Outcome::Reject { reason } => {
                    report.failed += 1;
                    report.last_error = Some(reason);
                }
                Outcome::Retry { after: a, error } => {
                    after = after.max(a);
                    report.last_error = Some(error);
                    again.push(event);
                }
            }
        }
        pending = again;
        if pending.is_empty() {
            break;
        }
        failures += 1;
        if failures > request.retries {
            report.failed += pending.len() as u64;
            break;
        }
        tokio::time::sleep(request.backoff.delay(failures, unit_draw(), after).min(Duration::from_secs(60))).await;
    }
}

/// The first position whose record was received at or after `ms` (binary search over
/// the records' `receivedAt`).
async fn first_position_at(records: &dyn Reader, ms: i64) -> std::io::Result<u64> {
    let received = async |position: u64| -> std::io::Result<Option<(u64, i64)>> {
        let found = records.read(position, 1).await?;
        Ok(found.first().map(|(p, r)| (*p, Event::decode(r).map_or(i64::MIN, |e| e.received_at.as_millisecond()))))
    };
    let Some((mut low, first_ms)) = received(0).await? else { return Ok(0) };
    if first_ms >= ms {
        return Ok(low);
    }
    let mut high = records.end().await?;
    // Invariant: the record at `low` was received before `ms`; none at or after `high` is
    // known to be.
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        match received(middle).await? {
            Some((p, at)) if at < ms => low = p.max(middle),
            _ => high = middle,
        }
    }
    Ok(high)
}

/// Re-send the dead letters matching `filter`; delivered ones are marked redriven, the
/// others get the new attempt recorded and stay. `destinations` maps a name to its
/// destination (`None`: not configured any more; those are counted as failed).
/// `progress` returning `false` stops it after the current chunk.
pub async fn redrive(
    store: &DeadLetters,
    filter: &Filter,
    destinations: &(dyn Fn(&str) -> Option<Arc<dyn Destination>> + Sync),
    batch_events: usize,
    progress: &mut (dyn FnMut(&Progress) -> bool + Send),
) -> Result<Progress, DeadLetterError> {
    let letters = store.list(filter)?;
    let mut report = Progress { total: letters.len() as u64, ..Progress::default() };
    for chunk in letters.chunks(batch_events.max(1)) {
        let mut by_destination: std::collections::BTreeMap<&str, Vec<_>> = std::collections::BTreeMap::new();
        for letter in chunk {
            by_destination.entry(letter.destination.as_str()).or_default().push(letter);
        }
        let (mut delivered, mut failed) = (Vec::new(), Vec::new());
        for (name, letters) in by_destination {
            let Some(destination) = destinations(name) else {
                for letter in letters {
                    failed.push((letter.id, format!("destination {name} is not configured")));
                }
                continue;
            };
            let mut events = Vec::new();
            for letter in &letters {
                match Event::decode(letter.payload.as_bytes()) {
                    Ok(event) => events.push((letter.id, Arc::new(event))),
                    Err(e) => failed.push((letter.id, format!("undecodable: {e}"))),
                }
            }
            let batch: Vec<Arc<Event>> = events.iter().map(|(_, e)| e.clone()).collect();
            let outcomes = destination.send(&batch).await;
            for ((id, _), outcome) in events.iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered | Outcome::Skipped { .. } => delivered.push(*id),
                    Outcome::Retry { error, .. } => failed.push((*id, error)),
                    Outcome::Reject { reason } => failed.push((*id, reason)),
                }
            }
        }
        report.delivered += delivered.len() as u64;
        report.failed += failed.len() as u64;
        if let Some((_, error)) = failed.last() {
            report.last_error = Some(error.clone());
        }
        store.record_redrive(&delivered, &failed)?;
        report.scanned += chunk.len() as u64;
        if !progress(&report) {
            report.cancelled = true;
            break;
        }
    }
    Ok(report)
}
