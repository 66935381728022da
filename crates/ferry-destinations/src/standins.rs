//! Local stand-ins for the SaaS APIs that cannot be reached from the test machines
//! (Mixpanel, Amplitude, Google Analytics 4), written from each API's public
//! documentation: they check authentication, request shape and required fields the way
//! the real API does, answer as it answers, keep what they accepted, and can be told to
//! fail the next requests (429, 5xx, ...). Feature `test-util`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A running stand-in: its base URL, what it accepted, and answers to force.
#[derive(Clone)]
pub struct StandIn {
    pub url: String,
    state: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Accepted items, by endpoint (`/import`, `/engage`, `/groups`, `/2/httpapi`, `/mp/collect`).
    accepted: HashMap<String, Vec<Value>>,
    /// Every request body, by endpoint.
    requests: HashMap<String, Vec<Value>>,
    /// Statuses (and `Retry-After`) to answer the next requests with, before checking.
    forced: Vec<(u16, Option<u64>)>,
    /// Problems found in requests the real API would refuse or silently drop (GA4).
    problems: Vec<String>,
}

impl StandIn {
    /// The items an endpoint accepted.
    pub fn accepted(&self, endpoint: &str) -> Vec<Value> {
        self.state.lock().map(|s| s.accepted.get(endpoint).cloned().unwrap_or_default()).unwrap_or_default()
    }

    /// Every request body an endpoint got.
    pub fn requests(&self, endpoint: &str) -> Vec<Value> {
        self.state.lock().map(|s| s.requests.get(endpoint).cloned().unwrap_or_default()).unwrap_or_default()
    }

    /// Answer the next requests with these statuses (and `Retry-After` seconds).
    pub fn force(&self, answers: &[(u16, Option<u64>)]) {
        if let Ok(mut s) = self.state.lock() {
            s.forced.extend_from_slice(answers);
        }
    }

    /// What the stand-in found wrong in requests that were answered 2xx anyway (GA4).
    pub fn problems(&self) -> Vec<String> {
        self.state.lock().map(|s| s.problems.clone()).unwrap_or_default()
    }

    fn forced(&self) -> Option<Response> {
        let (status, retry_after) = {
            let mut s = self.state.lock().ok()?;
            if s.forced.is_empty() {
                return None;
            }
            s.forced.remove(0)
        };
        let mut response =
            (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "forced by the test")
                .into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        Some(response)
    }

    fn record(&self, endpoint: &str, body: &Value, accepted: Vec<Value>) {
        if let Ok(mut s) = self.state.lock() {
            s.requests.entry(endpoint.to_owned()).or_default().push(body.clone());
            s.accepted.entry(endpoint.to_owned()).or_default().extend(accepted);
        }
    }
}

/// Bind a loopback port, build the router for the stand-in there, and serve it.
async fn start(build: impl FnOnce(StandIn) -> axum::Router) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a stand-in");
    let addr: SocketAddr = listener.local_addr().expect("stand-in address");
    let stand_in = StandIn { url: format!("http://{addr}"), state: Arc::default() };
    let router = build(stand_in.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    stand_in
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = decode_base64(encoded)?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_owned())
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Mixpanel: /import (strict), /engage, /groups.

/// Mixpanel's placeholder distinct ids, refused by `/import`.
const PLACEHOLDER_IDS: &[&str] =
    &["anon", "anonymous", "nil", "none", "null", "n/a", "undefined", "00000000-0000-0000-0000-000000000000"];

/// A Mixpanel stand-in for project `token`.
pub async fn mixpanel(token: &str) -> StandIn {
    let token = token.to_owned();
    start(move |stand_in| mixpanel_router(stand_in, token)).await
}

