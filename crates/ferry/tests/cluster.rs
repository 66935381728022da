//! Cluster mode on real processes: nats-server nodes the tests start on free loopback ports
//! (not the machine's own server), ferry collectors and workers as separate `ferry serve`
//! processes, and the real PostgreSQL.
//!
//! - Chaos: clients with Segment-style retries load two collectors while the stream's
//!   leader node, one collector and one worker are SIGKILLed and later restarted; every
//!   acknowledged messageId ends up in PostgreSQL exactly once, and nothing else does.
//! - Outage: with JetStream gone, a collector refuses at once (503 with Retry-After),
//!   without growing, and takes events again as soon as JetStream is back, without a
//!   restart.
//! - An incompatible stream is refused at start-up, naming the problem.
//! - Everything around it works in cluster mode: dedupe across collectors, the debugger
//!   feed across nodes, the quarantine, the admin API, `ferry log cat` and replays.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_nats::testing::{NatsCluster, NatsNode, rss_kib, server_binary, stream_leader};
use support::{
    FERRY, Server, basic, batch_body, eventually, ferry, http, postgres_url, send_until_acknowledged,
    serve_on_loopback, temp_dir, unique, webhook_receiver,
};

const EVENTS_PER_BATCH: usize = 20;

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn nats_section(urls: &[String], replicas: usize) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[log]\nbackend = \"nats\"\n\n[nats]\nurls = [{}]\nreplicas = {replicas}\npublish_timeout_ms = 3000\nack_wait_ms = 4000\n",
        urls.join(", ")
    )
}

/// A `ferry serve` of the cluster, restartable with the same data directory.
struct Node {
    dir: tempfile::TempDir,
    args: Vec<String>,
    server: Option<Server>,
}

