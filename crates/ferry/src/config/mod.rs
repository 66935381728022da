//! `ferry.toml`: the raw configuration as written, every field documented, unknown keys
//! rejected. Precedence: file < environment (`FERRY_...`) < flags.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_destinations::settings::{Settings, StartAt};
use serde::Deserialize;

mod load;

/// The file read when no `--config` is given, if it exists.
pub(crate) const DEFAULT_FILE: &str = "ferry.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where ferry keeps its data: the event log, quarantine, dedupe index, cursors.
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    /// The HTTP server.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// The event log: embedded (the default) or NATS JetStream (cluster mode).
    #[serde(default)]
    pub(crate) log: LogSection,
    /// NATS JetStream, for `log.backend = "nats"`.
    #[serde(default)]
    pub(crate) nats: NatsSection,
    /// Sources and their write keys. None: ferry runs open (any non-empty key, one source
    /// per key) and says so at start-up.
    #[serde(default)]
    pub(crate) sources: Vec<SourceConfig>,
    /// The admin API and the debugger page.
    #[serde(default)]
    pub(crate) admin: AdminSection,
    /// Where events are delivered. Absent: the embedded SQLite warehouse
    /// `<data_dir>/warehouse.db` (named `warehouse`). `destinations = []`: none.
    #[serde(default)]
    pub(crate) destinations: Option<Vec<DestinationConfig>>,
}

/// One destination: the keys every type takes (its name and how it is delivered to),
/// then `type` and that type's own keys (`ferry_destinations::settings`).
///
/// Not `deny_unknown_fields`, which serde does not support beside a flattened field: a key
/// that is none of these goes to the type's settings, which refuse any they do not know.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DestinationConfig {
    /// Its name: the key that turns it on or off in an event's `integrations`
    /// (case-sensitive), and the name of its cursor and dead letters.
    pub(crate) name: String,
    /// Where to start without a cursor: `beginning` (the default for warehouses) or `end`.
    #[serde(default)]
    pub(crate) start: Option<StartAt>,
    /// A batch holds at most this many events (warehouses: 10000).
    #[serde(default)]
    pub(crate) batch_events: Option<usize>,
    /// ...and at most this many bytes of stored events (default 32 MiB).
    #[serde(default)]
    pub(crate) batch_bytes: Option<usize>,
    /// How long to wait for a batch to fill, in milliseconds (warehouses: 1000).
    #[serde(default)]
    pub(crate) batch_ms: Option<u64>,
    /// Keep retrying an event this long after its first attempt, then dead-letter it
    /// (default 14400: 4 hours, as Segment).
    #[serde(default)]
    pub(crate) max_age_seconds: Option<u64>,
    /// The first retry waits about this long, doubling up to `retry_max_ms` (default 1000).
    #[serde(default)]
    pub(crate) retry_initial_ms: Option<u64>,
    /// The longest wait between retries, in milliseconds (default 600000: 10 minutes).
    #[serde(default)]
    pub(crate) retry_max_ms: Option<u64>,
    /// Give up on one send after this many milliseconds, and retry (default 60000); for
    /// HTTP destinations, on one request.
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    /// `type = "sqlite"`, `"postgres"`, `"webhook"`, `"files"`, `"mixpanel"`,
    /// `"amplitude"` or `"ga4"`, and that type's own keys.
    #[serde(flatten)]
    pub(crate) kind: Settings,
}

impl DestinationConfig {
    /// The keys of a `[[destinations]]` table that are not its type's: `name`, `type` and
    /// the fields above (for the unknown-key hints, which list them with the type's).
    pub(crate) const KEYS: [&str; 10] = [
        "name",
        "type",
        "start",
        "batch_events",
        "batch_bytes",
        "batch_ms",
        "max_age_seconds",
        "retry_initial_ms",
        "retry_max_ms",
        "timeout_ms",
    ];

