//! The HTTP surface of ferry: the Segment Tracking API (single calls, batches, the
//! browser's short routes, the pixel API, the settings document analytics.js loads, its
//! metrics route), CORS for browsers, and health probes.
//!
//! The API never touches the log: it hands validated events and quarantined items to a
//! [`Ingest`] and answers 2xx only when that returns `Ok`, which by contract means durable.
//! Build the router with [`router`]; everything it needs is in one [`AppState`].

pub mod admin;
mod body;
mod collect;
mod cors;
mod debugger;
mod edge;
mod error;
pub mod metrics;
mod settings;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use ferry_event::Limits;
pub use ferry_log_contract::{AppendError, Record};
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use metrics::MetricsSource;

/// What the API asks of the log behind it (embedded `ferry-log` or NATS JetStream).
pub trait Ingest: Send + Sync + 'static {
    /// Make `batch` durable: events (deduplicated by message id) and quarantined items.
    /// `Ok` means every item is durable under the configured policy.
    fn ingest(&self, batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, AppendError>>;

    /// Whether writes can be taken now (for `/ready`).
    fn ready(&self) -> bool;
}

/// A boxed, sendable future, so `Ingest` stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything one request hands to the logs: the events (each keyed by its message id,
/// for dedupe) and the quarantine records, one per rejected item.
#[derive(Debug, Default)]
pub struct IngestBatch {
    pub events: Vec<Record>,
    pub quarantine: Vec<Record>,
}

/// What the log did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    /// How many events were duplicates of events already in the dedupe window.
    pub duplicates: usize,
    /// The bytes of those duplicates' stored JSON.
    pub duplicate_bytes: usize,
    /// For each event of the batch, in order: whether it was a duplicate.
    pub duplicate: Vec<bool>,
}

/// Which write keys are accepted, and the source each belongs to.
#[derive(Debug, Clone)]
pub enum Sources {
    /// No sources configured: any non-empty key is accepted, one source per key.
    Open,
    /// Only these keys; the map goes from write key to source id.
    Configured(HashMap<String, String>),
}

impl Sources {
    /// The source id for a write key, or `None` when the key is not accepted.
    pub fn source_for(&self, write_key: &str) -> Option<String> {
        if write_key.is_empty() {
            return None;
        }
        match self {
            Sources::Open => Some(open_source_id(write_key)),
            Sources::Configured(keys) => keys.get(write_key).cloned(),
        }
    }
}

/// The source id of a write key in open mode: `wk_` and 16 hex digits of a stable
/// (FNV-1a 64) hash, so the key itself is never stored in events.
pub fn open_source_id(write_key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in write_key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // By hand: `format!` cost about 1% of a single-event request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(19);
    id.push_str("wk_");
    for shift in (0..16).rev() {
        id.push(char::from(HEX[(hash >> (shift * 4)) as usize & 0xf]));
    }
    id
}

/// A source of time, so tests can fix the clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Makes message ids for events that arrive without one.
pub trait IdGenerator: Send + Sync + 'static {
    fn message_id(&self) -> String;
}

/// Settings of the API that come from configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub sources: Sources,
    pub limits: Limits,
    /// Largest request body accepted on the wire (before gunzip).
    pub max_body_bytes: usize,
    /// Largest body after gunzip.
    pub max_inflated_bytes: usize,
    /// Bytes of request bodies that may be in flight at once; beyond it requests get 429.
    pub max_inflight_bytes: usize,
    /// The URL clients reach this server at, for the settings document; else the Host header.
    pub public_url: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// With a token, the admin API and the debugger need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// The debugger's feed; the rest of the process (delivery) publishes to it too.
    pub tap: Arc<ferry_tap::Tap>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            sources: Sources::Open,
            limits: Limits::default(),
            max_body_bytes: 1024 * 1024,
            max_inflated_bytes: 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            public_url: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            tap: Arc::default(),
        }
    }
}

/// The state every handler reads.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ApiConfig,
    ingest: Arc<dyn Ingest>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    inflight: Semaphore,
    metrics: metrics::ApiMetrics,
    /// The rest of the process's metrics (the log, delivery), when the binary sets them.
    metrics_source: std::sync::OnceLock<Arc<dyn MetricsSource>>,
    /// What the admin API works with, when the binary provides it.
    admin: std::sync::OnceLock<Arc<dyn admin::Admin>>,
    /// The debugger's feed.
    tap: Arc<ferry_tap::Tap>,
}

impl AppState {
    pub fn new(
        config: ApiConfig,
        ingest: Arc<dyn Ingest>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> AppState {
        let permits = (config.max_inflight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let tap = config.tap.clone();
        AppState {
            inner: Arc::new(Inner {
                config,
                ingest,
                clock,
                ids,
                inflight: Semaphore::new(permits),
                metrics: metrics::ApiMetrics::default(),
                metrics_source: std::sync::OnceLock::new(),
                admin: std::sync::OnceLock::new(),
                tap,
            }),
        }
    }

    /// Serve the admin API with `admin` (once; later calls are ignored).
    pub fn set_admin(&self, admin: Arc<dyn admin::Admin>) {
        let _ = self.inner.admin.set(admin);
    }

    /// Show `source`'s metrics on `/metrics` too (once; later calls are ignored).
    pub fn add_metrics(&self, source: Arc<dyn MetricsSource>) {
        let _ = self.inner.metrics_source.set(source);
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new();
    for &(path, route) in collect::ROUTES {
        app = app.route(path, post(move |State(state), request| collect::collect(state, route, request)));
    }
    app.route("/v1/m", post(collect::browser_metrics))
        .route("/v1/pixel/{call}", get(collect::pixel))
        .route("/v1/projects/{write_key}/settings", get(settings::settings))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(admin::openapi))
        .merge(
            admin::routes()
                .merge(debugger::routes())
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin::require_token)),
        )
        .fallback(not_found)
        .layer(edge::EdgeLayer { state: state.clone() })
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if state.inner.ingest.ready() {
        Ok(axum::Json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(ApiError::Unavailable { retry_after: Duration::from_secs(5) })
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

#[cfg(test)]
mod tests;
