//! The tracking endpoints: one call per request, batches, the pixel API and the browser's
//! metrics route. Each request is read (bounded), inflated, decoded, authenticated,
//! validated and enriched, then handed to [`Ingest`](crate::Ingest); the answer is sent
//! only after the log said the events and the quarantined items are durable.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use ferry_event::{CallType, Ctx, Described, Parsed, Processed, Rejected, Route};
use serde::Deserialize;
use tokio::sync::SemaphorePermit;

use crate::{ApiError, AppState, AppendError, IngestBatch, IngestReceipt, Record, Sources, body};

/// The tracking routes (`POST`) and what their bodies are: one call of the type the path
/// names (the browser's short paths too), or a batch envelope.
pub(crate) const ROUTES: &[(&str, Route)] = &[
    ("/v1/track", Route::Single(CallType::Track)),
    ("/v1/identify", Route::Single(CallType::Identify)),
    ("/v1/page", Route::Single(CallType::Page)),
    ("/v1/screen", Route::Single(CallType::Screen)),
    ("/v1/group", Route::Single(CallType::Group)),
    ("/v1/alias", Route::Single(CallType::Alias)),
    ("/v1/t", Route::Single(CallType::Track)),
    ("/v1/i", Route::Single(CallType::Identify)),
    ("/v1/p", Route::Single(CallType::Page)),
    ("/v1/s", Route::Single(CallType::Screen)),
    ("/v1/g", Route::Single(CallType::Group)),
    ("/v1/a", Route::Single(CallType::Alias)),
    ("/v1/batch", Route::Batch),
    ("/v1/import", Route::Batch),
    ("/v1/b", Route::Batch),
];

/// How long a client should wait when ferry is over its in-flight budget.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A request to one of the [`ROUTES`].
pub(crate) async fn collect(state: AppState, route: Route, request: Request) -> Response {
    match collect_inner(&state, route, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn collect_inner(state: &AppState, route: Route, request: Request) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let config = &inner.config;
    // The request: read within the in-flight budget, inflated, decoded, authenticated.
    let (parts, body) = request.into_parts();
    let body = read(state, &parts.headers, body).await?;
    let parsed = ferry_event::parse(&body.bytes, route, &config.limits).map_err(ApiError::Request)?;
    let source_id = authenticate(&parts.headers, &parsed, &config.sources)?;
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client_ip = client_ip(peer, &parts.headers, &config.trusted_proxies);

    // The pipeline: validated, enriched and encoded, then durable.
    let items = parsed.len();
    let shown = shown_items(inner, &parsed);
    let origin = Origin { source_id: &source_id, client_ip, describe: shown.is_some() };
    let processed = process(state, parsed, &origin);
    let accepted = processed.events.len();
    let accepted_bytes: usize = processed.events.iter().map(|e| e.payload.len()).sum();
    let rejected_bytes: usize = processed.quarantine.iter().map(|q| q.payload.len()).sum();
    let rejected = processed.rejected;
    let watched = shown.map(|raws| Watched::new(raws, items, processed.described, &processed.events, &rejected));
    let receipt = ingest(state, IngestBatch { events: processed.events, quarantine: processed.quarantine }).await?;
    let source = inner.metrics.sources.get(&source_id);
    source.accepted.add((accepted - receipt.duplicates) as u64);
    source.accepted_bytes.add(accepted_bytes.saturating_sub(receipt.duplicate_bytes) as u64);
    source.duplicate.add(receipt.duplicates as u64);
    source.duplicate_bytes.add(receipt.duplicate_bytes as u64);
    source.rejected.add(rejected.len() as u64);
    source.rejected_bytes.add(rejected_bytes as u64);
    if let Some(watched) = watched {
        watched.publish(inner, &source_id, parts.uri.path(), &receipt.duplicate);
    }

    answer(route, accepted, receipt.duplicates, &rejected)
}

/// A single call's answer is its rejection, if any; a batch's says what became of each item.
fn answer(route: Route, accepted: usize, duplicates: usize, rejected: &[Rejected]) -> Result<Response, ApiError> {
    if let Route::Single(_) = route {
        if let Some(first) = rejected.first() {
            // The event is in quarantine; the client learns why at once.
            return Err(ApiError::InvalidEvent(first.rejection));
        }
        return Ok(success_body());
    }
    let rejected = rejected.iter().map(RejectedItem::of).collect();
    let body = BatchAnswer { success: true, accepted, duplicates, rejected };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// A request body, and the in-flight budget it holds until it is dropped.
struct Body<'s> {
    bytes: Bytes,
    _permits: (SemaphorePermit<'s>, Option<SemaphorePermit<'s>>),
}

/// Read and inflate a body, first taking a permit per KiB it may take (on the wire, then
/// inflated), so that the memory of everything in flight is bounded.
async fn read<'s>(state: &'s AppState, headers: &HeaderMap, body: axum::body::Body) -> Result<Body<'s>, ApiError> {
    let config = &state.inner.config;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(config.max_body_bytes)
        .min(config.max_body_bytes);
    let permit = acquire(state, declared)?;
    let raw = body::read(headers, body, config.max_body_bytes).await?;
    let inflate_permit =
        if body::is_gzip(headers, &raw) { Some(acquire(state, config.max_inflated_bytes)?) } else { None };
    let bytes = body::inflate(headers, raw, config.max_inflated_bytes)?;
    Ok(Body { bytes, _permits: (permit, inflate_permit) })
}