impl Node {
    fn start(config: &str, role: &str) -> Node {
        let dir = temp_dir();
        let args = vec!["--config".to_owned(), config.to_owned(), "--role".to_owned(), role.to_owned()];
        let mut node = Node { dir, args, server: None };
        node.restart();
        node
    }

    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Some(Server::start(self.dir.path(), &args));
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("running").child.id()
    }
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, &[], b"").unwrap();
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn every_acknowledged_event_is_in_the_warehouse_once_through_node_and_process_kills() {
    let Some(binary) = server_binary("cluster chaos") else { return };
    let Some(postgres) = postgres_url("cluster chaos") else { return };
    let nats_dir = temp_dir();
    let mut nats = NatsCluster::start(&binary, nats_dir.path());
    let source = unique("cluster");
    let dir = temp_dir();
    let config = write_config(
        dir.path(),
        "ferry.toml",
        &format!(
            "{}\n[[sources]]\nid = \"{source}\"\nwrite_keys = [\"wk_cluster\"]\n\n[[destinations]]\nname = \"postgres\"\ntype = \"postgres\"\nurl = \"{postgres}\"\nbatch_ms = 100\nbatch_events = 500\n",
            nats_section(&nats.urls(), 3)
        ),
    );
    let started = Instant::now();
    let mut collectors = [Node::start(&config, "collector"), Node::start(&config, "collector")];
    let mut workers = [Node::start(&config, "worker"), Node::start(&config, "worker")];
    eprintln!("cluster up in {:?}", started.elapsed());

    let targets = Arc::new(Mutex::new(collectors.iter().map(Node::addr).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let sent = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acked_while_down = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (targets, stop, acked, sent) = (targets.clone(), stop.clone(), acked.clone(), sent.clone());
        let (down, acked_while_down) = (down.clone(), acked_while_down.clone());
        clients.push(std::thread::spawn(move || {
            let auth = basic("wk_cluster");
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let (ids, body) = batch_body("chaos", client, batch, EVENTS_PER_BATCH);
                sent.lock().unwrap().extend(ids.iter().cloned());
                // A failed attempt moves on to the other collector.
                let target = |attempt: u32| {
                    let targets = targets.lock().unwrap();
                    targets[(client + attempt as usize) % targets.len()]
                };
                if !send_until_acknowledged(&target, &auth, &body, &stop) {
                    return;
                }
                if down.load(Ordering::Relaxed) {
                    acked_while_down.fetch_add(ids.len(), Ordering::Relaxed);
                }
                acked.lock().unwrap().extend(ids);
                batch += 1;
            }
        }));
    }
    let acked_count = || acked.lock().unwrap().len();
    eventually("traffic before the kills", 60, || (acked_count() >= 2000).then_some(()));

    // Kill the stream's leader, a collector and a worker at once.
    let leader = eventually("a stream leader", 30, || {
        nats.nodes.iter().filter(|n| n.running()).find_map(|n| stream_leader(&n.url(), "FERRY"))
    });
    let before = acked_count();
    down.store(true, Ordering::Relaxed);
    let killed_at = Instant::now();
    nats.node(&leader).kill();
    collectors[0].kill();
    workers[0].kill();
    // Clients move to the other collector while this one is down.
    targets.lock().unwrap()[0] = collectors[1].addr();
    eventually("acknowledgements after the leader died", 90, || (acked_count() >= before + 500).then_some(()));
    let resumed = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    nats.node(&leader).start();
    collectors[0].restart();
    workers[0].restart();
    targets.lock().unwrap()[0] = collectors[0].addr();
    down.store(false, Ordering::Relaxed);
    let after_restart = acked_count();
    eventually("traffic after the restarts", 90, || (acked_count() >= after_restart + 2000).then_some(()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    eprintln!(
        "cluster chaos: {} acknowledged ({} while {leader}, a collector and a worker were down); ingestion resumed {resumed:?} after the leader died",
        acked.len(),
        acked_while_down.load(Ordering::Relaxed)
    );

    // Every acknowledged event reaches PostgreSQL exactly once; nothing nobody sent.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&postgres, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let query = format!("select id from \"{source}\".chaos_test");
        let deadline = Instant::now() + Duration::from_secs(120);
        let rows: Vec<String> = loop {
            let rows: Vec<String> = match client.query(&query, &[]).await {
                Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
                Err(_) => Vec::new(),
            };
            let have: HashSet<&String> = rows.iter().collect();
            if acked.iter().all(|id| have.contains(id)) {
                break rows;
            }
            assert!(
                Instant::now() < deadline,
                "postgresql did not get every acknowledged event: {} of {} after 120 s",
                acked.iter().filter(|id| have.contains(id)).count(),
                acked.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let mut seen: HashMap<&String, usize> = HashMap::new();
        for id in &rows {
            *seen.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(twice.is_empty(), "rows loaded twice: {twice:?}");
        let stranger: Vec<_> = rows.iter().filter(|id| !sent.contains(*id)).take(5).collect();
        assert!(stranger.is_empty(), "rows nobody sent: {stranger:?}");
        client.batch_execute(&format!("drop schema \"{source}\" cascade")).await.unwrap();
    });
    // Both workers delivered.
    for worker in &workers {
        let destinations = get_json(worker.addr(), "/admin/v1/destinations");
        let delivered = destinations["destinations"][0]["delivered"].as_u64().unwrap();
        assert!(delivered > 0, "worker {} delivered nothing: {destinations}", worker.addr());
    }
}

#[test]
fn collectors_refuse_quickly_while_jetstream_is_down_and_recover_by_themselves() {
    let Some(binary) = server_binary("jetstream outage") else { return };
    let nats_dir = temp_dir();
    let mut nats = NatsNode::single(&binary, nats_dir.path());
    let dir = temp_dir();
    let config = write_config(dir.path(), "ferry.toml", &nats_section(&[nats.url()], 1));
    let node = Node::start(&config, "all");
    let auth = basic("wk_outage");
    let stop = AtomicBool::new(false);
    let (ids, body) = batch_body("before", 0, 0, EVENTS_PER_BATCH);
    let target = |_| node.addr();
    assert!(send_until_acknowledged(&target, &auth, &body, &stop));
    let ready = |addr| http(addr, "GET", "/ready", &[], b"").unwrap().0;
    assert_eq!(ready(node.addr()), 200);

    nats.kill();
    eventually("the collector to notice", 15, || (ready(node.addr()) == 503).then_some(()));
    let rss_before = rss_kib(node.pid());
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let (_, body) = batch_body("during", 1, i, EVENTS_PER_BATCH);
        let sent_at = Instant::now();
        let (status, answer) = http(node.addr(), "POST", "/v1/batch", &[("Authorization", &auth)], &body).unwrap();
        slowest = slowest.max(sent_at.elapsed());
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["success"], false);
        assert!(answer["code"].as_str().is_some_and(|c| !c.is_empty()), "{answer}");
    }
    let rss_after = rss_kib(node.pid());
    eprintln!("jetstream down: 200 requests refused, the slowest in {slowest:?}; rss {rss_before} -> {rss_after} KiB");
    assert!(slowest < Duration::from_millis(500), "refusals took up to {slowest:?}");
    assert!(rss_after < rss_before + 20 * 1024, "memory grew from {rss_before} to {rss_after} KiB");
    // The answer carries Retry-After.
    let mut stream = std::net::TcpStream::connect(node.addr()).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    std::io::Write::write_all(&mut stream, &body).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut stream, &mut raw).unwrap();
    assert!(raw.to_ascii_lowercase().contains("retry-after:"), "{raw}");

    let restarted = Instant::now();
    nats.start();
    let (after_ids, body) = batch_body("after", 2, 0, EVENTS_PER_BATCH);
    eventually("ingestion to resume", 30, || {
        matches!(http(node.addr(), "POST", "/v1/batch", &[("Authorization", &auth)], &body), Ok((200, _))).then_some(())
    });
    eprintln!("ingestion resumed {:?} after jetstream came back", restarted.elapsed());
    assert_eq!(ready(node.addr()), 200);
    // What was acknowledged, before and after, is in the stream once.
    let (ok, out, err) = ferry(&["log", "cat", "--config", &config]);
    assert!(ok, "{err}");
    let stored: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["record"]["messageId"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = ids.iter().chain(&after_ids).cloned().collect();
    assert_eq!(stored, expected);
}

#[test]
fn an_incompatible_stream_is_refused_at_start() {
    let Some(binary) = server_binary("incompatible stream") else { return };
    let nats_dir = temp_dir();
    let nats = NatsNode::single(&binary, nats_dir.path());
    let dir = temp_dir();
    // A first ferry creates the stream with a one-hour dedupe window...
    let short = write_config(
        dir.path(),
        "short.toml",
        &nats_section(&[nats.url()], 1)
            .replace("backend = \"nats\"\n", "backend = \"nats\"\ndedupe_window_hours = 1\n"),
    );
    let first = Node::start(&short, "collector");
    drop(first);
    // ...which a ferry configured for 24 hours must not use.
    let config = write_config(dir.path(), "ferry.toml", &nats_section(&[nats.url()], 1));
    let output = std::process::Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", &config, "--data-dir"])
        .arg(dir.path())
        .env("FERRY_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("stream FERRY cannot be used by ferry")
            && stderr.contains("duplicate window is 1 h, shorter than the dedupe window of 24 h"),
        "{stderr}"
    );
    // The embedded log cannot take a role.
    let (ok, _, err) = ferry(&["serve", "--role", "worker", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("needs log.backend = \"nats\""), "{err}");
    // Broken cluster settings are all reported by `ferry check`.
    let broken = write_config(
        dir.path(),
        "broken.toml",
        "[log]\nbackend = \"nats\"\n[nats]\nurls = []\nreplicas = 2\nuser = \"u\"\nmax_age_hours = 1\n\n[[destinations]]\nname = \"lake\"\ntype = \"files\"\n",
    );
    let (ok, _, err) = ferry(&["check", "--config", &broken]);
    assert!(!ok);
    for want in [
        "nats.urls needs at least one server url",
        "nats.replicas must be 1, 3 or 5",
        "nats.user and nats.password go together",
        "nats.max_age_hours (1) must be 0 (no limit) or at least log.dedupe_window_hours (24)",
        "destination lake: type files is not available",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn dedupe_debugger_quarantine_admin_and_replay_work_across_nodes() {
    let Some(binary) = server_binary("cluster features") else { return };
    let nats_dir = temp_dir();
    let nats = NatsNode::single(&binary, nats_dir.path());
    let (receiver, seen) = webhook_receiver();
    // A destination that refuses everything: its events become dead letters on the worker.
    let refuser = serve_on_loopback(
        axum::Router::new()
            .route("/hook", axum::routing::post(|| async { (axum::http::StatusCode::BAD_REQUEST, "no") })),
    );
    let dir = temp_dir();
    let config = write_config(
        dir.path(),
        "ferry.toml",
        &format!(
            "{}\n[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurls = [\"http://{receiver}/hook\"]\nbatch_ms = 50\nstart = \"beginning\"\n\n[[destinations]]\nname = \"strict\"\ntype = \"webhook\"\nurls = [\"http://{refuser}/hook\"]\nbatch_ms = 50\nstart = \"beginning\"\n",
            nats_section(&[nats.url()], 1)
        ),
    );
    let a = Node::start(&config, "all");
    let b = Node::start(&config, "collector");
    let auth = basic("wk_features");

    // The debugger on b shows what a receives.
    let mut tail = std::process::Command::new(FERRY)
        .args(["tail", "--url", &format!("http://{}", b.addr()), "--json", "--count", "3"])
        .env("FERRY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Give b's watcher a heartbeat's time to be heard by a.
    std::thread::sleep(Duration::from_millis(2500));
    let items = r#"{"batch":[
        {"type":"track","event":"Seen Elsewhere","userId":"u1","messageId":"f-1"},
        {"type":"track","event":"Seen Elsewhere","userId":"u1","messageId":"f-2"},
        {"type":"track","userId":"u1","messageId":"f-bad"}
    ]}"#;
    let (status, answer) = http(a.addr(), "POST", "/v1/batch", &[("Authorization", &auth)], items.as_bytes()).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["code"], "missing_event");
    // The same batch through the other collector: duplicates, stored once.
    let (status, again) = http(b.addr(), "POST", "/v1/batch", &[("Authorization", &auth)], items.as_bytes()).unwrap();
    assert_eq!(status, 200);
    let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(again["duplicates"], 2, "{again}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while tail.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ferry tail on b saw nothing of a's events");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut tail.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("Seen Elsewhere") && out.contains("f-1"), "{out}");

    // The webhook gets each event once; the quarantine holds the bad item.
    let delivered = |seen: &support::Received| -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                serde_json::from_slice::<serde_json::Value>(body).unwrap()["messageId"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    eventually("the webhook to get both events", 20, || (delivered(&seen).len() >= 2).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    let mut got = delivered(&seen);
    got.sort();
    assert_eq!(got, ["f-1", "f-2"]);
    let (ok, out, err) = ferry(&["quarantine", "list", "--config", &config]);
    assert!(ok, "{err}");
    assert!(out.contains("\"missing_event\"") && out.contains("f-bad"), "{out}");
    let quarantine = get_json(a.addr(), "/admin/v1/quarantine");
    assert_eq!(quarantine["items"].as_array().unwrap().len(), 2, "{quarantine}");
    let offset = quarantine["items"][0]["offset"].as_u64().unwrap();
    let (ok, out, err) = ferry(&["quarantine", "show", &offset.to_string(), "--config", &config]);
    assert!(ok && out.contains("missing_event"), "{out}{err}");

    // The worker's admin API: the shared consumers have nothing left; what the strict
    // destination refused is in the worker's dead letters, settled.
    let lag = eventually("the consumers' backlogs to be known and empty", 20, || {
        let d = get_json(a.addr(), "/admin/v1/destinations");
        let (hook, strict) = (d["destinations"][0].clone(), d["destinations"][1].clone());
        let settled = hook["delivered"] == 2 && hook["lagEvents"] == 0;
        (settled && strict["deadLettered"] == 2 && strict["lagEvents"] == 0).then_some(hook)
    });
    assert_eq!(lag["name"], "hook");
    let letters = get_json(a.addr(), "/admin/v1/dead-letters?destination=strict");
    let mut ids: Vec<&str> =
        letters["deadLetters"].as_array().unwrap().iter().map(|l| l["messageId"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["f-1", "f-2"], "{letters}");
    let metrics = String::from_utf8(http(a.addr(), "GET", "/metrics", &[], b"").unwrap().1).unwrap();
    assert!(metrics.contains("ferry_nats_published_events_total{outcome=\"stored\"} 2"), "{metrics}");
    assert!(metrics.contains("ferry_nats_connected 1"), "{metrics}");

    // `ferry log cat` reads the stream.
    let (ok, out, err) = ferry(&["log", "cat", "--config", &config]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");

    // Replays, by the command line and by the admin API, send the events again.
    let (ok, out, err) = ferry(&["replay", "--destination", "hook", "--since", "1h", "--config", &config]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("delivered 2 events"), "{out}");
    assert_eq!(delivered(&seen).len(), 4);
    let (status, job) = http(
        a.addr(),
        "POST",
        "/admin/v1/replays",
        &[("Content-Type", "application/json")],
        br#"{"destination":"hook","since":"2020-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&job));
    let job: serde_json::Value = serde_json::from_slice(&job).unwrap();
    let id = job["id"].as_u64().unwrap();
    let done = eventually("the replay job", 20, || {
        let job = get_json(a.addr(), &format!("/admin/v1/jobs/{id}"));
        (job["state"] != "running").then_some(job)
    });
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["delivered"], 2, "{done}");
    assert_eq!(delivered(&seen).len(), 6);
}
