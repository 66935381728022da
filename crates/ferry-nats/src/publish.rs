//! Publishing a request's events and quarantined items, and waiting for JetStream to
//! acknowledge every one of them (or failing the whole request within a bounded time).

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use crate::Cluster;

/// Why a request's messages are not all stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishFailure {
    /// Disconnected, timed out, no stream leader: the client should retry soon (503).
    #[error("jetstream unavailable: {0}")]
    Unavailable(String),
    /// The stream is at its byte or message budget (429).
    #[error("stream full: {0}")]
    Full(String),
}

/// The `Nats-Msg-Id` for a messageId: the id itself when it is printable ASCII, else
/// with every other byte (and `%`) percent-escaped, so it stays one valid header value
/// and distinct ids stay distinct.
pub fn msg_id(message_id: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'%';
    if message_id.bytes().all(plain) {
        return std::borrow::Cow::Borrowed(message_id);
    }
    let mut out = String::with_capacity(message_id.len() * 3);
    for b in message_id.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Cluster {
    /// Publish `events` (message id, stored JSON) and `quarantine` items; `Ok` once JetStream
    /// acknowledged all of them, with, for each event in order, whether it was a duplicate
    /// inside the stream's duplicate window (and so not stored again).
    ///
    /// Fails at once while disconnected, and after the publish timeout when acknowledgements
    /// do not come. A failed request may have stored some of its events: the client's retry
    /// sends the same messageIds, which the stream then drops as duplicates.
    pub async fn publish(
        &self,
        events: Vec<(String, Vec<u8>)>,
        quarantine: Vec<Vec<u8>>,
    ) -> Result<Vec<bool>, PublishFailure> {
        let m = &self.metrics;
        if !self.connected() {
            m.unavailable.inc();
            return Err(PublishFailure::Unavailable("not connected to nats".to_owned()));
        }
        let started = Instant::now();
        let (count, items) = (events.len(), quarantine.len());
        let bytes: usize = events.iter().map(|(_, json)| json.len()).sum();
        let deadline = self.config.publish_timeout;
        let work = async {
            let mut acks = Vec::with_capacity(count + items);
            for (id, json) in events {
                let publish = PublishMessage::build().payload(Bytes::from(json)).message_id(msg_id(&id));
                acks.push(self.js.send_publish(self.events_subject.clone(), publish).await.map_err(failure)?);
            }
            for item in quarantine {
                let publish = PublishMessage::build().payload(Bytes::from(item));
                acks.push(self.js.send_publish(self.quarantine_subject.clone(), publish).await.map_err(failure)?);
            }
            let acked = futures_util::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await;
            let mut duplicate = Vec::with_capacity(count);
            for (i, ack) in acked.into_iter().enumerate() {
                let ack = ack.map_err(failure)?;
                if i < count {
                    duplicate.push(ack.duplicate);
                }
            }
            Ok(duplicate)
        };
        let result = match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(PublishFailure::Unavailable(format!("no acknowledgement within {deadline:?}"))),
        };
        m.publish_seconds.observe_duration(started.elapsed());
        match &result {
            Ok(duplicate) => {
                let dups = duplicate.iter().filter(|d| **d).count();
                m.published.add((count - dups) as u64);
                m.duplicates.add(dups as u64);
                m.published_bytes.add(bytes as u64);
                m.quarantined.add(items as u64);
            }
            Err(PublishFailure::Full(_)) => m.full.inc(),
            Err(PublishFailure::Unavailable(_)) => m.unavailable.inc(),
        }
        result
    }

    /// How long a collector should tell clients to wait.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(if self.connected() { 1 } else { 2 })
    }

    /// Whether a request can be taken now (for `/ready`).
    pub fn writable(&self) -> bool {
        let max = self.metrics.stream_max_bytes.load(Ordering::Relaxed);
        let full = max > 0 && self.metrics.stream_bytes.load(Ordering::Relaxed) >= max;
        self.connected() && !full
    }
}

fn failure(error: async_nats::jetstream::context::PublishError) -> PublishFailure {
    let text = error.to_string();
    match error.kind() {
        PublishErrorKind::Other if is_full(&text) => PublishFailure::Full(text),
        PublishErrorKind::StreamNotFound => PublishFailure::Unavailable(format!("no stream answered: {text}")),
        _ => PublishFailure::Unavailable(text),
    }
}

/// JetStream's words for a stream at its limits (`maximum bytes exceeded`, `maximum
/// messages exceeded`, `insufficient resources`).
fn is_full(text: &str) -> bool {
    text.contains("maximum") && text.contains("exceeded") || text.contains("insufficient resources")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_become_header_values_that_stay_distinct() {
        assert!(matches!(msg_id("ajs-1d5a-42"), std::borrow::Cow::Borrowed("ajs-1d5a-42")));
        assert_eq!(msg_id("a b"), "a%20b");
        assert_eq!(msg_id("a%20b"), "a%2520b");
        assert_eq!(msg_id("line\r\nbreak"), "line%0D%0Abreak");
        assert_eq!(msg_id("é"), "%C3%A9");
    }

    #[test]
    fn full_streams_are_told_apart() {
        assert!(is_full("maximum bytes exceeded"));
        assert!(is_full("nats: maximum messages exceeded (code 10077)"));
        assert!(is_full("insufficient resources"));
        assert!(!is_full("timed out"));
    }
}