    /// A destination with every delivery setting at its type's default.
    pub(crate) fn new(name: &str, kind: Settings) -> DestinationConfig {
        DestinationConfig {
            name: name.to_owned(),
            start: None,
            batch_events: None,
            batch_bytes: None,
            batch_ms: None,
            max_age_seconds: None,
            retry_initial_ms: None,
            retry_max_ms: None,
            timeout_ms: None,
            kind,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// The URL clients reach ferry at (for the analytics.js settings document); when unset
    /// the request's `Host` header is used.
    #[serde(default)]
    pub(crate) public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed when filling `context.ip`.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<IpAddr>,
    /// Largest request body on the wire, in bytes.
    #[serde(default = "default_max_body")]
    pub(crate) max_body_bytes: usize,
    /// Request bytes that may be in flight at once; beyond it requests get 429.
    #[serde(default = "default_max_inflight")]
    pub(crate) max_inflight_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            public_url: None,
            trusted_proxies: Vec::new(),
            max_body_bytes: default_max_body(),
            max_inflight_bytes: default_max_inflight(),
        }
    }
}

/// The admin API (`/admin/v1/...`) and the debugger (`/debugger`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminSection {
    /// When set, the admin API and the debugger need `Authorization: Bearer <token>` (the
    /// debugger page also takes `?token=`). Also `FERRY_ADMIN_TOKEN`.
    #[serde(default)]
    pub(crate) token: Option<String>,
    /// Without a token ferry refuses to listen on an address other than loopback, since
    /// anyone who reaches it could redrive, replay and read events; `true` allows it
    /// anyway (behind a proxy that authenticates, say).
    #[serde(default)]
    pub(crate) allow_open: bool,
}

/// How appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Sync {
    /// fsync before answering, shared by concurrent requests (group commit). The default.
    Always,
    /// fsync every `sync_interval_ms`; a crash can lose that window.
    Interval,
    /// Never fsync: tests and benchmarks only.
    Never,
}

/// Where events are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    /// The log in `data_dir` on this machine.
    Embedded,
    /// A NATS JetStream stream shared by many ferry nodes (cluster mode).
    Nats,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogSection {
    /// `embedded` (default) or `nats` (cluster mode; see `[nats]`).
    #[serde(default = "default_backend")]
    pub(crate) backend: Backend,
    /// `always` (default), `interval` or `never`.
    #[serde(default = "default_sync")]
    pub(crate) sync: Sync,
    /// The fsync interval for `sync = "interval"`, in milliseconds.
    #[serde(default = "default_sync_interval_ms")]
    pub(crate) sync_interval_ms: u64,
    /// Keep events at least this many hours after every consumer has read them.
    #[serde(default = "default_retention_hours")]
    pub(crate) retention_hours: u64,
    /// The log's disk budget in bytes; when it is full, ingestion answers 429.
    #[serde(default = "default_max_disk_bytes")]
    pub(crate) max_disk_bytes: u64,
    /// How long a message id is remembered for deduplication, in hours (max 720).
    #[serde(default = "default_dedupe_hours")]
    pub(crate) dedupe_window_hours: u64,
    /// Message ids kept in memory: 34.4 MB per million, allocated at start (10 bytes per id
    /// of this cap, plus 24 per id held). Older ids inside the window move to run files on
    /// disk: 2.5–3.6 bytes of memory and 20 bytes of disk each.
    #[serde(default = "default_dedupe_memory_ids")]
    pub(crate) dedupe_memory_ids: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            backend: default_backend(),
            sync: default_sync(),
            sync_interval_ms: default_sync_interval_ms(),
            retention_hours: default_retention_hours(),
            max_disk_bytes: default_max_disk_bytes(),
            dedupe_window_hours: default_dedupe_hours(),
            dedupe_memory_ids: default_dedupe_memory_ids(),
        }
    }
}

