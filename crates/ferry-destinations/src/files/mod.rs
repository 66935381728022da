//! Files (a data lake on a local or mounted file system): events as gzip-compressed JSON
//! Lines, one file per batch and partition,
//! `<root>/source=<source>/type=<type>/date=YYYY-MM-DD/hour=HH/<first receivedAt>-<hash>.jsonl.gz`
//! (partitioned by `receivedAt`, UTC; `<source>` is the source's snake_case id).
//!
//! Files roll with the batches: a destination's batch settings (events, bytes, time) are
//! its roll size and age. A file is written under a hidden temporary name
//! (`.<name>.tmp`, which data-lake readers skip), fsync'd, renamed into place and its
//! directory fsync'd, so a reader never sees a partial file; temporary files left by a
//! crash are removed when the destination opens. The name is a hash of the message ids
//! in the file, and the delivery engine hands this destination the very same batch again
//! after a crash (it asks for stable batches), so a redelivery rewrites the same name
//! instead of making a second copy. Like warehouses, files ignore `integrations`.
//!
//! Each line is the Segment-shaped event (the stored record without ferry's `_ferry`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::Settings;

/// Where and how files are written.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub root: PathBuf,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub level: u32,
}

/// Why the files destination cannot open.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create files root {}: {error}", root.display())]
    CreateRoot { root: PathBuf, error: std::io::Error },
    #[error("cannot clean {}: {error}", root.display())]
    Clean { root: PathBuf, error: std::io::Error },
}

/// The files destination.
pub struct Files {
    config: FilesConfig,
}

impl Files {
    /// Create the root if needed and remove temporary files a crash left behind.
    pub fn open(config: FilesConfig) -> Result<Files, Error> {
        std::fs::create_dir_all(&config.root)
            .map_err(|error| Error::CreateRoot { root: config.root.clone(), error })?;
        let removed =
            remove_temporaries(&config.root).map_err(|error| Error::Clean { root: config.root.clone(), error })?;
        if removed > 0 {
            tracing::warn!(root = %config.root.display(), files = removed, "removed partial files left by a crash");
        }
        Ok(Files { config: FilesConfig { level: config.level.clamp(1, 9), ..config } })
    }

    /// Write a batch now, in this thread; one outcome per event.
    pub fn write_blocking(&self, events: &[Arc<Event>]) -> Vec<Outcome> {
        let mut partitions: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, event) in events.iter().enumerate() {
            partitions.entry(partition(&self.config.root, event)).or_default().push(i);
        }
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        for (dir, members) in partitions {
            let part: Vec<&Event> = members.iter().map(|&i| events[i].as_ref()).collect();
            if let Err(error) = write_file(&dir, &part, self.config.level) {
                let error = format!("cannot write {}: {error}", dir.display());
                for i in members {
                    outcomes[i] = Outcome::retry(error.clone());
                }
            }
        }
        outcomes
    }
}

impl Destination for Files {
    fn follows_integrations(&self) -> bool {
        false
    }

    fn needs_stable_batches(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let files = Files { config: self.config.clone() };
            let batch = events.to_vec();
            tokio::task::spawn_blocking(move || files.write_blocking(&batch))
                .await
                .unwrap_or_else(|e| vec![Outcome::retry(format!("file writer stopped: {e}")); events.len()])
        })
    }
}

/// `<root>/source=<source>/type=<type>/date=YYYY-MM-DD/hour=HH`.
fn partition(root: &Path, event: &Event) -> PathBuf {
    let time = jiff::tz::Offset::UTC.to_datetime(event.received_at);
    root.join(format!("source={}", crate::warehouse::namespace_of(&event.source_id)))
        .join(format!("type={}", event.kind.as_str()))
        .join(format!("date={:04}-{:02}-{:02}", time.year(), time.month(), time.day()))
        .join(format!("hour={:02}", time.hour()))
}

/// `<first receivedAt as YYYYMMDDTHHMMSSmmmZ>-<16 hex digits of a hash of the message ids>.jsonl.gz`.
fn file_name(events: &[&Event]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for event in events {
        hasher.update(event.message_id.as_bytes());
        hasher.update(b"\n");
    }
    let first = events.iter().map(|e| e.received_at).min().unwrap_or_default();
    let t = jiff::tz::Offset::UTC.to_datetime(first);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z-{:016x}.jsonl.gz",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond() / 1_000_000,
        hasher.digest()
    )
}

/// Write `events` as one gzip JSON Lines file in `dir`, atomically.
fn write_file(dir: &Path, events: &[&Event], level: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = file_name(events);
    let target = dir.join(&name);
    if target.exists() {
        // The same batch, written before a crash: it is complete (renames are atomic).
        return Ok(());
    }
    let temporary = dir.join(format!(".{name}.tmp"));
    let file = File::create(&temporary)?;
    let mut gz =
        flate2::write::GzEncoder::new(BufWriter::with_capacity(256 * 1024, file), flate2::Compression::new(level));
    for event in events {
        gz.write_all(crate::segment_json(event).as_bytes())?;
        gz.write_all(b"\n")?;
    }
    let file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &target)?;
    File::open(dir)?.sync_all()
}

/// Remove `.<name>.tmp` files under `root`; how many.
fn remove_temporaries(root: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, received: &str) -> Event {
        let json = format!(
            r#"{{"type":"track","messageId":"{id}","userId":"u","event":"E","receivedAt":"{received}","sourceId":"My Web"}}"#
        );
        Event::decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn partitions_and_names_are_deterministic() {
        let a = event("a", "2026-11-28T10:37:14.899Z");
        let b = event("b", "2026-11-28T10:40:00.000Z");
        assert_eq!(
            partition(Path::new("/lake"), &a),
            Path::new("/lake/source=my_web/type=track/date=2026-11-28/hour=10")
        );
        let name = file_name(&[&a, &b]);
        assert!(name.starts_with("20261128T103714899Z-") && name.ends_with(".jsonl.gz"), "{name}");
        assert_eq!(name, file_name(&[&a, &b]));
        assert_ne!(name, file_name(&[&a]));
    }
}
