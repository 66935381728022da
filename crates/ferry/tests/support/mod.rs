//! Shared helpers for the binary's end-to-end tests: run `ferry serve` as a real process,
//! speak minimal HTTP/1.1 to it, and read the log back with `ferry log cat`.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A running `ferry serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(FERRY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("FERRY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferry serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("ferry did not report its address in 30 s");
        let addr = line
            .strip_prefix("ferry listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .expect("address");
        Server { child, addr }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection. `Err` for connection failures.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:.80}")))?;
    let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
    Ok((status, response[body_start..].to_vec()))
}

/// Send `body` to `/v1/batch` until it is acknowledged, as a Segment library's retry queue
/// does (the same messageIds every time): connection errors, 429 and 5xx are retried after
/// 20 ms, at `target(attempt)` (so a client can move to another collector); any other
/// status fails the test. `false` when `stop` came first.
pub fn send_until_acknowledged(
    target: &dyn Fn(u32) -> SocketAddr,
    auth: &str,
    body: &[u8],
    stop: &std::sync::atomic::AtomicBool,
) -> bool {
    let mut attempt = 0;
    loop {
        match http(
            target(attempt),
            "POST",
            "/v1/batch",
            &[("Authorization", auth), ("Content-Type", "application/json")],
            body,
        ) {
            Ok((200, _)) => return true,
            Ok((status, body)) => {
                assert!(status == 429 || status >= 500, "unexpected {status}: {}", String::from_utf8_lossy(&body));
            }
            Err(_) => {}
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        attempt += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every request a receiver got: its `X-Signature` and body.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// Serve `app` on a free loopback port, on a thread of its own, for the rest of the test.
pub fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// A webhook receiver on loopback that keeps every request's `X-Signature` and body.
pub fn webhook_receiver() -> (SocketAddr, Received) {
    let seen = Received::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let signature = headers.get("x-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                state.lock().unwrap().push((signature, body.to_vec()));
                "ok"
            }
        }),
    );
    (serve_on_loopback(app), seen)
}

/// A `/v1/batch` body of `events` track events (about 300 bytes each) named `<tag> test`,
/// with message ids `<tag>-<client>-<batch>-<i>`; and those ids.
pub fn batch_body(tag: &str, client: usize, batch: usize, events: usize) -> (Vec<String>, Vec<u8>) {
    let ids: Vec<String> = (0..events).map(|i| format!("{tag}-{client}-{batch}-{i}")).collect();
    let items: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"type":"track","event":"{tag} test","userId":"u{client}","messageId":"{id}","properties":{{"batch":{batch},"pad":"{}"}}}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    (ids, format!(r#"{{"batch":[{}]}}"#, items.join(",")).into_bytes())
}

/// `Authorization: Basic` for a write key, as Segment libraries send it.
pub fn basic(write_key: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")))
}

/// Every record of the event log, via `ferry log cat`.
pub fn log_cat(data_dir: &Path) -> Vec<serde_json::Value> {
    let output =
        Command::new(FERRY).args(["log", "cat", "--data-dir"]).arg(data_dir).output().expect("run ferry log cat");
    assert!(output.status.success(), "ferry log cat failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line ({e}): {line}")))
        .collect()
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-test-").tempdir().expect("temp dir")
}

pub fn path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}

/// Kills a helper process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The PostgreSQL the end-to-end tests may use; says loudly when it is not set.
pub fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("FERRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED ({test}): FERRY_TEST_POSTGRES_URL is not set; the PostgreSQL part did not run");
    }
    url
}

/// A name no other test run uses (PostgreSQL schemas, source ids).
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

/// Rows of a query on the embedded warehouse, every column as text (`NULL` as "").
pub fn sqlite_rows(data_dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let path = data_dir.join("warehouse.db");
    let Ok(conn) = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Vec::new();
    };
    let Ok(mut statement) = conn.prepare(sql) else { return Vec::new() };
    let width = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..width)
            .map(|i| {
                use rusqlite::types::ValueRef;
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => String::new(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => v.to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(_) => "<blob>".to_owned(),
                })
            })
            .collect::<rusqlite::Result<Vec<String>>>()
    });
    match rows {
        Ok(rows) => rows.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// Poll until `done` returns `Some`, or panic after `secs` seconds naming `what`.
pub fn eventually<T>(what: &str, secs: u64, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run the ferry binary with `args`; its exit status, stdout and stderr.
pub fn ferry(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(FERRY).args(args).env("FERRY_LOG", "warn").output().expect("run ferry");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Stop a server with SIGTERM (graceful) and wait for it.
pub fn terminate(mut server: Server) {
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = server.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("ferry did not stop within 40 s of SIGTERM");
}

// ---------------------------------------------------------------------------------------
// The real clients and the browser (tests/clients, from scripts/install-test-deps.sh)

/// Where the real client libraries and the scripts that drive them live.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// Debian's chromium, or `$CHROMIUM`.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether `node` runs.
pub fn node_works() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether everything `what` needs is there; if not, skip loudly, or fail when
/// `FERRY_REQUIRE_CLIENTS=1`.
pub fn deps_ready(what: &str, needs: &[(&str, bool)]) -> bool {
    let missing: Vec<&str> = needs.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("{what}: missing {}; run scripts/install-test-deps.sh", missing.join(", "));
    assert!(std::env::var("FERRY_REQUIRE_CLIENTS").as_deref() != Ok("1"), "FERRY_REQUIRE_CLIENTS=1 but {message}");
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    let banner = format!("\n==================== SKIPPED: {message} ====================\n\n");
    let _ = std::io::stderr().write_all(banner.as_bytes());
    false
}

/// The logs the end-to-end tests that can run on both run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    JetStream,
}

pub const BOTH: [Backend; 2] = [Backend::Embedded, Backend::JetStream];

/// What a configuration adds for `backend`: nothing for the embedded log; for JetStream a
/// nats-server of the test's own (returned, to keep it running) and the `[log]` and
/// `[nats]` sections that point at it.
pub fn backend_config(backend: Backend, dir: &Path) -> (Option<ferry_nats::testing::NatsNode>, String) {
    eprintln!("== on the {backend:?} log");
    match backend {
        Backend::Embedded => (None, String::new()),
        Backend::JetStream => {
            let binary = ferry_nats::testing::server_binary("ferry on jetstream")
                .expect("FERRY_TEST_NATS_SERVER names the nats-server binary (scripts/test sets it)");
            let node = ferry_nats::testing::NatsNode::single(&binary, &dir.join("nats"));
            let section = format!("[log]\nbackend = \"nats\"\n\n[nats]\nurls = [{:?}]\nreplicas = 1\n\n", node.url());
            (Some(node), section)
        }
    }
}