fn mixpanel_router(stand_in: StandIn, token: String) -> axum::Router {
    let (s1, t1) = (stand_in.clone(), token.clone());
    let import = move |Query(query): Query<HashMap<String, String>>, headers: HeaderMap, body: Bytes| {
        let stand_in = s1.clone();
        let token = t1.clone();
        async move {
            if let Some(forced) = stand_in.forced() {
                return forced;
            }
            if basic_user(&headers).as_deref() != Some(token.as_str()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"})),
                )
                    .into_response();
            }
            let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 400, "error": "unable to parse JSON array", "status": "Bad Request"})),
                )
                    .into_response();
            };
            if events.len() > 2000 {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(json!({"code": 413, "error": "too many events", "status": "Payload Too Large"})),
                )
                    .into_response();
            }
            let strict = query.get("strict").map(String::as_str) == Some("1");
            let mut failed = Vec::new();
            let mut accepted = Vec::new();
            let now_ms = jiff::Timestamp::now().as_millisecond();
            for (index, event) in events.iter().enumerate() {
                let properties = event.get("properties").and_then(Value::as_object);
                let insert_id =
                    properties.and_then(|p| p.get("$insert_id")).and_then(Value::as_str).unwrap_or_default();
                let problem = if event.get("event").and_then(Value::as_str).is_none_or(str::is_empty) {
                    Some(("event", "'event' must be a non-empty string"))
                } else if properties.is_none() {
                    Some(("properties", "'properties' must be an object"))
                } else if !properties.and_then(|p| p.get("time")).and_then(Value::as_i64).is_some_and(|t| {
                    let ms = if t < 100_000_000_000 { t * 1000 } else { t };
                    ms >= 31_536_000_000 && ms <= now_ms + 3_600_000
                }) {
                    Some((
                        "properties.time",
                        "'properties.time' is invalid: must be seconds or milliseconds since epoch",
                    ))
                } else if properties
                    .and_then(|p| p.get("distinct_id"))
                    .and_then(Value::as_str)
                    .is_none_or(|d| PLACEHOLDER_IDS.contains(&d.to_lowercase().as_str()))
                {
                    Some(("properties.distinct_id", "'properties.distinct_id' is invalid"))
                } else if insert_id.is_empty()
                    || insert_id.len() > 36
                    || !insert_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    Some((
                        "properties.$insert_id",
                        "'properties.$insert_id' is invalid: must be up to 36 alphanumeric or '-' characters",
                    ))
                } else {
                    None
                };
                match problem {
                    Some((field, message)) => {
                        failed.push(json!({"index": index, "insert_id": insert_id, "field": field, "message": message}))
                    }
                    None => accepted.push(event.clone()),
                }
            }
            let imported = accepted.len();
            stand_in.record("/import", &Value::Array(events), accepted);
            if failed.is_empty() || !strict {
                (StatusCode::OK, Json(json!({"code": 200, "num_records_imported": imported, "status": "OK"})))
                    .into_response()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 400, "error": "some data points in the request failed validation", "failed_records": failed, "num_records_imported": imported, "status": "Bad Request"})),
                )
                    .into_response()
            }
        }
    };
    let profile = move |endpoint: &'static str, id_key: &'static str| {
        let stand_in = stand_in.clone();
        let token = token.clone();
        move |body: Bytes| {
            let stand_in = stand_in.clone();
            let token = token.clone();
            async move {
                if let Some(forced) = stand_in.forced() {
                    return forced;
                }
                let Ok(Value::Array(updates)) = serde_json::from_slice::<Value>(&body) else {
                    return Json(json!({"status": 0, "error": "data must be a JSON array"})).into_response();
                };
                for update in &updates {
                    if update.get("$token").and_then(Value::as_str) != Some(token.as_str()) {
                        return Json(json!({"status": 0, "error": "invalid token"})).into_response();
                    }
                    if update.get(id_key).and_then(Value::as_str).is_none_or(str::is_empty) {
                        return Json(json!({"status": 0, "error": format!("missing {id_key}")})).into_response();
                    }
                    let ops = ["$set", "$set_once", "$add", "$append", "$union", "$remove", "$unset", "$delete"];
                    if !ops.iter().any(|op| update.get(*op).is_some()) {
                        return Json(json!({"status": 0, "error": "no profile operation"})).into_response();
                    }
                }
                stand_in.record(endpoint, &Value::Array(updates.clone()), updates);
                Json(json!({"status": 1, "error": null})).into_response()
            }
        }
    };
    axum::Router::new()
        .route("/import", axum::routing::post(import))
        .route("/engage", axum::routing::post(profile("/engage", "$distinct_id")))
        .route("/groups", axum::routing::post(profile("/groups", "$group_id")))
}

// ---------------------------------------------------------------------------------------
// Amplitude: HTTP V2.

/// An Amplitude stand-in for `api_key`.
pub async fn amplitude(api_key: &str) -> StandIn {
    let key = api_key.to_owned();
    start(move |stand_in| amplitude_router(stand_in, key)).await
}

