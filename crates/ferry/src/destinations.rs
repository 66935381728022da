//! Building the configured destinations and their delivery settings.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_delivery::{Backoff, Start, WorkerConfig};
use ferry_destinations::Destination;
use ferry_destinations::amplitude::{Amplitude, AmplitudeConfig};
use ferry_destinations::files::{Files, FilesConfig};
use ferry_destinations::ga4::{Ga4, Ga4Config};
use ferry_destinations::mixpanel::{Mixpanel, MixpanelConfig};
use ferry_destinations::warehouse::{PostgresConfig, PostgresWarehouse, SqliteConfig, SqliteWarehouse};
use ferry_destinations::webhook::{Method, Webhook, WebhookConfig};

use crate::config::{Config, DestinationConfig, DestinationKind, StartAt, WebhookMethod};

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
        None => vec![DestinationConfig::new(DEFAULT_WAREHOUSE, DestinationKind::Sqlite)],
    }
}

/// Batches (events, bytes, time), where a new destination starts, and how long one send
/// may take, by kind: warehouses load micro-batches once a second; webhooks send small
/// batches quickly; files roll a file per partition a minute (or 64 MiB).
fn defaults(kind: DestinationKind) -> (usize, usize, u64, Start, u64) {
    match kind {
        DestinationKind::Sqlite | DestinationKind::Postgres => (10_000, 32 << 20, 1000, Start::Beginning, 60_000),
        DestinationKind::Webhook => (100, 1 << 20, 200, Start::End, 60_000),
        DestinationKind::Files => (100_000, 64 << 20, 60_000, Start::Beginning, 120_000),
        DestinationKind::Mixpanel | DestinationKind::Amplitude | DestinationKind::Ga4 => {
            (1000, 4 << 20, 1000, Start::End, 120_000)
        }
    }
}

/// The delivery settings of a destination, defaults filled in.
pub(crate) fn worker_config(d: &DestinationConfig) -> WorkerConfig {
    let defaults_for_all = WorkerConfig::new(&d.name);
    let (batch_events, batch_bytes, batch_ms, start, timeout_ms) = defaults(d.kind);
    WorkerConfig {
        batch_events: d.batch_events.unwrap_or(batch_events),
        batch_bytes: d.batch_bytes.unwrap_or(batch_bytes),
        linger: Duration::from_millis(d.batch_ms.unwrap_or(batch_ms)),
        max_age: d.max_age_seconds.map_or(defaults_for_all.max_age, Duration::from_secs),
        backoff: Backoff {
            initial: d.retry_initial_ms.map_or(defaults_for_all.backoff.initial, Duration::from_millis),
            max: d.retry_max_ms.map_or(defaults_for_all.backoff.max, Duration::from_millis),
        },
        // For HTTP destinations `timeout_ms` bounds each request; the worker allows a
        // whole batch.
        timeout: Duration::from_millis(match d.kind {
            DestinationKind::Sqlite | DestinationKind::Postgres | DestinationKind::Files => {
                d.timeout_ms.unwrap_or(timeout_ms)
            }
            _ => timeout_ms,
        }),
        start: match d.start {
            Some(StartAt::Beginning) => Start::Beginning,
            Some(StartAt::End) => Start::End,
            None => start,
        },
        ..defaults_for_all
    }
}

/// Open one destination (files, connections made lazily where possible).
pub(crate) fn build(config: &Config, d: &DestinationConfig) -> anyhow::Result<Built> {
    let worker = worker_config(d);
    let context = || format!("destination {}", d.name);
    match d.kind {
        DestinationKind::Sqlite => {
            let path = d.path.clone().unwrap_or_else(|| config.data_dir.join("warehouse.db"));
            let warehouse = SqliteWarehouse::open(&SqliteConfig { path: path.clone() })
                .map_err(anyhow::Error::msg)
                .with_context(context)?;
            Ok(Built { worker, destination: Arc::new(warehouse), target: path.display().to_string() })
        }
        DestinationKind::Postgres => {
            let url = d.url.clone().unwrap_or_default();
            let warehouse =
                PostgresWarehouse::new(PostgresConfig { url: url.clone(), connect_timeout: Duration::from_secs(10) });
            Ok(Built { worker, destination: Arc::new(warehouse), target: redact(&url) })
        }
        DestinationKind::Webhook => {
            let webhook = Webhook::new(WebhookConfig {
                urls: d.urls.clone(),
                headers: d.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                shared_secret: d.shared_secret.clone(),
                method: match d.method {
                    None | Some(WebhookMethod::Post) => Method::Post,
                    Some(WebhookMethod::Put) => Method::Put,
                    Some(WebhookMethod::Patch) => Method::Patch,
                },
                batch: d.batch.then_some((worker.batch_events, worker.batch_bytes)),
                timeout: Duration::from_millis(d.timeout_ms.unwrap_or(5000)),
                ..WebhookConfig::new(String::new())
            })
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
            let target = d.urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(", ");
            Ok(Built { worker, destination: Arc::new(webhook), target })
        }
        DestinationKind::Mixpanel => {
            let api_url = d.api_url.clone().unwrap_or_else(|| "https://api.mixpanel.com".to_owned());
            let mixpanel = Mixpanel::new(MixpanelConfig {
                api_url: api_url.clone(),
                project_token: d.project_token.clone().unwrap_or_default(),
                service_account: d
                    .service_account
                    .as_ref()
                    .map(|a| (a.user.clone(), a.secret.clone(), a.project_id.clone())),
                timeout: request_timeout(d),
            })
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
            Ok(Built { worker, destination: Arc::new(mixpanel), target: api_url })
        }
        DestinationKind::Amplitude => {
            let api_url = d.api_url.clone().unwrap_or_else(|| "https://api2.amplitude.com".to_owned());
            let amplitude = Amplitude::new(AmplitudeConfig {
                api_url: api_url.clone(),
                api_key: d.api_key.clone().unwrap_or_default(),
                timeout: request_timeout(d),
            })
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
            Ok(Built { worker, destination: Arc::new(amplitude), target: api_url })
        }
        DestinationKind::Ga4 => {
            let api_url = d.api_url.clone().unwrap_or_else(|| "https://www.google-analytics.com".to_owned());
            let ga4 = Ga4::new(Ga4Config {
                api_url: api_url.clone(),
                measurement_id: d.measurement_id.clone().unwrap_or_default(),
                api_secret: d.api_secret.clone().unwrap_or_default(),
                timeout: request_timeout(d),
            })
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
            Ok(Built { worker, destination: Arc::new(ga4), target: api_url })
        }
        DestinationKind::Files => {
            let root = d.path.clone().unwrap_or_else(|| config.data_dir.join("files"));
            let files = Files::open(FilesConfig { root: root.clone(), level: d.level.unwrap_or(6) })
                .map_err(anyhow::Error::msg)
                .with_context(context)?;
            Ok(Built { worker, destination: Arc::new(files), target: root.display().to_string() })
        }
    }
}

/// One HTTP request of an HTTP destination: `timeout_ms`, 10 s by default.
fn request_timeout(d: &DestinationConfig) -> Duration {
    Duration::from_millis(d.timeout_ms.unwrap_or(10_000))
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
