//! Real Segment client libraries against a running `ferry serve`: segment-analytics-python
//! (PyPI), @segment/analytics-node (npm) and @segment/analytics-next in Debian's headless
//! Chromium from a page on another origin, loading its settings document from ferry. Every
//! event must be in `ferry log cat` exactly once, with correct enrichment; retries after a
//! 500 or a 429 (a fault-injecting proxy in front of ferry) must not create duplicates.
//!
//! The libraries live in `tests/clients` and come from `scripts/install-test-deps.sh`.
//! Without them each test prints a loud `SKIPPED` and passes, unless
//! `FERRY_REQUIRE_CLIENTS=1` (set by `scripts/test`), in which case it fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{chromium, clients_dir, deps_ready, node_works};

mod support;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const CLIENT_TIMEOUT: Duration = Duration::from_secs(50);
const BACKFILLED: &str = "2023-06-01T12:34:56.789Z";

// ---------------------------------------------------------------------------------------
// Dependencies

fn python() -> PathBuf {
    clients_dir().join(".venv/bin/python")
}

fn python_ready(what: &str) -> bool {
    deps_ready(what, &[("tests/clients/.venv (segment-analytics-python)", python().exists())])
}

fn node_ready(what: &str) -> bool {
    deps_ready(
        what,
        &[
            ("node", node_works()),
            (
                "tests/clients/node_modules (@segment/analytics-node)",
                clients_dir().join("node_modules/@segment/analytics-node/package.json").exists(),
            ),
        ],
    )
}

/// The esbuild bundle of analytics-next the test page loads; (re)built when missing or
/// older than its entry file (the installer builds it too).
fn ensure_bundle() {
    let dir = clients_dir();
    let bundle = dir.join("bundle/analytics.js");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&bundle).is_some() && modified(&bundle) >= modified(&dir.join("browser-entry.mjs")) {
        return;
    }
    let status = Command::new(dir.join("node_modules/.bin/esbuild"))
        .args([
            "browser-entry.mjs",
            "--bundle",
            "--format=iife",
            "--outfile=bundle/analytics.js",
            "--log-level=warning",
        ])
        .current_dir(&dir)
        .status()
        .expect("run esbuild");
    assert!(status.success(), "esbuild failed to bundle analytics-next");
}

// ---------------------------------------------------------------------------------------
// Processes

/// A child process that is killed when dropped (also when a test panics).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects a pipe into a string on a thread, so a chatty child never blocks on it.
fn drain(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let handle = thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (text, handle)
}

/// Waits for a child with a deadline; `None` if it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads lines of a child's stdout on a thread; the first line comes back through the
/// channel, the rest through it too.
fn line_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `ferry serve` on a fresh data directory.
struct Server {
    child: Guard,
    base: String,
    stderr: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::Builder::new().prefix("ferry-real-clients-").tempdir().expect("temp dir");
        let mut child = Command::new(FERRY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry serve");
        let lines = line_reader(child.stdout.take().unwrap());
        let (stderr, _) = drain(child.stderr.take().unwrap());
        let child = Guard(child);
        let line = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            panic!("ferry serve printed no address within 20 s; stderr:\n{}", stderr.lock().unwrap())
        });
        let base = line
            .strip_prefix("ferry listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line of ferry serve: {line:?}"))
            .trim()
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "unexpected address: {base}");
        Server { child, base, stderr, dir }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM; ferry must shut down cleanly within 10 s.
    fn stop(&mut self) {
        let pid = self.child.0.id().to_string();
        let sent = Command::new("sh").args(["-c", "kill -TERM \"$1\"", "sh", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "could not send SIGTERM to ferry");
        let status = wait_until(&mut self.child.0, Instant::now() + Duration::from_secs(10))
            .unwrap_or_else(|| panic!("ferry did not stop within 10 s of SIGTERM; stderr:\n{}", self.stderr()));
        assert!(status.success(), "ferry exited with {status} after SIGTERM; stderr:\n{}", self.stderr());
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- ferry serve stderr ({}):\n{}", self.base, self.stderr());
        }
    }
}

