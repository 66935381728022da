//! The process's metrics beyond the API's own: the logs (records, bytes, group commits,
//! fsync latency, disk budget, dedupe) and every delivery worker (outcomes, lag, send
//! latency, dead letters, and the reconciliation `accepted = delivered + pending +
//! dead-lettered + filtered`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_api::MetricsSource;
use ferry_delivery::{DeadLetters, WorkerStatus};
use ferry_log::Log;
use ferry_metrics::Writer;

use crate::logs::Logs;

pub(crate) const LOG_RECORDS: &str = "ferry_log_records_total";
pub(crate) const LOG_PAYLOAD_BYTES: &str = "ferry_log_payload_bytes_total";
pub(crate) const LOG_WRITTEN_BYTES: &str = "ferry_log_written_bytes_total";
pub(crate) const LOG_GROUP_RECORDS: &str = "ferry_log_group_commit_records";
pub(crate) const LOG_FSYNC_SECONDS: &str = "ferry_log_fsync_duration_seconds";
pub(crate) const LOG_DISK_BYTES: &str = "ferry_log_disk_bytes";
pub(crate) const LOG_DISK_BUDGET_BYTES: &str = "ferry_log_disk_budget_bytes";
pub(crate) const LOG_WRITABLE: &str = "ferry_log_writable";
pub(crate) const DEDUPE_KEYS: &str = "ferry_dedupe_memory_keys";
pub(crate) const DESTINATION_EVENTS: &str = "ferry_destination_events_total";
pub(crate) const DESTINATION_RETRIES: &str = "ferry_destination_retried_sends_total";
pub(crate) const DESTINATION_BATCHES: &str = "ferry_destination_batches_total";
pub(crate) const DESTINATION_LAG_EVENTS: &str = "ferry_destination_lag_events";
pub(crate) const DESTINATION_LAG_SECONDS: &str = "ferry_destination_lag_seconds";
pub(crate) const DESTINATION_RETRYING: &str = "ferry_destination_retrying";
pub(crate) const DESTINATION_SEND_SECONDS: &str = "ferry_destination_send_duration_seconds";
pub(crate) const DESTINATION_DEAD_LETTERS: &str = "ferry_destination_dead_letters";
pub(crate) const RECONCILIATION: &str = "ferry_destination_reconciliation_events";
pub(crate) const RECONCILED: &str = "ferry_destination_reconciled";
pub(crate) const NATS_EVENTS: &str = "ferry_nats_published_events_total";
pub(crate) const NATS_BYTES: &str = "ferry_nats_published_bytes_total";
pub(crate) const NATS_REFUSED: &str = "ferry_nats_refused_requests_total";
pub(crate) const NATS_PUBLISH_SECONDS: &str = "ferry_nats_publish_duration_seconds";
pub(crate) const NATS_LEASES: &str = "ferry_nats_leased_events_total";
pub(crate) const NATS_CONNECTED: &str = "ferry_nats_connected";
pub(crate) const NATS_DISCONNECTS: &str = "ferry_nats_disconnects_total";
pub(crate) const NATS_STREAM_MESSAGES: &str = "ferry_nats_stream_messages";
pub(crate) const NATS_STREAM_BYTES: &str = "ferry_nats_stream_bytes";

/// Everything `/metrics` shows beyond the API.
pub(crate) struct Telemetry {
    pub(crate) logs: Logs,
    pub(crate) workers: Vec<(String, Arc<WorkerStatus>)>,
    pub(crate) dead_letters: Arc<DeadLetters>,
}

impl MetricsSource for Telemetry {
    fn render(&self, out: &mut Writer) {
        match &self.logs {
            Logs::Embedded { events, quarantine } => render_logs(out, events, quarantine),
            Logs::Cluster { cluster, .. } => render_nats(out, cluster),
        }
        self.render_workers(out);
    }
}

fn render_logs(out: &mut Writer, events: &Log, quarantine: &Log) {
    for (name, log) in [("events", events), ("quarantine", quarantine)] {
        let m = log.metrics();
        let labels = [("log", name)];
        out.counter(LOG_RECORDS, "Records stored in the log.", &labels, m.records.get());
        out.counter(
            LOG_PAYLOAD_BYTES,
            "Bytes of the records stored, before compression.",
            &labels,
            m.payload_bytes.get(),
        );
        out.counter(
            LOG_WRITTEN_BYTES,
            "Bytes written to chunk files (compressed frames).",
            &labels,
            m.frame_bytes.get(),
        );
        out.histogram(LOG_GROUP_RECORDS, "Records per group commit (one frame, one fsync).", &labels, &m.group_records);
        out.histogram(LOG_FSYNC_SECONDS, "How long each fdatasync of the log took.", &labels, &m.fsync_seconds);
        out.gauge(LOG_DISK_BYTES, "Bytes of the log's chunk files.", &labels, log.disk_bytes() as f64);
        out.gauge(LOG_DISK_BUDGET_BYTES, "The log's disk budget.", &labels, log.max_disk_bytes() as f64);
        out.gauge(
            LOG_WRITABLE,
            "1 when appends can succeed (not poisoned, budget not exhausted).",
            &labels,
            f64::from(u8::from(log.writable())),
        );
        out.gauge(DEDUPE_KEYS, "Message ids in the dedupe index's memory layer.", &labels, log.dedupe_stats().0 as f64);
    }
}

