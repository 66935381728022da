//! Building the configured destinations and their delivery settings: each type's own
//! settings, defaults and construction are in `ferry_destinations::settings`; here they
//! meet the keys every destination takes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_delivery::{Backoff, Start, WorkerConfig};
use ferry_destinations::Destination;
use ferry_destinations::settings::{Context, Settings, StartAt, TimeoutMs};

use crate::config::{Config, DestinationConfig};

/// The name of the embedded warehouse when no destinations are configured.
pub(crate) const DEFAULT_WAREHOUSE: &str = "warehouse";

/// A destination ready to run.
pub(crate) struct Built {
    pub(crate) worker: WorkerConfig,
    pub(crate) destination: Arc<dyn Destination>,
    /// How to say where it writes, for the start-up log.
    pub(crate) target: String,
}

/// The configured destinations, or the embedded SQLite warehouse when none are.
pub(crate) fn configured(config: &Config) -> Vec<DestinationConfig> {
    match &config.destinations {
        Some(list) => list.clone(),
        None => vec![DestinationConfig::new(DEFAULT_WAREHOUSE, Settings::Sqlite(Default::default()))],
    }
}

/// The delivery settings of a destination: what it says, else its type's defaults, else
/// the worker's.
pub(crate) fn worker_config(d: &DestinationConfig) -> WorkerConfig {
    let defaults_for_all = WorkerConfig::new(&d.name);
    let defaults = d.kind.of_type().defaults();
    let timeout = match defaults.timeout_ms {
        TimeoutMs::Send => d.timeout_ms.map_or(defaults.send_timeout, Duration::from_millis),
        // The destination bounds each request with it; the worker allows a whole batch.
        TimeoutMs::Request => defaults.send_timeout,
    };
    WorkerConfig {
        batch_events: d.batch_events.unwrap_or(defaults.batch_events),
        batch_bytes: d.batch_bytes.unwrap_or(defaults.batch_bytes),
        linger: d.batch_ms.map_or(defaults.linger, Duration::from_millis),
        max_age: d.max_age_seconds.map_or(defaults_for_all.max_age, Duration::from_secs),
        backoff: Backoff {
            initial: d.retry_initial_ms.map_or(defaults_for_all.backoff.initial, Duration::from_millis),
            max: d.retry_max_ms.map_or(defaults_for_all.backoff.max, Duration::from_millis),
        },
        timeout,
        start: match d.start.unwrap_or(defaults.start) {
            StartAt::Beginning => Start::Beginning,
            StartAt::End => Start::End,
        },
        ..defaults_for_all
    }
}

/// Open one destination (files, connections made lazily where possible).
pub(crate) fn build(config: &Config, d: &DestinationConfig) -> anyhow::Result<Built> {
    let worker = worker_config(d);
    let context = Context {
        data_dir: &config.data_dir,
        timeout: d.timeout_ms.map(Duration::from_millis),
        batch_events: worker.batch_events,
        batch_bytes: worker.batch_bytes,
    };
    let kind = d.kind.of_type();
    let destination =
        kind.build(&context).map_err(anyhow::Error::from_boxed).with_context(|| format!("destination {}", d.name))?;
    Ok(Built { worker, destination, target: kind.target(&context) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_destinations_means_the_embedded_warehouse_and_an_empty_list_means_none() {
        let config: Config = toml::from_str("").unwrap();
        let list = configured(&config);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].kind.name()), (DEFAULT_WAREHOUSE, "sqlite"));
        let config: Config = toml::from_str("destinations = []").unwrap();
        assert!(configured(&config).is_empty());
    }

    #[test]
    fn warehouse_defaults_are_micro_batches_of_a_second() {
        let config: Config = toml::from_str("").unwrap();
        let worker = worker_config(&configured(&config)[0]);
        assert_eq!(
            (worker.batch_events, worker.linger, worker.start),
            (10_000, Duration::from_secs(1), Start::Beginning)
        );
        assert_eq!(worker.max_age, Duration::from_secs(4 * 3600));
    }

    /// Each type's batches (events, bytes, time), start and send timeout, and whether
    /// `timeout_ms` is the send timeout (warehouses, files) or each request's (HTTP).
    #[test]
    fn delivery_defaults_by_type() {
        let mib = 1 << 20;
        let cases = [
            ("type = \"sqlite\"", (10_000, 32 * mib, 1000, Start::Beginning, 60_000), true),
            ("type = \"postgres\"", (10_000, 32 * mib, 1000, Start::Beginning, 60_000), true),
            ("type = \"webhook\"", (100, mib, 200, Start::End, 60_000), false),
            ("type = \"files\"", (100_000, 64 * mib, 60_000, Start::Beginning, 120_000), true),
            ("type = \"mixpanel\"", (1000, 4 * mib, 1000, Start::End, 120_000), false),
            ("type = \"amplitude\"", (1000, 4 * mib, 1000, Start::End, 120_000), false),
            ("type = \"ga4\"", (1000, 4 * mib, 1000, Start::End, 120_000), false),
        ];
        for (kind, (events, bytes, linger_ms, start, timeout_ms), timeout_is_the_send) in cases {
            let config: Config = toml::from_str(&format!("[[destinations]]\nname = \"d\"\n{kind}\n")).unwrap();
            let w = worker_config(&configured(&config)[0]);
            let got =
                (w.batch_events, w.batch_bytes, w.linger.as_millis() as u64, w.start, w.timeout.as_millis() as u64);
            assert_eq!(got, (events, bytes, linger_ms, start, timeout_ms), "{kind}");
            let text = format!("[[destinations]]\nname = \"d\"\n{kind}\ntimeout_ms = 7\nstart = \"end\"\n");
            let config: Config = toml::from_str(&text).unwrap();
            let w = worker_config(&configured(&config)[0]);
            assert_eq!(w.timeout == Duration::from_millis(7), timeout_is_the_send, "{kind}");
            assert_eq!(w.start, Start::End, "{kind}");
        }
    }
}
