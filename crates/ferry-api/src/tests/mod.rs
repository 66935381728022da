//! Router tests with an in-memory `Ingest`: every route, every refusal code, CORS, auth,
//! gzip, limits and overload. The real log is exercised by the binary's tests.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::*;

mod golden;
mod openapi;

/// Keeps what it is given; can be told to fail.
#[derive(Default)]
struct MemoryIngest {
    events: Mutex<Vec<(String, Vec<u8>)>>,
    quarantine: Mutex<Vec<Vec<u8>>>,
    fail: Mutex<Option<AppendError>>,
}

impl Ingest for MemoryIngest {
    fn ingest(&self, batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, AppendError>> {
        Box::pin(async move {
            if let Some(error) = self.fail.lock().unwrap().clone() {
                return Err(error);
            }
            let mut events = self.events.lock().unwrap();
            let (mut duplicates, mut duplicate_bytes, mut duplicate) = (0, 0, Vec::new());
            for event in batch.events {
                let id = String::from_utf8(event.key.unwrap()).unwrap();
                let seen = events.iter().any(|(known, _)| *known == id);
                duplicate.push(seen);
                if seen {
                    duplicates += 1;
                    duplicate_bytes += event.payload.len();
                } else {
                    events.push((id, event.payload));
                }
            }
            self.quarantine.lock().unwrap().extend(batch.quarantine.into_iter().map(|r| r.payload));
            Ok(IngestReceipt { duplicates, duplicate_bytes, duplicate })
        })
    }

    fn ready(&self) -> bool {
        self.fail.lock().unwrap().is_none()
    }
}

/// A clock tests set by hand; starts at 2026-11-28T10:37:15Z.
struct FixedClock(Mutex<jiff::Timestamp>);

impl Default for FixedClock {
    fn default() -> Self {
        FixedClock(Mutex::new("2026-11-28T10:37:15.000Z".parse().unwrap()))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap()
    }
}

struct CountingIds(Mutex<u64>);
impl IdGenerator for CountingIds {
    fn message_id(&self) -> String {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        format!("generated-{n}")
    }
}

struct Harness {
    app: Router,
    ingest: Arc<MemoryIngest>,
    clock: Arc<FixedClock>,
}

fn harness(config: ApiConfig) -> Harness {
    let ingest = Arc::new(MemoryIngest::default());
    let clock = Arc::new(FixedClock::default());
    let state = AppState::new(config, ingest.clone(), clock.clone(), Arc::new(CountingIds(Mutex::new(0))));
    Harness { app: router(state), ingest, clock }
}

fn open() -> Harness {
    harness(ApiConfig::default())
}

fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(key))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

fn post(path: &str, auth: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder().method(Method::POST).uri(path).header(header::CONTENT_TYPE, "text/plain");
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    builder.body(body.into()).unwrap()
}

const TRACK: &str =
    r#"{"type":"track","event":"Signed Up","userId":"u1","messageId":"m1","properties":{"plan":"pro"}}"#;

#[tokio::test]
async fn single_track_is_stored_and_answered_success() {
    let h = open();
    let answer = send(&h.app, post("/v1/track", Some(&basic("wk:")), TRACK)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"success": true}));
    assert_eq!(answer.body, br#"{"success":true}"#);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let events = h.ingest.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "m1");
    let stored: serde_json::Value = serde_json::from_slice(&events[0].1).unwrap();
    assert_eq!(stored["event"], "Signed Up");
    assert_eq!(stored["receivedAt"], "2026-11-28T10:37:15.000Z");
    assert!(stored.get("writeKey").is_none(), "the write key is never stored");
}

