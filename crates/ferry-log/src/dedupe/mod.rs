//! The dedupe index: "was this key appended within the last W?", exact, bounded in memory,
//! surviving restarts, and never making the log's writer wait long for its own upkeep.
//!
//! Keys are 128-bit xxh3 hashes of the caller's key bytes (message ids): with n ids in the
//! window the chance of any false positive is about n² / 2¹²⁹ (10⁻²⁰ for a billion ids),
//! so the index is exact for practical purposes. It has two layers:
//!
//! - **Recent, in memory** (`memory`): the newest keys in append order with a hash index,
//!   at most `max_ids` keys. The index is allocated for `max_ids` keys when the log opens
//!   and never resizes; the keys live in 384 KiB segments allocated as they fill.
//! - **Older, on disk** (`disk`): once the recent layer is more than half full (or `max_ids`
//!   less 256 K keys, if that is more), its oldest keys are sorted, written to a run file
//!   `<dir>/<max ms>-<seq>.run` and fsync'd by a background thread, while the writer goes
//!   on and the keys stay findable in memory. Once the run is durable the writer installs
//!   it, adds its keys to a cuckoo filter and then drops them from memory, a slice at a
//!   time. In memory each run keeps a sparse index (one key in 256); a lookup that misses
//!   the recent layer asks the filters, and only on a filter hit (a real duplicate, or
//!   about 1 in 6,000 fresh keys) searches the runs (a binary search in the sparse index
//!   and one 5 KiB read per run). A run is deleted once all its keys are older than the
//!   window. When the filter that takes new run keys is nearly full, or most filtered keys
//!   are in deleted runs, a background thread builds a new filter from the run files and
//!   the writer swaps it in (see `disk`).
//!
//! So the writer's own work for the index per group commit is its lookups and inserts
//! plus upkeep ([`Dedupe::maintain`]) of at most 4,096 keys or 1 ms, whichever comes
//! first (but at least twice the keys inserted since, to keep up). It waits only when
//! inserts outrun the background thread (the recent layer full while a spill is still
//! being written: it waits for that spill), when one group commit holds more new keys than
//! the recent layer has room for (then it grows, an O(n) copy, and logs a warning), and in
//! [`Dedupe::spill_through`].
//!
//! Keys move to disk only after the frames that hold them are durable ([`Dedupe::insert`]
//! never spills; the log's writer calls [`Dedupe::make_room`] after its sync), so a crash
//! can never leave a run remembering a key whose record was lost.
//!
//! On open the runs are loaded (their keys re-read to rebuild the filter) and the recent
//! layer is rebuilt by the log from the key slots of frames appended at or after
//! [`Dedupe::disk_covers_until_ms`]. That makes the runs a snapshot that pins retention: the
//! log deletes a chunk only when its keys are in durable runs or out of the window, and
//! spills the keys of a chunk it wants to delete first ([`Dedupe::start_spill_through`]:
//! the log's writer thread waits for the run outside the writer's lock).
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
//! Memory, measured (`cargo bench -p ferry-log --bench dedupe_memory`): the recent layer's
//! index takes 10 bytes per id of `max_ids`, allocated and made resident at open (so that
//! the writer never takes a page fault on it), and its segments 24 bytes per id held:
//! 34.4 MB per million ids at the cap, exactly; the capacity is the cap, nothing doubles.
//! The disk layer takes 2.5–3.6 bytes of RAM per id on disk (filters and sparse index,
//! depending on where the filters are in their rebuild cycle; about 2 more at the peak of
//! a rebuild) and 20 bytes of disk.

mod disk;
mod filter;
mod memory;

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use disk::{DiskLayer, Run};
use memory::{Memory, Segment};

/// Most keys moved to disk at a time.
const SPILL_KEYS: usize = 1 << 17;
/// The largest memory cap (36 GB of RAM): larger ones are lowered to it.
pub const MAX_IDS: usize = 1 << 30;
/// Keys of upkeep per [`Dedupe::maintain`] at most, unless more were inserted since the
/// last call (then twice as many, so that upkeep keeps up with inserts).
const STEP_KEYS: usize = 4096;
/// Upkeep per [`Dedupe::maintain`] stops after about this long (once it has kept up).
const STEP_TIME: Duration = Duration::from_millis(1);
/// Keys of upkeep between looks at the clock.
const STEP_CHUNK: usize = 256;
/// How long to wait before retrying a spill that failed.
const SPILL_RETRY: Duration = Duration::from_secs(1);

