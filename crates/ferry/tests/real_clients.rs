//! Real Segment client libraries against a running `ferry serve`: segment-analytics-python
//! (PyPI), @segment/analytics-node (npm) and @segment/analytics-next in headless Chromium
//! from a page on another origin, loading its settings from ferry. Every event must be in
//! `ferry log cat` exactly once with correct enrichment; retries after a 500 or a 429 must
//! not create duplicates.
//!
//! The libraries come from `scripts/install-test-deps.sh`. Without them each test says
//! loudly that it skipped, unless `FERRY_REQUIRE_CLIENTS=1` (set by `scripts/test`), in
//! which case it fails.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Server, log_cat, temp_dir};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// Whether the client libraries are installed; if not, skip loudly or fail when required.
fn deps_ready(what: &str, paths: &[PathBuf]) -> bool {
    let missing: Vec<_> = paths.iter().filter(|p| !p.exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("{what}: missing {missing:?}; run scripts/install-test-deps.sh");
    assert!(std::env::var_os("FERRY_REQUIRE_CLIENTS").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

fn python() -> PathBuf {
    clients_dir().join(".venv/bin/python")
}

fn node_modules() -> PathBuf {
    clients_dir().join("node_modules/@segment/analytics-node")
}

/// Run a client script with a timeout; panic with its output if it fails.
fn run_client(program: &Path, script: &str, args: &[&str]) {
    let mut child = Command::new(program)
        .arg(clients_dir().join(script))
        .args(args)
        .current_dir(clients_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "{script} failed: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{script} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node() -> PathBuf {
    PathBuf::from("node")
}

fn events_of_run(dir: &Path, run: &str) -> Vec<Value> {
    log_cat(dir).into_iter().map(|line| line["record"].clone()).filter(|e| e["context"]["test_run"] == run).collect()
}

fn millis(text: &Value) -> i64 {
    let text = text.as_str().unwrap_or_else(|| panic!("not a time: {text}"));
    assert!(text.len() == 24 && text.ends_with('Z'), "not UTC ISO-8601 with milliseconds: {text}");
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// The common scenario, checked event by event.
fn check_scenario(events: &[Value], client_side: bool) {
    assert_eq!(events.len(), 10, "expected the 10 calls once each: {events:#?}");
    let mut ids: Vec<&str> = events.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "a messageId is stored twice");
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(
        [count("identify"), count("track"), count("page"), count("screen"), count("group"), count("alias")],
        [1, 5, 1, 1, 1, 1]
    );
    for event in events {
        assert_eq!(event["version"], 2);
        assert!(event["sourceId"].as_str().is_some_and(|s| s.starts_with("wk_")));
        assert!(event.get("writeKey").is_none(), "the write key is stored: {event}");
        let received = millis(&event["receivedAt"]);
        millis(&event["timestamp"]);
        if client_side {
            assert_eq!(event["context"]["ip"], "127.0.0.1", "{event}");
            assert_eq!(event["channel"], "browser");
        } else {
            assert!(event["context"].get("ip").is_none(), "server-side event got an ip: {event}");
            assert_eq!(event["channel"], "server");
        }
        if event["event"] != "Backfilled Event" {
            // Skew-corrected time of a live event lies within seconds of receipt.
            assert!((millis(&event["timestamp"]) - received).abs() < 10_000, "{event}");
        }
    }
    let by_event = |name: &str| events.iter().find(|e| e["event"] == name).unwrap_or_else(|| panic!("no {name}"));
    let order = by_event("Order Completed");
    assert_eq!(order["properties"]["revenue"], 19.99);
    assert_eq!(order["properties"]["currency"], "EUR");
    assert_eq!(order["properties"]["value"], 5);
    let backfilled = by_event("Backfilled Event");
    assert_eq!(backfilled["originalTimestamp"], "2023-06-01T12:34:56.789Z");
    let skew = millis(&backfilled["timestamp"]) - millis(&backfilled["originalTimestamp"]);
    assert!(skew.abs() < 5_000, "backfilled timestamp moved by {skew} ms: {backfilled}");
    let mixpanel = by_event("Mixpanel Only");
    assert_eq!(mixpanel["integrations"]["All"], false);
    assert_eq!(mixpanel["integrations"]["Mixpanel"], true);
    let anonymous = by_event("Anonymous Event");
    assert!(anonymous["anonymousId"].is_string());
    let alias = events.iter().find(|e| e["type"] == "alias").unwrap();
    assert_eq!(alias["userId"], "user_123");
    assert_eq!(alias["previousId"], "anon_abc");
    let group = events.iter().find(|e| e["type"] == "group").unwrap();
    assert_eq!(group["groupId"], "group_42");
}

#[test]
fn segment_analytics_python() {
    if !deps_ready("segment-analytics-python", &[python()]) {
        return;
    }
    let dir = temp_dir();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    run_client(&python(), "python_client.py", &[&base, "wk_test_python", "py-1"]);
    check_scenario(&events_of_run(dir.path(), "py-1"), false);
}

#[test]
fn segment_analytics_node() {
    if !deps_ready("@segment/analytics-node", &[node_modules()]) {
        return;
    }
    let dir = temp_dir();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    run_client(&node(), "node_client.mjs", &[&base, "wk_test_node", "node-1"]);
    check_scenario(&events_of_run(dir.path(), "node-1"), false);
}

#[test]
fn segment_analytics_next_in_chromium() {
    let bundle = clients_dir().join("bundle/analytics.js");
    if !deps_ready("@segment/analytics-next in chromium", &[bundle, PathBuf::from("/usr/bin/chromium")]) {
        return;
    }
    let dir = temp_dir();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts/analytics-next.png");
    run_client(&node(), "browser_client.mjs", &[&base, "wk_test_browser", "browser-1", screenshot.to_str().unwrap()]);
    check_scenario(&events_of_run(dir.path(), "browser-1"), true);
    assert!(screenshot.exists());
}

/// Start the fault proxy in front of ferry; returns its child and base URL.
fn fault_proxy(upstream: &str, mode: &str) -> (support::ChildGuard, String) {
    let mut child = Command::new(python())
        .arg(clients_dir().join("fault_proxy.py"))
        .args([upstream, mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fault proxy");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").expect("proxy address").to_owned();
    (support::ChildGuard(child), base)
}

#[test]
fn retries_after_500_and_429_do_not_duplicate() {
    if !deps_ready("client libraries", &[python(), node_modules()]) {
        return;
    }
    let dir = temp_dir();
    let server = Server::start(dir.path(), &[]);
    let upstream = format!("http://{}", server.addr);
    for (program, script, mode, run) in [
        (python(), "python_client.py", "500", "retry-py-500"),
        (python(), "python_client.py", "429", "retry-py-429"),
        (node(), "node_client.mjs", "500", "retry-node-500"),
        (node(), "node_client.mjs", "429", "retry-node-429"),
    ] {
        let (_proxy, base) = fault_proxy(&upstream, mode);
        run_client(&program, script, &[&base, "wk_test_retry", run]);
        check_scenario(&events_of_run(dir.path(), run), false);
    }
}
