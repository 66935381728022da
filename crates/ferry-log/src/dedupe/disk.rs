//! The disk layer of the dedupe index: sorted run files (format in the module above), a
//! sparse index of each in memory, and cuckoo filters over their keys.
//!
//! The filters: `main`, built by a background thread from the run files; `recent`, which
//! the writer adds each new run's keys to (a slice per group commit); and, while a new
//! `main` is being built, the `frozen` former `recent`. A lookup asks all of them. When
//! `recent` is nearly full (or the filters hold mostly keys of deleted runs), a rebuild
//! starts: a background thread allocates a fresh `recent` (sized for half the keys on
//! disk) and hands it over, the writer freezes the old one and gives the thread a snapshot
//! of the run list, and the thread builds the next `main` from those runs' files. When it
//! is done the writer swaps it in and drops `frozen`. Deleting a run removes nothing from
//! the filters (its keys are no longer found in any run); the next rebuild leaves them out.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::filter::Cuckoo;
use super::{Hook, Job};

const RUN_MAGIC: &[u8; 8] = b"FRYDEDUP";
const RUN_VERSION: u32 = 2;
const RUN_HEADER_LEN: u64 = 40;
/// Bytes per key in a run: version 1 (key only) and version 2 (key and time).
const ENTRY_LEN_V1: usize = 16;
const ENTRY_LEN_V2: usize = 20;
/// One key in this many is kept in memory per run (a lookup reads one block of this many:
/// 5 KiB).
const SPARSE_EVERY: usize = 256;
/// The smallest filter: keys.
pub(crate) const MIN_FILTER_KEYS: usize = 1 << 16;
/// Homeless fingerprints a built filter may have before it is built again larger.
const MAX_STASH: usize = 16;
/// How long to wait before retrying a failed rebuild.
const REBUILD_RETRY: Duration = Duration::from_secs(10);

pub(crate) struct Run {
    pub(crate) path: PathBuf,
    pub(crate) count: u64,
    min_ms: u64,
    pub(crate) max_ms: u64,
    /// Bytes per entry: 16 (version 1) or 20 (version 2, with the key's time).
    entry_len: usize,
    /// Every `SPARSE_EVERY`th key, for finding the block to read.
    sparse: Vec<u128>,
}

impl Run {
    pub(crate) fn allocated_bytes(&self) -> usize {
        std::mem::size_of::<Run>() + self.sparse.capacity() * 16 + self.path.as_os_str().len()
    }
}

enum Rebuild {
    /// The thread is allocating the next `recent`; the snapshot goes out when it arrives.
    Preparing {
        fresh: mpsc::Receiver<Cuckoo>,
        snapshot: mpsc::Sender<Vec<Arc<Run>>>,
        handle: JoinHandle<RebuildResult>,
    },
    /// The thread is reading the snapshot's runs into the next `main`, which will cover
    /// the first `covers_frozen` frozen filters.
    Building { handle: JoinHandle<RebuildResult>, covers_frozen: usize },
}

type RebuildResult = io::Result<Option<Cuckoo>>;

pub(crate) struct DiskLayer {
    dir: PathBuf,
    pub(crate) runs: Vec<Arc<Run>>,
    /// Keys in `runs`.
    live_keys: u64,
    /// The next run file's sequence number.
    seq: u64,
    main: Cuckoo,
    recent: Cuckoo,
    frozen: Vec<Cuckoo>,
    rebuild: Option<Rebuild>,
    cancel: Arc<AtomicBool>,
    retry_rebuild_at: Option<Instant>,
    /// Run files of deleted runs, still to unlink.
    doomed: Vec<PathBuf>,
    /// The thread unlinking them (never the writer: it may hold the log writer's lock).
    deleting: Option<JoinHandle<()>>,
    min_filter_keys: usize,
    pub(crate) rebuilds: u64,
    hook: Option<Hook>,
}