/// The index's background jobs, as test hooks see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Job {
    Spill,
    Rebuild,
}

/// Called by every background job as it starts, on its thread (tests block it there); the
/// log's tests watch its own work with one too.
#[derive(Clone)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Hook<T = Job>(pub(crate) Arc<dyn Fn(T) + Send + Sync>);

impl<T> std::fmt::Debug for Hook<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Counters of the index's upkeep, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The most keys of upkeep (filter inserts, memory removals) done in one call of
    /// [`Dedupe::maintain`].
    pub max_step_keys: usize,
    /// Inserts that found the recent layer full and waited for a spill.
    pub full_waits: u64,
    /// Times the recent layer grew past its capacity.
    pub grows: u64,
    /// Runs written.
    pub spills: u64,
    /// Filters rebuilt from the run files.
    pub rebuilds: u64,
}

/// Bytes allocated by the index, by part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The recent layer's hash index (fixed at open).
    pub index: usize,
    /// The recent layer's key segments.
    pub segments: usize,
    /// The disk layer's cuckoo filters.
    pub filters: usize,
    /// The disk layer's run list and sparse indexes.
    pub runs: usize,
}

struct InFlight {
    handle: JoinHandle<SpillResult>,
    /// The spill holds the keys before this sequence number.
    end: u64,
    /// Set when its thread is done (also if it panicked).
    done: SpillDone,
}

/// A spill's end, to wait for without holding the index (nor the log writer's lock).
#[derive(Clone, Default)]
pub struct SpillDone(Arc<(Mutex<bool>, Condvar)>);