/// Runs a client script (with a deadline) and returns its stdout; panics with its output
/// if it fails.
fn run_client(program: &Path, script: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .arg(script)
        .args(args)
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", program.display()));
    let (stdout, out_done) = drain(child.stdout.take().unwrap());
    let (stderr, err_done) = drain(child.stderr.take().unwrap());
    let mut child = Guard(child);
    let status = wait_until(&mut child.0, Instant::now() + CLIENT_TIMEOUT);
    if status.is_none() {
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    let _ = (out_done.join(), err_done.join());
    let (stdout, stderr) = (stdout.lock().unwrap().clone(), stderr.lock().unwrap().clone());
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => panic!("{script} {args:?} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        None => panic!("{script} {args:?} did not finish in {CLIENT_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
}

/// The `{"messageIds": {call: id}}` line a client script prints last.
fn message_ids(stdout: &str) -> HashMap<String, String> {
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_else(|| {
        panic!("client printed no JSON result line:\n{stdout}");
    });
    let doc: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("bad result line ({e}): {last}"));
    let ids: HashMap<String, String> =
        serde_json::from_value(doc["messageIds"].clone()).unwrap_or_else(|e| panic!("bad messageIds ({e}): {last}"));
    assert_eq!(ids.len(), 10, "expected 10 calls: {ids:?}");
    ids
}

/// Every stored record, via `ferry log cat` (with a deadline).
fn log_cat(data_dir: &Path) -> Vec<Value> {
    let mut child = Command::new(FERRY)
        .args(["log", "cat", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry log cat");
    let (stdout, out_done) = drain(child.stdout.take().unwrap());
    let (stderr, err_done) = drain(child.stderr.take().unwrap());
    let mut child = Guard(child);
    let status = wait_until(&mut child.0, Instant::now() + Duration::from_secs(20));
    let _ = child.0.kill();
    let _ = (out_done.join(), err_done.join());
    let stdout = stdout.lock().unwrap().clone();
    assert!(
        status.is_some_and(|s| s.success()),
        "ferry log cat failed or hung ({status:?}): {}",
        stderr.lock().unwrap()
    );
    stdout
        .lines()
        .map(|line| {
            let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad log cat line ({e}): {line}"));
            assert!(doc["offset"].is_u64(), "log cat line without offset: {line}");
            doc["record"].clone()
        })
        .collect()
}

/// Reads the log while ferry runs, waits until the embedded warehouse holds a row for
/// every stored event, stops ferry with SIGTERM, reads the log again: both reads must
/// agree. Returns the records.
fn stop_and_read(server: &mut Server) -> Vec<Value> {
    let live = log_cat(server.data_dir());
    let expected: std::collections::BTreeSet<String> =
        live.iter().map(|r| r["messageId"].as_str().expect("messageId").to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let loaded = warehouse_ids(server.data_dir());
        if loaded == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warehouse holds {} of {} events: missing {:?}, unexpected {:?}",
            loaded.len(),
            expected.len(),
            expected.difference(&loaded).collect::<Vec<_>>(),
            loaded.difference(&expected).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    let after = log_cat(server.data_dir());
    assert_eq!(live, after, "ferry log cat differs between a running and a stopped server");
    after
}

/// The message ids in the embedded warehouse's event tables (the views over all sources).
fn warehouse_ids(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        data_dir.join("warehouse.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return ids;
    };
    for table in ["tracks", "identifies", "pages", "screens", "groups", "aliases"] {
        let Ok(mut statement) = conn.prepare(&format!("select id from {table}")) else { continue };
        if let Ok(rows) = statement.query_map([], |r| r.get::<_, String>(0)) {
            ids.extend(rows.filter_map(Result::ok));
        }
    }
    ids
}

// ---------------------------------------------------------------------------------------
// Checks

/// Milliseconds since the epoch of a stored time, which must be UTC ISO-8601 with
/// milliseconds (`YYYY-MM-DDTHH:MM:SS.sssZ`).
fn millis(value: &Value) -> i64 {
    let text = value.as_str().unwrap_or_else(|| panic!("not a time: {value}"));
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> i64 {
        assert!(b[r.clone()].iter().all(u8::is_ascii_digit), "not UTC ISO-8601 with milliseconds: {text}");
        text[r].parse().unwrap()
    };
    let shape_ok = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    assert!(shape_ok, "not UTC ISO-8601 with milliseconds: {text}");
    let (y, m, d) = (digits(0..4), digits(5..7), digits(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + digits(11..13)) * 60 + digits(14..16)) * 60_000 + digits(17..19) * 1000 + digits(20..23)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Server,
    Browser,
}

/// The common scenario of one client run (`context.test_run == run`), checked against the
/// whole log and event by event.
fn check_scenario(log: &[Value], run: &str, ids: &HashMap<String, String>, side: Side, write_key: &str, library: &str) {
    // Exactly once, by messageId, across the whole log.
    for (call, id) in ids {
        let copies = log.iter().filter(|e| e["messageId"] == id.as_str()).count();
        assert_eq!(copies, 1, "{call} ({id}) is stored {copies} times");
    }
    let events: Vec<&Value> = log.iter().filter(|e| e["context"]["test_run"] == run).collect();
    assert_eq!(events.len(), 10, "expected the 10 calls of run {run} once each, got: {events:#?}");

    let expected_type = |call: &str| match call {
        "identify" | "page" | "screen" | "group" | "alias" => call.to_owned(),
        _ => "track".to_owned(),
    };
    let mut by_call: HashMap<&str, &Value> = HashMap::new();
    for (call, id) in ids {
        let event = *events
            .iter()
            .find(|e| e["messageId"] == id.as_str())
            .unwrap_or_else(|| panic!("{call} ({id}) not stored under run {run}"));
        assert_eq!(event["type"], expected_type(call), "{call}: {event}");
        if event["type"] == "track" {
            assert_eq!(event["event"], call.as_str(), "{event}");
        }
        by_call.insert(call.as_str(), event);
    }

    for event in &events {
        let id = &event["messageId"];
        let object = event.as_object().unwrap_or_else(|| panic!("record is not an object: {event}"));
        // JSON null means absent (analytics-python sends explicit nulls).
        for (key, value) in object {
            assert!(!value.is_null(), "{id}: top-level {key} stored as null: {event}");
        }
        // The write key is not stored; the source id is.
        assert!(event.get("writeKey").is_none(), "the write key is stored: {event}");
        assert!(!event.to_string().contains(write_key), "the write key {write_key} appears in {event}");
        assert!(event["sourceId"].as_str().is_some_and(|s| !s.is_empty()), "{id}: no sourceId: {event}");
        assert_eq!(event["version"], 2, "{id}: {event}");
        assert_eq!(event["context"]["library"]["name"], library, "{id}: {event}");
        // Time enrichment: normalized, and timestamp = receivedAt − (sentAt − originalTimestamp).
        let received = millis(&event["receivedAt"]);
        let sent = millis(&event["sentAt"]);
        let original = millis(&event["originalTimestamp"]);
        let timestamp = millis(&event["timestamp"]);
        let expected = received - (sent - original);
        assert!(
            (timestamp - expected).abs() <= 1,
            "{id}: timestamp {} is not receivedAt − (sentAt − originalTimestamp) = {expected} ms: {event}",
            event["timestamp"]
        );
        // Same machine: the client's clock is the server's, within network latency.
        assert!((received - sent).abs() < 10_000, "{id}: sentAt far from receivedAt: {event}");
        assert!((received - now_millis()).abs() < 120_000, "{id}: receivedAt is not now: {event}");
        if event["event"] != "Backfilled Event" {
            assert!((timestamp - received).abs() < 10_000, "{id}: live event's timestamp far from receipt: {event}");
        }
        match side {
            Side::Browser => {
                assert_eq!(event["context"]["ip"], "127.0.0.1", "{id}: browser event without context.ip: {event}");
                assert_eq!(event["channel"], "browser", "{id}: {event}");
            }
            Side::Server => {
                assert!(event["context"].get("ip").is_none(), "{id}: server-side event got context.ip: {event}");
                assert_eq!(event["channel"], "server", "{id}: {event}");
            }
        }
    }

    let identify = by_call["identify"];
    assert_eq!(identify["userId"], "user_123");
    assert_eq!(identify["traits"]["email"], "peter@example.com");
    let created = identify["traits"]["createdAt"].as_str().unwrap_or_default();
    assert!(created.starts_with("2024-01-15T10:00:00"), "identify traits.createdAt: {identify}");

    let order = by_call["Order Completed"];
    assert_eq!(order["properties"]["revenue"].as_f64(), Some(19.99), "{order}");
    assert_eq!(order["properties"]["currency"], "EUR", "{order}");
    assert_eq!(order["properties"]["value"].as_f64(), Some(5.0), "{order}");
    assert_eq!(by_call["Course Started"]["properties"]["course_format"], "pass/fail");

    let backfilled = by_call["Backfilled Event"];
    assert_eq!(backfilled["originalTimestamp"], BACKFILLED, "{backfilled}");
    let drift = millis(&backfilled["timestamp"]) - millis(&Value::from(BACKFILLED));
    assert!((-5..5_000).contains(&drift), "backfilled timestamp moved by {drift} ms: {backfilled}");

    let mixpanel = by_call["Mixpanel Only"];
    assert_eq!(mixpanel["integrations"]["All"], false, "{mixpanel}");
    assert_eq!(mixpanel["integrations"]["Mixpanel"], true, "{mixpanel}");
    assert_eq!(mixpanel["properties"]["plan"], "pro");

    let anonymous = by_call["Anonymous Event"];
    assert!(anonymous.get("userId").is_none(), "anonymous event got a userId: {anonymous}");
    if side == Side::Server {
        assert_eq!(anonymous["anonymousId"], "anon_abc", "{anonymous}");
    } else {
        assert!(anonymous["anonymousId"].as_str().is_some_and(|s| !s.is_empty()), "{anonymous}");
    }

    assert_eq!(by_call["page"]["name"], "Getting Started", "{}", by_call["page"]);
    assert_eq!(by_call["screen"]["name"], "Home", "{}", by_call["screen"]);
    let group = by_call["group"];
    assert_eq!(group["groupId"], "group_42", "{group}");
    assert_eq!(group["traits"]["name"], "Initech", "{group}");
    let alias = by_call["alias"];
    assert_eq!(alias["userId"], "user_123", "{alias}");
    assert_eq!(alias["previousId"], "anon_abc", "{alias}");
}

fn now_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn segment_analytics_python() {
    if !python_ready("segment-analytics-python") {
        return;
    }
    let mut server = Server::start();
    let stdout = run_client(&python(), "python_client.py", &[&server.base, "wk_test_python", "py-1"]);
    let log = stop_and_read(&mut server);
    check_scenario(&log, "py-1", &message_ids(&stdout), Side::Server, "wk_test_python", "analytics-python");
}

#[test]
fn segment_analytics_node() {
    if !node_ready("@segment/analytics-node") {
        return;
    }
    let mut server = Server::start();
    let stdout = run_client(Path::new("node"), "node_client.mjs", &[&server.base, "wk_test_node", "node-1"]);
    let log = stop_and_read(&mut server);
    check_scenario(&log, "node-1", &message_ids(&stdout), Side::Server, "wk_test_node", "@segment/analytics-node");
}

#[test]
fn segment_analytics_next_in_chromium() {
    let dir = clients_dir();
    let ready = deps_ready(
        "@segment/analytics-next in chromium",
        &[
            ("node", node_works()),
            (&format!("{} (Debian chromium)", chromium().display()), chromium().exists()),
            (
                "tests/clients/node_modules (@segment/analytics-next, playwright-core, esbuild)",
                ["@segment/analytics-next", "playwright-core", "esbuild"]
                    .iter()
                    .all(|p| dir.join("node_modules").join(p).join("package.json").exists()),
            ),
        ],
    );
    if !ready {
        return;
    }
    ensure_bundle();
    let mut server = Server::start();
    let artifacts = std::env::var_os("FERRY_TEST_ARTIFACTS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts"), PathBuf::from);
    let screenshot = artifacts.join("analytics-next.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout = run_client(
        Path::new("node"),
        "browser_client.mjs",
        &[&server.base, "wk_test_browser", "browser-1", screenshot.to_str().unwrap()],
    );
    let log = stop_and_read(&mut server);
    check_scenario(&log, "browser-1", &message_ids(&stdout), Side::Browser, "wk_test_browser", "analytics.js");
    assert!(screenshot.exists(), "no screenshot at {}", screenshot.display());
}

/// The fault proxy's report of one request (see tests/clients/fault_proxy.py).
#[derive(Debug)]
struct Proxied {
    upstream: u64,
    answered: u64,
    injected: bool,
    message_ids: Vec<String>,
}

/// Starts the fault proxy in front of ferry; returns it, its base URL and its reports.
fn fault_proxy(upstream: &str, mode: &str) -> (Guard, String, Receiver<String>) {
    let mut child = Command::new(python())
        .arg(clients_dir().join("fault_proxy.py"))
        .args([upstream, mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fault proxy");
    let lines = line_reader(child.stdout.take().unwrap());
    let child = Guard(child);
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("fault proxy printed no address in 10 s");
    let base = first.strip_prefix("listening on ").expect("fault proxy address").trim().to_owned();
    (child, base, lines)
}

/// The proxy's reports until the injected fault and its retry have both been seen (or 5 s).
fn proxied_requests(lines: &Receiver<String>) -> Vec<Proxied> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while let Ok(line) = lines.try_recv() {
            let doc: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad proxy line ({e}): {line}"));
            seen.push(Proxied {
                upstream: doc["upstream"].as_u64().unwrap(),
                answered: doc["answered"].as_u64().unwrap(),
                injected: doc["injected"].as_bool().unwrap(),
                message_ids: serde_json::from_value(doc["message_ids"].clone()).unwrap(),
            });
        }
        let retried = seen.iter().any(|p| p.injected) && seen.iter().filter(|p| !p.injected).count() > 0;
        if retried || Instant::now() > deadline {
            return seen;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retries_after_500_and_429_do_not_duplicate() {
    let ready = deps_ready(
        "retries through a fault-injecting proxy",
        &[
            ("tests/clients/.venv (segment-analytics-python)", python().exists()),
            ("node", node_works()),
            (
                "tests/clients/node_modules (@segment/analytics-node)",
                clients_dir().join("node_modules/@segment/analytics-node/package.json").exists(),
            ),
        ],
    );
    if !ready {
        return;
    }
    let mut server = Server::start();
    let rounds = [
        (python(), "python_client.py", "500", "analytics-python"),
        (python(), "python_client.py", "429", "analytics-python"),
        (PathBuf::from("node"), "node_client.mjs", "500", "@segment/analytics-node"),
        (PathBuf::from("node"), "node_client.mjs", "429", "@segment/analytics-node"),
    ];
    let mut runs = Vec::new();
    for (program, script, mode, library) in rounds {
        let run = format!("retry-{script}-{mode}");
        let (_proxy, base, reports) = fault_proxy(&server.base, mode);
        let stdout = run_client(&program, script, &[&base, "wk_test_retry", &run]);
        let ids = message_ids(&stdout);
        let proxied = proxied_requests(&reports);
        // The proxy stored the first batch in ferry but told the client `mode`; the library
        // then sent the same messageIds again, and ferry answered that retry 200.
        let injected: Vec<&Proxied> = proxied.iter().filter(|p| p.injected).collect();
        assert_eq!(injected.len(), 1, "{run}: expected one injected fault: {proxied:?}");
        let fault = injected[0];
        assert_eq!((fault.upstream, fault.answered.to_string()), (200, mode.to_owned()), "{run}: {fault:?}");
        assert!(!fault.message_ids.is_empty(), "{run}: fault hit a request without events: {fault:?}");
        let retried = proxied
            .iter()
            .any(|p| !p.injected && p.upstream == 200 && fault.message_ids.iter().all(|id| p.message_ids.contains(id)));
        assert!(retried, "{run}: the library did not resend the failed batch (or ferry refused it): {proxied:?}");
        runs.push((run, ids, library));
    }
    let log = stop_and_read(&mut server);
    for (run, ids, library) in &runs {
        check_scenario(&log, run, ids, Side::Server, "wk_test_retry", library);
    }
}
