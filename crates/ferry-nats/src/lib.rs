//! The event log on NATS JetStream, for cluster mode: many stateless ferry nodes share one
//! replicated stream instead of each keeping its own log.
//!
//! - One stream (default `FERRY`) holds two subjects: `<prefix>.events` (validated events)
//!   and `<prefix>.quarantine` (rejected items with their reasons). [`Cluster::ensure_stream`]
//!   creates it, or checks that an existing one cannot lose or double-store events.
//! - Each subject is a log of the log contract ([`ferry_log_contract::Log`]):
//!   [`SubjectLog`], from [`Cluster::events`] and [`Cluster::quarantine`].
//! - Appends publish each record with its dedupe key (ferry's: the messageId) as
//!   `Nats-Msg-Id` (`publish`): the stream leader drops a second copy inside the stream's
//!   duplicate window, which is the dedupe window, so dedupe holds across every collector.
//!   An append returns only after JetStream acknowledged every one of its messages.
//! - Consumers are one durable pull consumer per destination (`ferry-<name>`), shared by
//!   every worker node ([`consume::ConsumerFeed`]): the server leases each batch to one
//!   worker, the worker extends the lease while it retries, acknowledges when the batch is
//!   settled, and a batch whose worker died goes to another one when its lease runs out.
//! - Reads by sequence (replay, the quarantine) use a direct get or an ephemeral consumer
//!   (`records`).
//! - [`tap`] carries the debugger's feed between nodes over core NATS, only while somebody
//!   watches.
//!
//! Positions are stream sequences. Nothing here knows Segment: messages are opaque bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::stream;

pub mod consume;
pub mod publish;
pub mod records;
pub mod tap;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;

pub use consume::{ConsumerFeed, consumer_name};

/// How long start-up waits for JetStream to answer (a stream electing a leader answers
/// nothing for a while).
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// How ferry reaches NATS and what its stream looks like.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`); the client learns the rest of the cluster.
    pub urls: Vec<String>,
    /// The stream's name.
    pub stream: String,
    /// Subjects are `<prefix>.events`, `<prefix>.quarantine` and `<prefix>.tap.*`.
    pub subject_prefix: String,
    /// Replicas of the stream (1, 3 or 5).
    pub replicas: usize,
    /// Messages are kept this long (0: until `max_bytes`).
    pub max_age: Duration,
    /// The stream's byte budget; when full, publishes fail and collectors answer 429.
    pub max_bytes: i64,
    /// The dedupe window: the stream's duplicate window.
    pub duplicate_window: Duration,
    /// How long a request waits for JetStream's acknowledgements before it answers 503.
    pub publish_timeout: Duration,
    /// How long a worker's lease on a batch lasts before it is given to another worker
    /// (leases are extended while a batch is being sent or retried).
    pub ack_wait: Duration,
    /// This node's name (client name, debugger feed).
    pub node: String,
    pub auth: Auth,
    pub tls: Tls,
}

/// Credentials.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Token(String),
    UserPassword(String, String),
}

/// TLS settings; with none of them set the URLs' scheme decides.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM file of the CA that signed the servers' certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub require: bool,
}

impl NatsConfig {
    /// Defaults for a local server, as the tests and a first try use.
    pub fn new(urls: Vec<String>) -> NatsConfig {
        NatsConfig {
            urls,
            stream: "FERRY".to_owned(),
            subject_prefix: "ferry".to_owned(),
            replicas: 3,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(24 * 3600),
            publish_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            node: "ferry".to_owned(),
            auth: Auth::None,
            tls: Tls::default(),
        }
    }

    /// The subject validated events are published on.
    pub fn events_subject(&self) -> String {
        format!("{}.events", self.subject_prefix)
    }

    /// The subject quarantined items are published on.
    pub fn quarantine_subject(&self) -> String {
        format!("{}.quarantine", self.subject_prefix)
    }