/// The source of the write key (from the `Authorization` header, else the body).
fn authenticate(headers: &HeaderMap, parsed: &Parsed<'_>, sources: &Sources) -> Result<String, ApiError> {
    let write_key = header_write_key(headers).or_else(|| parsed.write_key().map(str::to_owned));
    let Some(write_key) = write_key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::MissingWriteKey);
    };
    sources.source_for(&write_key).ok_or(ApiError::UnknownWriteKey)
}

/// Where a decoded request comes from, as the pipeline needs it.
pub(crate) struct Origin<'a> {
    pub(crate) source_id: &'a str,
    pub(crate) client_ip: Option<IpAddr>,
    /// Describe the accepted events for the debugger (only while somebody watches).
    pub(crate) describe: bool,
}

/// The pipeline after decoding, for requests and resubmitted items alike: every item
/// validated, enriched and encoded with this server's clock, message ids and limits.
pub(crate) fn process(state: &AppState, parsed: Parsed<'_>, origin: &Origin<'_>) -> Processed {
    let inner = &state.inner;
    let mut new_id = || inner.ids.message_id();
    let mut ctx = Ctx {
        received_at: inner.clock.now(),
        source_id: origin.source_id,
        client_ip: origin.client_ip,
        limits: &inner.config.limits,
        new_message_id: &mut new_id,
        describe: origin.describe,
    };
    ferry_event::process(parsed, &mut ctx)
}

/// Hand the events and quarantine records to the log: `Ok` once they are durable.
pub(crate) async fn ingest(state: &AppState, batch: IngestBatch) -> Result<IngestReceipt, ApiError> {
    state.inner.ingest.ingest(batch).await.map_err(|error| match error {
        AppendError::Full { retry_after, .. } => ApiError::Overloaded { retry_after },
        AppendError::Unavailable { retry_after, reason } => {
            tracing::error!(%reason, "log refused a write");
            ApiError::Unavailable { retry_after }
        }
    })
}

#[derive(serde::Serialize)]
struct BatchAnswer<'a> {
    success: bool,
    accepted: usize,
    duplicates: usize,
    rejected: Vec<RejectedItem<'a>>,
}

#[derive(serde::Serialize)]
struct RejectedItem<'a> {
    index: usize,
    #[serde(rename = "messageId")]
    message_id: Option<&'a str>,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl RejectedItem<'_> {
    fn of(rejected: &Rejected) -> RejectedItem<'_> {
        let Rejected { index, message_id, rejection } = rejected;
        let (code, message, field) = (rejection.code(), rejection.to_string(), rejection.field());
        RejectedItem { index: *index, message_id: message_id.as_deref(), code, message, field }
    }
}

/// `{"success":true}`, as Segment answers, from static bytes (building and serializing a
/// JSON value for it cost about 2% of a single-event request).
fn success_body() -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes::Bytes::from_static(br#"{"success":true}"#)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The debugger's feed: the items as received, only while somebody watches, and only the
/// first ones up to its budget (per request and per second; the rest are counted).
fn shown_items(inner: &crate::Inner, parsed: &Parsed<'_>) -> Option<Vec<String>> {
    inner.tap.watched().then(|| {
        let budget = inner.tap.reserve(ferry_tap::REQUEST_BYTES);
        let mut used = 0;
        (0..parsed.len())
            .map_while(|i| {
                (used < budget).then(|| {
                    let raw = parsed.item_json(i).unwrap_or_default();
                    used += raw.len();
                    raw
                })
            })
            .collect()
    })
}

/// What the debugger is shown of a request, gathered before the events go to the log.
struct Watched {
    /// The first items as sent, up to the tap's budget.
    raws: Vec<String>,
    /// How many items the request had.
    items: usize,
    /// Accepted events among them, as the pipeline described them, with their records.
    events: Vec<(Described, Record)>,
    rejected: Vec<ferry_tap::RejectedSeen>,
}

impl Watched {
    fn new(
        raws: Vec<String>,
        items: usize,
        described: Vec<Described>,
        events: &[Record],
        rejected: &[Rejected],
    ) -> Self {
        let events = described.into_iter().zip(events).filter(|(d, _)| d.index < raws.len());
        let events = events.map(|(described, record)| (described, record.clone())).collect();
        let rejected = rejected
            .iter()
            .filter(|r| r.index < raws.len())
            .map(|r| ferry_tap::RejectedSeen {
                index: r.index,
                message_id: r.message_id.clone(),
                code: r.rejection.code().to_owned(),
                message: r.rejection.to_string(),
                field: r.rejection.field().map(str::to_owned),
                item: ferry_tap::bounded(raws.get(r.index).map_or("", String::as_str), ferry_tap::MAX_ITEM_BYTES),
            })
            .collect();
        Watched { raws, items, events, rejected }
    }

    /// Show the request (or, when none of its items fit the budget, count them as skipped).
    fn publish(self, inner: &crate::Inner, source: &str, route: &str, duplicate: &[bool]) {
        let Watched { raws, items, events, rejected } = self;
        let omitted = items - raws.len();
        if raws.is_empty() {
            return inner.tap.skip(omitted);
        }
        let events = events
            .into_iter()
            .enumerate()
            .map(|(n, (described, record))| ferry_tap::EventSeen {
                message_id: String::from_utf8(record.key.unwrap_or_default()).unwrap_or_default(),
                call: described.call.as_str().to_owned(),
                event: described.event,
                user_id: described.user_id,
                anonymous_id: described.anonymous_id,
                raw: ferry_tap::bounded(
                    raws.get(described.index).map_or("", String::as_str),
                    ferry_tap::MAX_ITEM_BYTES,
                ),
                stored: String::from_utf8(record.payload).unwrap_or_default(),
                warnings: described
                    .warnings
                    .iter()
                    .map(|w| ferry_tap::Warning {
                        code: w.code().to_owned(),
                        message: w.to_string(),
                        field: Some(w.field().to_owned()),
                    })
                    .collect(),
                duplicate: duplicate.get(n).copied().unwrap_or(false),
            })
            .collect();
        inner.tap.publish(ferry_tap::Observation::Request(ferry_tap::RequestSeen {
            at: ferry_event::format_time(inner.clock.now()),
            source: source.to_owned(),
            route: route.to_owned(),
            events,
            rejected,
            omitted: omitted + inner.tap.take_skipped(),
        }));
    }
}

fn acquire(state: &AppState, bytes: usize) -> Result<SemaphorePermit<'_>, ApiError> {
    let permits = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    state
        .inner
        .inflight
        .try_acquire_many(permits)
        .map_err(|_| ApiError::Overloaded { retry_after: OVERLOAD_RETRY_AFTER })
}

