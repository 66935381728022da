//! `/openapi.json` describes what the admin API really answers and takes: each schema's
//! properties are exactly the keys its serde type writes (or reads), and every example is
//! the real thing (the quarantine record is one `ferry_event::process` writes).

use std::collections::BTreeSet;

use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::admin::*;

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// The schema `name`, with `$ref`s resolved.
fn schema<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").expect("a local reference");
            &doc["components"]["schemas"][name]
        }
        None => value,
    }
}

/// Every key of `sample` is a property of `schema`, at every depth; the properties seen
/// are added to `seen` (by path) so that the caller can check none is missing.
fn check(doc: &Value, schema_value: &Value, sample: &Value, path: &str, seen: &mut BTreeSet<String>) {
    let schema_value = schema(doc, schema_value);
    match sample {
        Value::Object(members) if schema_value.get("properties").is_some() => {
            let properties = schema_value["properties"].as_object().expect("properties");
            for (key, value) in members {
                let property = properties
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} is written but openapi.json does not describe it"));
                seen.insert(format!("{path}.{key}"));
                check(doc, property, value, &format!("{path}.{key}"), seen);
            }
        }
        Value::Array(items) if schema_value.get("items").is_some() => {
            for item in items {
                check(doc, &schema_value["items"], item, &format!("{path}[]"), seen);
            }
        }
        _ => {}
    }
}

/// Every property `schema` describes (by path, through `$ref`s and arrays).
fn properties(doc: &Value, schema_value: &Value, path: &str, out: &mut BTreeSet<String>) {
    let schema_value = schema(doc, schema_value);
    if let Some(members) = schema_value["properties"].as_object() {
        for (key, property) in members {
            out.insert(format!("{path}.{key}"));
            properties(doc, property, &format!("{path}.{key}"), out);
        }
    }
    if let Some(items) = schema_value.get("items") {
        properties(doc, items, &format!("{path}[]"), out);
    }
}

