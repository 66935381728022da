//! The crash test: a child process appends under concurrent load and prints the id of
//! every record whose append returned; the test SIGKILLs it at random moments, 24 times,
//! restarting it on the same directory each time. After every restart each acknowledged
//! record must be present exactly once and byte-identical, nothing else may be served, and
//! resending acknowledged ids must be answered as duplicates.
//!
//! The child is this test binary itself, re-run with `CRASH_CHILD_DIR` set.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_log::{Appended, Log, LogConfig, Record, SyncPolicy};

const KILLS: usize = 24;
const THREADS: usize = 4;

/// The payload for a record id: about 1 KB, deterministic, so the test can check bytes.
fn payload(id: &str) -> Vec<u8> {
    let mut body = format!("{{\"id\":\"{id}\",\"pad\":\"").into_bytes();
    let seed = id.bytes().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    body.extend((0..1000).map(|i| b'a' + (seed.wrapping_add(i as u8) % 26)));
    body.extend_from_slice(b"\"}");
    body
}

fn config(dir: &Path) -> LogConfig {
    // Small chunks and a small dedupe memory layer, so that kills also land while chunks
    // roll over and while dedupe keys move to run files.
    LogConfig {
        dir: dir.to_owned(),
        sync: SyncPolicy::Always,
        chunk_bytes: 256 * 1024,
        dedupe_max_ids: 300,
        ..LogConfig::default()
    }
}

/// The child: append forever from several threads; print "ACK id" after each return.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("CRASH_CHILD_DIR") else { return };
    let round = std::env::var("CRASH_ROUND").unwrap_or_default();
    let (log, _) = Log::open(config(Path::new(&dir))).expect("child opens the log");
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let log = log.clone();
        let round = round.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0.. {
                // Some batches, some single records; ids unique per round.
                let n = 1 + (i % 3);
                let ids: Vec<String> = (0..n).map(|j| format!("r{round}-t{t}-{i}-{j}")).collect();
                let records =
                    ids.iter().map(|id| Record { key: Some(id.clone().into_bytes()), payload: payload(id) }).collect();
                let answers = log.append_blocking(records).expect("append");
                let mut line = String::new();
                for (id, answer) in ids.iter().zip(answers) {
                    assert!(matches!(answer, Appended::At(_)), "fresh ids are never duplicates");
                    line.push_str(&format!("ACK {id}\n"));
                }
                print!("{line}");
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acknowledged_records_survive_sigkill_exactly_once() {
    if std::env::var_os("CRASH_CHILD_DIR").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env("CRASH_CHILD_DIR", dir.path())
            .env("CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ACK ") {
                    ids.push(id.to_owned());
                }
            }
            ids
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 350));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());

        // Restart: recovery must keep every acknowledged record, once, intact.
        let (log, _) = Log::open(config(dir.path())).expect("reopen after SIGKILL");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stored: HashMap<String, usize> = HashMap::new();
        let mut from = 0;
        loop {
            assert!(Instant::now() < deadline, "reading the log took too long");
            let records = log.read(from, 4096).unwrap();
            let Some(last) = records.last() else { break };
            from = last.0 + 1;
            for (offset, record) in records {
                let text = std::str::from_utf8(&record).unwrap_or_else(|_| panic!("garbage at offset {offset}"));
                let id = text.split('"').nth(3).unwrap_or_else(|| panic!("garbage at offset {offset}: {text:.60}"));
                assert_eq!(record, payload(id), "record {id} at offset {offset} is not byte-identical");
                *stored.entry(id.to_owned()).or_default() += 1;
            }
        }
        for id in &acked {
            assert_eq!(stored.get(id), Some(&1), "acknowledged record {id} lost or duplicated after kill {round}");
        }
        assert!(stored.values().all(|n| *n == 1), "a record is stored twice");
        // The dedupe index survived too: resending acknowledged ids (the newest, and a
        // spread of older ones) stores nothing.
        let resend: Vec<&String> = acked.iter().rev().take(20).chain(acked.iter().step_by(97)).collect();
        let records =
            resend.iter().map(|id| Record { key: Some(id.as_bytes().to_vec()), payload: payload(id) }).collect();
        let answers = log.append_blocking(records).expect("resend");
        for (id, answer) in resend.iter().zip(answers) {
            assert_eq!(answer, Appended::Duplicate, "acknowledged id {id} forgotten by dedupe after kill {round}");
        }
        log.close();
    }
    assert!(acked.len() > KILLS * 10, "too few appends were acknowledged: {}", acked.len());
    eprintln!("crash test: {} acknowledged records survived {KILLS} SIGKILLs", acked.len());
}