/// Cluster mode: NATS JetStream as the log. The dedupe window is `log.dedupe_window_hours`
/// (the stream's duplicate window).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsSection {
    /// Server URLs; the client learns the rest of the cluster from them.
    #[serde(default = "default_nats_urls")]
    pub(crate) urls: Vec<String>,
    /// The stream, created when missing, checked when present.
    #[serde(default = "default_nats_stream")]
    pub(crate) stream: String,
    /// Subjects: `<prefix>.events`, `<prefix>.quarantine`, `<prefix>.tap.*`.
    #[serde(default = "default_nats_prefix")]
    pub(crate) subject_prefix: String,
    /// Replicas of the stream: 1, 3 (default) or 5.
    #[serde(default = "default_nats_replicas")]
    pub(crate) replicas: usize,
    /// Keep events this many hours (at least the dedupe window).
    #[serde(default = "default_retention_hours")]
    pub(crate) max_age_hours: u64,
    /// The stream's byte budget; when full, collectors answer 429.
    #[serde(default = "default_max_disk_bytes")]
    pub(crate) max_bytes: u64,
    /// How long a request waits for JetStream's acknowledgements before answering 503.
    #[serde(default = "default_publish_timeout_ms")]
    pub(crate) publish_timeout_ms: u64,
    /// How long a worker's lease on a batch lasts without news before another worker
    /// gets it (leases are extended while a batch is sent or retried).
    #[serde(default = "default_ack_wait_ms")]
    pub(crate) ack_wait_ms: u64,
    /// This node's name in the cluster (default: host name and process id).
    #[serde(default)]
    pub(crate) node: Option<String>,
    /// Token authentication.
    #[serde(default)]
    pub(crate) token: Option<String>,
    /// User and password authentication.
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates.
    #[serde(default)]
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    #[serde(default)]
    pub(crate) tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) tls_key_file: Option<PathBuf>,
    /// Refuse servers without TLS.
    #[serde(default)]
    pub(crate) require_tls: bool,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            urls: default_nats_urls(),
            stream: default_nats_stream(),
            subject_prefix: default_nats_prefix(),
            replicas: default_nats_replicas(),
            max_age_hours: default_retention_hours(),
            max_bytes: default_max_disk_bytes(),
            publish_timeout_ms: default_publish_timeout_ms(),
            ack_wait_ms: default_ack_wait_ms(),
            node: None,
            token: None,
            user: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceConfig {
    /// The source's id, stored on every event it sends (a slug such as `web`).
    pub(crate) id: String,
    /// The write keys that authenticate as this source.
    pub(crate) write_keys: Vec<String>,
}

