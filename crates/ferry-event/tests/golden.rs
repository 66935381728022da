//! Golden tests: every request the real client libraries sent (the captures in
//! `tests/data/real-clients`, copied from the shared fixtures) replayed through `parse` +
//! `process` with a fixed clock (the capture's own `received_at`), source, client address
//! and message-id generator. The outcome of each capture file is compared with
//! `tests/expected/<same path>.json`; `UPDATE_EXPECT=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use ferry_event::{CallType, Ctx, Limits, Route, parse, process};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One captured request, with its body kept as the exact JSON text in the capture.
#[derive(Deserialize)]
struct Capture<'a> {
    seq: u64,
    received_at: &'a str,
    method: &'a str,
    path: &'a str,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

/// What became of one request: refused whole, or its events and quarantine records.
#[derive(Serialize)]
struct Outcome<'a> {
    seq: u64,
    path: &'a str,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<[String; 2]>,
    accepted: Vec<Box<RawValue>>,
    rejected: Vec<Box<RawValue>>,
}

fn route(path: &str) -> Option<Route> {
    let call = match path {
        "/v1/batch" | "/v1/import" | "/v1/b" => return Some(Route::Batch),
        "/v1/track" | "/v1/t" => CallType::Track,
        "/v1/identify" | "/v1/i" => CallType::Identify,
        "/v1/page" | "/v1/p" => CallType::Page,
        "/v1/screen" | "/v1/s" => CallType::Screen,
        "/v1/group" | "/v1/g" => CallType::Group,
        "/v1/alias" | "/v1/a" => CallType::Alias,
        _ => return None,
    };
    Some(Route::Single(call))
}

fn raw(json: Vec<u8>) -> Box<RawValue> {
    RawValue::from_string(String::from_utf8(json).unwrap()).unwrap()
}

/// The outcomes of every event request in one capture file, as pretty JSON with each
/// stored event on one line.
fn replay(file: &Path, name: &str) -> String {
    let limits = Limits::default();
    let text = std::fs::read_to_string(file).unwrap();
    let mut outcomes = Vec::new();
    let mut next_id = 0;
    for line in text.lines() {
        let capture: Capture<'_> = serde_json::from_str(line).unwrap();
        let (Some(route), Some(body), "POST") = (route(capture.path), capture.body, capture.method) else {
            continue;
        };
        let mut outcome = Outcome {
            seq: capture.seq,
            path: capture.path,
            write_key: None,
            error: None,
            accepted: Vec::new(),
            rejected: Vec::new(),
        };
        match parse(body.get().as_bytes(), route, &limits) {
            Err(error) => outcome.error = Some([error.code().to_owned(), error.to_string()]),
            Ok(parsed) => {
                outcome.write_key = parsed.write_key().map(str::to_owned);
                let mut ids = || {
                    next_id += 1;
                    format!("gen-{name}-{next_id}")
                };
                let mut ctx = Ctx {
                    received_at: capture.received_at.parse().unwrap(),
                    source_id: "src_golden",
                    client_ip: Some("203.0.113.7".parse().unwrap()),
                    limits: &limits,
                    new_message_id: &mut ids,
                    describe: false,
                };
                let processed = process(parsed, &mut ctx);
                outcome.accepted = processed.events.into_iter().map(|e| raw(e.payload)).collect();
                outcome.rejected = processed.quarantine.into_iter().map(|q| raw(q.payload)).collect();
            }
        }
        outcomes.push(outcome);
    }
    let mut out = serde_json::to_string_pretty(&outcomes).unwrap();
    out.push('\n');
    out
}

fn capture_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            capture_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            out.push(path);
        }
    }
}

#[test]
fn real_client_captures_match_their_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let data = root.join("data/real-clients");
    let mut files = Vec::new();
    capture_files(&data, &mut files);
    files.sort();
    assert!(files.len() >= 19, "captures missing: {files:?}");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut stale = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&data).unwrap().with_extension("json");
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let actual = replay(file, &name);
        let expected_path = root.join("expected").join(&relative);
        if update {
            std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            stale.push(relative.display().to_string());
        }
    }
    assert!(stale.is_empty(), "golden files differ (rerun with UPDATE_EXPECT=1 and review the diff): {stale:?}");
}
