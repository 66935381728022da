//! One durable pull consumer per destination, shared by every worker node: the server
//! leases each batch to one worker. A worker acknowledges every message of a batch once the
//! batch is settled, extends the lease while it sends or waits to retry, and gives the
//! batch back (NAK) when it stops mid-retry. Redeliveries are unlimited: ferry's own
//! retries and dead letters decide when an event is given up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::Acker;
use ferry_delivery::feed::BoxFuture;
use ferry_delivery::{Lease, Leased, SharedFeed};
use futures_util::StreamExt;

use crate::{Cluster, ClusterError, NatsMetrics};

/// How long one wait for a first message lasts before the worker looks around.
const IDLE_POLL: Duration = Duration::from_secs(5);

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

/// A consumer's backlog: messages not yet leased, and leased but not acknowledged.
#[derive(Debug, Default)]
pub struct Lag {
    pub pending: AtomicU64,
    pub leased: AtomicU64,
    /// Milliseconds since the oldest event not yet acknowledged was stored (0: none).
    pub oldest_ms: AtomicU64,
    /// Set once the consumer answered at least once.
    pub known: std::sync::atomic::AtomicBool,
}

/// A destination's shared consumer, as one worker reads it.
pub struct ConsumerFeed {
    consumer: consumer::Consumer<pull::Config>,
    stream: async_nats::jetstream::stream::Stream<()>,
    subject: String,
    client: async_nats::Client,
    ack_wait: Duration,
    metrics: Arc<NatsMetrics>,
    lag: Arc<Lag>,
}

impl Cluster {
    /// The shared consumer of `destination`, created when missing: from the stream's first
    /// event (`from_beginning`) or only events published from now on. An existing consumer
    /// keeps its position; one that reads the wrong subject or acknowledges otherwise is
    /// refused.
    pub async fn consumer(&self, destination: &str, from_beginning: bool) -> Result<ConsumerFeed, ClusterError> {
        let name = consumer_name(destination);
        let stream_name = self.config.stream.clone();
        let failed =
            |reason: String| ClusterError::Consumer { stream: stream_name.clone(), consumer: name.clone(), reason };
        let stream = self.js.get_stream_no_info(&self.config.stream).await.map_err(|e| failed(e.to_string()))?;
        let events = self.config.events_subject();
        let wanted = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("ferry destination {destination}")),
            deliver_policy: if from_beginning { DeliverPolicy::All } else { DeliverPolicy::New },
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: -1,
            filter_subject: events.clone(),
            max_ack_pending: -1,
            ..pull::Config::default()
        };
        let consumer: consumer::Consumer<pull::Config> =
            stream.get_or_create_consumer(&name, wanted).await.map_err(|e| failed(e.to_string()))?;
        let config = &consumer.cached_info().config;
        let events = self.config.events_subject();
        if config.filter_subject != events {
            return Err(failed(format!("it reads {:?}, not {events}", config.filter_subject)));
        }
        if config.ack_policy != AckPolicy::Explicit {
            return Err(failed(format!("its ack policy is {:?}; ferry needs explicit", config.ack_policy)));
        }
        if config.max_deliver > 0 {
            return Err(failed(format!(
                "it stops redelivering after {} attempts, which would lose events; ferry needs -1",
                config.max_deliver
            )));
        }
        let ack_wait = config.ack_wait;
        Ok(ConsumerFeed {
            consumer,
            stream,
            subject: events,
            client: self.client.clone(),
            ack_wait,
            metrics: self.metrics.clone(),
            lag: Arc::default(),
        })
    }
}

impl ConsumerFeed {
    /// The consumer's backlog as last seen by [`ConsumerFeed::refresh_lag`].
    pub fn lag(&self) -> Arc<Lag> {
        self.lag.clone()
    }

    /// Ask the server for the consumer's backlog.
    pub async fn refresh_lag(&self) -> Result<(), String> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await.map_err(|e| e.to_string())?;
        self.lag.pending.store(info.num_pending, Ordering::Relaxed);
        self.lag.leased.store(info.num_ack_pending as u64, Ordering::Relaxed);
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

    async fn fetch(&self, max: usize, max_bytes: usize, linger: Duration) -> std::io::Result<Option<Leased>> {
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
        Ok(Some(Leased { records, lease }))
    }
}

/// Move a pull request's messages into the batch.
async fn take(
    mut batch: pull::Batch,
    records: &mut Vec<(u64, Vec<u8>)>,
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

impl SharedFeed for ConsumerFeed {
    fn next_batch(
        &self,
        max: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> BoxFuture<'_, std::io::Result<Option<Leased>>> {
        Box::pin(self.fetch(max, max_bytes, linger))
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
    fn extend_every(&self) -> Duration {
        self.every.max(Duration::from_millis(100))
    }

    fn extend(&self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            self.all(AckKind::Progress).await?;
            self.metrics.extended.add(self.ackers.len() as u64);
            Ok(())
        })
    }

    fn ack(&self) -> BoxFuture<'_, std::io::Result<()>> {
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
