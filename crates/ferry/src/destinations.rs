//! Building the configured destinations and their delivery settings.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_delivery::{Backoff, Start, WorkerConfig};
use ferry_destinations::Destination;
use ferry_destinations::warehouse::{PostgresConfig, PostgresWarehouse, SqliteConfig, SqliteWarehouse};

use crate::config::{Config, DestinationConfig, DestinationKind, StartAt};

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
        None => vec![DestinationConfig {
            name: DEFAULT_WAREHOUSE.to_owned(),
            kind: DestinationKind::Sqlite,
            path: None,
            url: None,
            start: None,
            batch_events: None,
            batch_bytes: None,
            batch_ms: None,
            max_age_seconds: None,
            retry_initial_ms: None,
            retry_max_ms: None,
            timeout_ms: None,
        }],
    }
}

/// The delivery settings of a destination, defaults filled in.
pub(crate) fn worker_config(d: &DestinationConfig) -> WorkerConfig {
    let defaults = WorkerConfig::new(&d.name);
    // Warehouses: big batches once a second (Segment-style micro-batches).
    let (batch_events, batch_ms, start) = (10_000, 1000, Start::Beginning);
    WorkerConfig {
        batch_events: d.batch_events.unwrap_or(batch_events),
        batch_bytes: d.batch_bytes.unwrap_or(32 << 20),
        linger: Duration::from_millis(d.batch_ms.unwrap_or(batch_ms)),
        max_age: d.max_age_seconds.map_or(defaults.max_age, Duration::from_secs),
        backoff: Backoff {
            initial: d.retry_initial_ms.map_or(defaults.backoff.initial, Duration::from_millis),
            max: d.retry_max_ms.map_or(defaults.backoff.max, Duration::from_millis),
        },
        timeout: Duration::from_millis(d.timeout_ms.unwrap_or(60_000)),
        start: match d.start {
            Some(StartAt::Beginning) => Start::Beginning,
            Some(StartAt::End) => Start::End,
            None => start,
        },
        ..defaults
    }
}

/// Open one destination (files, connections made lazily where possible).
pub(crate) fn build(config: &Config, d: &DestinationConfig) -> anyhow::Result<Built> {
    let worker = worker_config(d);
    match d.kind {
        DestinationKind::Sqlite => {
            let path = d.path.clone().unwrap_or_else(|| config.data_dir.join("warehouse.db"));
            let warehouse = SqliteWarehouse::open(&SqliteConfig { path: path.clone() })
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("destination {}", d.name))?;
            Ok(Built { worker, destination: Arc::new(warehouse), target: path.display().to_string() })
        }
        DestinationKind::Postgres => {
            let url = d.url.clone().unwrap_or_default();
            let warehouse =
                PostgresWarehouse::new(PostgresConfig { url: url.clone(), connect_timeout: Duration::from_secs(10) });
            Ok(Built { worker, destination: Arc::new(warehouse), target: redact(&url) })
        }
    }
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("postgres://me:secret@db:5432/x"), "postgres://me:***@db:5432/x");
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("host=db user=me"), "host=db user=me");
    }

    #[test]
    fn no_destinations_means_the_embedded_warehouse_and_an_empty_list_means_none() {
        let config: Config = toml::from_str("").unwrap();
        let list = configured(&config);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].kind), (DEFAULT_WAREHOUSE, DestinationKind::Sqlite));
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
}
