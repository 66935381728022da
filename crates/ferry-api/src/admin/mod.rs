//! The admin API: JSON under `/admin/v1/`, described by the OpenAPI document at
//! `/openapi.json`. With an admin token configured, every admin route (and the debugger)
//! refuses requests without `Authorization: Bearer <token>` (the debugger page and its
//! event stream also take `?token=`, since browsers cannot set headers on them).
//!
//! The API only routes and checks; the work is an [`Admin`] the binary provides (so this
//! crate still knows neither the log nor the destinations). Quarantined items are
//! re-submitted here, through the same validation and ingest as any request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, BoxFuture, IngestBatch, collect};

mod model;

pub use model::*;

/// What the admin API asks of the process: typed answers, or an [`AdminError`] that says
/// whose fault it is.
pub trait Admin: Send + Sync + 'static {
    /// Every destination: type, position, lag, outcomes, whether it is retrying, its last
    /// error, its dead letters.
    fn destinations(&self) -> BoxFuture<'_, Result<DestinationList, AdminError>>;
    /// Dead letters matching the filter.
    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<DeadLetterList, AdminError>>;
    /// One dead letter, with its stored event.
    fn dead_letter(&self, id: i64) -> BoxFuture<'_, Result<DeadLetterView, AdminError>>;
    /// Start redriving the dead letters matching the filter: a job.
    fn redrive(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Job, AdminError>>;
    /// Quarantined items from `from` on, at most `limit`.
    fn quarantine(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<QuarantinePage, AdminError>>;
    /// One quarantine record.
    fn quarantine_item(&self, offset: u64) -> BoxFuture<'_, Result<QuarantineItem, AdminError>>;
    /// Start a replay of `[since, until)` to a destination: a job.
    fn start_replay(&self, request: ReplayStart) -> BoxFuture<'_, Result<Job, AdminError>>;
    fn jobs(&self) -> BoxFuture<'_, Result<JobList, AdminError>>;
    fn job(&self, id: u64) -> BoxFuture<'_, Result<Job, AdminError>>;
    /// Ask a job to stop.
    fn cancel_job(&self, id: u64) -> BoxFuture<'_, Result<Job, AdminError>>;
}

/// Why an admin request failed: the caller's mistake (4xx, said as it is) or ferry's fault
/// (5xx: the detail goes to the log under a correlation id, which is all the caller gets).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// What was asked for is not there.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong: a stable code and what to change.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// ferry could not do it.
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl AdminError {
    /// ferry's fault, with its cause.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AdminError {
        AdminError::Internal(error.into())
    }
}

/// The one place admin errors become HTTP answers.
impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> ApiError {
        match error {
            AdminError::NotFound(message) => ApiError::NoSuch { message },
            AdminError::Invalid { code, message } => ApiError::BadRequest { code, message },
            AdminError::Internal(error) => {
                let correlation_id = correlation_id();
                tracing::error!(%correlation_id, %error, "an admin request failed");
                ApiError::Internal { correlation_id }
            }
        }
    }
}

/// A new id for one failure: the process's start time and a counter, in hex, so that an
/// answer can be found in the log.
fn correlation_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    });
    format!("{epoch:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[derive(Deserialize)]
struct QuarantineQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

/// `POST /admin/v1/quarantine/{offset}/resubmit`: the item again, or a fixed one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resubmit {
    item: Option<Value>,
}

/// The OpenAPI document of the admin API (and of the routes it links to).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// A query string or a path parameter the route cannot read: the caller's mistake, said in
/// the API's own error shape (axum's rejections are plain text).
fn unreadable(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_request",
        message: format!("the {what} is not what this route takes: {error}"),
    }
}

fn admin(state: &AppState) -> Result<&Arc<dyn Admin>, ApiError> {
    state
        .inner
        .admin
        .get()
        .ok_or_else(|| ApiError::NoSuch { message: "the admin api is not available in this process".into() })
}

/// The admin routes (without the token check; see [`require_token`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/sources", get(sources))
        .route("/admin/v1/destinations", get(destinations))
        .route("/admin/v1/dead-letters", get(dead_letters))
        .route("/admin/v1/dead-letters/{id}", get(dead_letter))
        .route("/admin/v1/dead-letters/redrive", post(redrive))
        .route("/admin/v1/quarantine", get(quarantine))
        .route("/admin/v1/quarantine/{offset}", get(quarantine_item))
        .route("/admin/v1/quarantine/{offset}/resubmit", post(resubmit))
        .route("/admin/v1/replays", post(start_replay))
        .route("/admin/v1/jobs", get(jobs))
        .route("/admin/v1/jobs/{id}", get(job).delete(cancel_job))
}

/// With a token configured: `Authorization: Bearer <token>`, or `?token=<token>`.
pub(crate) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.inner.config.admin_token.as_deref() else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")).map(|t| t.to_owned()));
    let given = bearer.map(str::to_owned).or(query);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => next.run(request).await,
        _ => ApiError::AdminToken.into_response(),
    }
}

