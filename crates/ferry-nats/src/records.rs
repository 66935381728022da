//! Reading one subject of the stream by sequence: what replays and the quarantine pages
//! need. A single record is a direct "next message on this subject from sequence n"
//! request; runs of records come from an ephemeral consumer that is kept while the reads
//! go on in order.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::RawMessageErrorKind;
use ferry_log_contract::Positioned;
use futures_util::StreamExt;

use crate::SubjectLog;

/// An ephemeral consumer left unused this long is removed by the server.
const INACTIVE: Duration = Duration::from_secs(60);

/// The ephemeral consumer of the last run of reads, the sequence it delivers next, and
/// when it was last read (the server removes it after [`INACTIVE`]).
pub(crate) type Run = Option<(pull::Stream, u64, Instant)>;

impl SubjectLog {
    /// Look up where the stream ends now.
    pub(crate) async fn refresh_end(&self) -> std::io::Result<u64> {
        let info = self.stream.get_info().await.map_err(std::io::Error::other)?;
        let end = info.state.last_sequence + 1;
        if let Ok(mut last) = self.end.lock() {
            *last = end;
        }
        Ok(end)
    }

    /// Up to `max` records of the subject at sequences `>= from`, in order.
    pub(crate) async fn read_range(&self, from: u64, max: usize) -> std::io::Result<Vec<Positioned>> {
        let from = from.max(1);
        if max <= 1 {
            return self.one(from).await.map(|r| r.into_iter().collect());
        }
        let mut run = self.run.lock().await;
        let known_end = || self.end.lock().map(|e| *e).unwrap_or(0);
        if matches!(&*run, Some((_, next, used)) if *next == from && used.elapsed() < INACTIVE / 2) {
            let result = Self::read_run(&mut run, max, || self.refresh_end(), known_end()).await;
            if matches!(&result, Ok(out) if !out.is_empty()) {
                return result;
            }
            // Nothing, or an error: the server may have removed the consumer; start over.
        }
        *run = None;
        let config = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ack_policy: AckPolicy::None,
            filter_subject: self.subject.to_string(),
            inactive_threshold: INACTIVE,
            ..pull::Config::default()
        };
        let consumer = self.stream.create_consumer(config).await.map_err(std::io::Error::other)?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(max.min(1000))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(std::io::Error::other)?;
        *run = Some((messages, from, Instant::now()));
        let result = Self::read_run(&mut run, max, || self.refresh_end(), known_end()).await;
        if !matches!(&result, Ok(out) if !out.is_empty()) {
            *run = None;
        }
        result
    }

    /// Up to `max` records from the run, asking where the stream ends (`refresh`) only once
    /// the end known so far (`known_end`) is reached.
    async fn read_run<F: std::future::Future<Output = std::io::Result<u64>>>(
        run: &mut Run,
        max: usize,
        refresh: impl FnOnce() -> F,
        known_end: u64,
    ) -> std::io::Result<Vec<Positioned>> {
        let Some((messages, next, used)) = run.as_mut() else { return Ok(Vec::new()) };
        *used = Instant::now();
        let mut end = known_end;
        if *next >= end {
            end = refresh().await?;
        }
        let mut out = Vec::new();
        while out.len() < max && *next < end {
            // Nothing more within a second: the rest of the range was on other subjects
            // or deleted.
            let Ok(item) = tokio::time::timeout(Duration::from_secs(1), messages.next()).await else { break };
            let Some(message) = item else { break };
            let message = message.map_err(std::io::Error::other)?;
            let sequence = message.info().map_err(std::io::Error::other)?.stream_sequence;
            *next = sequence + 1;
            out.push((sequence, message.payload.to_vec()));
        }
        Ok(out)
    }

    async fn one(&self, from: u64) -> std::io::Result<Option<Positioned>> {
        match self.stream.raw_message_builder().sequence(from).next_by_subject(self.subject.to_string()).send().await {
            Ok(message) => Ok(Some((message.sequence, message.payload.to_vec()))),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(std::io::Error::other(error)),
        }
    }
}