fn amplitude_router(stand_in: StandIn, key: String) -> axum::Router {
    let httpapi = move |headers: HeaderMap, body: Bytes| {
        let stand_in = stand_in.clone();
        let key = key.clone();
        async move {
            if let Some(forced) = stand_in.forced() {
                return forced;
            }
            if !headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"))
            {
                return (StatusCode::BAD_REQUEST, Json(json!({"code": 400, "error": "Invalid Content-Type"})))
                    .into_response();
            }
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return (StatusCode::BAD_REQUEST, Json(json!({"code": 400, "error": "Invalid JSON request body"})))
                    .into_response();
            };
            if request.get("api_key").and_then(Value::as_str) != Some(key.as_str()) {
                return (StatusCode::BAD_REQUEST, Json(json!({"code": 400, "error": "Invalid API key"})))
                    .into_response();
            }
            let Some(events) = request.get("events").and_then(Value::as_array) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 400, "error": "Request missing required field", "missing_field": "events"})),
                )
                    .into_response();
            };
            if events.len() > 2000 || body.len() > 1_000_000 {
                return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"code": 413, "error": "Payload too large"})))
                    .into_response();
            }
            let min_id = request.pointer("/options/min_id_length").and_then(Value::as_u64).unwrap_or(5) as usize;
            let mut missing: HashMap<String, Vec<usize>> = HashMap::new();
            let mut invalid: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, e) in events.iter().enumerate() {
                match e.get("event_type").and_then(Value::as_str) {
                    None | Some("") => missing.entry("event_type".into()).or_default().push(i),
                    // Event types Amplitude keeps for itself.
                    Some("session_start" | "session_end" | "revenue_amount") => {
                        invalid.entry("event_type".into()).or_default().push(i)
                    }
                    Some(_) => {}
                }
                let user = e.get("user_id").and_then(Value::as_str);
                let device = e.get("device_id").and_then(Value::as_str);
                if user.is_none() && device.is_none() {
                    missing.entry("user_id".into()).or_default().push(i);
                }
                for (field, id) in [("user_id", user), ("device_id", device)] {
                    if id.is_some_and(|id| id.len() < min_id) {
                        invalid.entry(field.into()).or_default().push(i);
                    }
                }
                if e.get("time").is_some_and(|t| !t.is_i64()) {
                    invalid.entry("time".into()).or_default().push(i);
                }
                for field in ["revenue", "price"] {
                    if e.get(field).is_some_and(|v| !v.is_number()) {
                        invalid.entry(field.into()).or_default().push(i);
                    }
                }
            }
            stand_in.record("/2/httpapi", &request, Vec::new());
            if !missing.is_empty() || !invalid.is_empty() {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 400, "error": "Request has invalid or missing fields", "events_with_missing_fields": missing, "events_with_invalid_fields": invalid})),
                )
                    .into_response();
            }
            // Events repeating an insert_id seen before are dropped, as Amplitude does.
            let fresh: Vec<Value> = {
                let seen: Vec<String> = stand_in
                    .accepted("/2/httpapi")
                    .iter()
                    .filter_map(|e| e.get("insert_id").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                events
                    .iter()
                    .filter(|e| {
                        e.get("insert_id").and_then(Value::as_str).is_none_or(|id| !seen.iter().any(|s| s == id))
                    })
                    .cloned()
                    .collect()
            };
            stand_in.record("/2/httpapi", &Value::Null, fresh);
            Json(json!({"code": 200, "events_ingested": events.len(), "payload_size_bytes": body.len(), "server_upload_time": jiff::Timestamp::now().as_millisecond()})).into_response()
        }
    };
    axum::Router::new().route("/2/httpapi", axum::routing::post(httpapi))
}

// ---------------------------------------------------------------------------------------
// GA4 Measurement Protocol.

/// A GA4 Measurement Protocol stand-in for a stream. Like the real endpoint it answers
/// 204 to anything well-formed enough to read, and keeps the events it would have kept;
/// what the real one would silently drop is in [`StandIn::problems`].
pub async fn ga4(measurement_id: &str, api_secret: &str) -> StandIn {
    let (id, secret) = (measurement_id.to_owned(), api_secret.to_owned());
    start(move |stand_in| ga4_router(stand_in, id, secret)).await
}

fn ga4_router(stand_in: StandIn, id: String, secret: String) -> axum::Router {
    let collect = move |Query(query): Query<HashMap<String, String>>, body: Bytes| {
        let stand_in = stand_in.clone();
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            if let Some(forced) = stand_in.forced() {
                return forced;
            }
            let mut problems = Vec::new();
            if query.get("measurement_id") != Some(&id) || query.get("api_secret") != Some(&secret) {
                problems.push("unknown measurement_id or api_secret".to_owned());
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if body.len() > 130_000 {
                problems.push("payload over 130 kB".to_owned());
            }
            if request.get("client_id").and_then(Value::as_str).is_none_or(str::is_empty) {
                problems.push("client_id is required".to_owned());
            }
            let events = request.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
            if events.is_empty() || events.len() > 25 {
                problems.push(format!("{} events: 1 to 25 are allowed", events.len()));
            }
            let name_ok = |n: &str| {
                let mut c = n.chars();
                c.next().is_some_and(|f| f.is_ascii_alphabetic())
                    && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
                    && n.len() <= 40
            };
            let mut kept = Vec::new();
            for event in &events {
                let name = event.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut bad = !name_ok(name);
                let params = event.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
                if params.len() > 25 {
                    bad = true;
                }
                for (key, value) in &params {
                    if !name_ok(key) || value.as_str().is_some_and(|s| s.chars().count() > 100) {
                        bad = true;
                    }
                }
                if let Some(currency) = params.get("currency").and_then(Value::as_str)
                    && !ferry_event::is_currency(currency)
                {
                    bad = true;
                }
                if matches!(name, "purchase" | "refund") && params.get("transaction_id").is_none() {
                    bad = true;
                }
                if bad {
                    problems.push(format!("event {name:?} would be dropped: {event}"));
                } else {
                    let mut kept_event = event.clone();
                    kept_event["client_id"] = request["client_id"].clone();
                    if let Some(user) = request.get("user_id") {
                        kept_event["user_id"] = user.clone();
                    }
                    kept.push(kept_event);
                }
            }
            stand_in.record("/mp/collect", &request, kept);
            if let Ok(mut s) = stand_in.state.lock() {
                s.problems.extend(problems);
            }
            StatusCode::NO_CONTENT.into_response()
        }
    };
    axum::Router::new().route("/mp/collect", axum::routing::post(collect))
}