impl Config {
    /// The configuration: the file at `path` (else `./ferry.toml` when there is one, else
    /// the defaults) with `FERRY_<SECTION>__<KEY>` variables over it; or every problem.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config, Vec<String>> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let default = Path::new(DEFAULT_FILE);
        let path = path.or_else(|| default.exists().then_some(default));
        let Some(path) = path else {
            return load::read("", "environment", &env);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![format!(
                "cannot read config file {}: {e}; pass another with --config (or FERRY_CONFIG)",
                path.display()
            )]
        })?;
        load::read(&text, &path.display().to_string(), &env)
    }

    /// Every problem at once, so `ferry check` can print them all.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.log.dedupe_window_hours == 0 || self.log.dedupe_window_hours > 720 {
            problems.push("log.dedupe_window_hours must be between 1 and 720 (30 days)".to_owned());
        }
        if self.log.dedupe_memory_ids < 1000 {
            problems.push("log.dedupe_memory_ids must be at least 1000".to_owned());
        }
        if self.log.sync == Sync::Interval && self.log.sync_interval_ms == 0 {
            problems.push("log.sync_interval_ms must be positive with sync = \"interval\"".to_owned());
        }
        if self.log.backend == Backend::Nats {
            self.nats_problems(&mut problems);
        }
        let mut names = std::collections::HashSet::new();
        for d in self.destinations.iter().flatten() {
            if d.name.is_empty() || d.name.chars().any(|c| c.is_control()) {
                problems.push("a destination needs a name without control characters".to_owned());
            }
            if !names.insert(d.name.clone()) {
                problems.push(format!("two destinations are named {}", d.name));
            }
            for problem in d.kind.of_type().problems() {
                problems.push(format!("destination {}: {problem}", d.name));
            }
            for (field, value) in [
                ("batch_events", d.batch_events.map(|v| v as u64)),
                ("batch_bytes", d.batch_bytes.map(|v| v as u64)),
                ("timeout_ms", d.timeout_ms),
                ("retry_initial_ms", d.retry_initial_ms),
                ("retry_max_ms", d.retry_max_ms),
            ] {
                if value == Some(0) {
                    problems.push(format!("destination {}: `{field}` must be positive", d.name));
                }
            }
        }
        let mut seen = HashMap::new();
        for source in &self.sources {
            if source.id.is_empty() {
                problems.push("a source has an empty id".to_owned());
            }
            for key in &source.write_keys {
                if key.is_empty() {
                    problems.push(format!("source {} has an empty write key", source.id));
                }
                if let Some(other) = seen.insert(key.clone(), source.id.clone()) {
                    problems.push(format!("write key used by two sources: {other} and {}", source.id));
                }
            }
        }
        problems
    }

    fn nats_problems(&self, problems: &mut Vec<String>) {
        let n = &self.nats;
        if n.urls.is_empty() {
            problems.push("nats.urls needs at least one server url".to_owned());
        }
        for url in &n.urls {
            if !ferry_nats::valid_url(url) {
                problems.push(format!("nats.urls: {url:?} is not a nats url (nats://host:4222)"));
            }
        }
        let name_ok = |s: &str, dots: bool| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'))
                && !s.starts_with('.')
                && !s.ends_with('.')
        };
        if !name_ok(&n.stream, false) {
            problems.push(format!("nats.stream {:?} must be letters, digits, `_` and `-`", n.stream));
        }
        if !name_ok(&n.subject_prefix, true) {
            problems.push(format!(
                "nats.subject_prefix {:?} must be letters, digits, `_`, `-` and inner dots",
                n.subject_prefix
            ));
        }
        if !matches!(n.replicas, 1 | 3 | 5) {
            problems.push(format!("nats.replicas must be 1, 3 or 5, not {}", n.replicas));
        }
        if n.max_age_hours != 0 && n.max_age_hours < self.log.dedupe_window_hours {
            problems.push(format!(
                "nats.max_age_hours ({}) must be 0 (no limit) or at least log.dedupe_window_hours ({})",
                n.max_age_hours, self.log.dedupe_window_hours
            ));
        }
        if n.max_bytes == 0 || n.max_bytes > i64::MAX as u64 {
            problems.push("nats.max_bytes must be positive".to_owned());
        }
        if n.publish_timeout_ms == 0 {
            problems.push("nats.publish_timeout_ms must be positive".to_owned());
        }
        if n.ack_wait_ms < 1000 {
            problems.push("nats.ack_wait_ms must be at least 1000".to_owned());
        }
        if n.user.is_some() != n.password.is_some() {
            problems.push("nats.user and nats.password go together".to_owned());
        }
        if n.token.is_some() && n.user.is_some() {
            problems.push("nats: give either token or user and password, not both".to_owned());
        }
        if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
            problems.push("nats.tls_cert_file and nats.tls_key_file go together".to_owned());
        }
        for d in self.destinations.iter().flatten() {
            if matches!(d.kind, Settings::Files(_)) {
                problems.push(format!(
                    "destination {}: type files is not available with log.backend = \"nats\" (its batches must be the same after a crash, which a shared consumer cannot promise); deliver to a webhook or a warehouse",
                    d.name
                ));
            }
        }
    }

    pub(crate) fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.log.sync_interval_ms)
    }
}

