//! Warehouses in Segment's schema: [`SqliteWarehouse`] (the embedded default) and
//! [`PostgresWarehouse`]. The rules (tables, columns, names, types, discards) are in
//! `plan`, shared by both; each backend turns a plan into one transaction.
//!
//! A batch loads in one transaction per backend: either every row of it is in, or none.
//! Rows are keyed by message id and inserted only when absent, so loading the same events
//! again (a replay, a redelivery after a crash) leaves one row each. When a transaction
//! fails for a reason that is not transient (a value the database refuses), the batch is
//! split in halves and each loaded on its own, down to the single event that is then
//! rejected, so one bad event never holds back the rest.

mod flatten;
mod naming;
mod plan;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use postgres::{PostgresConfig, PostgresWarehouse};
pub use sqlite::{SqliteConfig, SqliteWarehouse};

use crate::settings::{Defaults, StartAt, TimeoutMs};
use crate::{Event, Outcome};

/// Both warehouses load micro-batches once a second, from the log's retained history on.
pub(crate) const DEFAULTS: Defaults = Defaults {
    batch_events: 10_000,
    batch_bytes: 32 << 20,
    linger: Duration::from_secs(1),
    start: StartAt::Beginning,
    send_timeout: Duration::from_secs(60),
    timeout_ms: TimeoutMs::Send,
};

/// Why a load (or a connection check) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The database is unreachable, busy, or out of space: try again later.
    #[error("{0}")]
    Transient(String),
    /// The database refused the data: split the batch to find the event.
    #[error("{0}")]
    Data(String),
}

/// The schema / table prefix / partition name of a source id (its snake_case).
pub(crate) fn namespace_of(source_id: &str) -> String {
    naming::namespace(source_id)
}

/// Segment's snake_case of a name (for destinations that need names of that shape).
pub(crate) fn snake_case_of(name: &str) -> String {
    naming::snake_case(name).into_owned()
}

/// The `on conflict` clause of the `users` upsert: the newer identify's traits win column
/// by column, an older one only fills columns the row does not have yet, and `received_at`
/// keeps the later time. `existing` names the row already there (the table, or its alias)
/// and `greatest` the SQL function for the larger of two values (`max` in SQLite,
/// `greatest` in PostgreSQL).
pub(crate) fn users_upsert(columns: &[(String, plan::ColumnType)], existing: &str, greatest: &str) -> String {
    let newer = format!("excluded.received_at >= {existing}.received_at");
    let sets: Vec<String> = columns
        .iter()
        .filter(|(c, _)| c != "id")
        .map(|(c, _)| {
            let c = naming::quote(c);
            if c == "\"received_at\"" {
                format!("{c} = {greatest}(excluded.{c}, {existing}.{c})")
            } else {
                format!(
                    "{c} = case when {newer} then coalesce(excluded.{c}, {existing}.{c}) else coalesce({existing}.{c}, excluded.{c}) end"
                )
            }
        })
        .collect();
    format!("on conflict (\"id\") do update set {}", sets.join(", "))
}

/// Events grouped by their source's namespace, in first-seen order within each.
pub(crate) fn by_namespace(events: &[Arc<Event>]) -> BTreeMap<String, Vec<Arc<Event>>> {
    let mut groups: BTreeMap<String, Vec<Arc<Event>>> = BTreeMap::new();
    let mut last: Option<(&str, String)> = None;
    for event in events {
        let namespace = match &last {
            Some((source, namespace)) if *source == event.source_id => namespace.clone(),
            _ => {
                let namespace = naming::namespace(&event.source_id);
                last = Some((&event.source_id, namespace.clone()));
                namespace
            }
        };
        groups.entry(namespace).or_default().push(event.clone());
    }
    groups
}

/// Load `events` with `load` (one transaction per call); on a data error, split in halves
/// until the refused events are found and rejected. One outcome per event, in order.
pub(crate) async fn load_bisecting<F, Fut>(events: &[Arc<Event>], load: &F) -> Vec<Outcome>
where
    F: Fn(Vec<Arc<Event>>) -> Fut,
    Fut: Future<Output = Result<(), LoadError>>,
{
    let mut outcomes = vec![Outcome::Delivered; events.len()];
    // A stack of (start, end) ranges still to load, so no recursion of futures is needed.
    let mut pending = vec![(0, events.len())];
    while let Some((start, end)) = pending.pop() {
        if start == end {
            continue;
        }
        match load(events[start..end].to_vec()).await {
            Ok(()) => {}
            Err(LoadError::Transient(error)) => {
                for outcome in &mut outcomes[start..end] {
                    *outcome = Outcome::retry(error.clone());
                }
            }
            Err(LoadError::Data(error)) if end - start == 1 => {
                outcomes[start] = Outcome::reject(format!("the warehouse refused the event: {error}"));
            }
            Err(LoadError::Data(_)) => {
                let middle = start + (end - start) / 2;
                pending.push((middle, end));
                pending.push((start, middle));
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, source: &str) -> Arc<Event> {
        let json = format!(
            r#"{{"type":"track","messageId":"{id}","userId":"u","event":"E","receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"{source}"}}"#
        );
        Arc::new(Event::decode(json.as_bytes()).unwrap())
    }

    #[test]
    fn bisecting_rejects_only_the_refused_event() {
        let events: Vec<_> = (0..9).map(|i| event(&format!("m{i}"), "web")).collect();
        let calls = std::sync::Mutex::new(0);
        let load = |batch: Vec<Arc<Event>>| {
            *calls.lock().unwrap() += 1;
            let bad = batch.iter().any(|e| e.message_id == "m6");
            async move { if bad { Err(LoadError::Data("bad value".into())) } else { Ok(()) } }
        };
        let outcomes =
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(load_bisecting(&events, &load));
        for (i, outcome) in outcomes.iter().enumerate() {
            if i == 6 {
                assert!(matches!(outcome, Outcome::Reject { reason } if reason.contains("bad value")), "{outcome:?}");
            } else {
                assert_eq!(*outcome, Outcome::Delivered, "event {i}");
            }
        }
        assert!(*calls.lock().unwrap() <= 2 * 4 + 1, "about two loads per halving");
    }

    #[test]
    fn transient_errors_retry_the_whole_batch() {
        let events: Vec<_> = (0..3).map(|i| event(&format!("m{i}"), "web")).collect();
        let load = |_: Vec<Arc<Event>>| async { Err(LoadError::Transient("connection refused".into())) };
        let outcomes =
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(load_bisecting(&events, &load));
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. })));
    }

    #[test]
    fn namespaces_group_sources() {
        let events = vec![event("a", "web"), event("b", "iOS App"), event("c", "web")];
        let groups = by_namespace(&events);
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["i_os_app", "web"]);
        assert_eq!(groups["web"].len(), 2);
    }
}
