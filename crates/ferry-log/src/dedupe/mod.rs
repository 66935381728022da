//! The dedupe index: "was this key appended within the last W?", exact, bounded in memory,
//! surviving restarts.
//!
//! Keys are 128-bit xxh3 hashes of the caller's key bytes (message ids): with n ids in the
//! window the chance of any false positive is about n² / 2¹²⁹ (10⁻²⁰ for a billion ids),
//! so the index is exact for practical purposes. It has two layers:
//!
//! - **Recent, in memory**: a hash set of the newest keys plus a queue in append order,
//!   about 46 bytes per key, at most `max_ids` keys (20 M by default: about 0.9 GB).
//! - **Older, on disk**: when the recent layer is full, its oldest keys (up to 1 M at a
//!   time) are sorted and written to a run file `<dir>/<max ms>-<seq>.run`, fsync'd, and
//!   dropped from memory. In memory each run keeps only a sparse index (one key in 4,096),
//!   and one cuckoo filter with 16-bit fingerprints covers every run key: about 2–4 bytes
//!   of RAM per key on disk (16 bytes on disk). A lookup that misses the recent layer asks
//!   the filter; only on a filter hit (a real duplicate, or about 1 in 5,000 fresh keys)
//!   are the runs searched (a binary search in the sparse index and one read of a block).
//!   A run is deleted, and its keys removed from the filter, once all its keys are older
//!   than the window.
//!
//! Keys move to disk only after the frames that hold them are durable ([`Dedupe::insert`]
//! never spills; the log's writer calls [`Dedupe::make_room`] after its sync), so a crash
//! can never leave a run remembering a key whose record was lost.
//!
//! On open the runs are loaded (their keys re-read to rebuild the filter) and the recent
//! layer is rebuilt by the log from the key slots of frames appended at or after
//! [`Dedupe::disk_covers_until_ms`]. That makes the runs a snapshot that pins retention: the
//! log deletes a chunk only when its keys are in runs or out of the window, and spills the
//! keys of a chunk it wants to delete first ([`Dedupe::spill_through`]).
//! Without a directory (tests, benchmarks) the index is memory-only and, when full, forgets
//! its oldest keys early, counting them in [`Dedupe::evicted_early`].
//!
//! Run file, version 2: magic `FRYDEDUP`, version (u32 LE), 4 reserved bytes, key count
//! (u64), the oldest key's append time in ms and the time the run covers up to (u64 each:
//! every key appended before it is in this run or an older one), then one 20-byte entry
//! per key sorted by key: the key (16 bytes LE) and its append time as ms after the oldest
//! key's (u32 LE), then a CRC-32 of everything before it (u32 LE). A key found in a run
//! counts only while its own append time is inside the window, so the window is exact on
//! disk too; a run is deleted once the time it covers up to is older than the window.
//! Version 1 (still read) had 16-byte entries without times: its keys count until the run
//! is deleted, up to the span of one run longer than the window.
//!
//! Memory: the recent layer costs about 46 MB per million keys; the disk layer about
//! 2–4 MB of RAM (filter and sparse index) and 16 MB of disk per million keys.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const RUN_MAGIC: &[u8; 8] = b"FRYDEDUP";
const RUN_VERSION: u32 = 2;
const RUN_HEADER_LEN: u64 = 40;
/// Bytes per key in a run: version 1 (key only) and version 2 (key and time).
const ENTRY_LEN_V1: usize = 16;
const ENTRY_LEN_V2: usize = 20;
/// Keys moved to disk at a time: sorting and writing them stalls the writer ~0.1 s.
const SPILL_KEYS: usize = 1 << 17;
/// One key in this many is kept in memory per run.
const SPARSE_EVERY: usize = 4096;

pub struct Dedupe {
    window_ms: u64,
    max_ids: usize,
    seen: HashSet<u128, xxhash_rust::xxh3::Xxh3Builder>,
    order: VecDeque<(u64, u128)>,
    evicted_early: u64,
    disk: Option<DiskLayer>,
    /// Keys appended before this time (ms) are outside the window.
    horizon_ms: u64,
}