fn default_backend() -> Backend {
    Backend::Embedded
}
fn default_nats_urls() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}
fn default_nats_stream() -> String {
    "FERRY".to_owned()
}
fn default_nats_prefix() -> String {
    "ferry".to_owned()
}
fn default_nats_replicas() -> usize {
    3
}
fn default_publish_timeout_ms() -> u64 {
    5000
}
fn default_ack_wait_ms() -> u64 {
    30_000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("ferry-data")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_inflight() -> usize {
    256 * 1024 * 1024
}
fn default_sync() -> Sync {
    Sync::Always
}
fn default_sync_interval_ms() -> u64 {
    50
}
fn default_retention_hours() -> u64 {
    7 * 24
}
fn default_max_disk_bytes() -> u64 {
    10 * 1024 * 1024 * 1024
}
fn default_dedupe_hours() -> u64 {
    24
}
/// Half a million ids (17.2 MB when full): older ids move to run files, at about 3 bytes
/// of memory each. With a million, the HTTP benchmark's peak RSS was 9-22 MB higher at
/// the same throughput (BENCHMARKS.md, 2026-12-03).
fn default_dedupe_memory_ids() -> usize {
    500_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.server.listen, default_listen());
        assert_eq!(config.log.sync, Sync::Always);
        // Half a million ids in memory, the same default as the log library's.
        assert_eq!(config.log.dedupe_memory_ids, 500_000);
        assert_eq!(config.log.dedupe_memory_ids, ferry_log::LogConfig::default().dedupe_max_ids);
        assert!(config.sources.is_empty());
        assert!(config.problems().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<Config>("[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.to_string().contains("unknown field `listen_addr`"), "{error}");
    }

    #[test]
    fn problems_are_all_reported() {
        let text = r#"
            [log]
            dedupe_window_hours = 0
            [[sources]]
            id = "web"
            write_keys = ["a", ""]
            [[sources]]
            id = "ios"
            write_keys = ["a"]
        "#;
        let config: Config = toml::from_str(text).unwrap();
        let problems = config.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn destination_problems_are_all_reported() {
        let text = r#"
            [[destinations]]
            name = "pg"
            type = "postgres"
            [[destinations]]
            name = "pg"
            type = "sqlite"
            url = "postgres://x"
            batch_events = 0
        "#;
        // A key of another type is an unknown key of this one: reported as the file is
        // read, with the problems of the rest.
        let problems = load::read(text, "f", &[]).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("needs `url`")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("two destinations are named pg")), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown key `destinations[1].url`; valid keys here: name, type, path, start")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("`batch_events` must be positive")), "{problems:?}");
        let error = toml::from_str::<Config>("[[destinations]]\nname = \"x\"\ntype = \"bigquery\"\n").unwrap_err();
        assert!(error.to_string().contains("unknown variant `bigquery`"), "{error}");
    }

    /// `DestinationConfig::KEYS` are its own fields: serde says where a wrong value of
    /// one is, which it cannot for a key of the flattened type settings.
    #[test]
    fn destination_keys_are_the_fields_every_type_takes() {
        for key in DestinationConfig::KEYS.iter().filter(|k| **k != "type") {
            let mut destination: toml::Table = "name = \"a\"\ntype = \"sqlite\"\n".parse().unwrap();
            destination.insert((*key).to_owned(), toml::Value::Table(toml::Table::new()));
            let table =
                toml::Table::from_iter([("destinations".to_owned(), toml::Value::Array(vec![destination.into()]))]);
            let error = Config::deserialize(table).unwrap_err().to_string();
            assert!(error.contains(&format!("in `destinations.{key}`")), "{key}: {error}");
        }
    }
}

#[cfg(test)]
mod example {
    /// The annotated example in the repo root must stay a valid configuration.
    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../../ferry.example.toml");
        let config: super::Config = toml::from_str(text).expect("ferry.example.toml is valid");
        assert!(config.problems().is_empty());
        // The example shows the defaults.
        assert_eq!(config.log.dedupe_memory_ids, super::default_dedupe_memory_ids());
        // Uncommenting the example sources must also be valid.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        [
                            "[",
                            "id ",
                            "write_keys ",
                            "name ",
                            "type ",
                            "url ",
                            "urls ",
                            "project_token ",
                            "api_key ",
                            "measurement_id ",
                            "api_secret ",
                        ]
                        .iter()
                        .any(|p| r.starts_with(p))
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config: super::Config = toml::from_str(&uncommented).expect("example sources are valid");
        assert_eq!(config.sources.len(), 2);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let destinations = config.destinations.expect("the example destinations");
        let kinds: Vec<&str> = destinations.iter().map(|d| d.kind.name()).collect();
        assert_eq!(kinds, ["postgres", "webhook", "files", "mixpanel", "amplitude", "ga4"]);
    }
}
