//! The log as the admin API, `/metrics` and the CLI read it: the embedded event and
//! quarantine logs, or, in cluster mode, the JetStream stream and the destinations' shared
//! consumers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_delivery::replay::Records;
use ferry_log::Log;

#[derive(Clone)]
pub(crate) enum Logs {
    Embedded {
        events: Log,
        quarantine: Log,
    },
    Cluster {
        cluster: Box<ferry_nats::Cluster>,
        /// Each destination's shared consumer backlog (refreshed in the background).
        lags: Vec<(String, Arc<ferry_nats::Lag>)>,
    },
}

impl Logs {
    /// Quarantined items from position `from` on, at most `limit`.
    pub(crate) async fn quarantine(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        match self {
            Logs::Embedded { quarantine, .. } => {
                let log = quarantine.clone();
                tokio::task::spawn_blocking(move || log.read(from, limit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Logs::Cluster { cluster, .. } => {
                let records = cluster.quarantine().await?;
                records.read_async(from, limit).await.map_err(|e| e.to_string())
            }
        }
    }

    /// The events, for a replay (read with blocking calls on a multi-threaded runtime).
    pub(crate) async fn events(&self) -> Result<Arc<dyn Records>, String> {
        match self {
            Logs::Embedded { events, .. } => Ok(Arc::new(events.clone())),
            Logs::Cluster { cluster, .. } => Ok(Arc::new(cluster.events().await?)),
        }
    }

    /// A destination's backlog: events not completed and the age of the oldest one in
    /// seconds, given the worker's position (embedded) or its shared consumer (cluster).
    pub(crate) fn lag(&self, destination: &str, position: u64) -> (u64, f64) {
        match self {
            Logs::Embedded { events, .. } => {
                let end = events.next_offset();
                (end.saturating_sub(position), lag_seconds(events, position, end))
            }
            Logs::Cluster { lags, .. } => {
                let Some((_, lag)) = lags.iter().find(|(name, _)| name == destination) else { return (0, 0.0) };
                let events = lag.pending.load(Ordering::Relaxed) + lag.leased.load(Ordering::Relaxed);
                (events, lag.oldest_ms.load(Ordering::Relaxed) as f64 / 1000.0)
            }
        }
    }
}

/// Seconds since the oldest uncompleted event was received (0 when none is pending).
pub(crate) fn lag_seconds(log: &Log, position: u64, end: u64) -> f64 {
    if position >= end {
        return 0.0;
    }
    let Ok(records) = log.read(position, 1) else { return 0.0 };
    let Some((_, record)) = records.first() else { return 0.0 };
    let Ok(event) = ferry_event::stored::Event::decode(record) else { return 0.0 };
    let age = jiff::Timestamp::now().as_millisecond() - event.received_at.as_millisecond();
    age.max(0) as f64 / 1000.0
}