    /// The stream configuration ferry creates.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.events_subject(), self.quarantine_subject()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            description: Some("ferry events and quarantine".to_owned()),
            ..stream::Config::default()
        }
    }
}

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to nats at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error(
        "jetstream did not answer within {waited:?}: {reason}; is jetstream enabled (nats-server -js) and does the cluster have a quorum?"
    )]
    NoJetStream { waited: Duration, reason: String },
    #[error("stream {stream} cannot be used by ferry: {}; fix or delete the stream, or name another with nats.stream", problems.join("; "))]
    Incompatible { stream: String, problems: Vec<String> },
    #[error("consumer {consumer} of stream {stream} cannot be used by ferry: {reason}")]
    Consumer { stream: String, consumer: String, reason: String },
    #[error("cannot create stream {stream} with {replicas} replicas: {reason}")]
    Create { stream: String, replicas: usize, reason: String },
    #[error("jetstream is unavailable: {0}")]
    Unavailable(String),
}

/// Counters of this node's traffic with JetStream.
#[derive(Debug)]
pub struct NatsMetrics {
    /// Events published and acknowledged as new.
    pub published: ferry_metrics::Counter,
    pub published_bytes: ferry_metrics::Counter,
    /// Events JetStream acknowledged as duplicates (not stored again).
    pub duplicates: ferry_metrics::Counter,
    /// Quarantined items published.
    pub quarantined: ferry_metrics::Counter,
    /// Requests refused because JetStream was unreachable, slow, or full.
    pub unavailable: ferry_metrics::Counter,
    pub full: ferry_metrics::Counter,
    /// How long a request's publishes took, until the last acknowledgement.
    pub publish_seconds: ferry_metrics::Histogram,
    /// Leased messages this node's workers acknowledged, released, and extended.
    pub acked: ferry_metrics::Counter,
    pub released: ferry_metrics::Counter,
    pub extended: ferry_metrics::Counter,
    /// Messages leased to this node's workers.
    pub leased: ferry_metrics::Counter,
    /// Times the connection was lost.
    pub disconnects: ferry_metrics::Counter,
    /// The stream's messages and bytes at the last look (see [`Cluster::refresh`]).
    pub stream_messages: AtomicU64,
    pub stream_bytes: AtomicU64,
    /// The stream's own byte budget (an existing stream keeps its own; 0: none).
    pub stream_max_bytes: AtomicU64,
}

impl Default for NatsMetrics {
    fn default() -> Self {
        NatsMetrics {
            published: Default::default(),
            published_bytes: Default::default(),
            duplicates: Default::default(),
            quarantined: Default::default(),
            unavailable: Default::default(),
            full: Default::default(),
            publish_seconds: ferry_metrics::Histogram::latency(),
            acked: Default::default(),
            released: Default::default(),
            extended: Default::default(),
            leased: Default::default(),
            disconnects: Default::default(),
            stream_messages: AtomicU64::new(0),
            stream_bytes: AtomicU64::new(0),
            stream_max_bytes: AtomicU64::new(0),
        }
    }
}