fn render_nats(out: &mut Writer, cluster: &ferry_nats::Cluster) {
    let m = cluster.metrics();
    for (outcome, value) in
        [("stored", m.published.get()), ("duplicate", m.duplicates.get()), ("quarantined", m.quarantined.get())]
    {
        out.counter(
            NATS_EVENTS,
            "Messages this node published and JetStream acknowledged: stored events, duplicates (not stored again), quarantined items.",
            &[("outcome", outcome)],
            value,
        );
    }
    out.counter(NATS_BYTES, "Bytes of the events stored.", &[], m.published_bytes.get());
    for (reason, value) in [("unavailable", m.unavailable.get()), ("full", m.full.get())] {
        out.counter(
            NATS_REFUSED,
            "Requests refused: jetstream unavailable or too slow (503), stream full (429).",
            &[("reason", reason)],
            value,
        );
    }
    out.histogram(
        NATS_PUBLISH_SECONDS,
        "How long a request's publishes took until the last acknowledgement.",
        &[],
        &m.publish_seconds,
    );
    for (what, value) in [
        ("leased", m.leased.get()),
        ("acked", m.acked.get()),
        ("released", m.released.get()),
        ("extended", m.extended.get()),
    ] {
        out.counter(
            NATS_LEASES,
            "Events this node's workers leased, acknowledged, gave back, and extended leases of.",
            &[("action", what)],
            value,
        );
    }
    out.gauge(NATS_CONNECTED, "1 while connected to nats.", &[], f64::from(u8::from(cluster.connected())));
    out.counter(NATS_DISCONNECTS, "Times the connection to nats was lost.", &[], m.disconnects.get());
    out.gauge(
        NATS_STREAM_MESSAGES,
        "Messages in the stream at the last look.",
        &[],
        m.stream_messages.load(Ordering::Relaxed) as f64,
    );
    out.gauge(
        NATS_STREAM_BYTES,
        "Bytes of the stream at the last look.",
        &[],
        m.stream_bytes.load(Ordering::Relaxed) as f64,
    );
}

impl Telemetry {
    fn render_workers(&self, out: &mut Writer) {
        let dead: std::collections::HashMap<String, u64> =
            self.dead_letters.counts().unwrap_or_default().into_iter().collect();
        for (name, s) in &self.workers {
            let labels = [("destination", name.as_str())];
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let position = get(&s.position);
            let (delivered, filtered, skipped, dead_lettered, deleted) =
                (get(&s.delivered), get(&s.filtered), get(&s.skipped), get(&s.dead_lettered), get(&s.deleted));
            for (outcome, value) in [
                ("delivered", delivered),
                ("filtered", filtered),
                ("skipped", skipped),
                ("rejected", get(&s.rejected)),
                ("dead_lettered", dead_lettered),
            ] {
                out.counter(
                    DESTINATION_EVENTS,
                    "Events by outcome: delivered, filtered (integrations), skipped (no counterpart), rejected, dead_lettered (rejected or out of retries).",
                    &[("destination", name.as_str()), ("outcome", outcome)],
                    value,
                );
            }
            out.counter(DESTINATION_RETRIES, "Sends of an event answered with a retry.", &labels, get(&s.retried));
            out.counter(DESTINATION_BATCHES, "Batches completed (cursor committed).", &labels, get(&s.batches));
            let (pending, lag_seconds) = self.logs.lag(name, position);
            out.gauge(
                DESTINATION_LAG_EVENTS,
                "Events in the log the destination has not completed.",
                &labels,
                pending as f64,
            );
            out.gauge(
                DESTINATION_LAG_SECONDS,
                "Age of the oldest event the destination has not completed.",
                &labels,
                lag_seconds,
            );
            out.gauge(
                DESTINATION_RETRYING,
                "1 while a batch waits for a retry.",
                &labels,
                f64::from(u8::from(s.retrying.load(Ordering::Relaxed))),
            );
            out.histogram(DESTINATION_SEND_SECONDS, "How long each send of a batch took.", &labels, &s.send_seconds);
            out.gauge(
                DESTINATION_DEAD_LETTERS,
                "Dead letters not redriven.",
                &labels,
                dead.get(name).copied().unwrap_or(0) as f64,
            );
            // Since this process started: every event the log took is delivered, pending,
            // dead-lettered, filtered or skipped (or, never expected, deleted unread). In
            // cluster mode a destination's work is shared by nodes: no node can say this.
            let Logs::Embedded { events, .. } = &self.logs else { continue };
            let accepted = events.next_offset().saturating_sub(get(&s.start));
            let accounted = delivered + pending + dead_lettered + filtered + skipped + deleted;
            for (term, value) in [
                ("accepted", accepted),
                ("delivered", delivered),
                ("pending", pending),
                ("dead_lettered", dead_lettered),
                ("filtered", filtered),
                ("skipped", skipped),
                ("deleted_unread", deleted),
            ] {
                out.gauge(
                    RECONCILIATION,
                    "Since start: accepted = delivered + pending + dead_lettered + filtered + skipped (+ deleted_unread).",
                    &[("destination", name.as_str()), ("term", term)],
                    value as f64,
                );
            }
            out.gauge(
                RECONCILED,
                "1 when the reconciliation holds.",
                &labels,
                f64::from(u8::from(accepted == accounted)),
            );
        }
    }
}
