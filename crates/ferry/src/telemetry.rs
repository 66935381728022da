//! The process's metrics beyond the API's own: the logs (records, bytes, group commits,
//! fsync latency, disk budget, dedupe) and every delivery worker (outcomes, lag, send
//! latency, dead letters, and the reconciliation `accepted = delivered + pending +
//! dead-lettered + filtered`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_api::MetricsSource;
use ferry_delivery::DeadLetters;
use ferry_metrics::Writer;

use crate::admin::Handle;

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

/// Everything `/metrics` shows beyond the API.
pub(crate) struct Telemetry {
    /// The log's own metrics (the embedded log's, or this node's JetStream traffic).
    pub(crate) render_log: Arc<dyn Fn(&mut Writer) + Send + Sync>,
    pub(crate) destinations: Vec<Arc<Handle>>,
    pub(crate) dead_letters: Arc<DeadLetters>,
}

impl MetricsSource for Telemetry {
    fn render(&self, out: &mut Writer) {
        (self.render_log)(out);
        self.render_workers(out);
    }
}

impl Telemetry {
    fn render_workers(&self, out: &mut Writer) {
        let dead: std::collections::HashMap<String, u64> =
            self.dead_letters.counts().unwrap_or_default().into_iter().collect();
        for handle in &self.destinations {
            let (name, s) = (&handle.name, &handle.status);
            let labels = [("destination", name.as_str())];
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
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
            let lag = handle.lag();
            let (pending, lag_seconds) = (lag.events, lag.seconds);
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
            let Some(end) = lag.log_end else { continue };
            let accepted = end.saturating_sub(get(&s.start));
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