impl Dedupe {
    /// A memory-only index (it forgets its oldest keys early when full).
    pub fn new(window_ms: u64, max_ids: usize) -> Dedupe {
        Dedupe {
            window_ms,
            max_ids: max_ids.max(1),
            seen: HashSet::with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
            order: VecDeque::new(),
            evicted_early: 0,
            disk: None,
            horizon_ms: 0,
        }
    }

    /// An index that moves its older keys to run files in `dir`, loading the runs there.
    pub fn open(dir: &Path, window_ms: u64, max_ids: usize, now_ms: u64) -> io::Result<Dedupe> {
        let mut dedupe = Dedupe::new(window_ms, max_ids);
        dedupe.horizon_ms = now_ms.saturating_sub(window_ms);
        dedupe.disk = Some(DiskLayer::open(dir, dedupe.horizon_ms)?);
        Ok(dedupe)
    }

    /// Every key appended before this time (ms) is in a run file: the log rebuilds the
    /// recent layer from frames appended at or after it.
    pub fn disk_covers_until_ms(&self) -> Option<u64> {
        self.disk.as_ref().and_then(|d| d.runs.iter().map(|r| r.max_ms).max())
    }

    /// The append time of the oldest key held only in memory.
    pub fn oldest_in_memory_ms(&self) -> Option<u64> {
        self.order.front().map(|e| e.0)
    }

    /// Whether `key` was inserted within the window.
    pub fn contains(&self, key: u128) -> bool {
        self.seen.contains(&key) || self.disk.as_ref().is_some_and(|d| d.contains(key, self.horizon_ms))
    }

    /// Remember `key` as appended at `now_ms`. Returns false if it was already there.
    pub fn insert(&mut self, key: u128, now_ms: u64) -> bool {
        if self.contains(key) {
            return false;
        }
        self.seen.insert(key);
        self.order.push_back((now_ms, key));
        true
    }

    /// Whether the recent layer holds more than its cap (call [`Dedupe::make_room`] once
    /// the inserted keys' records are durable).
    pub fn over_cap(&self) -> bool {
        self.order.len() > self.max_ids
    }

    /// Insert while rebuilding from the log (whose records are durable). Keys already in a
    /// run (frames appended in the same millisecond as a run's end are replayed) are
    /// skipped, so no key is ever in two runs.
    pub fn restore(&mut self, key: u128, appended_ms: u64) {
        if self.disk.as_ref().is_some_and(|d| d.contains(key, self.horizon_ms)) {
            return;
        }
        if self.seen.insert(key) {
            self.order.push_back((appended_ms, key));
            self.make_room();
        }
    }

    /// Move the oldest keys to a run file (or, memory-only, forget them) until the recent
    /// layer is back under its cap. Only for keys whose records are durable.
    pub fn make_room(&mut self) {
        if !self.over_cap() {
            return;
        }
        let n = (self.order.len() - self.max_ids).max(SPILL_KEYS.min(self.max_ids / 2).max(1));
        self.spill_front(n.min(self.order.len()));
    }

    /// Move every key appended at or before `ms` to a run file, so that the chunks holding
    /// them may be deleted. Only for keys whose records are durable. Returns false if there
    /// is no disk layer or the run could not be written.
    pub fn spill_through(&mut self, ms: u64) -> bool {
        if self.disk.is_none() {
            return false;
        }
        let n = self.order.partition_point(|(at, _)| *at <= ms);
        if n == 0 {
            return true;
        }
        // Keys are in append order, so the run covers everything before `ms + 1`.
        self.spill_front(n)
    }

