//! A destination's settings as written in `ferry.toml`: a `[[destinations]]` table is one
//! [`Settings`] variant, chosen by its `type`. Each type's folder owns its keys in its
//! `config.rs` by implementing [`DestinationSettings`] for them: for most types they are the
//! config its constructor takes (what is not a key is filled in from the [`Context`]). The
//! keys every destination takes (`name`, `start`, batching, retries, `timeout_ms`) are the
//! delivery's, read by the binary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::{Destination, amplitude, files, ga4, mixpanel, warehouse, webhook};

/// The settings of one destination, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Settings {
    /// The embedded SQLite warehouse (Segment's schema; tables prefixed by source).
    Sqlite(warehouse::sqlite::Settings),
    /// A PostgreSQL warehouse (Segment's schema; one schema per source).
    Postgres(warehouse::PostgresConfig),
    /// Segment-compatible webhooks: each event's JSON to one to five URLs.
    Webhook(webhook::Settings),
    /// gzip JSON Lines files in `source=/type=/date=/hour=` partitions (a data lake).
    Files(files::Settings),
    /// Mixpanel's ingestion API (events, People transactions for revenue, profiles).
    Mixpanel(mixpanel::MixpanelConfig),
    /// Amplitude's HTTP V2 API.
    Amplitude(amplitude::AmplitudeConfig),
    /// Google Analytics 4's Measurement Protocol.
    Ga4(ga4::Ga4Config),
}

/// What a destination type answers about its settings.
pub trait DestinationSettings {
    /// Its name in `type = "..."`.
    fn kind(&self) -> &'static str;

    /// What is wrong with the settings, each a phrase for `ferry check` (which puts
    /// `destination <name>: ` before it).
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// How the type is delivered to where `[[destinations]]` does not say.
    fn defaults(&self) -> Defaults;

    /// Where it delivers, for the start-up log (passwords left out).
    fn target(&self, context: &Context<'_>) -> String;

    /// The destination: files are opened now, connections made on first use where the
    /// type can.
    fn build(&self, context: &Context<'_>) -> Result<Arc<dyn Destination>, BuildError>;
}

/// Why a destination could not be built: its type's own error (`webhook::Error`,
/// `files::Error`, ...), boxed so that a new type adds nothing here.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// What building a destination needs beyond its own settings.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `data_dir`: a type without a path of its own writes under it.
    pub data_dir: &'a Path,
    /// `timeout_ms`, when given (what it bounds: [`Defaults::timeout_ms`]).
    pub timeout: Option<Duration>,
    /// The most events a batch sent to it holds (its default or `batch_events`).
    pub batch_events: usize,
    /// The most bytes of stored events a batch sent to it holds.
    pub batch_bytes: usize,
}

/// A type's delivery settings where `[[destinations]]` does not give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Events per batch at most.
    pub batch_events: usize,
    /// Bytes of stored events per batch at most.
    pub batch_bytes: usize,
    /// How long a batch waits to fill.
    pub linger: Duration,
    /// Where a destination without a cursor starts.
    pub start: StartAt,
    /// How long one send of a batch may take.
    pub send_timeout: Duration,
    /// What `timeout_ms` bounds for this type.
    pub timeout_ms: TimeoutMs,
}

/// What the `timeout_ms` setting bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMs {
    /// One send of a batch (warehouses, files): it takes the place of `send_timeout`.
    Send,
    /// Each request of an HTTP destination, which applies it itself; a send of a whole
    /// batch may still take `send_timeout`.
    Request,
}

/// Where a destination starts reading when it has no cursor yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The oldest event the log still holds.
    Beginning,
    /// Only events stored from now on.
    End,
}

impl Settings {
    /// The settings as their type answers for them.
    pub fn of_type(&self) -> &dyn DestinationSettings {
        match self {
            Settings::Sqlite(s) => s,
            Settings::Postgres(s) => s,
            Settings::Webhook(s) => s,
            Settings::Files(s) => s,
            Settings::Mixpanel(s) => s,
            Settings::Amplitude(s) => s,
            Settings::Ga4(s) => s,
        }
    }

    /// The type's name, as in `type = "..."`.
    pub fn name(&self) -> &'static str {
        self.of_type().kind()
    }
}

/// Mixpanel, Amplitude and GA4: batches of a thousand events a second, from now on; a
/// batch may take two minutes of requests.
pub(crate) const ANALYTICS_DEFAULTS: Defaults = Defaults {
    batch_events: 1000,
    batch_bytes: 4 << 20,
    linger: Duration::from_secs(1),
    start: StartAt::End,
    send_timeout: Duration::from_secs(120),
    timeout_ms: TimeoutMs::Request,
};

/// One request of Mixpanel, Amplitude or GA4 without `timeout_ms`.
pub(crate) fn analytics_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What is wrong with an analytics tool's settings: each `(key, value)` of `required` that
/// is empty, and an `api_url` that is not an HTTP URL.
pub(crate) fn analytics_problems(kind: &str, required: &[(&str, &str)], api_url: &str) -> Vec<String> {
    let mut problems: Vec<String> = required.iter().filter_map(|(key, value)| require(kind, key, value)).collect();
    if !is_http(api_url) {
        problems.push(format!("api_url {api_url:?} must start with http:// or https://"));
    }
    problems
}

/// `type <kind> needs `<key>`` when a required text is empty (or missing: it defaults to
/// empty).
pub(crate) fn require(kind: &str, key: &str, value: &str) -> Option<String> {
    value.is_empty().then(|| format!("type {kind} needs `{key}`"))
}

/// Whether `url` starts with `http://` or `https://`.
pub(crate) fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// A URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
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

    /// Every type's `kind` is the name serde reads in `type`.
    #[test]
    fn each_type_answers_to_its_name() {
        let unknown = serde_json::from_str::<Settings>(r#"{"type": "zz_probe"}"#).unwrap_err().to_string();
        let names: Vec<&str> = unknown.split('`').skip(3).step_by(2).collect();
        assert_eq!(names.len(), 7, "{unknown}");
        for name in names {
            let settings: Settings = serde_json::from_str(&format!(r#"{{"type": "{name}"}}"#)).unwrap();
            assert_eq!(settings.name(), name);
        }
    }
}
