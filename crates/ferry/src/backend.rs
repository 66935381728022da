//! The one place that knows which log ferry runs on: the embedded log in `data_dir`, or
//! (cluster mode, `log.backend = "nats"`) the JetStream stream. Everything else sees the
//! log contract's [`Log`] and [`Reader`]: ingestion through the one [`LogIngest`],
//! delivery, replay, the admin API and the commands.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_api::{BoxFuture, Ingest, IngestBatch, IngestReceipt};
use ferry_log::{LogConfig, SyncPolicy};
use ferry_log_contract::{AppendError, Appended, Log, Reader};
use ferry_metrics::Writer;
use ferry_nats::{Auth, Cluster, NatsConfig, Tls};

use crate::config::{self, Backend, Config};

/// The events and the quarantine, in whichever log the configuration names.
#[derive(Clone)]
pub(crate) struct Logs {
    pub(crate) events: Arc<dyn Log>,
    pub(crate) quarantine: Arc<dyn Log>,
    /// The log's own metrics: the embedded log's writers, or this node's JetStream traffic.
    pub(crate) render: Arc<dyn Fn(&mut Writer) + Send + Sync>,
    /// Whether the log can be reached at all (JetStream: connected), whatever its budget.
    pub(crate) reachable: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Open the configured log for `ferry serve`. `consumers` are the destinations this
/// process delivers to: an embedded log forgets the cursors of any other (they would hold
/// back its retention forever).
pub(crate) async fn open(config: &Config, consumers: &[String], tap: &Arc<ferry_tap::Tap>) -> anyhow::Result<Logs> {
    match config.log.backend {
        Backend::Embedded => open_embedded(config, consumers),
        Backend::Nats => {
            let cluster = Cluster::connect(nats_config(config)).await?;
            cluster.ensure_stream().await?;
            cluster.bridge_tap(tap.clone());
            let events = Arc::new(cluster.events().await?);
            let quarantine = Arc::new(cluster.quarantine().await?);
            let connected = cluster.clone();
            let reachable = Arc::new(move || connected.connected());
            let render = Arc::new(move |out: &mut Writer| ferry_nats::telemetry::render(out, &cluster));
            Ok(Logs { events, quarantine, render, reachable })
        }
    }
}

fn open_embedded(config: &Config, consumers: &[String]) -> anyhow::Result<Logs> {
    let (events, report) = ferry_log::Log::open(log_config(config, "log"))
        .with_context(|| format!("cannot open the event log in {}", config.data_dir.display()))?;
    if report.truncated_bytes > 0 {
        tracing::warn!(bytes = report.truncated_bytes, "event log had a torn tail after a crash; truncated it");
    }
    // Quarantine records carry no dedupe key: its index needs no room (at the events
    // log's size it would hold 10 MB of memory for nothing).
    let quarantine_config = LogConfig { dedupe_max_ids: 1000, ..log_config(config, "quarantine") };
    let (quarantine, report) = ferry_log::Log::open(quarantine_config)
        .with_context(|| format!("cannot open the quarantine log in {}", config.data_dir.display()))?;
    if report.truncated_bytes > 0 {
        tracing::warn!(bytes = report.truncated_bytes, "quarantine log had a torn tail after a crash; truncated it");
    }
    let keep: std::collections::HashSet<String> =
        consumers.iter().flat_map(|name| [ferry_log::cursor_name(name), ferry_log::batch_cursor_name(name)]).collect();
    for (cursor, position) in events.cursors() {
        if (cursor.starts_with("delivery.") || cursor.starts_with("delivery-batch.")) && !keep.contains(&cursor) {
            tracing::warn!(cursor, position, "removing the cursor of a destination that is no longer configured");
            events.remove_cursor(&cursor).with_context(|| format!("cannot remove cursor {cursor}"))?;
        }
    }
    let logs = (events.clone(), quarantine.clone());
    let render = Arc::new(move |out: &mut Writer| {
        ferry_log::telemetry::render(out, &[("events", &logs.0), ("quarantine", &logs.1)]);
    });
    Ok(Logs { events: Arc::new(events), quarantine: Arc::new(quarantine), render, reachable: Arc::new(|| true) })
}

/// The embedded log's settings from `[log]`, for the log in `<data_dir>/<sub_dir>`.
pub(crate) fn log_config(config: &Config, sub_dir: &str) -> LogConfig {
    let sync = match config.log.sync {
        config::Sync::Always => SyncPolicy::Always,
        config::Sync::Interval => SyncPolicy::Interval(config.sync_interval()),
        config::Sync::Never => SyncPolicy::Never,
    };
    LogConfig {
        dir: config.data_dir.join(sub_dir),
        sync,
        retention: Duration::from_secs(config.log.retention_hours * 3600),
        max_disk_bytes: config.log.max_disk_bytes,
        dedupe_window: Duration::from_secs(config.log.dedupe_window_hours * 3600),
        dedupe_max_ids: config.log.dedupe_memory_ids,
        ..LogConfig::default()
    }
}

/// Which log a command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Events,
    Quarantine,
}