/// The write key from `Authorization: Basic` (the username, with or without a colon).
/// A Bearer token carries no key: the body's `writeKey` is used with it.
pub(crate) fn header_write_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let username = decoded.split_once(':').map_or(decoded.as_str(), |(user, _)| user);
    (!username.is_empty()).then(|| username.to_owned())
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|hop| hop.trim().parse().ok()).collect();
    hops.into_iter().rev().find(|hop| !trusted.contains(hop)).or(Some(peer))
}

/// `POST /v1/m`: analytics.js reports its own metrics; count the series, keep nothing.
pub(crate) async fn browser_metrics(State(state): State<AppState>, request: Request) -> Response {
    let config = &state.inner.config;
    let (parts, body) = request.into_parts();
    let read = body::read(&parts.headers, body, config.limits.max_event_bytes).await;
    let series = read
        .ok()
        .and_then(|bytes| serde_json::from_slice::<MetricsBody>(&bytes).ok())
        .map_or(0, |body| body.series.len());
    state.inner.metrics.browser_series.add(series as u64);
    success_body()
}

#[derive(Deserialize)]
struct MetricsBody {
    #[serde(default)]
    series: Vec<serde::de::IgnoredAny>,
}

/// A 1×1 transparent GIF, the answer to every pixel request.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

#[derive(Deserialize)]
pub(crate) struct PixelQuery {
    data: Option<String>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

/// `GET /v1/pixel/{type}?data=<base64 JSON>`: always a GIF, as Segment answers, even when
/// the event is refused; refusals are logged and invalid events go to quarantine.
pub(crate) async fn pixel(
    State(state): State<AppState>,
    Path(call): Path<String>,
    Query(query): Query<PixelQuery>,
    request: Request,
) -> Response {
    if let Err(error) = pixel_inner(&state, &call, query, request).await {
        let (status, code, message) = error.parts();
        tracing::info!(%status, code, %message, "pixel event refused");
    }
    let mut response = (StatusCode::OK, PIXEL_GIF).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    response
}

async fn pixel_inner(state: &AppState, call: &str, query: PixelQuery, request: Request) -> Result<(), ApiError> {
    // `{type}` is a call's `type`, as in a batch item.
    let call = CallType::parse(call).ok_or(ApiError::NotFound)?;
    let data = query.data.unwrap_or_default();
    let json = decode_base64(&data).ok_or_else(|| ApiError::BadRequest {
        code: "invalid_base64",
        message: "the `data` query parameter is not base64".to_owned(),
    })?;
    // Reuse the POST path: a pixel is a single call whose body came in the query string.
    let (mut parts, _) = request.into_parts();
    if let Some(key) = query.write_key {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        if let Ok(value) = HeaderValue::from_str(&format!("Basic {token}")) {
            parts.headers.insert(header::AUTHORIZATION, value);
        }
    }
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
    let request = Request::from_parts(parts, axum::body::Body::from(json));
    let response = collect_inner(state, Route::Single(call), request).await?;
    debug_assert!(response.status().is_success());
    Ok(())
}

fn decode_base64(data: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let data = data.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(data).ok())
}
