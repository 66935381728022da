//! Webhooks against a real local HTTP receiver that checks what Segment's receivers
//! check: the JSON body, `Content-Type`, the `User-Agent`, configured headers, and
//! `X-Signature` (HMAC-SHA1 of the exact body, computed here independently).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_destinations::testing::real_client_events;
use ferry_destinations::webhook::{Webhook, WebhookConfig};
use ferry_destinations::{Destination, Outcome};
use hmac::{KeyInit, Mac};

const SECRET: &str = "s3cret";

/// What the receiver saw, and how it answers.
#[derive(Default)]
struct Receiver {
    requests: Vec<(HeaderMap, Bytes)>,
    /// Answers to give first, in order (then 200).
    script: Vec<(StatusCode, Option<&'static str>)>,
    /// Sleep this long before answering.
    delay: Duration,
}

async fn receive(State(state): State<Arc<Mutex<Receiver>>>, headers: HeaderMap, body: Bytes) -> Response {
    let (answer, delay) = {
        let mut r = state.lock().unwrap();
        r.requests.push((headers, body));
        let answer = if r.script.is_empty() { (StatusCode::OK, None) } else { r.script.remove(0) };
        (answer, r.delay)
    };
    tokio::time::sleep(delay).await;
    let mut response = (answer.0, "receiver says so").into_response();
    if let Some(retry_after) = answer.1 {
        response.headers_mut().insert("retry-after", retry_after.parse().unwrap());
    }
    response
}

async fn receiver(
    script: Vec<(StatusCode, Option<&'static str>)>,
    delay: Duration,
) -> (SocketAddr, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver { script, delay, ..Receiver::default() }));
    let app = axum::Router::new().route("/hook", axum::routing::any(receive)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn config(addr: SocketAddr) -> WebhookConfig {
    WebhookConfig {
        shared_secret: Some(SECRET.into()),
        headers: vec![("X-Team".into(), "growth".into())],
        ..WebhookConfig::new(format!("http://{addr}/hook"))
    }
}

#[tokio::test]
async fn every_real_client_event_arrives_signed_with_segments_headers() {
    let (addr, state) = receiver(Vec::new(), Duration::ZERO).await;
    let webhook = Webhook::new(config(addr)).unwrap();
    let events = real_client_events();
    let outcomes = webhook.send(&events).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Delivered), "{outcomes:?}");
    let state = state.lock().unwrap();
    assert_eq!(state.requests.len(), events.len());
    let mut bodies: HashMap<String, serde_json::Value> = HashMap::new();
    for (headers, body) in &state.requests {
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers["user-agent"].to_str().unwrap().starts_with("Segment.io/1.0"));
        assert_eq!(headers["x-team"], "growth");
        assert_eq!(headers["x-signature"].to_str().unwrap(), expected_signature(body), "signature of the exact body");
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        bodies.insert(json["messageId"].as_str().unwrap().to_owned(), json);
    }
    for event in &events {
        let sent = &bodies[&event.message_id];
        let stored: serde_json::Value = serde_json::from_str(event.json()).unwrap();
        assert_eq!(*sent, stored, "the webhook body is the stored event");
        assert!(sent.get("_ferry").is_none());
    }
    // The order-with-revenue event went as sent.
    let revenue = bodies.values().find(|b| b["properties"]["revenue"] == 19.99).expect("the revenue event");
    assert_eq!(revenue["properties"]["currency"], "EUR");
}

