//! SIGKILL through HTTP: clients record which requests got a 2xx while ferry is killed
//! mid-load and restarted, again and again; at the end every acknowledged messageId is in
//! the log exactly once, and no messageId (retried or not) is stored twice.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Server, basic, http, log_cat, temp_dir};

const CLIENTS: usize = 4;
const KILLS: usize = 6;
const EVENTS_PER_BATCH: usize = 20;

fn batch_body(client: usize, batch: usize) -> (Vec<String>, Vec<u8>) {
    let ids: Vec<String> = (0..EVENTS_PER_BATCH).map(|i| format!("kill-{client}-{batch}-{i}")).collect();
    let items: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"type":"track","event":"Kill Test","userId":"u{client}","messageId":"{id}","properties":{{"batch":{batch},"pad":"{}"}}}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    (ids, format!(r#"{{"batch":[{}]}}"#, items.join(",")).into_bytes())
}

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let dir = temp_dir();
    let mut server = Server::start(dir.path(), &[]);
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
                let (ids, body) = batch_body(client, batch);
                // Retry the same batch (same messageIds) until it is acknowledged, as a
                // Segment library does.
                loop {
                    let target = *addr.lock().unwrap();
                    match http(
                        target,
                        "POST",
                        "/v1/batch",
                        &[("Authorization", &auth), ("Content-Type", "application/json")],
                        &body,
                    ) {
                        Ok((200, _)) => {
                            acked.lock().unwrap().extend(ids.iter().cloned());
                            break;
                        }
                        Ok((status, body)) => {
                            assert!(
                                status == 429 || status == 503,
                                "unexpected {status}: {}",
                                String::from_utf8_lossy(&body)
                            );
                        }
                        Err(_) => {}
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
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
        server = Server::start(dir.path(), &[]);
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
}
