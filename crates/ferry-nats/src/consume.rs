//! One durable pull consumer per destination, shared by every worker node: the server
//! leases each batch to one worker. A worker acknowledges every message of a batch once the
//! batch is settled, extends the lease while it sends or waits to retry, and gives the
//! batch back (NAK) when it stops mid-retry. Redeliveries are unlimited: ferry's own
//! retries and dead letters decide when an event is given up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::Acker;
use ferry_log_contract::{Backlog, BatchLimits, BoxFuture, ConsumerOptions, Lease, Leased, Positioned, Start};
use futures_util::StreamExt;

use crate::{ClusterError, NatsMetrics, SubjectLog};

/// How long one wait for a first message lasts before the worker looks around.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// How often a consumer's backlog is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The durable consumer name of a destination: `ferry-` and the name, with every byte
/// outside `[A-Za-z0-9_]` written as `-xx` (hex), so any configured name gives a valid,
/// distinct consumer name.
pub fn consumer_name(destination: &str) -> String {
    let mut name = String::from("ferry-");
    for b in destination.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            name.push(b as char);
        } else {
            name.push_str(&format!("-{b:02x}"));
        }
    }
    name
}

/// A consumer's backlog as last seen: messages not yet leased, and leased but not
/// acknowledged.
#[derive(Debug, Default)]
struct Lag {
    pending: AtomicU64,
    leased: AtomicU64,
    /// Milliseconds since the oldest event not yet acknowledged was stored (0: none).
    oldest_ms: AtomicU64,
    /// One past the acknowledged floor.
    position: AtomicU64,
    /// Set once the consumer answered at least once.
    known: AtomicBool,
}

/// A destination's shared consumer, as one worker reads it.
pub struct ConsumerFeed {
    name: String,
    consumer: consumer::Consumer<pull::Config>,
    stream: async_nats::jetstream::stream::Stream<()>,
    subject: String,
    client: async_nats::Client,
    ack_wait: Duration,
    metrics: Arc<NatsMetrics>,
    lag: Lag,
}

impl SubjectLog {
    /// The shared consumer of `destination`, created when missing: from the stream's first
    /// message or only messages published from now on. An existing consumer keeps its
    /// position; one that reads the wrong subject or acknowledges otherwise is refused. Its
    /// backlog is looked at every few seconds while it is held.
    pub(crate) async fn consume(
        &self,
        destination: &str,
        options: ConsumerOptions,
    ) -> Result<Arc<ConsumerFeed>, ClusterError> {
        let name = consumer_name(destination);
        let config = &self.cluster.config;
        let failed =
            |reason: String| ClusterError::Consumer { stream: config.stream.clone(), consumer: name.clone(), reason };
        if options.stable_batches {
            return Err(failed(
                "a consumer shared by many workers cannot hand out the same batches after a crash".to_owned(),
            ));
        }
        let subject = self.subject.to_string();
        let wanted = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("ferry destination {destination}")),
            deliver_policy: match options.start {
                Start::Beginning => DeliverPolicy::All,
                Start::End => DeliverPolicy::New,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: -1,
            filter_subject: subject.clone(),
            max_ack_pending: -1,
            ..pull::Config::default()
        };
        let consumer: consumer::Consumer<pull::Config> =
            self.stream.get_or_create_consumer(&name, wanted).await.map_err(|e| failed(e.to_string()))?;
        let existing = &consumer.cached_info().config;
        if existing.filter_subject != subject {
            return Err(failed(format!("it reads {:?}, not {subject}", existing.filter_subject)));
        }
        if existing.ack_policy != AckPolicy::Explicit {
            return Err(failed(format!("its ack policy is {:?}; ferry needs explicit", existing.ack_policy)));
        }
        if existing.max_deliver > 0 {
            return Err(failed(format!(
                "it stops redelivering after {} attempts, which would lose events; ferry needs -1",
                existing.max_deliver
            )));
        }
        let ack_wait = existing.ack_wait;
        let feed = Arc::new(ConsumerFeed {
            name: destination.to_owned(),
            consumer,
            stream: self.stream.clone(),
            subject,
            client: self.cluster.client.clone(),
            ack_wait,
            metrics: self.cluster.metrics.clone(),
            lag: Lag::default(),
        });
        tokio::spawn(watch(Arc::downgrade(&feed), self.cluster.clone()));
        Ok(feed)
    }
}