#[tokio::test]
async fn batch_mode_sends_arrays_within_the_bounds() {
    let (addr, state) = receiver(Vec::new(), Duration::ZERO).await;
    let webhook = Webhook::new(WebhookConfig { batch: Some((30, 1 << 20)), ..config(addr) }).unwrap();
    let events = real_client_events();
    let outcomes = webhook.send(&events).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Delivered));
    let sizes: Vec<usize> = state
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(headers, body)| {
            assert_eq!(headers["x-signature"].to_str().unwrap(), expected_signature(body));
            serde_json::from_slice::<Vec<serde_json::Value>>(body).unwrap().len()
        })
        .collect();
    assert_eq!(sizes, [30, 30, 10]);
    // A byte bound cuts earlier (but never below one event per request).
    let (addr, state) = receiver(Vec::new(), Duration::ZERO).await;
    let webhook = Webhook::new(WebhookConfig { batch: Some((100, 3000)), ..config(addr) }).unwrap();
    webhook.send(&events).await;
    let state = state.lock().unwrap();
    assert!(
        state
            .requests
            .iter()
            .all(|(_, b)| b.len() <= 3000 || serde_json::from_slice::<Vec<serde_json::Value>>(b).unwrap().len() == 1)
    );
    let total: usize =
        state.requests.iter().map(|(_, b)| serde_json::from_slice::<Vec<serde_json::Value>>(b).unwrap().len()).sum();
    assert_eq!(total, events.len());
}

#[tokio::test]
async fn statuses_become_retries_and_rejections() {
    let events = &real_client_events()[..1];
    let (addr, _) = receiver(vec![(StatusCode::TOO_MANY_REQUESTS, Some("7"))], Duration::ZERO).await;
    let outcome = Webhook::new(config(addr)).unwrap().send(events).await.remove(0);
    assert!(
        matches!(&outcome, Outcome::Retry { after: Some(a), error } if *a == Duration::from_secs(7) && error.contains("429")),
        "{outcome:?}"
    );
    let (addr, _) = receiver(vec![(StatusCode::SERVICE_UNAVAILABLE, None)], Duration::ZERO).await;
    assert!(matches!(Webhook::new(config(addr)).unwrap().send(events).await[0], Outcome::Retry { after: None, .. }));
    let (addr, _) = receiver(vec![(StatusCode::BAD_REQUEST, None)], Duration::ZERO).await;
    let outcome = Webhook::new(config(addr)).unwrap().send(events).await.remove(0);
    assert_eq!(outcome, Outcome::reject("http 400: receiver says so"));
    // A receiver slower than the timeout: retried.
    let (addr, _) = receiver(Vec::new(), Duration::from_secs(3)).await;
    let slow = WebhookConfig { timeout: Duration::from_millis(200), ..config(addr) };
    let outcome = Webhook::new(slow).unwrap().send(events).await.remove(0);
    assert!(matches!(&outcome, Outcome::Retry { error, .. } if error.contains("timed out")), "{outcome:?}");
    // Nobody listening: retried.
    let closed = WebhookConfig::new("http://127.0.0.1:1/hook");
    assert!(matches!(Webhook::new(closed).unwrap().send(events).await[0], Outcome::Retry { .. }));
}

#[tokio::test]
async fn one_of_several_urls_taking_it_is_enough() {
    let (down, _) = receiver(vec![(StatusCode::INTERNAL_SERVER_ERROR, None)], Duration::ZERO).await;
    let (up, up_state) = receiver(Vec::new(), Duration::ZERO).await;
    let webhook = Webhook::new(WebhookConfig {
        urls: vec![format!("http://{down}/hook"), format!("http://{up}/hook")],
        ..config(up)
    })
    .unwrap();
    assert_eq!(webhook.send(&real_client_events()[..1]).await, [Outcome::Delivered]);
    assert_eq!(up_state.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn deletion_notifications_go_to_every_url() {
    let (addr, state) = receiver(Vec::new(), Duration::ZERO).await;
    let webhook = Webhook::new(config(addr)).unwrap();
    let at: jiff::Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    assert_eq!(webhook.send_delete("user_123", at).await, Outcome::Delivered);
    let state = state.lock().unwrap();
    let (headers, body) = &state.requests[0];
    assert_eq!(headers["x-signature"].to_str().unwrap(), expected_signature(body));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "delete", "userId": "user_123", "timestamp": "2026-11-28T10:00:00.000Z"})
    );
}
