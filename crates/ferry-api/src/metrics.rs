//! `GET /metrics`: what the API counts itself (HTTP latency by route and status, events
//! per source and outcome) and what the rest of the process reports through a
//! [`MetricsSource`] (the log, the delivery workers), in the Prometheus text format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferry_metrics::{Capped, Counter, Histogram, Writer};

use crate::AppState;

/// Metric names (constants, so a dashboard's queries can be found in the code).
pub const HTTP_REQUEST_SECONDS: &str = "ferry_http_request_duration_seconds";
pub const SOURCE_EVENTS: &str = "ferry_source_events_total";
pub const SOURCE_BYTES: &str = "ferry_source_bytes_total";
pub const BROWSER_METRICS: &str = "ferry_browser_metrics_series_total";

/// Sources with their own series; more (open mode takes any write key) count as `other`.
const MAX_SOURCES: usize = 1000;

/// Anything else in the process that has metrics to show.
pub trait MetricsSource: Send + Sync + 'static {
    fn render(&self, out: &mut Writer);
}

/// One source's counters.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub accepted: Counter,
    pub accepted_bytes: Counter,
    pub duplicate: Counter,
    pub duplicate_bytes: Counter,
    /// Items that failed validation: each is kept in quarantine.
    pub rejected: Counter,
    pub rejected_bytes: Counter,
}

/// Request latency histograms of one route, by status.
type ByStatus = Vec<(u16, Arc<Histogram>)>;

/// The API's own metrics.
pub(crate) struct ApiMetrics {
    /// By route, then status: a request finds its histogram without allocating.
    http: Mutex<HashMap<String, ByStatus>>,
    pub(crate) sources: Capped<SourceCounters>,
    pub(crate) browser_series: Counter,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics { http: Mutex::default(), sources: Capped::new(MAX_SOURCES), browser_series: Counter::default() }
    }
}

impl ApiMetrics {
    pub(crate) fn observe(&self, route: &str, status: u16, seconds: f64) {
        let histogram = {
            let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
            let seen = http.get(route).and_then(|statuses| statuses.iter().find(|(s, _)| *s == status));
            match seen {
                Some((_, histogram)) => histogram.clone(),
                None => {
                    let histogram = Arc::new(Histogram::latency());
                    http.entry(route.to_owned()).or_default().push((status, histogram.clone()));
                    histogram
                }
            }
        };
        histogram.observe(seconds);
    }

    fn render(&self, out: &mut Writer) {
        let mut http: Vec<((String, u16), Arc<Histogram>)> = self
            .http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(route, statuses)| statuses.iter().map(|(status, h)| ((route.clone(), *status), h.clone())))
            .collect();
        http.sort_by(|a, b| a.0.cmp(&b.0));
        for ((route, status), histogram) in &http {
            let status = status.to_string();
            out.histogram(
                HTTP_REQUEST_SECONDS,
                "HTTP requests by route (as matched) and status, and how long they took.",
                &[("route", route), ("status", &status)],
                histogram,
            );
        }
        for (source, c) in self.sources.all() {
            for (outcome, events, bytes) in [
                ("accepted", &c.accepted, &c.accepted_bytes),
                ("duplicate", &c.duplicate, &c.duplicate_bytes),
                ("rejected", &c.rejected, &c.rejected_bytes),
            ] {
                let labels = [("source", source.as_str()), ("outcome", outcome)];
                out.counter(
                    SOURCE_EVENTS,
                    "Events per source: accepted (stored), duplicate (already stored), rejected (kept in quarantine).",
                    &labels,
                    events.get(),
                );
                out.counter(
                    SOURCE_BYTES,
                    "Bytes of those events (stored JSON, or the quarantine record).",
                    &labels,
                    bytes.get(),
                );
            }
        }
        out.counter(
            BROWSER_METRICS,
            "Series received from browser libraries on /v1/m (counted, then discarded).",
            &[],
            self.browser_series.get(),
        );
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = Writer::new();
    state.inner.metrics.render(&mut out);
    if let Some(source) = state.inner.metrics_source.get() {
        source.render(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out.finish()).into_response()
}