/// Look at a consumer's backlog every few seconds for as long as it is held. The stream
/// keeps messages by age, not by what destinations have read, so a destination whose
/// oldest unsettled event is past half of `max_age` is warned about (once a minute): past
/// `max_age` it would lose events.
async fn watch(feed: Weak<ConsumerFeed>, cluster: crate::Cluster) {
    let max_age_ms = cluster.config.max_age.as_millis() as u64;
    let mut warned: Option<Instant> = None;
    loop {
        let Some(feed) = feed.upgrade() else { return };
        if cluster.connected() {
            match feed.refresh_lag().await {
                Ok(()) => {
                    let oldest_ms = feed.lag.oldest_ms.load(Ordering::Relaxed);
                    let due = warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
                    if max_age_ms > 0 && oldest_ms > max_age_ms / 2 && due {
                        warned = Some(Instant::now());
                        tracing::warn!(
                            destination = %feed.name,
                            lag_hours = oldest_ms as f64 / 3_600_000.0,
                            max_age_hours = max_age_ms as f64 / 3_600_000.0,
                            "a destination is far behind: events older than nats.max_age_hours are removed from the stream whether it delivered them or not"
                        );
                    }
                }
                Err(error) => tracing::debug!(%error, destination = %feed.name, "cannot look at a consumer"),
            }
        }
        drop(feed);
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

impl ConsumerFeed {
    /// Ask the server for the consumer's backlog.
    pub async fn refresh_lag(&self) -> Result<(), async_nats::Error> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await?;
        self.lag.pending.store(info.num_pending, Ordering::Relaxed);
        self.lag.leased.store(info.num_ack_pending as u64, Ordering::Relaxed);
        // One past the acknowledged floor; with nothing in hand, one past what was delivered
        // (a new consumer's floor stays 0 until its first acknowledgement).
        let settled = if info.num_ack_pending == 0 {
            info.ack_floor.stream_sequence.max(info.delivered.stream_sequence)
        } else {
            info.ack_floor.stream_sequence
        };
        self.lag.position.store(settled + 1, Ordering::Relaxed);
        let mut oldest_ms = 0;
        if info.num_pending + info.num_ack_pending as u64 > 0 {
            // The first event after the acknowledged floor is the oldest one not settled.
            let first = self
                .stream
                .raw_message_builder()
                .sequence(info.ack_floor.stream_sequence + 1)
                .next_by_subject(self.subject.clone())
                .send()
                .await;
            if let Ok(message) = first {
                let stored_ms = (message.time.unix_timestamp_nanos() / 1_000_000) as i64;
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                oldest_ms = now_ms.saturating_sub(stored_ms).max(0) as u64;
            }
        }
        self.lag.oldest_ms.store(oldest_ms, Ordering::Relaxed);
        self.lag.known.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn fetch(&self, limits: BatchLimits) -> std::io::Result<Option<Leased>> {
        let (max, max_bytes, linger) = (limits.records.max(1), limits.bytes, limits.linger);
        // A first message: one long poll while idle, answered as soon as one is there.
        let mut records = Vec::new();
        let mut ackers = Vec::new();
        let mut bytes = 0;
        let first =
            self.consumer.batch().max_messages(1).expires(IDLE_POLL).messages().await.map_err(std::io::Error::other)?;
        take(first, &mut records, &mut ackers, &mut bytes).await?;
        if records.is_empty() {
            return Ok(None);
        }
        // Then whatever else is there, waiting up to `linger` for a full batch.
        if max > 1 && bytes < max_bytes {
            let rest = max - 1;
            let room = max_bytes - bytes;
            let more = if linger.is_zero() {
                self.consumer.fetch().max_messages(rest).max_bytes(room).messages().await
            } else {
                let expires = linger.max(Duration::from_millis(10));
                self.consumer.batch().max_messages(rest).max_bytes(room).expires(expires).messages().await
            };
            match more {
                Ok(more) => take(more, &mut records, &mut ackers, &mut bytes).await?,
                // The batch in hand is still good; the rest comes next time.
                Err(error) => tracing::debug!(%error, "fetching the rest of a batch failed"),
            }
        }
        self.metrics.leased.add(records.len() as u64);
        let lease = Arc::new(BatchLease {
            ackers,
            client: self.client.clone(),
            every: self.ack_wait / 3,
            metrics: self.metrics.clone(),
        });
        Ok(Some(Leased { records, missed: 0, lease }))
    }
}

/// Move a pull request's messages into the batch.
async fn take(
    mut batch: pull::Batch,
    records: &mut Vec<Positioned>,
    ackers: &mut Vec<Acker>,
    bytes: &mut usize,
) -> std::io::Result<()> {
    while let Some(message) = batch.next().await {
        let message = match message {
            Ok(message) => message,
            // A request that ended early (timeout, leadership change): keep what came.
            Err(error) => {
                tracing::debug!(%error, "a pull request ended early");
                break;
            }
        };
        let sequence = message.info().map_err(std::io::Error::other)?.stream_sequence;
        let (message, acker) = message.split();
        *bytes += message.payload.len();
        records.push((sequence, message.payload.to_vec()));
        ackers.push(acker);
    }
    Ok(())
}

impl ferry_log_contract::Consumer for ConsumerFeed {
    fn lease(&self, limits: BatchLimits) -> BoxFuture<'_, std::io::Result<Option<Leased>>> {
        Box::pin(self.fetch(limits))
    }

    fn backlog(&self) -> Backlog {
        let lag = &self.lag;
        if !lag.known.load(Ordering::Relaxed) {
            return Backlog::default();
        }
        Backlog {
            position: lag.position.load(Ordering::Relaxed),
            records: lag.pending.load(Ordering::Relaxed) + lag.leased.load(Ordering::Relaxed),
            oldest: Duration::from_millis(lag.oldest_ms.load(Ordering::Relaxed)),
            end: None,
        }
    }

    fn refresh(&self) -> BoxFuture<'_, std::io::Result<Backlog>> {
        Box::pin(async move {
            self.refresh_lag().await.map_err(std::io::Error::other)?;
            Ok(ferry_log_contract::Consumer::backlog(self))
        })
    }
}