/// Equal, in time that does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn sources(State(state): State<AppState>) -> Json<SourceList> {
    let sources = state
        .inner
        .metrics
        .sources
        .all()
        .into_iter()
        .map(|(id, c)| SourceCounts {
            id,
            accepted: c.accepted.get(),
            accepted_bytes: c.accepted_bytes.get(),
            duplicate: c.duplicate.get(),
            rejected: c.rejected.get(),
        })
        .collect();
    let configured: Vec<String> = match &state.inner.config.sources {
        crate::Sources::Open => Vec::new(),
        crate::Sources::Configured(keys) => {
            let mut ids: Vec<String> = keys.values().cloned().collect();
            ids.sort();
            ids.dedup();
            ids
        }
    };
    Json(SourceList { open: configured.is_empty(), configured, sources })
}

async fn destinations(State(state): State<AppState>) -> Result<Json<DestinationList>, ApiError> {
    Ok(Json(admin(&state)?.destinations().await?))
}

async fn dead_letters(
    State(state): State<AppState>,
    filter: Result<Query<DeadLetterFilter>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(filter) = filter.map_err(|e| unreadable("query string", e))?;
    Ok(Json(admin(&state)?.dead_letters(filter).await?))
}

async fn dead_letter(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<DeadLetterView>, ApiError> {
    let Path(id) = id.map_err(|e| unreadable("dead letter id", e))?;
    Ok(Json(admin(&state)?.dead_letter(id).await?))
}

/// A JSON body, or the default when there is none.
fn body_or_default<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("the body is not what this route takes: {e}"),
    })
}

async fn redrive(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Job>, ApiError> {
    let filter: DeadLetterFilter = body_or_default(&body)?;
    Ok(Json(admin(&state)?.redrive(filter).await?))
}

async fn quarantine(
    State(state): State<AppState>,
    query: Result<Query<QuarantineQuery>, QueryRejection>,
) -> Result<Json<QuarantinePage>, ApiError> {
    let Query(q) = query.map_err(|e| unreadable("query string", e))?;
    Ok(Json(admin(&state)?.quarantine(q.from, q.limit.unwrap_or(100).min(1000)).await?))
}

async fn quarantine_item(
    State(state): State<AppState>,
    offset: Result<Path<u64>, PathRejection>,
) -> Result<Json<QuarantineItem>, ApiError> {
    let Path(offset) = offset.map_err(|e| unreadable("offset", e))?;
    Ok(Json(admin(&state)?.quarantine_item(offset).await?))
}

/// Validate and ingest a quarantined item again (as it was, or as fixed in the body),
/// for the source it came from, through the same path as a request.
async fn resubmit(
    State(state): State<AppState>,
    offset: Result<Path<u64>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Json<Resubmitted>, ApiError> {
    let Path(offset) = offset.map_err(|e| unreadable("offset", e))?;
    let body: Resubmit = body_or_default(&body)?;
    let QuarantineItem { record, .. } = admin(&state)?.quarantine_item(offset).await?;
    let Some(source_id) = record["sourceId"].as_str().map(str::to_owned) else {
        return Err(ApiError::BadRequest {
            code: "invalid_quarantine_record",
            message: "the record has no sourceId".into(),
        });
    };
    let item = match body.item {
        Some(fixed) => fixed,
        None => record["item"].clone(),
    };
    let envelope = json!({ "batch": [item] }).to_string();
    let parsed = ferry_event::parse(envelope.as_bytes(), ferry_event::Route::Batch, &state.inner.config.limits)
        .map_err(|e| ApiError::BadRequest { code: e.code(), message: e.to_string() })?;
    let origin = collect::Origin { source_id: &source_id, client_ip: None, describe: false };
    let processed = collect::process(&state, parsed, &origin);
    if let Some(rejected) = processed.rejected.first() {
        // Still invalid: not stored again (it is in quarantine already).
        return Ok(Json(Resubmitted {
            resubmitted: false,
            message_ids: None,
            duplicate: None,
            code: Some(rejected.rejection.code()),
            message: Some(rejected.rejection.to_string()),
            field: rejected.rejection.field(),
        }));
    }
    let message_ids: Vec<String> = processed
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(e.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let receipt = collect::ingest(&state, IngestBatch { events: processed.events, quarantine: Vec::new() }).await?;
    Ok(Json(Resubmitted {
        resubmitted: true,
        message_ids: Some(message_ids),
        duplicate: Some(receipt.duplicates > 0),
        code: None,
        message: None,
        field: None,
    }))
}

async fn start_replay(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Job>, ApiError> {
    let request: ReplayStart = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("a replay needs {{\"destination\", \"since\", \"until\"?}}: {e}"),
    })?;
    Ok(Json(admin(&state)?.start_replay(request).await?))
}

async fn jobs(State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    Ok(Json(admin(&state)?.jobs().await?))
}

async fn job(State(state): State<AppState>, id: Result<Path<u64>, PathRejection>) -> Result<Json<Job>, ApiError> {
    let Path(id) = id.map_err(|e| unreadable("job id", e))?;
    Ok(Json(admin(&state)?.job(id).await?))
}

async fn cancel_job(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let Path(id) = id.map_err(|e| unreadable("job id", e))?;
    Ok(Json(admin(&state)?.cancel_job(id).await?))
}