/// The samples of a schema together write exactly its properties.
fn matches(name: &str, samples: &[Value]) {
    let doc = document();
    let root = &doc["components"]["schemas"][name];
    assert!(root.is_object(), "openapi.json has no schema {name}");
    let mut seen = BTreeSet::new();
    for sample in samples {
        check(&doc, root, sample, name, &mut seen);
    }
    let mut described = BTreeSet::new();
    properties(&doc, root, name, &mut described);
    let missing: Vec<&String> = described.difference(&seen).collect();
    assert!(missing.is_empty(), "openapi.json describes what no answer writes: {missing:?}");
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

/// A real quarantine record: an item `process` refuses.
fn quarantine_record() -> Value {
    let body = br#"{"batch":[{"type":"track","messageId":"m1","userId":"u1"}]}"#;
    let parsed = ferry_event::parse(body, ferry_event::Route::Batch, &ferry_event::Limits::default()).unwrap();
    let limits = ferry_event::Limits::default();
    let mut ids = || "generated".to_owned();
    let mut ctx = ferry_event::Ctx {
        received_at: "2026-11-28T10:00:00Z".parse().unwrap(),
        source_id: "web",
        client_ip: None,
        limits: &limits,
        new_message_id: &mut ids,
        describe: false,
    };
    let processed = ferry_event::process(parsed, &mut ctx);
    serde_json::from_slice(&processed.quarantine[0].payload).unwrap()
}

fn job() -> Job {
    Job {
        id: 1,
        kind: JobKind::Replay,
        state: JobState::Done,
        destination: Some("warehouse".into()),
        scanned: 10,
        total: 10,
        delivered: 9,
        skipped: 0,
        failed: 1,
        last_error: Some("http 500".into()),
        started_at: "2026-11-28T10:00:00.000Z".into(),
        finished_at: Some("2026-11-28T10:00:01.000Z".into()),
    }
}

fn dead_letter(payload: Option<Value>) -> DeadLetterView {
    DeadLetterView {
        id: 1,
        destination: "hook".into(),
        position: 3,
        message_id: "m1".into(),
        kind: "track".into(),
        event: Some("Signed Up".into()),
        source_id: Some("web".into()),
        received_at: Some("2026-11-28T10:00:00.000Z".into()),
        first_attempt_at: "2026-11-28T10:00:00.000Z".into(),
        dead_at: "2026-11-28T10:00:01.000Z".into(),
        reason: "http 400".into(),
        attempts: vec![TimedError { at: "2026-11-28T10:00:00.500Z".into(), error: "http 400".into() }],
        redriven_at: Some("2026-11-28T11:00:00.000Z".into()),
        redrive_attempts: 1,
        payload,
    }
}

async fn error_body(error: crate::ApiError) -> Value {
    let body = axum::body::to_bytes(error.into_response().into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn every_answer_is_what_openapi_json_describes() {
    matches(
        "Sources",
        &[to_json(SourceList {
            open: false,
            configured: vec!["web".into()],
            sources: vec![SourceCounts { id: "web".into(), accepted: 1, accepted_bytes: 2, duplicate: 3, rejected: 4 }],
        })],
    );
    matches(
        "Destinations",
        &[to_json(DestinationList {
            destinations: vec![DestinationState {
                name: "hook".into(),
                kind: "webhook".into(),
                target: "http://x".into(),
                position: 1,
                lag_events: 2,
                lag_seconds: 0.5,
                delivered: 1,
                filtered: 1,
                skipped: 1,
                rejected: 1,
                dead_lettered: 1,
                retried: 1,
                retrying: false,
                last_error: Some(TimedError { at: "2026-11-28T10:00:00.000Z".into(), error: "http 500".into() }),
                dead_letters: 1,
            }],
        })],
    );
    matches("DeadLetters", &[to_json(DeadLetterList { dead_letters: vec![dead_letter(Some(json!({})))] })]);
    matches("DeadLetter", &[to_json(dead_letter(None)), to_json(dead_letter(Some(json!({"type": "track"}))))]);
    matches(
        "QuarantineItems",
        &[to_json(QuarantinePage { items: vec![QuarantineItem { offset: 0, record: quarantine_record() }], next: 1 })],
    );
    matches(
        "Resubmitted",
        &[
            to_json(Resubmitted {
                resubmitted: true,
                message_ids: Some(vec!["m1".into()]),
                duplicate: Some(false),
                code: None,
                message: None,
                field: None,
            }),
            to_json(Resubmitted {
                resubmitted: false,
                message_ids: None,
                duplicate: None,
                code: Some("missing_event"),
                message: Some("track needs `event`".into()),
                field: Some("event"),
            }),
        ],
    );
    matches("Jobs", &[to_json(JobList { jobs: vec![job()] })]);
    matches("Job", &[to_json(job())]);
    let invalid = error_body(crate::ApiError::InvalidEvent(ferry_event::Rejection::MissingEvent)).await;
    let internal = error_body(crate::ApiError::Internal { correlation_id: "19a-1".into() }).await;
    assert_eq!(internal["correlationId"], "19a-1");
    matches("Error", &[invalid, internal]);
}

/// The keys a request type takes, from serde's own list (asked by offering a key it does
/// not take).
fn fields<T: serde::de::DeserializeOwned>() -> BTreeSet<String> {
    let error = serde_json::from_value::<T>(json!({ "zz_probe": 1 })).err().expect("the probe key is refused");
    let text = error.to_string();
    let list = text.split("expected one of").nth(1).unwrap_or_else(|| panic!("serde lists the fields: {text}"));
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn every_request_body_is_what_openapi_json_describes() {
    let doc = document();
    let described = |name: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(fields::<DeadLetterFilter>(), described("DeadLetterFilter"));
    assert_eq!(fields::<ReplayStart>(), described("ReplayStart"));
    assert_eq!(described("Resubmit"), BTreeSet::from(["item".to_owned()]));
}

#[test]
fn a_schema_that_misses_a_key_is_caught() {
    let doc = document();
    let sample = json!({ "name": "hook", "type": "webhook", "notDescribed": 1 });
    let caught = std::panic::catch_unwind(|| {
        let mut seen = BTreeSet::new();
        check(&doc, &doc["components"]["schemas"]["Destination"], &sample, "Destination", &mut seen);
    });
    assert!(caught.is_err(), "a key openapi.json lacks is found");
}

/// An `Admin` whose every answer is the error it is made with.
struct Failing(fn() -> AdminError);

impl Admin for Failing {
    fn destinations(&self) -> crate::BoxFuture<'_, Result<DestinationList, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn dead_letters(&self, _: DeadLetterFilter) -> crate::BoxFuture<'_, Result<DeadLetterList, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn dead_letter(&self, _: i64) -> crate::BoxFuture<'_, Result<DeadLetterView, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn redrive(&self, _: DeadLetterFilter) -> crate::BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn quarantine(&self, _: u64, _: usize) -> crate::BoxFuture<'_, Result<QuarantinePage, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn quarantine_item(&self, _: u64) -> crate::BoxFuture<'_, Result<QuarantineItem, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn start_replay(&self, _: ReplayStart) -> crate::BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn jobs(&self) -> crate::BoxFuture<'_, Result<JobList, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn job(&self, _: u64) -> crate::BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
    fn cancel_job(&self, _: u64) -> crate::BoxFuture<'_, Result<Job, AdminError>> {
        Box::pin(async { Err((self.0)()) })
    }
}

/// Admin errors become HTTP in one place: the caller's mistakes 4xx as they are, ferry's
/// faults 500 with a correlation id and none of their text.
#[tokio::test]
async fn admin_errors_say_whose_fault_it_is_and_keep_internals_out() {
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;
    type Case = (fn() -> AdminError, StatusCode, &'static str);
    let cases: [Case; 3] = [
        (|| AdminError::NotFound("no job 7".into()), StatusCode::NOT_FOUND, "not_found"),
        (
            || AdminError::Invalid { code: "invalid_filter", message: "`since` is not a time".into() },
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            || AdminError::internal(std::io::Error::other("read /secret/path/00000.chunk: i/o error")),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
        ),
    ];
    for (error, status, code) in cases {
        let state = crate::AppState::new(
            crate::ApiConfig::default(),
            std::sync::Arc::new(super::MemoryIngest::default()),
            std::sync::Arc::new(crate::SystemClock),
            std::sync::Arc::new(super::CountingIds(std::sync::Mutex::new(0))),
        );
        state.set_admin(std::sync::Arc::new(Failing(error)));
        let app = crate::router(state);
        for path in ["/admin/v1/destinations", "/admin/v1/jobs/7", "/admin/v1/quarantine", "/admin/v1/dead-letters"] {
            let request = Request::builder().method(Method::GET).uri(path).body(axum::body::Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], code, "{path}");
            let text = body.to_string();
            if status.is_server_error() {
                assert!(!text.contains("secret") && !text.contains("i/o error"), "internal text leaked: {text}");
                let id = body["correlationId"].as_str().expect("a correlation id");
                assert!(body["message"].as_str().unwrap().contains(id), "{text}");
            } else {
                assert!(body.get("correlationId").is_none(), "{text}");
            }
        }
    }
}
