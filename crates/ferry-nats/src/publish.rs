//! Appending to one subject of the stream: publish a request's records (each keyed one with
//! its key as `Nats-Msg-Id`, so the stream drops a second copy inside its duplicate window)
//! and wait until JetStream acknowledged every one of them, or fail the whole append within
//! the publish timeout.

use std::future::IntoFuture;
use std::time::Instant;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use ferry_log_contract::{AppendError, Appended, Record};

use crate::SubjectLog;

/// The `Nats-Msg-Id` for a dedupe key: the key itself when it is printable ASCII, else with
/// every other byte (and `%`) percent-escaped, so it stays one valid header value and
/// distinct keys stay distinct.
pub fn msg_id(key: &[u8]) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'%';
    if key.iter().all(|&b| plain(b)) {
        // Printable ASCII is UTF-8.
        return String::from_utf8_lossy(key);
    }
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

impl SubjectLog {
    /// Publish `records`; `Ok` once JetStream acknowledged all of them, saying for each
    /// whether it was stored (at its stream sequence) or a duplicate inside the stream's
    /// duplicate window.
    ///
    /// Fails at once while disconnected, and after the publish timeout when
    /// acknowledgements do not come. A failed append may have stored some of its records:
    /// the client's retry sends the same keys, which the stream then drops as duplicates.
    pub(crate) async fn publish(&self, records: Vec<Record>) -> Result<Vec<Appended>, AppendError> {
        let cluster = &self.cluster;
        let m = &cluster.metrics;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if !cluster.connected() {
            m.unavailable.inc();
            return Err(unavailable(cluster, "not connected to nats".to_owned()));
        }
        let started = Instant::now();
        let count = records.len();
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        let deadline = cluster.config.publish_timeout;
        let work = async {
            let mut acks = Vec::with_capacity(count);
            for record in records {
                let mut publish = PublishMessage::build().payload(Bytes::from(record.payload));
                if let Some(key) = &record.key {
                    publish = publish.message_id(msg_id(key));
                }
                acks.push(
                    cluster.js.send_publish(self.subject.clone(), publish).await.map_err(|e| failure(cluster, e))?,
                );
            }
            let acked = futures_util::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await;
            let mut appended = Vec::with_capacity(count);
            for ack in acked {
                let ack = ack.map_err(|e| failure(cluster, e))?;
                appended.push(if ack.duplicate { Appended::Duplicate } else { Appended::At(ack.sequence) });
            }
            Ok(appended)
        };
        let result = match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(cluster, format!("no acknowledgement within {deadline:?}"))),
        };
        m.publish_seconds.observe_duration(started.elapsed());
        match &result {
            Ok(appended) if self.quarantine => m.quarantined.add(appended.len() as u64),
            Ok(appended) => {
                let dups = appended.iter().filter(|a| **a == Appended::Duplicate).count();
                m.published.add((count - dups) as u64);
                m.duplicates.add(dups as u64);
                m.published_bytes.add(bytes as u64);
            }
            Err(AppendError::Full { .. }) => m.full.inc(),
            Err(AppendError::Unavailable { .. }) => m.unavailable.inc(),
        }
        result
    }
}

fn unavailable(cluster: &crate::Cluster, reason: String) -> AppendError {
    AppendError::Unavailable { retry_after: cluster.retry_after(), reason }
}

fn failure(cluster: &crate::Cluster, error: async_nats::jetstream::context::PublishError) -> AppendError {
    let text = error.to_string();
    match error.kind() {
        PublishErrorKind::Other if is_full(&text) => {
            AppendError::Full { retry_after: cluster.retry_after(), reason: text }
        }
        PublishErrorKind::StreamNotFound => unavailable(cluster, format!("no stream answered: {text}")),
        _ => unavailable(cluster, text),
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
        assert!(matches!(msg_id(b"ajs-1d5a-42"), std::borrow::Cow::Borrowed("ajs-1d5a-42")));
        assert_eq!(msg_id(b"a b"), "a%20b");
        assert_eq!(msg_id(b"a%20b"), "a%2520b");
        assert_eq!(msg_id(b"line\r\nbreak"), "line%0D%0Abreak");
        assert_eq!(msg_id("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn full_streams_are_told_apart() {
        assert!(is_full("maximum bytes exceeded"));
        assert!(is_full("nats: maximum messages exceeded (code 10077)"));
        assert!(is_full("insufficient resources"));
        assert!(!is_full("timed out"));
    }
}