impl SpillDone {
    /// Wait until the spill's thread is done.
    pub fn wait(&self) {
        let (done, cv) = &*self.0;
        let mut done = done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*done {
            done = cv.wait(done).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn is_set(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self) {
        let (done, cv) = &*self.0;
        *done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
    }
}

/// Sets a [`SpillDone`] when dropped: at the end of the spill's thread, however it ends.
struct SetOnDrop(SpillDone);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// What [`Dedupe::start_spill_through`] found or did.
pub enum SpillThrough {
    /// The keys through that time are in durable runs (true), or cannot be moved now (false:
    /// no disk layer, a run failed, or some of them are not durable yet).
    Done(bool),
    /// A spill is being written: wait for it, then ask again.
    Wait(SpillDone),
}

/// The run written and its keys sorted, or nothing when every key had expired.
type SpillResult = io::Result<Option<(Run, Vec<u128>)>>;

struct SpillInput {
    parts: Vec<(Segment, Range<usize>)>,
    horizon_ms: u64,
    covers_ms: u64,
    dir: PathBuf,
    seq: u64,
    hook: Option<Hook>,
}

/// Keys of an installed run on their way into the filter; the keys before `end` leave
/// memory once they all are.
struct FilterTodo {
    keys: Vec<u128>,
    next: usize,
    end: u64,
}

pub struct Dedupe {
    window_ms: u64,
    max_ids: usize,
    spill_keys: usize,
    memory: Memory,
    // Sequence numbers of the recent layer, in order head <= filtered <= installed <=
    // spilled <= tail: keys before `filtered` are in installed runs and the filter (memory
    // drops them), before `installed` in installed runs, before `spilled` also in the spill
    // being written; `durable`: keys before it were durable at the last `make_room`.
    filtered: u64,
    installed: u64,
    spilled: u64,
    durable: u64,
    spill: Option<InFlight>,
    filter_todo: VecDeque<FilterTodo>,
    inserted_since_maintain: usize,
    retry_spill_at: Option<Instant>,
    evicted_early: u64,
    disk: Option<DiskLayer>,
    /// Keys appended before this time (ms) are outside the window.
    horizon_ms: u64,
    hook: Option<Hook>,
    stats: Stats,
}

impl Dedupe {
    /// A memory-only index (it forgets its oldest keys early when full). `max_ids` (at
    /// most [`MAX_IDS`]) is its memory cap, allocated now.
    pub fn new(window_ms: u64, max_ids: usize) -> Dedupe {
        let max_ids = max_ids.clamp(1, MAX_IDS);
        Dedupe {
            window_ms,
            max_ids,
            spill_keys: (max_ids / 4).clamp(1, SPILL_KEYS),
            memory: Memory::with_capacity(max_ids),
            filtered: 0,
            installed: 0,
            spilled: 0,
            durable: 0,
            spill: None,
            filter_todo: VecDeque::new(),
            inserted_since_maintain: 0,
            retry_spill_at: None,
            evicted_early: 0,
            disk: None,
            horizon_ms: 0,
            hook: None,
            stats: Stats::default(),
        }
    }

    /// An index that moves its older keys to run files in `dir`, loading the runs there.
    pub fn open(dir: &Path, window_ms: u64, max_ids: usize, now_ms: u64) -> io::Result<Dedupe> {
        Dedupe::open_with(dir, window_ms, max_ids, now_ms, disk::MIN_FILTER_KEYS)
    }

    fn open_with(dir: &Path, window_ms: u64, max_ids: usize, now_ms: u64, min_filter: usize) -> io::Result<Dedupe> {
        let mut dedupe = Dedupe::new(window_ms, max_ids);
        dedupe.horizon_ms = now_ms.saturating_sub(window_ms);
        dedupe.disk = Some(DiskLayer::open(dir, dedupe.horizon_ms, min_filter)?);
        Ok(dedupe)
    }

    #[cfg(test)]
    pub(crate) fn set_hook(&mut self, hook: Option<Hook>) {
        if let Some(disk) = &mut self.disk {
            disk.set_hook(hook.clone());
        }
        self.hook = hook;
    }

    /// Every key appended before this time (ms) is in a run file: the log rebuilds the
    /// recent layer from frames appended at or after it.
    pub fn disk_covers_until_ms(&self) -> Option<u64> {
        self.disk.as_ref().and_then(|d| d.runs.iter().map(|r| r.max_ms).max())
    }

    /// The append time of the oldest key held only in memory (not yet in a durable run).
    pub fn oldest_in_memory_ms(&self) -> Option<u64> {
        (self.installed < self.memory.tail()).then(|| self.memory.entry(self.installed).at)
    }

    /// Whether `key` was inserted within the window.
    pub fn contains(&self, key: u128) -> bool {
        if let Some(seq) = self.memory.find(key)
            && self.memory.entry(seq).at >= self.horizon_ms
        {
            return true;
        }
        self.disk.as_ref().is_some_and(|d| d.contains(key, self.horizon_ms))
    }

    /// Bring what looking up `keys` reads into the cache, all keys at once: the memory index
    /// and the filters are larger than the cache, so each lookup would wait for a miss,
    /// and one loop of independent reads lets the processor wait for many together.
    pub fn prefetch(&self, keys: impl Iterator<Item = u128>) {
        let mut read = 0u64;
        for key in keys {
            read ^= self.memory.touch(key) ^ self.disk.as_ref().map_or(0, |d| u64::from(d.touch(key)));
        }
        std::hint::black_box(read);
    }

    /// Remember `key` as appended at `now_ms`. Returns false if it was already there.
    pub fn insert(&mut self, key: u128, now_ms: u64) -> bool {
        if !self.forget_if_expired(key) || self.disk.as_ref().is_some_and(|d| d.contains(key, self.horizon_ms)) {
            return false;
        }
        self.push(key, now_ms);
        true
    }

    /// False if the recent layer holds `key` inside the window; if it holds it from before
    /// the window, make that entry unfindable (so a key is indexed at most once).
    fn forget_if_expired(&mut self, key: u128) -> bool {
        let Some(seq) = self.memory.find(key) else { return true };
        if self.memory.entry(seq).at >= self.horizon_ms {
            return false;
        }
        self.memory.unindex(key, seq);
        true
    }

    fn push(&mut self, key: u128, at: u64) {
        if self.memory.is_full() {
            self.make_space();
        }
        self.memory.push(key, at);
        self.inserted_since_maintain += 1;
    }

    /// Whether [`Dedupe::make_room`] has work: a spill to start (call it once the inserted
    /// keys' records are durable).
    pub fn over_cap(&self) -> bool {
        if self.disk.is_none() {
            return self.memory.len() > self.max_ids;
        }
        self.spill.is_none()
            && self.filter_todo.is_empty()
            && self.memory.head() == self.installed
            && self.pending() > self.max_ids.saturating_sub(2 * self.spill_keys)
            && self.retry_spill_at.is_none_or(|at| Instant::now() >= at)
    }

    /// [`Dedupe::over_cap`], and so near full that room cannot wait for a periodic sync:
    /// the keys not yet spilled fill all but one spill of the recent layer (or it has no
    /// disk layer, so room costs no sync).
    pub fn over_cap_urgently(&self) -> bool {
        self.over_cap() && (self.disk.is_none() || self.pending() > self.max_ids.saturating_sub(self.spill_keys))
    }

    /// Keys in memory not yet in a run or a spill.
    fn pending(&self) -> usize {
        (self.memory.tail() - self.spilled) as usize
    }

    /// Insert while rebuilding from the log (whose records are durable). Keys already in a
    /// run (frames appended in the same millisecond as a run's end are replayed) are
    /// skipped, so no key is ever in two runs.
    pub fn restore(&mut self, key: u128, appended_ms: u64) {
        if !self.forget_if_expired(key) || self.disk.as_ref().is_some_and(|d| d.contains(key, self.horizon_ms)) {
            return;
        }
        self.push(key, appended_ms);
        self.durable = self.memory.tail();
        if self.inserted_since_maintain >= STEP_KEYS / 2 {
            self.maintain();
        }
        if self.over_cap() {
            self.make_room();
        }
    }

    /// Start moving the oldest keys to a run file (in the background), or, memory-only,
    /// forget them, until the recent layer is back under its cap. Every key inserted so far
    /// must be durable.
    pub fn make_room(&mut self) {
        self.make_room_through(self.memory.tail());
    }

    /// Where the next inserted key goes in insert order: every key inserted so far is
    /// before it. For [`Dedupe::make_room_through`].
    pub fn inserted(&self) -> u64 {
        self.memory.tail()
    }

    /// [`Dedupe::make_room`] when only the keys inserted before `through` (an earlier
    /// [`Dedupe::inserted`]) are durable: later ones stay in memory.
    pub fn make_room_through(&mut self, through: u64) {
        self.durable = self.durable.max(through.min(self.memory.tail()));
        if self.disk.is_none() {
            while self.memory.len() > self.max_ids {
                self.evict_front();
            }
            return;
        }
        if self.over_cap() {
            let target = self.max_ids.saturating_sub(3 * self.spill_keys);
            let end = self.spilled + self.pending().saturating_sub(target).max(1) as u64;
            let end = end.min(self.durable);
            if end > self.spilled {
                self.start_spill(end);
            }
        }
    }

    /// Upkeep, called by the writer after every group commit: pick up a finished spill or
    /// filter rebuild, and add a bounded slice of run keys to the filter and drop as many
    /// from memory. Never waits.
    pub fn maintain(&mut self) {
        let start = Instant::now();
        let inserted = std::mem::take(&mut self.inserted_since_maintain);
        if self.spill.as_ref().is_some_and(|s| s.handle.is_finished())
            && let Some(spill) = self.spill.take()
        {
            self.finish_spill(spill);
        }
        if let Some(disk) = &mut self.disk {
            disk.poll();
        }
        // At most `STEP_KEYS` keys or `STEP_TIME`, whichever comes first, but at least
        // twice the keys inserted since the last call.
        let (must, budget) = (2 * inserted, STEP_KEYS.max(2 * inserted));
        let mut done = 0;
        while done < budget {
            let did = self.upkeep(STEP_CHUNK.min(budget - done));
            done += did;
            if did == 0 || (done >= must && start.elapsed() >= STEP_TIME) {
                break;
            }
        }
        self.stats.max_step_keys = self.stats.max_step_keys.max(done);
    }

    /// Move every key appended at or before `ms` to a run file, so that the chunks holding
    /// them may be deleted; waits for the run. Only for keys whose records are durable.
    /// Returns false if there is no disk layer or the run could not be written.
    pub fn spill_through(&mut self, ms: u64) -> bool {
        loop {
            match self.start_spill_through(ms, u64::MAX) {
                SpillThrough::Done(moved) => return moved,
                SpillThrough::Wait(done) => done.wait(),
            }
        }
    }

    /// [`Dedupe::spill_through`] a step at a time, for a caller that waits for the run
    /// without holding the index: start moving the keys appended at or before `ms` (only if
    /// they were all inserted before `durable_through`, an earlier [`Dedupe::inserted`]
    /// whose keys' records are durable), or say that it is done.
    pub fn start_spill_through(&mut self, ms: u64, durable_through: u64) -> SpillThrough {
        if self.disk.is_none() {
            return SpillThrough::Done(false);
        }
        if let Some(spill) = &self.spill {
            if !spill.done.is_set() && !spill.handle.is_finished() {
                return SpillThrough::Wait(spill.done.clone());
            }
            if let Some(spill) = self.spill.take()
                && !self.finish_spill(spill)
            {
                return SpillThrough::Done(false);
            }
        }
        // Keys are in append order, so the run covers everything before `ms + 1`.
        let (mut low, mut high) = (self.spilled, self.memory.tail());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.memory.entry(mid).at <= ms { low = mid + 1 } else { high = mid }
        }
        if low == self.spilled {
            return SpillThrough::Done(self.installed == self.spilled);
        }
        if low > durable_through {
            return SpillThrough::Done(false);
        }
        self.durable = self.durable.max(low);
        self.start_spill(low);
        match &self.spill {
            Some(spill) => SpillThrough::Wait(spill.done.clone()),
            // Written in this thread (no thread could be started).
            None => SpillThrough::Done(self.installed == self.spilled),
        }
    }

    /// Undo the last `n` inserts (their records could not be written).
    pub fn rollback(&mut self, n: usize) {
        for _ in 0..n {
            if self.memory.tail() == self.durable.max(self.spilled) {
                break;
            }
            self.memory.pop_back();
        }
    }

    /// Forget keys older than the window (in memory lazily: they no longer count, and
    /// leave a slice at a time in [`Dedupe::maintain`]).
    pub fn expire(&mut self, now_ms: u64) {
        self.horizon_ms = now_ms.saturating_sub(self.window_ms).max(self.horizon_ms);
        if let Some(disk) = &mut self.disk {
            disk.expire(self.horizon_ms);
        }
    }

    /// Keys in the recent (memory) layer that are not in a run yet.
    pub fn len(&self) -> usize {
        (self.memory.tail() - self.installed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys in run files.
    pub fn disk_len(&self) -> u64 {
        self.disk.as_ref().map_or(0, DiskLayer::len)
    }

    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    pub fn stats(&self) -> Stats {
        Stats { rebuilds: self.disk.as_ref().map_or(0, |d| d.rebuilds), ..self.stats }
    }

    pub fn allocated_bytes(&self) -> MemoryUse {
        let (index, segments) = self.memory.allocated_bytes();
        let (filters, runs) = self.disk.as_ref().map_or((0, 0), DiskLayer::allocated_bytes);
        MemoryUse { index, segments, filters, runs }
    }

    /// Wait for the background threads (before the log's directory lock is released).
    pub fn finish(&mut self) {
        if let Some(spill) = self.spill.take() {
            self.finish_spill(spill);
        }
        if let Some(disk) = &mut self.disk {
            disk.finish();
        }
    }

    /// Wait for a spill being written and a filter rebuild under way, and do all upkeep
    /// (tests and benchmarks).
    pub fn settle(&mut self) {
        if let Some(spill) = self.spill.take() {
            self.finish_spill(spill);
        }
        self.upkeep(usize::MAX);
        if let Some(disk) = &mut self.disk {
            disk.wait_for_rebuild();
        }
    }

    /// Wait for the spill being written and install it, without upkeep (tests: a disk
    /// faster than the inserts).
    #[cfg(test)]
    pub(crate) fn wait_for_spill(&mut self) {
        if let Some(spill) = self.spill.take() {
            self.finish_spill(spill);
        }
    }

    /// The recent layer is full: make room now (never forgetting a key inside the window
    /// with a disk layer).
    fn make_space(&mut self) {
        self.stats.full_waits += 1;
        if let Some(spill) = self.spill.take() {
            self.finish_spill(spill);
        }
        self.upkeep(usize::MAX);
        if self.memory.is_full() && self.disk.is_none() {
            while self.memory.is_full() && self.memory.head() < self.durable {
                self.evict_front();
            }
        }
        if self.memory.is_full() && self.disk.is_some() && self.spilled < self.durable {
            let end = self.durable;
            self.spill_now(end);
            self.upkeep(usize::MAX);
        }
        if self.memory.is_full() {
            let capacity = self.memory.capacity() * 2;
            tracing::warn!(
                capacity,
                max_ids = self.max_ids,
                "dedupe memory layer grows past its cap: one group commit holds more new keys than it has room for"
            );
            self.memory.grow(capacity);
            self.stats.grows += 1;
        }
    }

    /// Memory-only: forget the oldest key.
    fn evict_front(&mut self) {
        if let Some(entry) = self.memory.pop_front() {
            self.evicted_early += u64::from(entry.at >= self.horizon_ms);
        }
        self.advance_bounds_to_head();
    }

    fn advance_bounds_to_head(&mut self) {
        let head = self.memory.head();
        self.filtered = self.filtered.max(head);
        self.installed = self.installed.max(head);
        self.spilled = self.spilled.max(head);
        self.durable = self.durable.max(head);
    }

    /// Add run keys to the filter, then drop keys that are in runs and the filter from
    /// memory, then drop expired keys from the front: at most `budget` keys in all.
    fn upkeep(&mut self, budget: usize) -> usize {
        let mut done = 0;
        while let (Some(todo), Some(disk)) = (self.filter_todo.front_mut(), &mut self.disk) {
            let end = todo.keys.len().min(todo.next.saturating_add(budget - done));
            disk.add_keys(&todo.keys[todo.next..end]);
            done += end - todo.next;
            todo.next = end;
            if todo.next < todo.keys.len() {
                return done;
            }
            self.filtered = todo.end;
            self.filter_todo.pop_front();
        }
        while done < budget && self.memory.head() < self.filtered {
            self.memory.pop_front();
            done += 1;
        }
        while done < budget
            && self.memory.head() == self.spilled
            && self.memory.head() < self.memory.tail()
            && self.memory.entry(self.memory.head()).at < self.horizon_ms
        {
            self.memory.pop_front();
            self.advance_bounds_to_head();
            done += 1;
        }
        done
    }

    fn spill_input(&mut self, end: u64) -> Option<SpillInput> {
        let disk = self.disk.as_mut()?;
        let covers_ms = match end < self.memory.tail() {
            // Every key appended before the next one's time is in this run or an older one.
            true => self.memory.entry(end).at,
            false => self.memory.entry(end - 1).at,
        };
        Some(SpillInput {
            parts: self.memory.share(self.spilled, end),
            horizon_ms: self.horizon_ms,
            covers_ms,
            dir: disk.dir().to_owned(),
            seq: disk.next_seq(),
            hook: self.hook.clone(),
        })
    }

    /// Write the keys `spilled..end` to a run in a background thread.
    fn start_spill(&mut self, end: u64) {
        let Some(input) = self.spill_input(end) else { return };
        self.spilled = end;
        let (tx, rx) = std::sync::mpsc::channel();
        let done = SpillDone::default();
        let set_on_drop = SetOnDrop(done.clone());
        let spawned = crate::background::spawn("ferry-dedupe-spill", crate::background::Priority::Low, move || {
            let _set_on_drop = set_on_drop;
            let input = rx.recv().map_err(|_| io::Error::other("spill input lost"))?;
            write_spill(input)
        });
        match spawned {
            Ok(handle) => {
                let _ = tx.send(input);
                self.spill = Some(InFlight { handle, end, done });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a dedupe spill thread; spilling in the writer");
                let result = write_spill(input);
                self.install(end, result);
            }
        }
    }

    /// Write the keys `spilled..end` to a run now; false if it failed.
    fn spill_now(&mut self, end: u64) -> bool {
        let Some(input) = self.spill_input(end) else { return false };
        self.spilled = end;
        let result = write_spill(input);
        let ok = result.is_ok();
        self.install(end, result);
        ok
    }

    /// Wait for a spill's thread and install its run; false if it failed.
    fn finish_spill(&mut self, spill: InFlight) -> bool {
        let result = spill.handle.join().unwrap_or_else(|_| Err(io::Error::other("dedupe spill thread panicked")));
        let written = result.is_ok();
        self.install(spill.end, result);
        written
    }

    fn install(&mut self, end: u64, result: SpillResult) {
        match result {
            Ok(written) => {
                let keys = match (written, &mut self.disk) {
                    (Some((run, keys)), Some(disk)) => {
                        disk.install(run);
                        self.stats.spills += 1;
                        keys
                    }
                    _ => Vec::new(),
                };
                self.installed = end;
                self.filter_todo.push_back(FilterTodo { keys, next: 0, end });
                self.retry_spill_at = None;
            }
            Err(error) => {
                // The keys stay in memory, findable; retry later, and let memory grow past
                // the cap rather than forget them.
                tracing::error!(%error, "cannot write a dedupe run; keeping its keys in memory");
                self.spilled = self.installed;
                self.retry_spill_at = Some(Instant::now() + SPILL_RETRY);
            }
        }
    }
}

impl Drop for Dedupe {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sort a spill's keys (those still inside the window) and write them as a durable run.
fn write_spill(input: SpillInput) -> SpillResult {
    if let Some(hook) = &input.hook {
        (hook.0)(Job::Spill);
    }
    let mut sorted: Vec<(u128, u64)> = input
        .parts
        .iter()
        .flat_map(|(segment, range)| segment[range.clone()].iter())
        .filter(|e| e.at >= input.horizon_ms)
        .map(|e| (e.key(), e.at))
        .collect();
    drop(input.parts);
    if sorted.is_empty() {
        return Ok(None);
    }
    // Leave the core to the writer now and then (on a small machine they share it).
    std::thread::yield_now();
    // By key, the newest time first, so that `dedup` keeps the newest.
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    sorted.dedup_by_key(|e| e.0);
    std::thread::yield_now();
    let run = disk::write_run(&input.dir, input.seq, &sorted, input.covers_ms)?;
    Ok(Some((run, sorted.into_iter().map(|e| e.0).collect())))
}

#[cfg(test)]
pub(crate) mod tests {
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
        let mut entries: Vec<(u128, u64)> = (0..5u64).map(|i| (key(i), base + i)).collect();
        entries.sort();
        let run = disk::write_run(dir.path(), 0, &entries, base + 5).unwrap();
        let written = std::fs::read(&run.path).unwrap();
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
    fn filters_are_rebuilt_as_the_disk_layer_grows_and_forget_deleted_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open_with(dir.path(), 100_000, 2_000, 0, 1024).unwrap();
        // Many times more keys than the first filter was sized for.
        for i in 0..100_000u64 {
            d.restore(key(i), i);
        }
        assert_eq!(d.stats().grows, 0);
        d.settle();
        d.disk.as_mut().unwrap().wait_for_rebuild();
        assert!(d.stats().rebuilds >= 3, "{:?}", d.stats());
        assert!((0..100_000u64).step_by(61).all(|i| d.contains(key(i))), "a key was forgotten");
        assert!((100_000..200_000u64).all(|i| !d.contains(key(i))), "a fresh key was found");
        // Once most runs are deleted, a rebuild shrinks the filters.
        let before = d.allocated_bytes().filters;
        d.expire(190_000);
        for i in 100_000..100_100u64 {
            d.insert(key(i), 190_000);
        }
        for _ in 0..1000 {
            d.maintain();
            d.disk.as_mut().unwrap().wait_for_rebuild();
            if d.allocated_bytes().filters < before / 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(d.allocated_bytes().filters < before / 2, "{} >= {before} / 2", d.allocated_bytes().filters);
        assert!(!d.contains(key(5)) && d.contains(key(99_999)) && d.contains(key(100_050)));
    }

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, mpsc};
    use std::time::Duration;

    /// Holds every job of one kind (a [`Job`], or a piece of the log's work) at its start
    /// until released.
    pub(crate) struct Gate {
        pub(crate) started: mpsc::Receiver<()>,
        /// Dropping it releases every job, held or to come.
        pub(crate) release: mpsc::Sender<()>,
        /// A held job waited a minute without being released (a hang guard, never expected).
        pub(crate) timed_out: Arc<AtomicBool>,
    }

    pub(crate) fn gate<T: PartialEq + Send + Sync + 'static>(kind: T) -> (Hook<T>, Gate) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = timed_out.clone();
        let hook = Hook(Arc::new(move |job| {
            if job != kind {
                return;
            }
            let _ = started_tx.lock().unwrap().send(());
            let released = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
            if matches!(released, Err(mpsc::RecvTimeoutError::Timeout)) {
                flag.store(true, Ordering::SeqCst);
            }
        }));
        (hook, Gate { started, release, timed_out })
    }

    /// One group commit as the log's writer does it: inserts, upkeep, maybe a spill.
    fn commit(d: &mut Dedupe, keys: std::ops::Range<u64>) {
        for i in keys {
            assert!(d.insert(key(i), i), "fresh key {i} reported as a duplicate");
        }
        d.maintain();
        if d.over_cap() {
            d.make_room();
        }
    }

    /// The writer never waits for a spill: while one is held in its thread, inserts and
    /// upkeep go on, and every key, those being written included, is still found. (Were the
    /// spill written by the caller, as it once was, `commit` would block in the held job.)
    #[test]
    fn a_spill_being_written_blocks_no_insert_and_hides_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open(dir.path(), u64::MAX, 1000, 0).unwrap();
        let (hook, gate) = gate(Job::Spill);
        d.set_hook(Some(hook));
        let mut next = 0;
        while d.spill.is_none() {
            commit(&mut d, next..next + 10);
            next += 10;
            assert!(next <= 1000, "no spill started in the background");
        }
        gate.started.recv_timeout(Duration::from_secs(60)).expect("the spill's thread started");
        // Room is left for this many more while a spill is written.
        for _ in 0..20 {
            commit(&mut d, next..next + 10);
            next += 10;
        }
        assert!(d.spill.is_some() && d.disk_len() == 0, "the spill is still held");
        assert_eq!(d.stats().full_waits, 0);
        assert!((0..next).all(|i| d.contains(key(i))), "a key being spilled was hidden");
        assert!((next..next + 10_000).all(|i| !d.contains(key(i))));
        drop(gate.release);
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.disk_len() == 0 {
            assert!(Instant::now() < deadline, "the released spill never finished");
            d.maintain();
            std::thread::sleep(Duration::from_millis(1));
        }
        d.settle();
        assert!(d.len() < next as usize);
        assert!((0..next).all(|i| d.contains(key(i))) && (next..next + 10_000).all(|i| !d.contains(key(i))));
        assert!(!gate.timed_out.load(Ordering::SeqCst));
    }

    /// Nor for a filter rebuild: new runs go to the fresh filter meanwhile, exactly.
    #[test]
    fn the_filter_is_rebuilt_in_the_background_while_inserts_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open_with(dir.path(), u64::MAX, 1000, 0, 4096).unwrap();
        let (hook, gate) = gate(Job::Rebuild);
        d.set_hook(Some(hook));
        let mut next = 0;
        while gate.started.try_recv().is_err() {
            commit(&mut d, next..next + 50);
            d.wait_for_spill();
            next += 50;
            assert!(next < 100_000, "no rebuild started");
        }
        // The fresh filter (4,096 keys) takes the runs written meanwhile.
        let held_from = next;
        while next < held_from + 3000 {
            commit(&mut d, next..next + 50);
            d.wait_for_spill();
            next += 50;
        }
        assert!(d.disk.as_ref().unwrap().rebuilding() && d.stats().rebuilds == 0, "the rebuild is still held");
        assert!(d.disk_len() > held_from + 1000, "runs were installed during the rebuild");
        assert_eq!((d.stats().full_waits, d.stats().grows), (0, 0));
        assert!((0..next).all(|i| d.contains(key(i))) && (next..next + 10_000).all(|i| !d.contains(key(i))));
        drop(gate.release);
        d.disk.as_mut().unwrap().wait_for_rebuild();
        assert_eq!(d.stats().rebuilds, 1);
        assert!((0..next).all(|i| d.contains(key(i))) && (next..next + 10_000).all(|i| !d.contains(key(i))));
        assert!(!gate.timed_out.load(Ordering::SeqCst));
    }

    /// The writer's upkeep per group commit is a bounded slice, and the memory layer keeps
    /// the capacity it got at open (no resize), while the index grows to many times its
    /// memory cap with spills and filter rebuilds all along.
    #[test]
    fn upkeep_per_commit_is_bounded_and_memory_never_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dedupe::open_with(dir.path(), u64::MAX, 10_000, 0, 4096).unwrap();
        let index_bytes = d.allocated_bytes().index;
        let mut next = 0;
        while next < 200_000 {
            commit(&mut d, next..next + 100);
            next += 100;
            // Background threads faster than the inserts, as a disk is next to group commits.
            d.wait_for_spill();
            assert!(d.memory.len() <= 10_000);
        }
        let stats = d.stats();
        assert!(stats.max_step_keys <= STEP_KEYS, "{stats:?}");
        assert_eq!((stats.full_waits, stats.grows), (0, 0), "{stats:?}");
        assert!(stats.spills > 50 && stats.rebuilds >= 2, "{stats:?}");
        assert_eq!((d.memory.capacity(), d.allocated_bytes().index), (10_000, index_bytes));
        assert!((0..next).step_by(61).all(|i| d.contains(key(i))));
        assert!((next..next + 100_000).all(|i| !d.contains(key(i))));
    }
}