/// The events or the quarantine for a command, read beside a running server; `None` when
/// an embedded log was never written.
pub(crate) async fn reader(config: &Config, which: Which) -> anyhow::Result<Option<Box<dyn Reader>>> {
    match config.log.backend {
        Backend::Embedded => {
            let dir = config.data_dir.join(match which {
                Which::Events => "log",
                Which::Quarantine => "quarantine",
            });
            if !dir.exists() {
                return Ok(None);
            }
            let view = ferry_log::ReadOnly::open(&dir)
                .with_context(|| format!("cannot read the log in {}; is --data-dir right?", dir.display()))?;
            Ok(Some(Box::new(view)))
        }
        Backend::Nats => {
            let cluster = Cluster::connect(nats_config(config)).await?;
            let subject = match which {
                Which::Events => cluster.events().await,
                Which::Quarantine => cluster.quarantine().await,
            };
            let subject = subject.with_context(|| format!("cannot read stream {}", config.nats.stream))?;
            Ok(Some(Box::new(subject)))
        }
    }
}

/// `ferry-nats`'s configuration from `[nats]` and `[log]`.
fn nats_config(config: &Config) -> NatsConfig {
    let n = &config.nats;
    let auth = match (&n.token, &n.user, &n.password) {
        (Some(token), _, _) => Auth::Token(token.clone()),
        (None, Some(user), Some(password)) => Auth::UserPassword(user.clone(), password.clone()),
        _ => Auth::None,
    };
    NatsConfig {
        urls: n.urls.clone(),
        stream: n.stream.clone(),
        subject_prefix: n.subject_prefix.clone(),
        replicas: n.replicas,
        max_age: Duration::from_secs(n.max_age_hours * 3600),
        max_bytes: i64::try_from(n.max_bytes).unwrap_or(i64::MAX),
        duplicate_window: Duration::from_secs(config.log.dedupe_window_hours * 3600),
        publish_timeout: Duration::from_millis(n.publish_timeout_ms),
        ack_wait: Duration::from_millis(n.ack_wait_ms),
        node: n.node.clone().unwrap_or_else(default_node),
        auth,
        tls: Tls {
            ca_file: n.tls_ca_file.clone(),
            cert_file: n.tls_cert_file.clone(),
            key_file: n.tls_key_file.clone(),
            require: n.require_tls,
        },
    }
}

/// The host name and the process id: distinct for every node, also several on one host.
fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The one `Ingest`: a request's events and quarantined items go to their logs at once,
/// and the answer waits until both are durable.
pub(crate) struct LogIngest {
    logs: Logs,
    /// Why this node takes no events (a cluster node run with `--role worker`).
    refuse: Option<&'static str>,
}

impl LogIngest {
    pub(crate) fn new(logs: Logs) -> Arc<LogIngest> {
        Arc::new(LogIngest { logs, refuse: None })
    }

    /// A node that serves the admin API and metrics but takes no events.
    pub(crate) fn refusing(logs: Logs, reason: &'static str) -> Arc<LogIngest> {
        Arc::new(LogIngest { logs, refuse: Some(reason) })
    }

    async fn ingest_inner(&self, batch: IngestBatch) -> Result<IngestReceipt, AppendError> {
        if let Some(reason) = self.refuse {
            return Err(AppendError::Unavailable { retry_after: Duration::from_secs(5), reason: reason.to_owned() });
        }
        let IngestBatch { events, quarantine } = batch;
        let sizes: Vec<usize> = events.iter().map(|e| e.payload.len()).collect();
        let (events, quarantine) =
            tokio::join!(append(&*self.logs.events, events), append(&*self.logs.quarantine, quarantine));
        quarantine?;
        let duplicate: Vec<bool> = events?.iter().map(|a| *a == Appended::Duplicate).collect();
        let duplicates = duplicate.iter().filter(|d| **d).count();
        let duplicate_bytes = duplicate.iter().zip(&sizes).filter(|(d, _)| **d).map(|(_, n)| n).sum();
        Ok(IngestReceipt { duplicates, duplicate_bytes, duplicate })
    }
}

/// Append unless there is nothing to append.
async fn append(log: &dyn Log, records: Vec<ferry_log_contract::Record>) -> Result<Vec<Appended>, AppendError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    log.append(records).await
}

impl Ingest for LogIngest {
    fn ingest(&self, batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, AppendError>> {
        Box::pin(self.ingest_inner(batch))
    }

    /// A node that takes events is ready when both logs can take them; one that refuses
    /// them (a worker) while it reaches its log.
    fn ready(&self) -> bool {
        match self.refuse {
            Some(_) => (self.logs.reachable)(),
            None => self.logs.events.writable() && self.logs.quarantine.writable(),
        }
    }
}
