//! The admin API: JSON under `/admin/v1/`, described by the OpenAPI document at
//! `/openapi.json`. With an admin token configured, every admin route (and the debugger)
//! refuses requests without `Authorization: Bearer <token>` (the debugger page and its
//! event stream also take `?token=`, since browsers cannot set headers on them).
//!
//! The API only routes and checks; the work is an [`Admin`] the binary provides (so this
//! crate still knows neither the log nor the destinations). Quarantined items are
//! re-submitted here, through the same validation and ingest as any request.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, BoxFuture, IngestBatch, collect};

/// What the admin API asks of the process. Answers are JSON documents in the shapes the
/// OpenAPI document describes; `Ok(None)` is "no such thing" (404).
pub trait Admin: Send + Sync + 'static {
    /// Every destination: name, type, position, lag (events, seconds), outcomes, whether
    /// it is retrying, its last error, its dead letters.
    fn destinations(&self) -> BoxFuture<'_, Result<Value, String>>;
    /// Dead letters matching the filter.
    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Value, String>>;
    fn dead_letter(&self, id: i64) -> BoxFuture<'_, Result<Option<Value>, String>>;
    /// Start redriving the dead letters matching the filter: a job.
    fn redrive(&self, filter: DeadLetterFilter) -> BoxFuture<'_, Result<Value, String>>;
    /// Quarantined items from `from` on, at most `limit`.
    fn quarantine(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Value, String>>;
    /// One quarantine record (`{"offset", "record"}`).
    fn quarantine_item(&self, offset: u64) -> BoxFuture<'_, Result<Option<Value>, String>>;
    /// Start a replay of `[since, until)` to a destination: a job. `Err` for an unknown
    /// destination or bad times.
    fn start_replay(&self, request: ReplayStart) -> BoxFuture<'_, Result<Value, String>>;
    fn jobs(&self) -> BoxFuture<'_, Result<Value, String>>;
    fn job(&self, id: u64) -> BoxFuture<'_, Result<Option<Value>, String>>;
    /// Ask a job to stop; `Ok(None)` when there is no such job.
    fn cancel_job(&self, id: u64) -> BoxFuture<'_, Result<Option<Value>, String>>;
}

/// Filters of the dead letter routes (query string or JSON body).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    pub destination: Option<String>,
    /// The reason or an attempt's error contains this text.
    pub error: Option<String>,
    /// The track event name.
    pub event: Option<String>,
    /// The event's `receivedAt` is at or after this (ISO-8601).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Include redriven ones.
    #[serde(default)]
    pub all: bool,
    pub limit: Option<usize>,
}

/// `POST /admin/v1/replays`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStart {
    pub destination: String,
    /// ISO-8601.
    pub since: String,
    pub until: Option<String>,
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
pub const OPENAPI: &str = include_str!("openapi.json");

fn failed(message: String) -> ApiError {
    ApiError::Internal { message }
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

async fn sources(State(state): State<AppState>) -> Json<Value> {
    let sources: Vec<Value> = state
        .inner
        .metrics
        .sources
        .all()
        .into_iter()
        .map(|(id, c)| {
            json!({
                "id": id,
                "accepted": c.accepted.get(),
                "accepted_bytes": c.accepted_bytes.get(),
                "duplicate": c.duplicate.get(),
                "rejected": c.rejected.get(),
            })
        })
        .collect();
    let configured: Vec<&String> = match &state.inner.config.sources {
        crate::Sources::Open => Vec::new(),
        crate::Sources::Configured(keys) => {
            let mut ids: Vec<&String> = keys.values().collect();
            ids.sort();
            ids.dedup();
            ids
        }
    };
    Json(json!({ "open": configured.is_empty(), "configured": configured, "sources": sources }))
}

async fn destinations(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    admin(&state)?.destinations().await.map(Json).map_err(failed)
}

async fn dead_letters(
    State(state): State<AppState>,
    Query(filter): Query<DeadLetterFilter>,
) -> Result<Json<Value>, ApiError> {
    admin(&state)?.dead_letters(filter).await.map(Json).map_err(failed)
}

async fn dead_letter(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    admin(&state)?
        .dead_letter(id)
        .await
        .map_err(failed)?
        .map(Json)
        .ok_or_else(|| ApiError::NoSuch { message: format!("no dead letter {id}") })
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

async fn redrive(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let filter: DeadLetterFilter = body_or_default(&body)?;
    admin(&state)?.redrive(filter).await.map(Json).map_err(failed)
}

async fn quarantine(State(state): State<AppState>, Query(q): Query<QuarantineQuery>) -> Result<Json<Value>, ApiError> {
    admin(&state)?.quarantine(q.from, q.limit.unwrap_or(100).min(1000)).await.map(Json).map_err(failed)
}

async fn quarantine_item(State(state): State<AppState>, Path(offset): Path<u64>) -> Result<Json<Value>, ApiError> {
    admin(&state)?
        .quarantine_item(offset)
        .await
        .map_err(failed)?
        .map(Json)
        .ok_or_else(|| ApiError::NoSuch { message: format!("no quarantined item at offset {offset}") })
}

/// Validate and ingest a quarantined item again (as it was, or as fixed in the body),
/// for the source it came from, through the same path as a request.
async fn resubmit(
    State(state): State<AppState>,
    Path(offset): Path<u64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: Resubmit = body_or_default(&body)?;
    let record = admin(&state)?
        .quarantine_item(offset)
        .await
        .map_err(failed)?
        .ok_or_else(|| ApiError::NoSuch { message: format!("no quarantined item at offset {offset}") })?;
    let record = &record["record"];
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
        return Ok(Json(json!({
            "resubmitted": false,
            "code": rejected.rejection.code(),
            "message": rejected.rejection.to_string(),
            "field": rejected.rejection.field(),
        })));
    }
    let message_ids: Vec<String> = processed
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(e.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let receipt = collect::ingest(&state, IngestBatch { events: processed.events, quarantine: Vec::new() }).await?;
    Ok(Json(json!({ "resubmitted": true, "messageIds": message_ids, "duplicate": receipt.duplicates > 0 })))
}

async fn start_replay(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let request: ReplayStart = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("a replay needs {{\"destination\", \"since\", \"until\"?}}: {e}"),
    })?;
    admin(&state)?
        .start_replay(request)
        .await
        .map(Json)
        .map_err(|message| ApiError::BadRequest { code: "invalid_replay", message })
}

async fn jobs(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    admin(&state)?.jobs().await.map(Json).map_err(failed)
}

async fn job(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Json<Value>, ApiError> {
    admin(&state)?
        .job(id)
        .await
        .map_err(failed)?
        .map(Json)
        .ok_or_else(|| ApiError::NoSuch { message: format!("no job {id}") })
}

async fn cancel_job(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Json<Value>, ApiError> {
    admin(&state)?
        .cancel_job(id)
        .await
        .map_err(failed)?
        .map(Json)
        .ok_or_else(|| ApiError::NoSuch { message: format!("no job {id}") })
}
