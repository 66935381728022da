//! SIGKILL through HTTP: clients record which requests got a 2xx while ferry is killed
//! mid-load and restarted, again and again; at the end every acknowledged messageId is in
//! the log exactly once, and no messageId (retried or not) is stored twice. The warehouse
//! loaders are killed mid-batch with it: after a last restart the embedded SQLite warehouse
//! (and PostgreSQL, when `FERRY_TEST_POSTGRES_URL` is set) hold exactly the logged events,
//! each once.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    Server, basic, batch_body, eventually, log_cat, postgres_url, send_until_acknowledged, sqlite_rows, temp_dir,
    unique,
};

const CLIENTS: usize = 4;
const KILLS: usize = 6;
const EVENTS_PER_BATCH: usize = 20;

/// The message ids of every line of every visible file under `root` (hidden temporary
/// files must not be readable as data; they are skipped as readers skip them).
fn file_ids(root: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if !name.starts_with('.') {
                assert!(name.ends_with(".jsonl.gz"), "unexpected file {}", path.display());
                let output = std::process::Command::new("zcat").arg(&path).output().unwrap();
                assert!(output.status.success(), "a partial file is visible: {}", path.display());
                for line in String::from_utf8(output.stdout).unwrap().lines() {
                    let json: serde_json::Value = serde_json::from_str(line).unwrap();
                    ids.push(json["messageId"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    ids
}

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let dir = temp_dir();
    let source = unique("kill");
    let postgres = postgres_url("kill test");
    let mut config = format!(
        "[[sources]]\nid = \"{source}\"\nwrite_keys = [\"wk_kill\"]\n\n[[destinations]]\nname = \"warehouse\"\ntype = \"sqlite\"\nbatch_ms = 100\n\n[[destinations]]\nname = \"lake\"\ntype = \"files\"\nbatch_ms = 100\nbatch_events = 50\nlevel = 1\n"
    );
    if let Some(url) = &postgres {
        config.push_str(&format!(
            "\n[[destinations]]\nname = \"postgres\"\ntype = \"postgres\"\nurl = \"{url}\"\nbatch_ms = 100\n"
        ));
    }
    let config_path = dir.path().join("ferry.toml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.to_str().unwrap().to_owned();
    let args = ["--config", config_arg.as_str()];
    let mut server = Server::start(dir.path(), &args);
    let addr = Arc::new(Mutex::new(server.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (addr, stop, acked) = (addr.clone(), stop.clone(), acked.clone());
        clients.push(std::thread::spawn(move || {
            let auth = basic("wk_kill");
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let (ids, body) = batch_body("kill", client, batch, EVENTS_PER_BATCH);
                // Retry the same batch (same messageIds) until it is acknowledged, as a
                // Segment library does.
                let target = |_| *addr.lock().unwrap();
                if !send_until_acknowledged(&target, &auth, &body, &stop) {
                    return;
                }
                acked.lock().unwrap().extend(ids.iter().cloned());
                batch += 1;
            }
        }));
    }

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..KILLS {
        // A pseudo-random moment 100 to 600 ms into the round, while clients are busy.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 500));
        server.kill();
        server = Server::start(dir.path(), &args);
        *addr.lock().unwrap() = server.addr;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    for client in clients {
        assert!(Instant::now() < deadline, "clients did not stop");
        client.join().expect("client thread");
    }
    drop(server);

    let acked = acked.lock().unwrap();
    assert!(acked.len() >= EVENTS_PER_BATCH * CLIENTS, "too little traffic got through: {}", acked.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in log_cat(dir.path()) {
        let id = line["record"]["messageId"].as_str().expect("stored events have a messageId").to_owned();
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!("kill test: {} acknowledged events, {} stored, {KILLS} kills", acked.len(), seen.len());

    // The warehouses were killed mid-load with everything else: once ferry runs again
    // they catch up to exactly the logged events, each once.
    let server = Server::start(dir.path(), &args);
    let table = format!("{source}_kill_test");
    let rows = eventually("the sqlite warehouse to catch up", 60, || {
        let rows = sqlite_rows(dir.path(), &format!("select id from \"{table}\""));
        (rows.len() >= seen.len()).then_some(rows)
    });
    let ids: HashSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids.len(), rows.len(), "a row loaded twice");
    assert_eq!(ids, seen.keys().cloned().collect::<HashSet<_>>(), "the warehouse holds exactly the logged events");
    let tracks = sqlite_rows(dir.path(), &format!("select count(*) from \"{source}_tracks\""));
    assert_eq!(tracks[0][0], seen.len().to_string());
    // The files were killed mid-write too: no partial file is visible, and every logged
    // event is in exactly one file line.
    let lines = eventually("the files to catch up", 60, || {
        let lines = file_ids(&dir.path().join("files"));
        (lines.len() >= seen.len()).then_some(lines)
    });
    let distinct: HashSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), lines.len(), "an event in two files");
    assert_eq!(distinct.len(), seen.len());
    if let Some(url) = &postgres {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let query = format!("select count(*), count(distinct id) from \"{source}\".kill_test");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(row) = client.query_one(&query, &[]).await {
                    let (all, distinct): (i64, i64) = (row.get(0), row.get(1));
                    assert_eq!(all, distinct, "a row loaded twice into postgresql");
                    if all as usize == seen.len() {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "postgresql did not catch up");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client.batch_execute(&format!("drop schema \"{source}\" cascade")).await.unwrap();
        });
    }
    drop(server);
}