#[tokio::test]
async fn every_single_route_sets_the_type() {
    let routes = [
        ("/v1/identify", "identify"),
        ("/v1/i", "identify"),
        ("/v1/page", "page"),
        ("/v1/p", "page"),
        ("/v1/screen", "screen"),
        ("/v1/s", "screen"),
        ("/v1/t", "track"),
    ];
    for (path, call) in routes {
        let h = open();
        let body = r#"{"userId":"u1","event":"E","messageId":"x"}"#;
        let answer = send(&h.app, post(path, Some(&basic("wk")), body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.json());
        let events = h.ingest.events.lock().unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&events[0].1).unwrap();
        assert_eq!(stored["type"], call, "{path}");
    }
    for (path, body) in [
        ("/v1/group", r#"{"userId":"u1","groupId":"g1"}"#),
        ("/v1/g", r#"{"userId":"u1","groupId":"g1"}"#),
        ("/v1/alias", r#"{"userId":"u1","previousId":"a1"}"#),
        ("/v1/a", r#"{"userId":"u1","previousId":"a1"}"#),
    ] {
        let h = open();
        let answer = send(&h.app, post(path, Some(&basic("wk")), body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.json());
    }
}

#[tokio::test]
async fn write_key_from_basic_with_or_without_colon_body_or_bearer_plus_body() {
    let mut keys = HashMap::new();
    keys.insert("wk_good".to_owned(), "web".to_owned());
    let config = ApiConfig { sources: Sources::Configured(keys), ..ApiConfig::default() };
    let with_key = r#"{"type":"track","event":"E","userId":"u","writeKey":"wk_good"}"#;
    let cases: Vec<(Option<String>, &str, StatusCode, &str)> = vec![
        (Some(basic("wk_good:")), TRACK, StatusCode::OK, ""),
        (Some(basic("wk_good")), TRACK, StatusCode::OK, ""),
        (None, with_key, StatusCode::OK, ""),
        (Some("Bearer some.jwt.token".to_owned()), with_key, StatusCode::OK, ""),
        (None, TRACK, StatusCode::UNAUTHORIZED, "missing_write_key"),
        (Some("Bearer some.jwt.token".to_owned()), TRACK, StatusCode::UNAUTHORIZED, "missing_write_key"),
        (Some(basic("wk_bad:")), TRACK, StatusCode::UNAUTHORIZED, "unknown_write_key"),
        (Some(basic(":")), TRACK, StatusCode::UNAUTHORIZED, "missing_write_key"),
    ];
    for (auth, body, status, code) in cases {
        let h = harness(config.clone());
        let answer = send(&h.app, post("/v1/track", auth.as_deref(), body)).await;
        assert_eq!(answer.status, status, "{auth:?} {body}");
        if !code.is_empty() {
            assert_eq!(answer.code(), code);
            assert_eq!(answer.json()["success"], false);
            assert!(h.ingest.events.lock().unwrap().is_empty());
        } else {
            let events = h.ingest.events.lock().unwrap();
            let stored: serde_json::Value = serde_json::from_slice(&events[0].1).unwrap();
            assert_eq!(stored["sourceId"], "web");
        }
    }
}

#[tokio::test]
async fn open_mode_gives_each_key_its_own_source() {
    let h = open();
    send(&h.app, post("/v1/track", Some(&basic("key-a")), r#"{"event":"E","userId":"u","messageId":"1"}"#)).await;
    send(&h.app, post("/v1/track", Some(&basic("key-b")), r#"{"event":"E","userId":"u","messageId":"2"}"#)).await;
    let events = h.ingest.events.lock().unwrap();
    let a: serde_json::Value = serde_json::from_slice(&events[0].1).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&events[1].1).unwrap();
    assert_eq!(a["sourceId"], open_source_id("key-a"));
    assert_ne!(a["sourceId"], b["sourceId"]);
}

#[test]
fn basic_auth_write_keys_of_any_length_and_broken_ones() {
    let key = |value: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        crate::collect::header_write_key(&headers)
    };
    let long = "k".repeat(1000);
    for (credentials, expected) in [
        ("wk_1:", Some("wk_1")),
        ("wk_1", Some("wk_1")),
        ("wk_1:secret:more", Some("wk_1")),
        (long.as_str(), Some(long.as_str())),
        (&format!("{long}:"), Some(long.as_str())),
        (":", None),
        ("", None),
    ] {
        assert_eq!(key(&basic(credentials)).as_deref(), expected, "{credentials:?}");
    }
    assert_eq!(key("basic d2tfMTo=").as_deref(), Some("wk_1"), "the scheme is case-insensitive");
    assert_eq!(key("Basic not*base64"), None);
    assert_eq!(key("Basic /w=="), None, "not utf-8");
    assert_eq!(key("Bearer d2tfMTo="), None);
}

/// The open-mode source id is `wk_` and the 16 hex digits of the key's FNV-1a 64 hash:
/// stored in events, so it must never change.
#[test]
fn open_source_ids_are_stable() {
    assert_eq!(open_source_id("wk_bench"), "wk_53afff8f72a6d616");
    assert_eq!(open_source_id("\u{1f600}"), format!("wk_{:016x}", fnv1a(b"\xf0\x9f\x98\x80")));
    for key in ["a", "key-a", "segment write key", "0", "\u{0}"] {
        assert_eq!(open_source_id(key), format!("wk_{:016x}", fnv1a(key.as_bytes())), "{key:?}");
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[tokio::test]
async fn invalid_single_event_is_400_and_quarantined() {
    let h = open();
    let answer = send(&h.app, post("/v1/track", Some(&basic("wk")), r#"{"userId":"u1"}"#)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "missing_event");
    assert_eq!(answer.json()["success"], false);
    assert!(h.ingest.events.lock().unwrap().is_empty());
    let quarantine = h.ingest.quarantine.lock().unwrap();
    assert_eq!(quarantine.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&quarantine[0]).unwrap();
    assert_eq!(record["code"], "missing_event");
}

#[tokio::test]
async fn batch_accepts_valid_items_and_lists_rejected_ones() {
    let h = open();
    let body = r#"{"writeKey":"wk","batch":[
        {"type":"track","event":"A","userId":"u","messageId":"a"},
        {"type":"track","userId":"u","messageId":"b"},
        {"type":"identify","anonymousId":"x","messageId":"c"},
        {"type":"bogus","userId":"u","messageId":"d"}
    ]}"#;
    let answer = send(&h.app, post("/v1/batch", None, body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["success"], true);
    assert_eq!(json["accepted"], 2);
    let rejected = json["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["messageId"], "b");
    assert_eq!(rejected[0]["code"], "missing_event");
    assert_eq!(rejected[1]["index"], 3);
    assert_eq!(h.ingest.events.lock().unwrap().len(), 2);
    assert_eq!(h.ingest.quarantine.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn duplicates_are_answered_200_and_counted() {
    let h = open();
    for _ in 0..3 {
        let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), format!(r#"{{"batch":[{TRACK}]}}"#))).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(h.ingest.events.lock().unwrap().len(), 1);
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), format!(r#"{{"batch":[{TRACK}]}}"#))).await;
    assert_eq!(answer.json()["duplicates"], 1);
}

#[tokio::test]
async fn every_route_and_import_and_browser_batch_take_envelopes() {
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        let h = open();
        let body = r#"{"writeKey":"wk","sentAt":"2026-11-28T10:37:15.000Z","batch":[{"type":"page","userId":"u","messageId":"p1"}]}"#;
        let answer = send(&h.app, post(path, None, body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(h.ingest.events.lock().unwrap().len(), 1, "{path}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_by_header_or_by_magic_bytes() {
    let body = gzip(format!(r#"{{"batch":[{TRACK}]}}"#).as_bytes());
    let h = open();
    let mut request = post("/v1/batch", Some(&basic("wk")), body.clone());
    request.headers_mut().insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    assert_eq!(send(&h.app, request).await.status, StatusCode::OK);
    let h = open();
    assert_eq!(send(&h.app, post("/v1/batch", Some(&basic("wk")), body)).await.status, StatusCode::OK);
    assert_eq!(h.ingest.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn gzip_bomb_is_413_without_inflating_it_all() {
    // 64 MiB of zeros compress to ~64 KiB: under the wire limit, far over the inflated cap.
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let h = open();
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), bomb)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
}

#[tokio::test]
async fn broken_gzip_is_400() {
    let h = open();
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), vec![0x1f, 0x8b, 8, 0, 1, 2, 3])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "invalid_gzip");
}

#[tokio::test]
async fn ten_megabyte_body_is_413() {
    let h = open();
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), vec![b'x'; 10 * 1024 * 1024])).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures_like_stream(10 * 1024 * 1024);
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), stream)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_like_stream(total: usize) -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = (0..total / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn bad_json_deep_nesting_and_invalid_utf8_are_clean_400s() {
    let h = open();
    let cases: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        format!(
            r#"{{"batch":[{{"type":"track","event":"E","userId":"u","properties":{}1{}}}]}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        )
        .into_bytes(),
        b"{\"batch\":[{\"type\":\"track\",\"event\":\"\xff\xfe\",\"userId\":\"u\"}]}".to_vec(),
        b"[1,2,3]".to_vec(),
        b"{\"batch\":{}}".to_vec(),
    ];
    for body in cases {
        let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), body.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert_eq!(answer.json()["success"], false);
        assert!(!answer.code().is_empty());
    }
    assert!(h.ingest.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn too_many_events_and_oversized_single_event_are_413() {
    let h = open();
    let items = vec![r#"{"type":"track","event":"E","userId":"u"}"#; 2501].join(",");
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), format!(r#"{{"batch":[{items}]}}"#))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "too_many_events");
    let big = format!(r#"{{"event":"E","userId":"u","properties":{{"x":"{}"}}}}"#, "a".repeat(40 * 1024));
    let answer = send(&h.app, post("/v1/track", Some(&basic("wk")), big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn log_overload_is_429_and_outage_503_with_retry_after() {
    let h = open();
    *h.ingest.fail.lock().unwrap() =
        Some(AppendError::Full { retry_after: Duration::from_secs(3), reason: "full".into() });
    let answer = send(&h.app, post("/v1/track", Some(&basic("wk")), TRACK)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.code(), "overloaded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "3");
    *h.ingest.fail.lock().unwrap() =
        Some(AppendError::Unavailable { retry_after: Duration::from_secs(5), reason: "disk".to_owned() });
    let answer = send(&h.app, post("/v1/track", Some(&basic("wk")), TRACK)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers[header::RETRY_AFTER], "5");
    let ready = send(&h.app, Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn inflight_budget_exhausted_is_429() {
    // A budget smaller than one request's declared body: nothing can be taken.
    let h = harness(ApiConfig { max_inflight_bytes: 1024, ..ApiConfig::default() });
    let body = format!(r#"{{"batch":[{}]}}"#, vec![TRACK; 20].join(","));
    let answer = send(&h.app, post("/v1/batch", Some(&basic("wk")), body)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn cors_preflight_on_any_path_and_allow_origin_everywhere() {
    let h = open();
    for path in ["/v1/t", "/v1/batch", "/v1/m", "/v1/projects/wk/settings", "/anything"] {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header(header::ORIGIN, "http://shop.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
            .body(Body::empty())
            .unwrap();
        let answer = send(&h.app, request).await;
        assert!(answer.status.is_success(), "{path}");
        assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://shop.example");
        assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization,content-type");
        assert!(answer.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    }
    let mut request = post("/v1/t", Some(&basic("wk")), TRACK);
    request.headers_mut().insert(header::ORIGIN, "http://shop.example".parse().unwrap());
    let answer = send(&h.app, request).await;
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://shop.example");
    // Errors carry it too, or the browser hides the answer from the library.
    let mut request = post("/v1/t", None, "nope");
    request.headers_mut().insert(header::ORIGIN, "http://shop.example".parse().unwrap());
    let answer = send(&h.app, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://shop.example");
}

/// Every route's requests are timed under their matched route and status: the ingest
/// routes and the others alike, by the edge layer. Preflights and unmatched paths are not counted.
#[tokio::test]
async fn request_latency_is_counted_by_matched_route_and_status() {
    let h = open();
    send(&h.app, post("/v1/t", Some(&basic("wk")), TRACK)).await;
    send(&h.app, post("/v1/t", Some(&basic("wk")), TRACK)).await;
    send(&h.app, post("/v1/batch", None, "{}")).await;
    send(&h.app, Request::get("/v1/t").body(Body::empty()).unwrap()).await;
    send(&h.app, Request::get("/v1/projects/wk_1/settings").body(Body::empty()).unwrap()).await;
    send(&h.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    let preflight = Request::builder().method(Method::OPTIONS).uri("/v1/i").body(Body::empty()).unwrap();
    send(&h.app, preflight).await;
    let answer = send(&h.app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = String::from_utf8(answer.body).unwrap();
    let count = |route: &str, status: u16| {
        let name = format!(r#"ferry_http_request_duration_seconds_count{{route="{route}",status="{status}"}} "#);
        text.lines().find_map(|line| line.strip_prefix(&name)).map(|n| n.trim().to_owned())
    };
    assert_eq!(count("/v1/t", 200).as_deref(), Some("2"), "{text}");
    assert_eq!(count("/v1/batch", 400).as_deref(), Some("1"), "{text}");
    assert_eq!(count("/v1/t", 405).as_deref(), Some("1"), "{text}");
    assert_eq!(count("/v1/projects/{write_key}/settings", 200).as_deref(), Some("1"), "{text}");
    assert_eq!(count("/health", 200).as_deref(), Some("1"), "{text}");
    assert!(!text.contains(r#"route="/v1/i""#), "a preflight was counted: {text}");
}

#[tokio::test]
async fn settings_document_points_back_at_this_server() {
    let h = open();
    let request =
        Request::get("/v1/projects/wk_1/settings").header(header::HOST, "127.0.0.1:9999").body(Body::empty()).unwrap();
    let answer = send(&h.app, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["integrations"]["Segment.io"]["apiKey"], "wk_1");
    assert_eq!(json["integrations"]["Segment.io"]["apiHost"], "127.0.0.1:9999/v1");
    assert_eq!(json["integrations"]["Segment.io"]["protocol"], "http");

    let h = harness(ApiConfig { public_url: Some("https://events.example.com".to_owned()), ..ApiConfig::default() });
    let answer = send(&h.app, Request::get("/v1/projects/wk_1/settings").body(Body::empty()).unwrap()).await;
    let json = answer.json();
    assert_eq!(json["integrations"]["Segment.io"]["apiHost"], "events.example.com/v1");
    assert_eq!(json["integrations"]["Segment.io"]["protocol"], "https");
}

#[tokio::test]
async fn pixel_always_answers_a_gif_and_stores_valid_events() {
    let h = open();
    let data = base64::engine::general_purpose::STANDARD
        .encode(r#"{"writeKey":"wk","event":"Email Opened","userId":"u1","messageId":"px1"}"#);
    let answer = send(&h.app, Request::get(format!("/v1/pixel/track?data={data}")).body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "image/gif");
    assert!(answer.body.starts_with(b"GIF89a"));
    assert_eq!(h.ingest.events.lock().unwrap().len(), 1);
    for uri in ["/v1/pixel/track?data=%%%", "/v1/pixel/bogus?data=e30", "/v1/pixel/track"] {
        let answer = send(&h.app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert!(answer.body.starts_with(b"GIF89a"));
    }
    assert_eq!(h.ingest.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn browser_metrics_are_counted_and_discarded() {
    let h = harness(ApiConfig::default());
    let ingest = h.ingest.clone();
    let body = r#"{"series":[{"type":"Counter","metric":"analytics_js.invoke","value":1,"tags":{}},{"type":"Counter","metric":"x","value":1,"tags":{}}]}"#;
    let answer = send(&h.app, post("/v1/m", None, body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(ingest.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let h = open();
    let answer = send(&h.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&h.app, Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&h.app, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "not_found");
}

#[test]
fn client_ip_believes_forwarded_for_only_from_trusted_proxies() {
    let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
    let untrusted = collect::client_ip(Some("198.51.100.7".parse().unwrap()), &headers, &[proxy]);
    assert_eq!(untrusted, Some("198.51.100.7".parse().unwrap()));
    let trusted = collect::client_ip(Some(proxy), &headers, &[proxy]);
    assert_eq!(trusted, Some("203.0.113.9".parse().unwrap()));
}

#[tokio::test]
async fn the_tap_sees_requests_only_while_watched_and_within_its_budget() {
    let tap = Arc::new(ferry_tap::Tap::new());
    let h = harness(ApiConfig { tap: tap.clone(), ..ApiConfig::default() });
    let item = |i: usize| {
        format!(
            r#"{{"type":"track","event":"E","userId":"u","messageId":"m{i}","properties":{{"pad":"{}"}}}}"#,
            "x".repeat(1000)
        )
    };
    let batch =
        |n: usize| format!(r#"{{"writeKey":"wk","batch":[{}]}}"#, (0..n).map(item).collect::<Vec<_>>().join(","));
    // Nobody watches: nothing is kept, not even for a page that opens later.
    assert_eq!(send(&h.app, post("/v1/batch", None, batch(3))).await.status, StatusCode::OK);
    let (recent, mut feed) = tap.subscribe();
    assert!(recent.is_empty());
    // A batch larger than the budget: the first items are shown, the rest counted.
    let bad = r#"{"writeKey":"wk","batch":[{"type":"track","userId":"u","messageId":"r0"}]}"#;
    assert_eq!(send(&h.app, post("/v1/batch", None, bad)).await.status, StatusCode::OK);
    assert_eq!(send(&h.app, post("/v1/batch", None, batch(200))).await.status, StatusCode::OK);
    let first = feed.recv().await.unwrap();
    let ferry_tap::Observation::Request(rejected) = &*first else { panic!("{first:?}") };
    assert_eq!((rejected.events.len(), rejected.rejected.len(), rejected.omitted), (0, 1, 0));
    assert_eq!(rejected.rejected[0].code, "missing_event");
    assert!(rejected.rejected[0].item.contains("\"r0\""));
    let second = feed.recv().await.unwrap();
    let ferry_tap::Observation::Request(large) = &*second else { panic!("{second:?}") };
    let shown = large.events.len();
    assert!((60..=70).contains(&shown), "about 64 KiB of 1 KiB items: {shown}");
    assert_eq!(large.omitted, 200 - shown);
    assert_eq!(large.events[0].message_id, "m0");
    assert!(large.events[0].stored.contains("\"receivedAt\""));
    // m0..m2 came in the first batch too: duplicates, and shown as such.
    assert!(large.events[..3].iter().all(|e| e.duplicate) && !large.events[3].duplicate);
    assert_eq!(h.ingest.events.lock().unwrap().len(), 200, "the budget is the debugger's only");
}
