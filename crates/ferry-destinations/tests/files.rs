//! The files destination against a real directory: gzip JSON Lines that `zcat` reads,
//! Hive-style partitions, no second copy on redelivery, no partial file visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_destinations::files::{Files, FilesConfig};
use ferry_destinations::testing::real_client_events;
use ferry_destinations::{Destination, Outcome};

/// Every file under `root`, relative, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// `zcat` of one file: its JSON lines.
fn zcat(path: &Path) -> Vec<serde_json::Value> {
    let output = Command::new("zcat").arg(path).output().expect("run zcat");
    assert!(output.status.success(), "zcat {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_events_land_in_partitions_readable_by_zcat() {
    let dir = tempfile::tempdir().unwrap();
    let files_destination = Files::open(FilesConfig { root: dir.path().to_path_buf(), level: 6 }).unwrap();
    let events = real_client_events();
    let outcomes = files_destination.send(&events).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Delivered), "{outcomes:?}");
    let written = files(dir.path());
    let mut lines: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut types = std::collections::BTreeSet::new();
    for file in &written {
        let text = file.to_string_lossy().into_owned();
        let parts: Vec<&str> = text.split('/').collect();
        assert_eq!(parts.len(), 5, "{text}");
        assert_eq!(parts[0], "source=src_golden");
        assert!(
            parts[1].starts_with("type=") && parts[2].starts_with("date=2026-11-28") && parts[3].starts_with("hour="),
            "{text}"
        );
        assert!(parts[4].ends_with(".jsonl.gz") && !parts[4].starts_with('.'), "{text}");
        types.insert(parts[1].to_owned());
        for line in zcat(&dir.path().join(file)) {
            assert_eq!(format!("type={}", line["type"].as_str().unwrap()), parts[1], "partitioned by type");
            lines.insert(line["messageId"].as_str().unwrap().to_owned(), line);
        }
    }
    assert_eq!(lines.len(), events.len(), "every event once");
    for event in &events {
        let stored: serde_json::Value = serde_json::from_str(event.json()).unwrap();
        assert_eq!(lines[&event.message_id], stored);
    }
    assert_eq!(types.len(), 6, "{types:?}");

    // The same batch again (a redelivery): the same files, no second copy.
    let again = files_destination.send(&events).await;
    assert!(again.iter().all(|o| *o == Outcome::Delivered));
    assert_eq!(files(dir.path()), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_files_from_a_crash_are_never_visible_and_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("source=web/type=track/date=2026-11-28/hour=10");
    std::fs::create_dir_all(&partition).unwrap();
    // What a crash between create and rename leaves: a hidden temporary file.
    std::fs::write(partition.join(".20261128T100000000Z-0123456789abcdef.jsonl.gz.tmp"), b"\x1f\x8b partial").unwrap();
    let _files = Files::open(FilesConfig { root: dir.path().to_path_buf(), level: 6 }).unwrap();
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_root_is_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let files_destination = Files::open(FilesConfig { root: dir.path().join("lake"), level: 1 }).unwrap();
    // A file where the partition directory should go.
    std::fs::write(dir.path().join("lake/source=src_golden"), b"in the way").unwrap();
    let outcomes = files_destination.send(&real_client_events()[..2]).await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. })), "{outcomes:?}");
}