    /// Spill the `n` oldest keys; false if they had to stay in memory.
    fn spill_front(&mut self, n: usize) -> bool {
        let oldest: Vec<(u64, u128)> = self.order.drain(..n).collect();
        for (_, key) in &oldest {
            self.seen.remove(key);
        }
        // Every key appended before the oldest one still in memory is now on disk.
        let covers = match self.order.front() {
            Some(&(at, _)) => at,
            None => oldest.last().map_or(0, |e| e.0.saturating_add(1)),
        };
        match &mut self.disk {
            Some(disk) => {
                if let Err(error) = disk.spill(&oldest, covers) {
                    // The keys stay findable: put them back, and let memory grow past the cap
                    // rather than forget them.
                    tracing::error!(%error, "cannot write a dedupe run; keeping its keys in memory");
                    for (at, key) in oldest.into_iter().rev() {
                        self.seen.insert(key);
                        self.order.push_front((at, key));
                    }
                    return false;
                }
                true
            }
            None => {
                self.evicted_early += oldest.len() as u64;
                true
            }
        }
    }

    /// Undo the last `n` inserts (their records could not be written).
    pub fn rollback(&mut self, n: usize) {
        for _ in 0..n {
            if let Some((_, key)) = self.order.pop_back() {
                self.seen.remove(&key);
            }
        }
    }

    /// Forget keys older than the window.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.window_ms).max(self.horizon_ms);
        self.horizon_ms = horizon;
        while let Some(&(at, key)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        if let Some(disk) = &mut self.disk
            && let Err(error) = disk.expire(horizon)
        {
            tracing::warn!(%error, "cannot delete an expired dedupe run");
        }
    }

    /// Keys in the recent (memory) layer.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Keys in run files.
    pub fn disk_len(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.runs.iter().map(|r| r.count).sum())
    }

    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

struct Run {
    path: PathBuf,
    count: u64,
    min_ms: u64,
    max_ms: u64,
    /// Bytes per entry: 16 (version 1) or 20 (version 2, with the key's time).
    entry_len: usize,
    /// Every `SPARSE_EVERY`th key, for finding the block to read.
    sparse: Vec<u128>,
}

struct DiskLayer {
    dir: PathBuf,
    runs: Vec<Run>,
    filter: Cuckoo,
    seq: u64,
}

