//! Cluster mode's side of the binary: the configuration handed to `ferry-nats`, the
//! collector's `Ingest` over the stream, and the background look at the stream and the
//! consumers that `/metrics` and the admin API show.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::{BoxFuture, Ingest, IngestBatch, IngestError, IngestReceipt};
use ferry_nats::{Auth, Cluster, ConsumerFeed, NatsConfig, PublishFailure, Tls};

use crate::config::Config;

/// How often the stream's size and the consumers' backlogs are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `ferry-nats`'s configuration from `[nats]` and `[log]`.
pub(crate) fn nats_config(config: &Config) -> NatsConfig {
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

/// One subject of the configured stream, for a command: the events, or the quarantine.
pub(crate) async fn stream_records(config: &Config, quarantine: bool) -> anyhow::Result<ferry_nats::StreamRecords> {
    let cluster = Cluster::connect(nats_config(config)).await?;
    let records = if quarantine { cluster.quarantine().await } else { cluster.events().await };
    records.map_err(|e| anyhow::anyhow!("cannot read stream {}: {e}", config.nats.stream))
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

/// A collector's `Ingest`: publish to the stream, answer once JetStream acknowledged all.
pub(crate) struct ClusterIngest {
    cluster: Cluster,
}

impl ClusterIngest {
    pub(crate) fn new(cluster: Cluster) -> Arc<ClusterIngest> {
        Arc::new(ClusterIngest { cluster })
    }

    async fn ingest_inner(&self, batch: IngestBatch) -> Result<IngestReceipt, IngestError> {
        let sizes: Vec<usize> = batch.events.iter().map(|e| e.payload.len()).collect();
        let events = batch
            .events
            .into_iter()
            .map(|e| (String::from_utf8_lossy(&e.key.unwrap_or_default()).into_owned(), e.payload))
            .collect();
        let quarantine = batch.quarantine.into_iter().map(|r| r.payload).collect();
        let duplicate = self.cluster.publish(events, quarantine).await.map_err(|failure| {
            let retry_after = self.cluster.retry_after();
            match failure {
                PublishFailure::Full(_) => IngestError::Overloaded { retry_after },
                PublishFailure::Unavailable(reason) => IngestError::Unavailable { retry_after, reason },
            }
        })?;
        let duplicates = duplicate.iter().filter(|d| **d).count();
        let duplicate_bytes = duplicate.iter().zip(&sizes).filter(|(d, _)| **d).map(|(_, n)| n).sum();
        Ok(IngestReceipt { duplicates, duplicate_bytes, duplicate })
    }
}

impl Ingest for ClusterIngest {
    fn ingest(&self, batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, IngestError>> {
        Box::pin(self.ingest_inner(batch))
    }

    fn ready(&self) -> bool {
        self.cluster.writable()
    }
}

/// A worker node's `Ingest`: it takes no events (send them to a collector); it is ready
/// while connected.
pub(crate) struct WorkerOnly {
    cluster: Cluster,
}

impl WorkerOnly {
    pub(crate) fn new(cluster: Cluster) -> Arc<WorkerOnly> {
        Arc::new(WorkerOnly { cluster })
    }
}

impl Ingest for WorkerOnly {
    fn ingest(&self, _batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, IngestError>> {
        Box::pin(async {
            Err(IngestError::Unavailable {
                retry_after: Duration::from_secs(5),
                reason: "this node runs with --role worker and takes no events; send them to a collector".to_owned(),
            })
        })
    }

    fn ready(&self) -> bool {
        self.cluster.connected()
    }
}

/// Look at the stream's size and each consumer's backlog every few seconds, for as long
/// as the process runs. The stream keeps events by age, not by what destinations have
/// read, so a destination whose oldest unsettled event is past half of `max_age` is
/// warned about (once a minute): past `max_age` it would lose events.
pub(crate) fn watch(cluster: Cluster, feeds: Vec<(String, Arc<ConsumerFeed>)>) {
    tokio::spawn(async move {
        let max_age_ms = cluster.config().max_age.as_millis() as u64;
        let mut warned: Option<std::time::Instant> = None;
        loop {
            if cluster.connected() {
                if let Err(error) = cluster.refresh().await {
                    tracing::debug!(%error, "cannot look at the stream");
                }
                for (name, feed) in &feeds {
                    if let Err(error) = feed.refresh_lag().await {
                        tracing::debug!(%error, "cannot look at a consumer");
                        continue;
                    }
                    let oldest_ms = feed.lag().oldest_ms.load(std::sync::atomic::Ordering::Relaxed);
                    let due = warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
                    if max_age_ms > 0 && oldest_ms > max_age_ms / 2 && due {
                        warned = Some(std::time::Instant::now());
                        tracing::warn!(
                            destination = %name,
                            lag_hours = oldest_ms as f64 / 3_600_000.0,
                            max_age_hours = max_age_ms as f64 / 3_600_000.0,
                            "a destination is far behind: events older than nats.max_age_hours are removed from the stream whether it delivered them or not"
                        );
                    }
                }
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    });
}