/// The messages of one leased batch.
struct BatchLease {
    ackers: Vec<Acker>,
    client: async_nats::Client,
    every: Duration,
    metrics: Arc<NatsMetrics>,
}

impl BatchLease {
    async fn all(&self, kind: AckKind) -> std::io::Result<()> {
        for acker in &self.ackers {
            acker.ack_with(kind).await.map_err(std::io::Error::other)?;
        }
        // Acknowledgements are plain publishes: one flush puts them all on the wire.
        self.client.flush().await.map_err(std::io::Error::other)
    }
}

impl Lease for BatchLease {
    fn extend_every(&self) -> Option<Duration> {
        Some(self.every.max(Duration::from_millis(100)))
    }

    fn extend(&self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            self.all(AckKind::Progress).await?;
            self.metrics.extended.add(self.ackers.len() as u64);
            Ok(())
        })
    }

    fn settle(&self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            self.all(AckKind::Ack).await?;
            self.metrics.acked.add(self.ackers.len() as u64);
            Ok(())
        })
    }

    fn release(&self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            self.all(AckKind::Nak(None)).await?;
            self.metrics.released.add(self.ackers.len() as u64);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        assert_eq!(consumer_name("warehouse"), "ferry-warehouse");
        assert_eq!(consumer_name("pg_main"), "ferry-pg_main");
        assert_eq!(consumer_name("my.hook"), "ferry-my-2ehook");
        assert_eq!(consumer_name("a-b"), "ferry-a-2db");
        assert_ne!(consumer_name("a-2db"), consumer_name("a-b"));
        assert_eq!(consumer_name("é"), "ferry--c3-a9");
    }
}
