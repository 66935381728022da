//! Metrics without a global registry: each crate keeps its own counters and histograms
//! (plain atomics, lock-free to update), and whoever serves `/metrics` renders them in the
//! Prometheus text format with [`Writer`]. Metric names are constants in the crate that
//! owns them; label values must come from bounded sets (routes, statuses, configured
//! names), never from user input without a cap ([`Capped`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds (seconds) for latencies from sub-millisecond fsyncs to slow batches.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds for sizes (records per group commit, events per batch).
pub const SIZE_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];

/// A histogram over fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and one for +Inf (not cumulative: cumulated when rendered).
    counts: Vec<AtomicU64>,
    /// The sum, in millionths of the unit.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// A histogram of latencies (seconds).
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }

    /// A histogram of sizes.
    pub fn sizes() -> Histogram {
        Histogram::new(SIZE_BUCKETS)
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the values observed.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Per-label-value metrics for a label that comes from outside (sources in open mode): at
/// most `cap` distinct values, the rest counted under `other`.
#[derive(Debug)]
pub struct Capped<T> {
    cap: usize,
    values: Mutex<HashMap<String, std::sync::Arc<T>>>,
}

impl<T: Default> Capped<T> {
    pub fn new(cap: usize) -> Capped<T> {
        Capped { cap, values: Mutex::new(HashMap::new()) }
    }

    /// The metrics of `label` (or of `other` once the cap is reached).
    pub fn get(&self, label: &str) -> std::sync::Arc<T> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(label) {
            return v.clone();
        }
        let key = if values.len() >= self.cap { "other" } else { label };
        values.entry(key.to_owned()).or_default().clone()
    }

    /// Every label value and its metrics, sorted.
    pub fn all(&self) -> Vec<(String, std::sync::Arc<T>)> {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Renders the Prometheus text format (version 0.0.4). Each family's `# HELP` and
/// `# TYPE` are written once, before its first sample.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    seen: std::collections::HashSet<&'static str>,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    fn header(&mut self, name: &'static str, help: &str, kind: &str) {
        if self.seen.insert(name) {
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: Labels<'_>, extra: Option<(&str, &str)>, value: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let all: Vec<(&str, &str)> = labels.iter().copied().chain(extra).collect();
        if !all.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in all.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.out, " {}", value as i64);
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }

    pub fn counter(&mut self, name: &'static str, help: &str, labels: Labels<'_>, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, "", labels, None, value as f64);
    }

    pub fn gauge(&mut self, name: &'static str, help: &str, labels: Labels<'_>, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, "", labels, None, value);
    }

    pub fn histogram(&mut self, name: &'static str, help: &str, labels: Labels<'_>, h: &Histogram) {
        self.header(name, help, "histogram");
        let mut cumulative = 0;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            self.sample(name, "_bucket", labels, Some(("le", &format!("{bound}"))), cumulative as f64);
        }
        cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
        self.sample(name, "_bucket", labels, Some(("le", "+Inf")), cumulative as f64);
        self.sample(name, "_sum", labels, None, h.sum());
        self.sample(name, "_count", labels, None, cumulative as f64);
    }

    /// The text so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value escaped as the text format wants (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut w = Writer::new();
        w.counter("ferry_things_total", "Things.", &[("source", "web")], 3);
        w.counter("ferry_things_total", "Things.", &[("source", "a\"b")], 1);
        w.gauge("ferry_lag", "Lag.", &[], 2.5);
        w.histogram("ferry_latency_seconds", "Latency.", &[("route", "/v1/t")], &h);
        let text = w.finish();
        assert_eq!(
            text,
            "# HELP ferry_things_total Things.\n# TYPE ferry_things_total counter\n\
             ferry_things_total{source=\"web\"} 3\nferry_things_total{source=\"a\\\"b\"} 1\n\
             # HELP ferry_lag Lag.\n# TYPE ferry_lag gauge\nferry_lag 2.5\n\
             # HELP ferry_latency_seconds Latency.\n# TYPE ferry_latency_seconds histogram\n\
             ferry_latency_seconds_bucket{route=\"/v1/t\",le=\"0.1\"} 1\n\
             ferry_latency_seconds_bucket{route=\"/v1/t\",le=\"1\"} 2\n\
             ferry_latency_seconds_bucket{route=\"/v1/t\",le=\"+Inf\"} 3\n\
             ferry_latency_seconds_sum{route=\"/v1/t\"} 7.55\n\
             ferry_latency_seconds_count{route=\"/v1/t\"} 3\n"
        );
    }

    #[test]
    fn capped_labels_fold_into_other() {
        let c: Capped<Counter> = Capped::new(2);
        c.get("a").inc();
        c.get("b").inc();
        c.get("c").inc();
        c.get("d").inc();
        c.get("a").inc();
        let all: Vec<(String, u64)> = c.all().into_iter().map(|(k, v)| (k, v.get())).collect();
        assert_eq!(all, [("a".to_owned(), 2), ("b".to_owned(), 1), ("other".to_owned(), 2)]);
    }
}