/// A connection to the NATS cluster and ferry's stream on it.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: Arc<NatsConfig>,
    pub(crate) events_subject: async_nats::Subject,
    pub(crate) quarantine_subject: async_nats::Subject,
    pub(crate) metrics: Arc<NatsMetrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("stream", &self.config.stream).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connect, and wait (up to [`STARTUP_WAIT`]) until JetStream answers. The client
    /// reconnects by itself afterwards, forever.
    pub async fn connect(config: NatsConfig) -> Result<Cluster, ClusterError> {
        let urls = config.urls.join(",");
        let metrics = Arc::new(NatsMetrics::default());
        // Weak: the client's event task outlives the cluster only as long as a clone of
        // the client does, and must not keep the metrics (which end `watch_stream`) alive.
        let events = Arc::downgrade(&metrics);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ferry {}", config.node))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(None)
            // Quick to come back: a collector answers 503 while disconnected.
            .reconnect_delay_callback(|attempts| Duration::from_millis((50 * attempts as u64).min(1000)))
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            if let Some(metrics) = events.upgrade() {
                                metrics.disconnects.inc();
                            }
                            tracing::warn!("disconnected from nats; reconnecting");
                        }
                        async_nats::Event::Connected => tracing::info!("connected to nats"),
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            });
        options = match &config.auth {
            Auth::None => options,
            Auth::Token(token) => options.token(token.clone()),
            Auth::UserPassword(user, password) => options.user_and_password(user.clone(), password.clone()),
        };
        if let Some(ca) = &config.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if config.tls.require {
            options = options.require_tls(true);
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| u.parse().map_err(|e| ClusterError::Connect { urls: urls.clone(), reason: format!("{u}: {e}") }))
            .collect::<Result<_, _>>()?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| ClusterError::Connect { urls: urls.clone(), reason: e.to_string() })?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .max_ack_inflight(16 * 1024)
            .build(client.clone());
        let events_subject = async_nats::Subject::from(config.events_subject());
        let quarantine_subject = async_nats::Subject::from(config.quarantine_subject());
        let cluster = Cluster { client, js, config: Arc::new(config), events_subject, quarantine_subject, metrics };
        cluster.wait_for_jetstream().await?;
        tokio::spawn(watch_stream(Arc::downgrade(&cluster.metrics), cluster.js.clone(), cluster.config.clone()));
        Ok(cluster)
    }

    async fn wait_for_jetstream(&self) -> Result<(), ClusterError> {
        let started = Instant::now();
        let mut last = String::from("not connected");
        while started.elapsed() < STARTUP_WAIT {
            if self.connected() {
                // Any answer about the stream, "not found" included, is JetStream answering.
                match tokio::time::timeout(Duration::from_secs(3), self.js.get_stream(&self.config.stream)).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(error)) if stream_not_found(&error) => return Ok(()),
                    Ok(Err(error)) => last = error.to_string(),
                    Err(_) => last = "timed out".to_owned(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ClusterError::NoJetStream { waited: STARTUP_WAIT, reason: last })
    }

    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<NatsMetrics> {
        &self.metrics
    }

    /// The client, for the debugger bridge.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Create the stream, or check that the existing one is compatible (every problem at
    /// once). Retries for [`STARTUP_WAIT`] while the cluster cannot answer.
    pub async fn ensure_stream(&self) -> Result<(), ClusterError> {
        let wanted = self.config.stream_config();
        let started = Instant::now();
        loop {
            let attempt = match self.js.get_stream(&self.config.stream).await {
                Ok(stream) => {
                    let info = stream.cached_info();
                    let problems = stream_problems(&info.config, &wanted);
                    if !problems.is_empty() {
                        return Err(ClusterError::Incompatible { stream: self.config.stream.clone(), problems });
                    }
                    if info.config.max_bytes != wanted.max_bytes {
                        tracing::info!(
                            stream = %wanted.name,
                            max_bytes = info.config.max_bytes,
                            configured = wanted.max_bytes,
                            "the existing stream keeps its own max_bytes"
                        );
                    }
                    self.note_limits(&info.config);
                    return Ok(());
                }
                Err(error) if stream_not_found(&error) => match self.js.create_stream(wanted.clone()).await {
                    Ok(_) => {
                        tracing::info!(stream = %wanted.name, replicas = wanted.num_replicas, "created the stream");
                        self.note_limits(&wanted);
                        return Ok(());
                    }
                    Err(error) => {
                        let text = error.to_string();
                        if text.contains("insufficient") || text.contains("replicas") {
                            return Err(ClusterError::Create {
                                stream: wanted.name.clone(),
                                replicas: wanted.num_replicas,
                                reason: text,
                            });
                        }
                        text
                    }
                },
                Err(error) => error.to_string(),
            };
            if started.elapsed() > STARTUP_WAIT {
                return Err(ClusterError::NoJetStream { waited: STARTUP_WAIT, reason: attempt });
            }
            tracing::info!(reason = %attempt, "waiting for the stream");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn note_limits(&self, config: &stream::Config) {
        note_limits(&self.metrics, config);
    }

    /// How long a client should wait after a failed append.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(if self.connected() { 1 } else { 2 })
    }

    /// Whether an append can succeed now (for `/ready`): connected, and the stream was not
    /// full at the last look.
    pub fn writable(&self) -> bool {
        let max = self.metrics.stream_max_bytes.load(Ordering::Relaxed);
        let full = max > 0 && self.metrics.stream_bytes.load(Ordering::Relaxed) >= max;
        self.connected() && !full
    }

    /// The events subject as a log.
    pub async fn events(&self) -> Result<SubjectLog, ClusterError> {
        SubjectLog::open(self, self.events_subject.clone(), false).await
    }

    /// The quarantine subject as a log (no dedupe keys).
    pub async fn quarantine(&self) -> Result<SubjectLog, ClusterError> {
        SubjectLog::open(self, self.quarantine_subject.clone(), true).await
    }
}

fn note_limits(metrics: &NatsMetrics, config: &stream::Config) {
    metrics.stream_max_bytes.store(config.max_bytes.max(0) as u64, Ordering::Relaxed);
}

/// How often the stream's size is looked at.
const WATCH_STREAM_EVERY: Duration = Duration::from_secs(2);

/// Look at the stream's size every few seconds (for `/metrics` and for `writable`), for as
/// long as a handle on the cluster is held.
async fn watch_stream(metrics: std::sync::Weak<NatsMetrics>, js: jetstream::Context, config: Arc<NatsConfig>) {
    loop {
        tokio::time::sleep(WATCH_STREAM_EVERY).await;
        let Some(metrics) = metrics.upgrade() else { return };
        let info = match js.get_stream_no_info(&config.stream).await {
            Ok(stream) => stream.get_info().await.map_err(async_nats::Error::from),
            Err(error) => Err(error.into()),
        };
        match info {
            Ok(info) => {
                metrics.stream_messages.store(info.state.messages, Ordering::Relaxed);
                metrics.stream_bytes.store(info.state.bytes, Ordering::Relaxed);
                note_limits(&metrics, &info.config);
            }
            Err(error) => tracing::debug!(%error, "cannot look at the stream"),
        }
    }
}

/// One subject of the stream, as a log of the log contract: the events, or the quarantine.
/// Positions are stream sequences (with gaps: the other subject shares them).
pub struct SubjectLog {
    cluster: Cluster,
    subject: async_nats::Subject,
    /// Whether this is the quarantine (counted apart in the metrics).
    quarantine: bool,
    stream: stream::Stream<()>,
    /// The ephemeral consumer of the last run of reads.
    run: tokio::sync::Mutex<records::Run>,
    /// One past the last sequence, as last seen.
    end: std::sync::Mutex<u64>,
}

impl SubjectLog {
    async fn open(
        cluster: &Cluster,
        subject: async_nats::Subject,
        quarantine: bool,
    ) -> Result<SubjectLog, ClusterError> {
        let stream = cluster
            .js
            .get_stream_no_info(&cluster.config.stream)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        Ok(SubjectLog {
            cluster: cluster.clone(),
            subject,
            quarantine,
            stream,
            run: tokio::sync::Mutex::new(None),
            end: std::sync::Mutex::new(0),
        })
    }

    /// The cluster this subject is on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl ferry_log_contract::Reader for SubjectLog {
    fn read(
        &self,
        from: u64,
        max: usize,
    ) -> ferry_log_contract::BoxFuture<'_, std::io::Result<Vec<ferry_log_contract::Positioned>>> {
        Box::pin(self.read_range(from, max))
    }

    fn end(&self) -> ferry_log_contract::BoxFuture<'_, std::io::Result<u64>> {
        Box::pin(self.refresh_end())
    }
}