impl DiskLayer {
    /// Load the runs in `dir` (deleting those wholly before `horizon_ms`) and build the
    /// filter over their keys.
    pub(crate) fn open(dir: &Path, horizon_ms: u64, min_filter_keys: usize) -> io::Result<DiskLayer> {
        std::fs::create_dir_all(dir)?;
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("run") => paths.push(path),
                // A run being written when the last process stopped: never installed.
                Some("tmp") => std::fs::remove_file(&path)?,
                _ => {}
            }
        }
        paths.sort();
        // Headers first, to size the filter; then each run's keys into it.
        let mut live = Vec::new();
        let mut seq = 0;
        for path in paths {
            let header = read_run_header(&path)?;
            seq = u64::max(seq, seq_hint(&path) + 1);
            if header.max_ms < horizon_ms {
                std::fs::remove_file(&path)?;
            } else {
                live.push((path, header.count));
            }
        }
        let total: usize = live.iter().map(|r| r.1 as usize).sum();
        let mut size = total.max(1);
        let (runs, main) = loop {
            let mut runs = Vec::new();
            let mut main = Cuckoo::for_keys(size);
            for (path, _) in &live {
                let (header, entries) = read_run(path)?;
                let sparse = entries.iter().step_by(SPARSE_EVERY).map(|e| e.0).collect();
                entries.into_iter().for_each(|(key, _)| main.insert(key));
                runs.push(Arc::new(Run {
                    path: path.clone(),
                    count: header.count,
                    min_ms: header.min_ms,
                    max_ms: header.max_ms,
                    entry_len: header.entry_len,
                    sparse,
                }));
            }
            if main.stash_len() <= MAX_STASH {
                break (runs, main);
            }
            size += size / 4 + 1;
        };
        Ok(DiskLayer {
            dir: dir.to_owned(),
            live_keys: runs.iter().map(|r| r.count).sum(),
            runs,
            seq,
            main,
            recent: Cuckoo::resident_for_keys(min_filter_keys.max(total / 2)),
            frozen: Vec::new(),
            rebuild: None,
            cancel: Arc::new(AtomicBool::new(false)),
            retry_rebuild_at: None,
            doomed: Vec::new(),
            deleting: None,
            min_filter_keys,
            rebuilds: 0,
            hook: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn set_hook(&mut self, hook: Option<Hook>) {
        self.hook = hook;
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A sequence number for the next run file.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// Keys in run files.
    pub(crate) fn len(&self) -> u64 {
        self.live_keys
    }

    /// Bytes of memory: filters (`main`, `recent`, `frozen`) and the runs' sparse indexes.
    pub(crate) fn allocated_bytes(&self) -> (usize, usize) {
        let filters = self.main.allocated_bytes()
            + self.recent.allocated_bytes()
            + self.frozen.iter().map(Cuckoo::allocated_bytes).sum::<usize>();
        (filters, self.runs.iter().map(|r| r.allocated_bytes()).sum())
    }

    /// Whether a run holds `key` appended at or after `horizon_ms`. A run that cannot be
    /// read answers yes: a false duplicate is logged, a false "new" would store it twice.
    pub(crate) fn contains(&self, key: u128, horizon_ms: u64) -> bool {
        let in_filter =
            self.main.contains(key) || self.recent.contains(key) || self.frozen.iter().any(|f| f.contains(key));
        if !in_filter {
            return false;
        }
        self.runs.iter().rev().any(|run| match run_lookup(run, key) {
            Ok(found) => found.is_some_and(|at| at >= horizon_ms),
            Err(error) => {
                tracing::error!(file = %run.path.display(), %error, "cannot read a dedupe run; answering duplicate");
                true
            }
        })
    }

    /// Read the filter buckets a lookup of `key` starts with (see `Memory::touch`).
    pub(crate) fn touch(&self, key: u128) -> u16 {
        self.main.touch(key) ^ self.recent.touch(key)
    }

    /// A new run, durable: index it. Its keys go to the filter with [`DiskLayer::add_keys`].
    pub(crate) fn install(&mut self, run: Run) {
        self.live_keys += run.count;
        self.runs.push(Arc::new(run));
    }

    /// Add keys (of installed runs) to the filter.
    pub(crate) fn add_keys(&mut self, keys: &[u128]) {
        for key in keys {
            if self.recent.is_full() {
                self.start_rebuild();
                self.poll_rebuild();
            }
            if self.recent.is_full() {
                // Inserts outran the rebuild: freeze `recent` too and go on in a small filter
                // (an allocation of a few hundred KiB); the next rebuild folds it in.
                let overflow = Cuckoo::for_keys(self.min_filter_keys.max(self.len() as usize / 16));
                self.frozen.push(std::mem::replace(&mut self.recent, overflow));
            }
            self.recent.insert(*key);
        }
    }

    /// Delete the runs whose keys are all older than `horizon_ms` (their files are unlinked
    /// by a thread [`DiskLayer::poll`] starts).
    pub(crate) fn expire(&mut self, horizon_ms: u64) {
        if self.runs.first().is_none_or(|r| r.max_ms >= horizon_ms) {
            return;
        }
        let (doomed, live_keys) = (&mut self.doomed, &mut self.live_keys);
        self.runs.retain(|run| {
            let keep = run.max_ms >= horizon_ms;
            if !keep {
                doomed.push(run.path.clone());
                *live_keys -= run.count;
            }
            keep
        });
    }

    /// Background work: pick up a rebuild's progress, start one when due, have a
    /// background thread unlink deleted runs' files. Never blocks.
    pub(crate) fn poll(&mut self) {
        self.poll_rebuild();
        if self.rebuild.is_none() && self.retry_rebuild_at.is_none_or(|at| Instant::now() >= at) {
            let live = self.len() as usize;
            let stored = self.main.len() + self.recent.len() + self.frozen.iter().map(Cuckoo::len).sum::<usize>();
            let recent_nearly_full = self.recent.len() >= self.recent.capacity() / 10 * 9 || self.recent.is_full();
            if recent_nearly_full || stored > 2 * live + self.min_filter_keys {
                self.start_rebuild();
            }
        }
        if !self.doomed.is_empty() && self.deleting.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Some(handle) = self.deleting.take() {
                let _ = handle.join();
            }
            let doomed = std::mem::take(&mut self.doomed);
            // If no thread starts, the files stay until the next open, which deletes them.
            match crate::background::spawn("ferry-dedupe-delete", crate::background::Priority::Low, move || {
                delete_runs(&doomed)
            }) {
                Ok(handle) => self.deleting = Some(handle),
                Err(error) => tracing::warn!(%error, "cannot start deleting expired dedupe runs"),
            }
        }
    }

    fn start_rebuild(&mut self) {
        if self.rebuild.is_some() {
            return;
        }
        let (fresh_tx, fresh) = mpsc::channel();
        let (snapshot, snapshot_rx) = mpsc::channel::<Vec<Arc<Run>>>();
        let fresh_keys = self.min_filter_keys.max(self.len() as usize / 2);
        let cancel = self.cancel.clone();
        let hook = self.hook.clone();
        let spawned = crate::background::spawn("ferry-dedupe-filter", crate::background::Priority::Low, move || {
            if fresh_tx.send(Cuckoo::resident_for_keys(fresh_keys)).is_err() {
                return Ok(None);
            }
            let Ok(runs) = snapshot_rx.recv() else { return Ok(None) };
            if let Some(hook) = hook {
                (hook.0)(Job::Rebuild);
            }
            build_main(&runs, &cancel)
        });
        match spawned {
            Ok(handle) => self.rebuild = Some(Rebuild::Preparing { fresh, snapshot, handle }),
            Err(error) => {
                tracing::warn!(%error, "cannot start a dedupe filter rebuild");
                self.retry_rebuild_at = Some(Instant::now() + REBUILD_RETRY);
            }
        }
    }

    fn poll_rebuild(&mut self) {
        match self.rebuild.take() {
            None => {}
            Some(Rebuild::Preparing { fresh, snapshot, handle }) => match fresh.try_recv() {
                Ok(filter) => {
                    // From now on new keys go to the fresh filter; the thread builds `main`
                    // from every run installed so far, which covers all the frozen ones.
                    self.frozen.push(std::mem::replace(&mut self.recent, filter));
                    let _ = snapshot.send(self.runs.clone());
                    self.rebuild = Some(Rebuild::Building { handle, covers_frozen: self.frozen.len() });
                }
                Err(mpsc::TryRecvError::Empty) => self.rebuild = Some(Rebuild::Preparing { fresh, snapshot, handle }),
                Err(mpsc::TryRecvError::Disconnected) => self.rebuild_failed(handle),
            },
            Some(Rebuild::Building { handle, covers_frozen }) if handle.is_finished() => match handle.join() {
                Ok(Ok(Some(main))) => {
                    let old_main = std::mem::replace(&mut self.main, main);
                    let covered: Vec<Cuckoo> = self.frozen.drain(..covers_frozen).collect();
                    drop_in_background((old_main, covered));
                    self.rebuilds += 1;
                    self.retry_rebuild_at = None;
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot rebuild the dedupe filter; keeping the current filters");
                    self.retry_rebuild_at = Some(Instant::now() + REBUILD_RETRY);
                }
                Err(_) => {
                    tracing::error!("dedupe filter rebuild panicked; keeping the current filters");
                    self.retry_rebuild_at = Some(Instant::now() + REBUILD_RETRY);
                }
            },
            Some(building) => self.rebuild = Some(building),
        }
    }

    fn rebuild_failed(&mut self, handle: JoinHandle<RebuildResult>) {
        let _ = handle.join();
        tracing::error!("dedupe filter rebuild stopped early; keeping the current filters");
        self.retry_rebuild_at = Some(Instant::now() + REBUILD_RETRY);
    }

    /// Stop a rebuild under way, and wait for deletes (at shutdown).
    pub(crate) fn finish(&mut self) {
        if let Some(handle) = self.deleting.take() {
            let _ = handle.join();
        }
        self.cancel.store(true, Ordering::Relaxed);
        match self.rebuild.take() {
            Some(Rebuild::Preparing { handle, fresh, snapshot }) => {
                drop((fresh, snapshot));
                let _ = handle.join();
            }
            Some(Rebuild::Building { handle, .. }) => {
                let _ = handle.join();
            }
            None => {}
        }
        self.cancel.store(false, Ordering::Relaxed);
    }

    /// Wait for a rebuild under way and swap it in (tests and benchmarks).
    pub(crate) fn wait_for_rebuild(&mut self) {
        while self.rebuild.is_some() {
            self.poll_rebuild();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[cfg(test)]
    pub(crate) fn rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }
}

impl Drop for DiskLayer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Drop big allocations on another thread (unmapping tens of MB takes milliseconds).
fn drop_in_background<T: Send + 'static>(value: T) {
    // If no thread can be started the closure, and with it `value`, is dropped here.
    let _ = crate::background::spawn("ferry-dedupe-free", crate::background::Priority::Low, move || drop(value));
}

/// The next `main` filter: every key of `runs` (read from their files). Runs deleted
/// meanwhile (file gone) are left out.
fn build_main(runs: &[Arc<Run>], cancel: &AtomicBool) -> RebuildResult {
    let count: usize = runs.iter().map(|r| r.count as usize).sum();
    let mut size = count.max(1);
    loop {
        let mut filter = Cuckoo::for_keys(size);
        for run in runs {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match read_run(&run.path) {
                Ok((_, entries)) => {
                    for chunk in entries.chunks(4096) {
                        chunk.iter().for_each(|(key, _)| filter.insert(*key));
                        // Leave the core to the writer now and then.
                        std::thread::yield_now();
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            }
        }
        if filter.stash_len() <= MAX_STASH {
            return Ok(Some(filter));
        }
        size += size / 4 + 1;
    }
}

/// Unlink the files of deleted runs.
fn delete_runs(paths: &[PathBuf]) {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot delete an expired dedupe run"),
        }
    }
}

/// Write `sorted` (by key, each key once, with its append time) as run file `seq`,
/// durably; `max_ms`: every key appended before it is in this run or an older one.
pub(crate) fn write_run(dir: &Path, seq: u64, sorted: &[(u128, u64)], max_ms: u64) -> io::Result<Run> {
    let min_ms = sorted.iter().map(|e| e.1).min().unwrap_or(0);
    let path = dir.join(format!("{max_ms:020}-{seq:010}.run"));
    let mut bytes = Vec::with_capacity(RUN_HEADER_LEN as usize + sorted.len() * ENTRY_LEN_V2 + 4);
    bytes.extend_from_slice(RUN_MAGIC);
    bytes.extend_from_slice(&RUN_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&min_ms.to_le_bytes());
    bytes.extend_from_slice(&max_ms.to_le_bytes());
    for (key, at) in sorted {
        bytes.extend_from_slice(&key.to_le_bytes());
        // Times more than 49 days after the oldest key (never, with a window of at most
        // 30 days) are stored as the maximum: remembered a little too long, never too short.
        let delta = u32::try_from(at.saturating_sub(min_ms)).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&delta.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    crate::background::write_all(&mut file, &bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    let sparse = sorted.iter().step_by(SPARSE_EVERY).map(|e| e.0).collect();
    Ok(Run { path, count: sorted.len() as u64, min_ms, max_ms, entry_len: ENTRY_LEN_V2, sparse })
}

struct RunHeader {
    count: u64,
    min_ms: u64,
    max_ms: u64,
    entry_len: usize,
}

/// A run's header alone (not checked against the body: [`read_run`] does that).
fn read_run_header(path: &Path) -> io::Result<RunHeader> {
    let mut bytes = [0u8; RUN_HEADER_LEN as usize];
    File::open(path)?.read_exact(&mut bytes)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("dedupe run {}: not a dedupe run", path.display()));
    if &bytes[0..8] != RUN_MAGIC {
        return Err(bad());
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    let entry_len = match u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()) {
        1 => ENTRY_LEN_V1,
        _ => ENTRY_LEN_V2,
    };
    Ok(RunHeader { count: u64_at(16), min_ms: u64_at(24), max_ms: u64_at(32), entry_len })
}

fn seq_hint(path: &Path) -> u64 {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    stem.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A run's header and its entries (key, append time in ms); version 1 entries get the
/// time the run covers up to.
fn read_run(path: &Path) -> io::Result<(RunHeader, Vec<(u128, u64)>)> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::with_capacity(file.metadata()?.len() as usize);
    crate::background::read_to_end(&mut file, &mut bytes)?;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("dedupe run {}: {why}", path.display()));
    if bytes.len() < RUN_HEADER_LEN as usize + 4 || &bytes[0..8] != RUN_MAGIC {
        return Err(bad("not a dedupe run"));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    let entry_len = match u32_at(8) {
        1 => ENTRY_LEN_V1,
        2 => ENTRY_LEN_V2,
        _ => return Err(bad("unsupported version")),
    };
    let header = RunHeader { count: u64_at(16), min_ms: u64_at(24), max_ms: u64_at(32), entry_len };
    let body_end = bytes.len() - 4;
    let expected_end = header.count.checked_mul(entry_len as u64).and_then(|n| n.checked_add(RUN_HEADER_LEN));
    if expected_end != Some(body_end as u64) || crc32fast::hash(&bytes[..body_end]) != u32_at(body_end) {
        return Err(bad("checksum mismatch"));
    }
    let entries =
        bytes[RUN_HEADER_LEN as usize..body_end].chunks_exact(entry_len).map(|e| decode_entry(&header, e)).collect();
    Ok((header, entries))
}

fn decode_entry(header: &RunHeader, entry: &[u8]) -> (u128, u64) {
    let key = u128::from_le_bytes(entry[..16].try_into().unwrap_or_default());
    let at = match entry.get(16..20) {
        Some(delta) => header.min_ms + u64::from(u32::from_le_bytes(delta.try_into().unwrap_or_default())),
        None => header.max_ms,
    };
    (key, at)
}

/// Binary search of one run: the sparse index picks a block, one read fetches it, and the
/// search goes on in the block's bytes. The key's append time if the run holds it.
fn run_lookup(run: &Run, key: u128) -> io::Result<Option<u64>> {
    let block = run.sparse.partition_point(|k| *k <= key);
    if block == 0 {
        return Ok(None);
    }
    let first = (block - 1) * SPARSE_EVERY;
    let len = SPARSE_EVERY.min(run.count as usize - first);
    let mut bytes = vec![0u8; len * run.entry_len];
    File::open(&run.path)?.read_exact_at(&mut bytes, RUN_HEADER_LEN + (first * run.entry_len) as u64)?;
    let key_at = |i: usize| {
        let start = i * run.entry_len;
        u128::from_le_bytes(bytes[start..start + 16].try_into().unwrap_or_default())
    };
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        match key_at(mid).cmp(&key) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => {
                let header =
                    RunHeader { count: run.count, min_ms: run.min_ms, max_ms: run.max_ms, entry_len: run.entry_len };
                let start = mid * run.entry_len;
                return Ok(Some(decode_entry(&header, &bytes[start..start + run.entry_len]).1));
            }
        }
    }
    Ok(None)
}
