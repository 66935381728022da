//! Golden tests: every request that real Segment client libraries sent (the captures in
//! the shared fixtures, copied into the repo) replayed through the router with the clock
//! fixed at the capture's receive time. The answers, the stored events and the quarantine
//! are compared with `tests/golden/<fixture>.json`; `UPDATE_EXPECT=1` rewrites them.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request};

use super::{harness, send};
use crate::ApiConfig;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferry-event/tests/data/real-clients")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [fixture_dir(), fixture_dir().join("retries")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Rebuild the request a client sent: method, path, query, the headers that matter, and
/// the body (gzipped again when the client had gzipped it).
fn request(capture: &serde_json::Value) -> Request<Body> {
    let method: Method = capture["method"].as_str().unwrap().parse().unwrap();
    let mut uri = capture["path"].as_str().unwrap().to_owned();
    if let Some(query) = capture["query"].as_object().filter(|q| !q.is_empty()) {
        let pairs: Vec<String> = query
            .iter()
            .flat_map(|(k, vs)| {
                vs.as_array().into_iter().flatten().map(move |v| format!("{k}={}", v.as_str().unwrap_or("")))
            })
            .collect();
        uri = format!("{uri}?{}", pairs.join("&"));
    }
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in capture["headers"].as_object().unwrap() {
        let lower = name.to_ascii_lowercase();
        if ["host", "authorization", "content-type", "origin", "content-encoding"].contains(&lower.as_str()) {
            builder = builder.header(lower, value.as_str().unwrap());
        }
    }
    let body = match &capture["body"] {
        serde_json::Value::Null => Vec::new(),
        json => serde_json::to_vec(json).unwrap(),
    };
    let body = if capture["gzip"] == true {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    } else {
        body
    };
    let mut request = builder.body(Body::from(body)).unwrap();
    // The captures came over loopback; browser events get this as `context.ip`.
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 50_000));
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    request
}

#[tokio::test]
async fn real_client_requests_match_golden_files() {
    let files = fixtures();
    assert!(files.len() >= 15, "fixtures missing in {}", fixture_dir().display());
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut mismatches = Vec::new();
    for file in files {
        let h = harness(ApiConfig::default());
        let mut answers = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let capture: serde_json::Value = serde_json::from_str(line).unwrap();
            *h.clock.0.lock().unwrap() = capture["received_at"].as_str().unwrap().parse().unwrap();
            let answer = send(&h.app, request(&capture)).await;
            let body = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
            answers.push(serde_json::json!({
                "request": format!("{} {}", capture["method"].as_str().unwrap(), capture["path"].as_str().unwrap()),
                "status": answer.status.as_u16(),
                "body": body,
            }));
        }
        let events: Vec<serde_json::Value> =
            h.ingest.events.lock().unwrap().iter().map(|(_, json)| serde_json::from_slice(json).unwrap()).collect();
        let quarantine: Vec<serde_json::Value> =
            h.ingest.quarantine.lock().unwrap().iter().map(|json| serde_json::from_slice(json).unwrap()).collect();
        let actual = serde_json::json!({ "answers": answers, "stored": events, "quarantine": quarantine });
        let actual = serde_json::to_string_pretty(&actual).unwrap() + "\n";

        let name =
            file.strip_prefix(fixture_dir()).unwrap().to_string_lossy().replace('/', "__").replace(".jsonl", ".json");
        let golden = golden_dir().join(name);
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(golden.display().to_string());
        }
    }
    assert!(mismatches.is_empty(), "golden files differ (inspect, then UPDATE_EXPECT=1): {mismatches:?}");
}