impl ferry_log_contract::Log for SubjectLog {
    fn append(
        &self,
        records: Vec<ferry_log_contract::Record>,
    ) -> ferry_log_contract::BoxFuture<'_, Result<Vec<ferry_log_contract::Appended>, ferry_log_contract::AppendError>>
    {
        Box::pin(self.publish(records))
    }

    fn writable(&self) -> bool {
        self.cluster.writable()
    }

    fn consumer(
        &self,
        name: &str,
        options: ferry_log_contract::ConsumerOptions,
    ) -> ferry_log_contract::BoxFuture<'_, std::io::Result<Arc<dyn ferry_log_contract::Consumer>>> {
        let name = name.to_owned();
        Box::pin(async move {
            let feed = self.consume(&name, options).await.map_err(std::io::Error::other)?;
            Ok(feed as Arc<dyn ferry_log_contract::Consumer>)
        })
    }
}

fn stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether `url` is a server address the client takes (`nats://host:4222`, `tls://...`,
/// `host:port`).
pub fn valid_url(url: &str) -> bool {
    url.parse::<async_nats::ServerAddr>().is_ok()
}

/// What is wrong with an existing stream for ferry; empty when it can be used.
pub fn stream_problems(existing: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut problems = Vec::new();
    for subject in &wanted.subjects {
        if !existing.subjects.iter().any(|s| s == subject) {
            problems.push(format!("it does not hold subject {subject} (it holds {})", existing.subjects.join(", ")));
        }
    }
    if existing.retention != stream::RetentionPolicy::Limits {
        problems.push(format!(
            "its retention is {:?}: events would be removed once one reader took them; ferry needs limits",
            existing.retention
        ));
    }
    if existing.storage != stream::StorageType::File {
        problems
            .push("its storage is memory: losing every replica's process loses the events; ferry needs file".into());
    }
    if existing.discard != stream::DiscardPolicy::New {
        problems.push(
            "its discard policy is old: a full stream would silently drop the oldest events; ferry needs new, so a full stream answers 429".into(),
        );
    }
    if existing.no_ack {
        problems.push("it does not acknowledge publishes (no_ack): no 2xx could mean durable".into());
    }
    if existing.duplicate_window < wanted.duplicate_window {
        problems.push(format!(
            "its duplicate window is {}, shorter than the dedupe window of {}",
            hours(existing.duplicate_window),
            hours(wanted.duplicate_window)
        ));
    }
    if !existing.max_age.is_zero() && (wanted.max_age.is_zero() || existing.max_age < wanted.max_age) {
        problems.push(format!(
            "it keeps messages {}, less than the configured {}",
            hours(existing.max_age),
            if wanted.max_age.is_zero() { "forever".to_owned() } else { hours(wanted.max_age) }
        ));
    }
    if existing.num_replicas < wanted.num_replicas {
        problems.push(format!(
            "it has {} replica(s), fewer than the configured {}",
            existing.num_replicas, wanted.num_replicas
        ));
    }
    if existing.max_messages_per_subject > 0 {
        problems.push(format!(
            "it keeps at most {} messages per subject: ferry puts every event on one subject",
            existing.max_messages_per_subject
        ));
    }
    if existing.max_message_size > 0 && existing.max_message_size < 256 * 1024 {
        problems.push(format!(
            "its largest message is {} bytes; an event can be up to 32 KB as sent and more once enriched, so ferry needs at least 256 KiB",
            existing.max_message_size
        ));
    }
    if existing.sealed {
        problems.push("it is sealed".into());
    }
    if existing.mirror.is_some() {
        problems.push("it is a mirror, which cannot be published to".into());
    }
    problems
}

fn hours(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) { format!("{} h", secs / 3600) } else { format!("{secs} s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_ferry_creates_has_no_problems() {
        let config = NatsConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        let wanted = config.stream_config();
        assert!(stream_problems(&wanted, &wanted).is_empty());
        assert_eq!(wanted.subjects, ["ferry.events", "ferry.quarantine"]);
        assert_eq!(wanted.discard, stream::DiscardPolicy::New);
    }

    #[test]
    fn every_problem_of_an_incompatible_stream_is_named() {
        let config = NatsConfig::new(vec![]);
        let wanted = config.stream_config();
        let existing = stream::Config {
            name: "FERRY".into(),
            subjects: vec!["ferry.events".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::Memory,
            discard: stream::DiscardPolicy::Old,
            num_replicas: 1,
            max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(120),
            no_ack: true,
            max_messages_per_subject: 10,
            max_message_size: 1024,
            ..stream::Config::default()
        };
        let problems = stream_problems(&existing, &wanted);
        let expected = [
            "does not hold subject ferry.quarantine",
            "retention is WorkQueue",
            "storage is memory",
            "discard policy is old",
            "no_ack",
            "duplicate window is 120 s, shorter than the dedupe window of 24 h",
            "keeps messages 1 h, less than the configured 168 h",
            "1 replica(s), fewer than the configured 3",
            "at most 10 messages per subject",
            "largest message is 1024 bytes",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, want) in problems.iter().zip(expected) {
            assert!(problem.contains(want), "{problem:?} should say {want:?}");
        }
    }

    #[test]
    fn a_longer_window_and_age_are_fine() {
        let config = NatsConfig::new(vec![]);
        let wanted = config.stream_config();
        let existing = stream::Config {
            duplicate_window: Duration::from_secs(48 * 3600),
            max_age: Duration::ZERO,
            num_replicas: 5,
            subjects: vec!["ferry.events".into(), "ferry.quarantine".into(), "other".into()],
            ..wanted.clone()
        };
        assert!(stream_problems(&existing, &wanted).is_empty());
    }
}