impl DiskLayer {
    fn open(dir: &Path, horizon_ms: u64) -> io::Result<DiskLayer> {
        std::fs::create_dir_all(dir)?;
        let mut layer = DiskLayer { dir: dir.to_owned(), runs: Vec::new(), filter: Cuckoo::new(1 << 16), seq: 0 };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "run"))
            .collect();
        paths.sort();
        for path in paths {
            let (header, entries) = read_run(&path)?;
            layer.seq = layer.seq.max(header.seq_hint(&path) + 1);
            if header.max_ms < horizon_ms {
                std::fs::remove_file(&path)?;
                continue;
            }
            let keys: Vec<u128> = entries.iter().map(|e| e.0).collect();
            let sparse = keys.iter().step_by(SPARSE_EVERY).copied().collect();
            layer.runs.push(Run {
                path,
                count: header.count,
                min_ms: header.min_ms,
                max_ms: header.max_ms,
                entry_len: header.entry_len,
                sparse,
            });
            layer.add_to_filter(&keys)?;
        }
        Ok(layer)
    }

    /// Add a run's keys to the filter (the run is already in `self.runs`); when the
    /// filter fills up, rebuild it twice as large from every run file.
    fn add_to_filter(&mut self, keys: &[u128]) -> io::Result<()> {
        for key in keys {
            if !self.filter.insert(*key) {
                return self.rebuild_filter();
            }
        }
        Ok(())
    }

    fn rebuild_filter(&mut self) -> io::Result<()> {
        let mut keys = Vec::new();
        for run in &self.runs {
            keys.extend(read_run(&run.path)?.1.into_iter().map(|e| e.0));
        }
        let mut buckets = self.filter.buckets.len() * 2;
        // Four slots a bucket: a table this large fails only if a key were stored many times
        // over, which the index never does; refuse rather than grow without bound.
        let limit = (keys.len() / 4 + 1).next_power_of_two() * 8 + (1 << 16);
        'grow: loop {
            if buckets > limit {
                return Err(io::Error::other("dedupe filter cannot hold the run keys"));
            }
            let mut bigger = Cuckoo::new(buckets);
            for key in &keys {
                if !bigger.insert(*key) {
                    buckets *= 2;
                    continue 'grow;
                }
            }
            self.filter = bigger;
            return Ok(());
        }
    }

    /// Whether a run holds `key` appended at or after `horizon_ms`. A run that cannot be
    /// read answers yes: a false duplicate is logged, a false "new" would store it twice.
    fn contains(&self, key: u128, horizon_ms: u64) -> bool {
        if !self.filter.contains(key) {
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

    /// Write `entries` (oldest first) as one sorted run, durably, then index it. `max_ms`:
    /// every key appended before it is in this run or an older one.
    fn spill(&mut self, entries: &[(u64, u128)], max_ms: u64) -> io::Result<()> {
        let min_ms = entries.iter().map(|e| e.0).min().unwrap_or(0);
        let mut sorted: Vec<(u128, u64)> = entries.iter().map(|&(at, key)| (key, at)).collect();
        // By key, the newest time first, so that `dedup` keeps the newest.
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        sorted.dedup_by_key(|e| e.0);
        let keys: Vec<u128> = sorted.iter().map(|e| e.0).collect();
        let path = self.dir.join(format!("{max_ms:020}-{:010}.run", self.seq));
        self.seq += 1;
        let mut bytes = Vec::with_capacity(RUN_HEADER_LEN as usize + keys.len() * ENTRY_LEN_V2 + 4);
        bytes.extend_from_slice(RUN_MAGIC);
        bytes.extend_from_slice(&RUN_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&min_ms.to_le_bytes());
        bytes.extend_from_slice(&max_ms.to_le_bytes());
        for (key, at) in &sorted {
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
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        let sparse = keys.iter().step_by(SPARSE_EVERY).copied().collect();
        self.runs.push(Run { path, count: keys.len() as u64, min_ms, max_ms, entry_len: ENTRY_LEN_V2, sparse });
        self.add_to_filter(&keys)
    }

    fn expire(&mut self, horizon_ms: u64) -> io::Result<()> {
        while let Some(i) = self.runs.iter().position(|r| r.max_ms < horizon_ms) {
            let run = self.runs.remove(i);
            let (_, entries) = read_run(&run.path)?;
            for (key, _) in entries {
                self.filter.remove(key);
            }
            std::fs::remove_file(&run.path)?;
        }
        Ok(())
    }
}

struct RunHeader {
    count: u64,
    min_ms: u64,
    max_ms: u64,
    entry_len: usize,
}

impl RunHeader {
    fn seq_hint(&self, path: &Path) -> u64 {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        stem.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

/// A run's header and its entries (key, append time in ms); version 1 entries get the
/// time the run covers up to.
fn read_run(path: &Path) -> io::Result<(RunHeader, Vec<(u128, u64)>)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
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

/// Binary search of one run: the sparse index picks a block, one read fetches it. The
/// key's append time if the run holds it.
fn run_lookup(run: &Run, key: u128) -> io::Result<Option<u64>> {
    let block = run.sparse.partition_point(|k| *k <= key);
    if block == 0 {
        return Ok(None);
    }
    let first = (block - 1) * SPARSE_EVERY;
    let len = SPARSE_EVERY.min(run.count as usize - first);
    let mut bytes = vec![0u8; len * run.entry_len];
    File::open(&run.path)?.read_exact_at(&mut bytes, RUN_HEADER_LEN + (first * run.entry_len) as u64)?;
    let header = RunHeader { count: run.count, min_ms: run.min_ms, max_ms: run.max_ms, entry_len: run.entry_len };
    let entries: Vec<(u128, u64)> = bytes.chunks_exact(run.entry_len).map(|e| decode_entry(&header, e)).collect();
    Ok(entries.binary_search_by(|e| e.0.cmp(&key)).ok().map(|i| entries[i].1))
}

/// A cuckoo filter: 4 slots of 16-bit fingerprints per bucket; supports removal.
struct Cuckoo {
    buckets: Vec<[u16; 4]>,
    victim_seed: u64,
}

impl Cuckoo {
    fn new(buckets: usize) -> Cuckoo {
        Cuckoo { buckets: vec![[0; 4]; buckets.next_power_of_two()], victim_seed: 0x9e37_79b9_7f4a_7c15 }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn fingerprint_and_index(&self, key: u128) -> (u16, usize) {
        let low = key as u64;
        let fingerprint = ((key >> 64) as u16) | 1;
        (fingerprint, (low as usize) & self.mask())
    }

    fn alt(&self, index: usize, fingerprint: u16) -> usize {
        (index ^ (u64::from(fingerprint).wrapping_mul(0x5bd1_e995_5bd1_e995) as usize)) & self.mask()
    }

    fn contains(&self, key: u128) -> bool {
        let (fp, i1) = self.fingerprint_and_index(key);
        let i2 = self.alt(i1, fp);
        self.buckets[i1].contains(&fp) || self.buckets[i2].contains(&fp)
    }

    /// False when full (the caller grows the filter).
    fn insert(&mut self, key: u128) -> bool {
        let (mut fp, i1) = self.fingerprint_and_index(key);
        let i2 = self.alt(i1, fp);
        for i in [i1, i2] {
            if let Some(slot) = self.buckets[i].iter_mut().find(|s| **s == 0) {
                *slot = fp;
                return true;
            }
        }
        let mut i = i1;
        for _ in 0..500 {
            self.victim_seed ^= self.victim_seed << 13;
            self.victim_seed ^= self.victim_seed >> 7;
            self.victim_seed ^= self.victim_seed << 17;
            let slot = (self.victim_seed % 4) as usize;
            std::mem::swap(&mut fp, &mut self.buckets[i][slot]);
            i = self.alt(i, fp);
            if let Some(empty) = self.buckets[i].iter_mut().find(|s| **s == 0) {
                *empty = fp;
                return true;
            }
        }
        // Full: one fingerprint is now homeless, so the caller rebuilds from the runs.
        false
    }

    fn remove(&mut self, key: u128) {
        let (fp, i1) = self.fingerprint_and_index(key);
        let i2 = self.alt(i1, fp);
        for i in [i1, i2] {
            if let Some(slot) = self.buckets[i].iter_mut().find(|s| **s == fp) {
                *slot = 0;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut d = Dedupe::new(1000, 100);
        assert!(d.insert(1, 0));
        assert!(!d.insert(1, 10));
        assert!(d.contains(1));
        d.expire(999);
        assert!(d.contains(1));
        d.expire(1001);
        assert!(!d.contains(1));
        assert!(d.insert(1, 1001));
    }

    #[test]
    fn rollback_forgets_the_newest_inserts() {
        let mut d = Dedupe::new(1000, 100);
        d.insert(1, 0);
        d.insert(2, 1);
        d.insert(3, 2);
        d.rollback(2);
        assert!(d.contains(1) && !d.contains(2) && !d.contains(3));
        assert!(d.insert(2, 3));
    }

    #[test]
    fn memory_only_cap_evicts_oldest_first_and_counts_it() {
        let mut d = Dedupe::new(u64::MAX, 4);
        for k in 0..6 {
            d.insert(k, k as u64);
            d.make_room();
        }
        assert!(d.len() <= 4);
        assert!(!d.contains(0));
        assert!(d.contains(5));
        assert!(d.evicted_early() >= 2);
    }

    fn key(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn keys_beyond_the_memory_cap_go_to_disk_and_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open(dir.path(), 1_000_000, 2_000, 0).unwrap();
        for i in 0..20_000u64 {
            assert!(d.insert(key(i), i), "fresh key {i} reported as a duplicate");
            d.make_room();
        }
        assert!(d.len() <= 2_000);
        assert!(d.disk_len() >= 18_000);
        assert_eq!(d.evicted_early(), 0);
        // Every key is still found: no false negatives.
        for i in 0..20_000u64 {
            assert!(d.contains(key(i)), "key {i} forgotten");
            assert!(!d.insert(key(i), 20_000), "key {i} accepted twice");
        }
        // And fresh keys are not: no false positives.
        for i in 20_000..40_000u64 {
            assert!(!d.contains(key(i)));
        }
        // Runs survive a restart.
        drop(d);
        let d = Dedupe::open(dir.path(), 1_000_000, 2_000, 20_000).unwrap();
        assert!(d.contains(key(5)));
        assert!(d.disk_covers_until_ms().unwrap() >= 16_000);
        // Expired runs are deleted and their keys forgotten.
        let mut d = d;
        d.expire(1_000_000 + 10_000);
        assert!(!d.contains(key(5)));
        assert!(d.contains(key(15_000)), "a run inside the window was deleted");
    }

    /// Version 1 run files (keys without times) are still read: every key counts until
    /// the run expires.
    #[test]
    fn golden_run_v1_is_still_read() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1/dedupe.run");
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&golden, copy.path().join("00000001795862235004-0000000000.run")).unwrap();
        let d = Dedupe::open(copy.path(), u64::MAX, 10, 1_795_862_236_000).unwrap();
        assert!((0..5).all(|i| d.contains(key(i))));
        assert!(!d.contains(key(5)));
    }

    /// The run file format, version 2, byte for byte (`UPDATE_EXPECT=1` rewrites it; do
    /// that only for a new version, keeping the old file and a test that reads it).
    #[test]
    fn golden_run_v2() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dedupe-run-v2.run");
        let base = 1_795_862_235_000;
        let dir = tempfile::tempdir().unwrap();
        let mut layer = DiskLayer::open(dir.path(), 0).unwrap();
        let entries: Vec<(u64, u128)> = (0..5u64).map(|i| (base + i, key(i))).collect();
        layer.spill(&entries, base + 5).unwrap();
        let written = std::fs::read(&layer.runs[0].path).unwrap();
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&golden, &written).unwrap();
        }
        assert_eq!(written, std::fs::read(&golden).unwrap(), "dedupe run format changed");
        // Each key counts only while its own time is inside the window.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&golden, copy.path().join("00000001795862235005-0000000000.run")).unwrap();
        let d = Dedupe::open(copy.path(), 1000, 10, base + 1003).unwrap();
        assert_eq!((0..6).map(|i| d.contains(key(i))).collect::<Vec<_>>(), [false, false, false, true, true, false]);
    }

    #[test]
    fn spill_through_moves_exactly_the_keys_up_to_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open(dir.path(), 1_000_000, 1_000_000, 0).unwrap();
        for i in 0..100u64 {
            d.insert(key(i), 10 + i / 10);
        }
        assert!(d.spill_through(14));
        assert_eq!(d.len(), 50);
        assert_eq!(d.disk_len(), 50);
        assert_eq!(d.disk_covers_until_ms(), Some(15));
        assert!((0..100).all(|i| d.contains(key(i))));
        // Nothing left at or before that time: no new run.
        assert!(d.spill_through(14));
        assert_eq!(d.disk_len(), 50);
    }

    #[test]
    fn cuckoo_filter_grows_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open(dir.path(), u64::MAX, 20_000, 0).unwrap();
        // More keys than the first filter's 262,144 slots hold.
        for i in 0..300_000u64 {
            d.restore(key(i), 1);
        }
        for i in (0..300_000u64).step_by(997) {
            assert!(d.contains(key(i)));
        }
    }
}
