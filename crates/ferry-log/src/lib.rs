//! The durable, embedded append-only log. It stores opaque records (ferry stores one
//! event's JSON per record) and knows nothing about Segment.
//!
//! # Guarantees
//!
//! - [`Log::append`] returns only when its records are durable under the [`SyncPolicy`]:
//!   with `Always` (the default) they are written and `fdatasync`'d. Appends are written
//!   in the caller's thread, under the writer's lock (no thread hop: a write to the page
//!   cache takes microseconds): the first task to append yields once to the runtime, so
//!   that the appends of the tasks ready meanwhile go into the same frame and write, then
//!   writes them all. With `Always` the writer thread then syncs and answers: one sync
//!   answers every group written before it started (group commit), and the next groups
//!   are written while it runs (pipelined: the CPU work of a frame overlaps the previous
//!   frame's sync). With `Interval` the answers go out at once, and the writer thread
//!   syncs what was written once per interval, outside that lock. After a sync it starts
//!   moving dedupe keys to disk if the index wants room (so that no append waits for a
//!   sync).
//! - Who does what. The appending task, under the writer's lock: the dedupe
//!   check-and-insert, encoding, the write of the frame, and, when a frame does not fit
//!   the chunk, the switch to the next chunk's file, made ready ahead (it writes the
//!   32-byte header, no sync). Nothing else: no fsync, rename, unlink or `set_len` runs
//!   under the writer's lock, except when inserts outrun the dedupe index's background
//!   spills until its memory layer is full (the insert then waits for a spill; see
//!   `dedupe`) and at close. The writer thread (`ferry-log-writer`), without that lock
//!   (taking it only to read or update its state): every fdatasync of appended data;
//!   finishing each roll-over (sync the old chunk and cut its preallocated space, sync the
//!   new one, rename it from its temporary name, fsync the directory) and making the next
//!   chunk's file ready; retention, with the sync and the dedupe spill it may need (it
//!   waits for the run outside the lock); writing the appends of a leader whose request
//!   was cancelled, and those the disk budget had no room for. Background threads:
//!   zero-filling the spare chunk, the dedupe index's spills, filter rebuilds and frees.
//! - A frame that goes into a chunk not yet named (the writer thread is finishing the
//!   roll-over) is answered and shown to readers only once the chunk is named, under
//!   every policy: a restart deletes an unnamed chunk file, so no answered record is in
//!   one. Under `Interval` and `Never` such an append waits for the roll-over's syncs
//!   (once per chunk, and not holding the lock). A frame that does not fit while a
//!   roll-over is still being finished goes on into the current chunk (`chunk_bytes` is a
//!   soft limit).
//! - With the dedupe index nearly full (its keys outrunning the syncs under `Interval`),
//!   an appender has the writer thread sync and move keys to disk, and waits for that
//!   (outside the lock) before it returns; under `Always` the sync that answers it does.
//! - The writer answers a group before the dedupe index's upkeep, and the log's
//!   background threads run at a low priority (`background`).
//! - Offsets increase by one per stored record and are never reused.
//! - Records may carry a dedupe key; a key seen within the dedupe window is answered
//!   [`Appended::Duplicate`] and not stored. The check-and-insert happens under the
//!   writer's lock, so it is race-free; a key is remembered only once its record is written.
//! - A failed write or sync poisons the log: every later append fails.
//! - Readers see only records the writer has finished (and, with `Always`, synced). An
//!   answer under `Always` waits for a sync even when its records are duplicates: the
//!   records they repeat may be in a frame not yet synced.
//!
//! # On-disk format, version 1
//!
//! A log directory holds chunk files `<base offset, 20 digits>.chunk`, `cursors.json`,
//! the dedupe index's run files in `dedupe/` (format in the `dedupe` module) and a `LOCK`
//! file (held with an advisory lock by the one process writing). While the log is open,
//! `next.tmp` (empty) and `next.prealloc` (zero-filled) are files made ready for the next
//! chunk; either becomes it, header written and synced, by a rename. Open deletes them.
//!
//! Chunk file: a 32-byte header — magic `FERRYLOG`, format version (u32 LE, 1), 4 reserved
//! bytes, base offset (u64 LE), creation time in ms since the Unix epoch (u64 LE) — then
//! frames, one per write of the appends gathered together. A frame is a 36-byte header —
//! magic `FRM1`, body length (u32), CRC-32 (IEEE) of everything after the CRC field up to
//! the end of the body (u32), flags (u16; bit 0: payload zstd-compressed), 2 reserved
//! bytes, first offset (u64), record count (u32), append time in ms (u64) — then the body:
//! for each record a 17-byte key slot (flag byte 1 and the 128-bit xxh3 hash of the key,
//! or 17 zero bytes), then the payload section (zstd level 1 when it is at least
//! `compress_min_bytes` and that is smaller; the flag says which): for each record its
//! length (u32 LE) and bytes. All integers are little-endian.
//!
//! `cursors.json` is `{"version": 1, "cursors": {"<name>": <next offset to read>}}`,
//! replaced atomically (write, fsync, rename, fsync the directory).
//!
//! # Recovery
//!
//! On open every chunk is read and every frame's checksum verified (about one second per
//! GB). Bytes after the last valid frame of the last chunk that hold no valid frame are a
//! torn tail (a crash mid-write): they are cut off and reported in [`OpenReport`]. A bad
//! frame followed by valid ones, or a bad frame in any chunk but the last, is corruption:
//! open fails naming the file and byte position, and `ferry log verify` / `ferry log
//! salvage` let an operator inspect it and rewrite the chunk without the bad frames.
//!
//! # Retention and budget
//!
//! A chunk other than the one being written (and other than the last named one, while the
//! next is not named yet) is deleted when every cursor has passed it, the dedupe pin has
//! passed it, and either its newest record is older than the retention or the log is over
//! its disk budget. The dedupe pin: the in-memory dedupe layer is rebuilt on open from the
//! key slots of the chunks, so a chunk whose keys are still inside the window and only in
//! memory is kept until the writer has moved those keys to a dedupe run file, which it
//! does on demand when retention wants the chunk. Retention runs in the writer thread:
//! every 10 s, when [`Log::run_retention`] asks, when a new chunk begins with less than a
//! chunk (or a quarter of the budget) left of the budget (deleting ahead, so that appends
//! seldom find it spent), and when an append finds the budget spent: the appender hands
//! its appends to the writer thread, which runs retention and writes them. Only when
//! retention can delete nothing does the append fail with [`AppendError::DiskFull`];
//! nothing is buffered in memory instead.

mod background;
mod chunk;
mod contract;
#[doc(hidden)]
pub mod dedupe;
mod format;
pub mod inspect;
pub mod telemetry;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chunk::{Chunk, FrameMeta};
use tokio::sync::{oneshot, watch};

/// How appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fdatasync before an append returns (group commit). The default.
    Always,
    /// fdatasync at most this often; an append returns once written. A crash (of the
    /// machine, not only the process) can lose the last interval.
    Interval(Duration),
    /// Never fsync: tests and benchmarks only.
    Never,
}

/// Where and how the log keeps its records.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log directory (created if missing).
    pub dir: PathBuf,
    /// When appends are fsync'd (default [`SyncPolicy::Always`]).
    pub sync: SyncPolicy,
    /// A new chunk file is started when a frame would take the current one past this size.
    /// A soft limit: while the writer thread is still naming the last new chunk, frames go
    /// on into the current one.
    pub chunk_bytes: u64,
    /// Chunks are kept this long after their newest record (less only when the log is
    /// over its disk budget), and longer while a cursor has not passed them.
    pub retention: Duration,
    /// Disk budget for chunk files; beyond it old chunks are deleted early, and when none
    /// can be, appends fail with [`AppendError::DiskFull`].
    pub max_disk_bytes: u64,
    /// How long a dedupe key is remembered (24 h by default, up to 30 days).
    pub dedupe_window: Duration,
    /// At most this many keys are held in memory (500 K by default, at most 2³⁰); older keys
    /// inside the window move to run files in `<dir>/dedupe/` in the background. The memory
    /// layer is allocated for this many at open and never resizes: its index takes 10 bytes
    /// per id of the cap, resident from open, and its keys 24 bytes per id held, so 34.4 MB
    /// per million ids at the cap, exactly. Ids in run files cost 2.5–3.6 bytes of RAM
    /// (about 2 more at the peak of a filter rebuild) and 20 bytes of disk each.
    pub dedupe_max_ids: usize,
    /// Prepare the next chunk file ahead of time, filled with zeros, in a background
    /// thread: overwriting allocated blocks needs no file-size or extent change in the
    /// journal, which roughly halves fdatasync latency. The disk budget counts stored data;
    /// preallocated space (at most two chunks) comes on top.
    pub preallocate: bool,
    /// A frame's records are zstd-compressed when they add up to at least this many bytes
    /// (16 KiB by default), else stored as they are; readers take both. zstd's fixed cost
    /// per call (building its entropy tables) is about 78,000 instructions, more than a
    /// whole single-event request spends elsewhere, while one ~1.2 KB event compresses
    /// less than 2×; from a few dozen events up a frame compresses 10-19× and the cost is
    /// shared.
    pub compress_min_bytes: usize,
    /// Milliseconds since the Unix epoch; replaceable for tests.
    pub clock: fn() -> u64,
    /// Called by the dedupe index's background jobs as they start (tests block it).
    #[cfg(test)]
    pub(crate) dedupe_hook: Option<dedupe::Hook>,
    /// Called where the log does a piece of [`Work`], in the thread doing it (tests record
    /// which thread that is, and block it).
    #[cfg(test)]
    pub(crate) work_hook: Option<dedupe::Hook<Work>>,
}

/// Pieces of work that tests watch through [`LogConfig::work_hook`].
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Writing a frame (under the writer's lock).
    WriteFrame,
    /// An fdatasync of the chunk being written, to make appends durable.
    Sync,
    /// Finishing a roll-over: syncing and cutting the old chunk, syncing, renaming and
    /// fsyncing the new one.
    FinishRollOver,
    /// Retention deleting a chunk file.
    DeleteChunk,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("ferry-data/log"),
            sync: SyncPolicy::Always,
            chunk_bytes: 128 * 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_disk_bytes: 10 * 1024 * 1024 * 1024,
            dedupe_window: Duration::from_secs(24 * 3600),
            dedupe_max_ids: 500_000,
            preallocate: true,
            compress_min_bytes: 16 * 1024,
            clock: system_clock_ms,
            #[cfg(test)]
            dedupe_hook: None,
            #[cfg(test)]
            work_hook: None,
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn system_clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub use contract::{Consumer, ReadOnly, batch_cursor_name, cursor_name};
pub use ferry_log_contract::{Appended, Record};

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("log disk budget exhausted and nothing can be deleted")]
    DiskFull { retry_after: Duration },
    #[error("log is closed")]
    Closed,
    #[error("log i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("log is poisoned by an earlier write failure: {0}")]
    Poisoned(String),
}

impl AppendError {
    /// The same error, for another caller.
    fn copy(&self) -> AppendError {
        match self {
            AppendError::DiskFull { retry_after } => AppendError::DiskFull { retry_after: *retry_after },
            AppendError::Closed => AppendError::Closed,
            AppendError::Io(error) => AppendError::Io(io::Error::new(error.kind(), error.to_string())),
            AppendError::Poisoned(reason) => AppendError::Poisoned(reason.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log i/o failed in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("log directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("corrupt log chunk {path} at byte {position}: {reason}; run `ferry log verify` and `ferry log salvage`")]
    Corrupt { path: PathBuf, position: u64, reason: String },
}

/// What opening found.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Bytes of a torn tail that were cut off.
    pub truncated_bytes: u64,
    pub chunks: usize,
    pub next_offset: u64,
    /// Dedupe keys restored from the log.
    pub dedupe_keys: usize,
}

/// A handle on an open log; clones share it. The writer stops when the last handle is
/// dropped or [`Log::close`] is called.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    writer: Arc<Mutex<Writer>>,
    /// Async appends waiting for the task that writes the next frame (not with `Always`).
    gather: Arc<Mutex<Gather>>,
}

#[derive(Default)]
struct Gather {
    pending: Vec<Pending>,
    /// Whether a task has taken on writing `pending`.
    leader: bool,
}

/// The task to write the gathered appends, until it starts to. Dropped before (its request
/// was cancelled), it hands them to the writer thread, so that nobody waits for a leader
/// that is gone and the dropping thread (a request's) does no writing.
struct Leader<'a>(Option<&'a Log>);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.0 {
            let group = log.take_gathered();
            if !group.is_empty() {
                // If the writer thread is gone, dropping the group answers it `Closed`.
                let _ = log.tx.send(Message::Write(group));
            }
        }
    }
}

struct Shared {
    dir: PathBuf,
    config: LogConfig,
    chunks: RwLock<Vec<Chunk>>,
    visible: watch::Sender<u64>,
    poisoned: Mutex<Option<String>>,
    full: AtomicBool,
    cursors: Mutex<BTreeMap<String, u64>>,
    dedupe_len: AtomicU64,
    dedupe_evicted: AtomicU64,
    metrics: Arc<LogMetrics>,
}

/// What the writer has done, for `/metrics`.
#[derive(Debug)]
pub struct LogMetrics {
    /// Frames written (one per group commit).
    pub frames: ferry_metrics::Counter,
    /// Records stored.
    pub records: ferry_metrics::Counter,
    /// Bytes of those records, before compression.
    pub payload_bytes: ferry_metrics::Counter,
    /// Bytes written to chunk files (frames, compressed).
    pub frame_bytes: ferry_metrics::Counter,
    /// Records per group commit.
    pub group_records: ferry_metrics::Histogram,
    /// How long each fdatasync took.
    pub fsync_seconds: ferry_metrics::Histogram,
}

impl Default for LogMetrics {
    fn default() -> Self {
        LogMetrics {
            frames: Default::default(),
            records: Default::default(),
            payload_bytes: Default::default(),
            frame_bytes: Default::default(),
            group_records: ferry_metrics::Histogram::sizes(),
            fsync_seconds: ferry_metrics::Histogram::latency(),
        }
    }
}

enum Message {
    /// Groups written, waiting for a sync (`Always`) or for their new chunk to be named.
    Unsynced(Unsynced),
    /// Appends for the writer thread to write: those a cancelled leader had gathered, or
    /// those the disk budget had no room for (it runs retention for them).
    Write(Vec<Pending>),
    /// Appenders left housekeeping to do ([`Wants`]). With `done`: sync and move dedupe
    /// keys to disk (the index is nearly full), then answer.
    Housekeep {
        done: Option<oneshot::Sender<()>>,
    },
    Retention {
        done: mpsc::Sender<io::Result<usize>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

const CURSORS_FILE: &str = "cursors.json";
const CURSORS_VERSION: u64 = 1;
/// A frame takes gathered requests up to this many payload bytes (more go into the next
/// frames; the writer keeps buffers for frames of this size between commits).
const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;
/// How often the writer runs retention when busy.
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// What a full disk budget tells clients.
const DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

impl Log {
    /// Open (or create) the log in `config.dir`, recovering from a crash if needed.
    pub fn open(config: LogConfig) -> Result<(Log, OpenReport), OpenError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir)),
            Err(std::fs::TryLockError::Error(source)) => return Err(OpenError::Io { path: lock_path, source }),
        }

        // A spare chunk being prepared, or a new chunk not yet renamed into place, when
        // the last process stopped: no append written there was answered (answers wait
        // until the writer thread has named the chunk).
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e == "prealloc" || e == "tmp") {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        let mut report = OpenReport::default();
        let mut chunks = Vec::new();
        let paths = chunk::list_chunks(&dir).map_err(io_err(&dir))?;
        for (i, path) in paths.iter().enumerate() {
            let is_last = i + 1 == paths.len();
            let scan = chunk::scan(path).map_err(io_err(path))?;
            if let Some((position, reason)) = scan.corrupt {
                return Err(OpenError::Corrupt { path: path.clone(), position, reason: reason.to_string() });
            }
            if scan.torn_bytes > 0 && !is_last {
                return Err(OpenError::Corrupt {
                    path: path.clone(),
                    position: scan.chunk.len,
                    reason: "unreadable bytes at the end of a chunk that is not the last".to_owned(),
                });
            }
            // A torn tail, or preallocated space left by a crash just as a new chunk began.
            if scan.torn_bytes > 0 || (scan.zero_tail > 0 && !is_last) {
                let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
                file.set_len(scan.chunk.len).map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
            }
            if scan.torn_bytes > 0 {
                tracing::warn!(file = %path.display(), bytes = scan.torn_bytes, "cut off a torn tail after a crash");
                report.truncated_bytes += scan.torn_bytes;
            }
            chunks.push(scan.chunk);
        }
        let next_offset = chunks.last().map_or(0, Chunk::end_offset);
        let now = (config.clock)();
        let window_ms = config.dedupe_window.as_millis() as u64;
        let dedupe_dir = dir.join("dedupe");
        let mut dedupe =
            dedupe::Dedupe::open(&dedupe_dir, window_ms, config.dedupe_max_ids, now).map_err(io_err(&dedupe_dir))?;
        #[cfg(test)]
        dedupe.set_hook(config.dedupe_hook.clone());
        // The run files hold keys appended before this time; rebuild the rest from the log.
        let rebuild_from = dedupe.disk_covers_until_ms().unwrap_or(0).max(now.saturating_sub(window_ms));
        for chunk in &chunks {
            if chunk.last_append_ms() < rebuild_from {
                continue;
            }
            let file = File::open(&chunk.path).map_err(io_err(&chunk.path))?;
            for frame in &chunk.frames {
                if frame.header.appended_ms < rebuild_from {
                    continue;
                }
                let body = chunk::read_frame(&file, &chunk.path, frame).map_err(io_err(&chunk.path))?;
                for key in format::decode_keys(&frame.header, &body).into_iter().flatten() {
                    dedupe.restore(key, frame.header.appended_ms);
                }
            }
        }
        report.chunks = chunks.len();
        report.next_offset = next_offset;
        report.dedupe_keys = dedupe.len();

        let cursors = read_cursors(&dir).map_err(io_err(&dir.join(CURSORS_FILE)))?;
        let (visible, _) = watch::channel(next_offset);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            config: config.clone(),
            chunks: RwLock::new(chunks),
            visible,
            poisoned: Mutex::new(None),
            full: AtomicBool::new(false),
            cursors: Mutex::new(cursors),
            dedupe_len: AtomicU64::new(dedupe.len() as u64),
            dedupe_evicted: AtomicU64::new(0),
            metrics: Arc::default(),
        });
        let writer = Writer::new(shared.clone(), dedupe, next_offset, lock).map_err(io_err(&dir))?;
        let writer = Arc::new(Mutex::new(writer));
        let (tx, rx) = mpsc::channel();
        let thread_writer = writer.clone();
        std::thread::Builder::new()
            .name("ferry-log-writer".to_owned())
            .spawn(move || run(&thread_writer, rx))
            .map_err(io_err(&dir))?;
        Ok((Log { shared, tx, writer, gather: Arc::default() }, report))
    }

    /// Append records; resolves when they are durable under the sync policy.
    ///
    /// Appends arriving together are gathered: the first caller yields once, then writes
    /// them all as one frame, in its own thread. Under `Always` the writer thread then
    /// syncs and answers them, while the next frame is written (pipelined group commit).
    pub async fn append(&self, records: Vec<Record>) -> Result<Vec<Appended>, AppendError> {
        let (reply, answer) = oneshot::channel();
        if self.gather((records, reply)) {
            let mut leader = Leader(Some(self));
            tokio::task::yield_now().await;
            leader.0 = None;
            if let Some(room) = self.write_gathered() {
                let _ = room.await;
            }
        }
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// [`Log::append`] for callers outside an async runtime.
    ///
    /// Threads appending together are gathered too: the first one writes, once it holds
    /// the writer's lock, what every thread queued meanwhile.
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<Vec<Appended>, AppendError> {
        let (reply, answer) = oneshot::channel();
        if self.gather((records, reply))
            && let Some(room) = self.write_gathered()
        {
            let _ = room.blocking_recv();
        }
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// Queue an append for the next frame; true when the caller is to write it (no one
    /// else has taken that on).
    fn gather(&self, append: Pending) -> bool {
        let mut gather = lock(&self.gather);
        gather.pending.push(append);
        !std::mem::replace(&mut gather.leader, true)
    }

    /// Write the gathered appends in this thread, taking them once it holds the writer's
    /// lock (appends arriving meanwhile join them), and hand the writer thread what
    /// [`Writer::store`] left to it. Returns, when the dedupe index is nearly full, what
    /// resolves once the writer thread has made room: the caller waits for that.
    fn write_gathered(&self) -> Option<oneshot::Receiver<()>> {
        let mut writer = lock_writer(&self.writer);
        let group = self.take_gathered();
        let stored = writer.store(group, Budget::HandOver);
        drop(writer);
        // If the writer thread is gone, dropping what it would answer answers `Closed`.
        if let Some(unsynced) = stored.unsynced {
            let _ = self.tx.send(Message::Unsynced(unsynced));
        }
        if let Some((group, _)) = stored.over_budget {
            let _ = self.tx.send(Message::Write(group));
        }
        let (done, room) = match stored.housekeep {
            Housekeep::Nothing => return None,
            Housekeep::Nudge => None,
            Housekeep::MakeRoom => Some(oneshot::channel()),
        }
        .unzip();
        self.tx.send(Message::Housekeep { done }).ok()?;
        room
    }

    /// Take the gathered appends (the next append becomes the leader of the next ones).
    fn take_gathered(&self) -> Vec<Pending> {
        let mut gather = lock(&self.gather);
        gather.leader = false;
        std::mem::take(&mut gather.pending)
    }

    /// Stop the writer after what is queued, sync, and release the directory lock.
    pub fn close(self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Close { done }).is_ok() {
            let _ = wait.blocking_recv();
        }
    }

    /// The offset the next stored record will get (one past the last visible one).
    pub fn next_offset(&self) -> u64 {
        *self.shared.visible.borrow()
    }

    /// Up to `max` visible records at offsets `>= from`, in order. Records before the
    /// oldest chunk (deleted by retention) are skipped.
    pub fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let end = self.next_offset();
        let mut attempts = 0;
        loop {
            let chunks = self.shared.chunks.read().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
            let needed = chunk::select(&chunks, from, end, max);
            drop(chunks);
            match chunk::read_records(&needed, from, end, max) {
                // Retention deleted a chunk between the selection and the read: what it
                // held is gone, so select again (a few times; a reader racing a busy
                // retention that often is told so).
                Err(error) if error.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                result => return result,
            }
        }
    }

    /// Wait until a record at `offset` (or later) is visible. Wakes on appends; no polling.
    pub async fn wait_for(&self, offset: u64) -> Result<(), AppendError> {
        let mut rx = self.shared.visible.subscribe();
        rx.wait_for(|end| *end > offset).await.map(|_| ()).map_err(|_| AppendError::Closed)
    }

    /// A consumer's durable position: the next offset it will read.
    pub fn cursor(&self, name: &str) -> Option<u64> {
        self.shared.cursors.lock().ok()?.get(name).copied()
    }

    /// Every consumer and its position.
    pub fn cursors(&self) -> Vec<(String, u64)> {
        self.shared.cursors.lock().map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    /// Durably record that consumer `name` will next read `offset`.
    pub fn commit_cursor(&self, name: &str, offset: u64) -> io::Result<()> {
        let mut cursors = self.shared.cursors.lock().map_err(|_| io::Error::other("cursor lock poisoned"))?;
        cursors.insert(name.to_owned(), offset);
        write_cursors(&self.shared.dir, &cursors)
    }

    /// Forget a consumer (it no longer holds back retention).
    pub fn remove_cursor(&self, name: &str) -> io::Result<()> {
        let mut cursors = self.shared.cursors.lock().map_err(|_| io::Error::other("cursor lock poisoned"))?;
        cursors.remove(name);
        write_cursors(&self.shared.dir, &cursors)
    }

    /// Whether appends can succeed now: not poisoned, not over budget.
    pub fn writable(&self) -> bool {
        self.shared.poisoned.lock().map(|p| p.is_none()).unwrap_or(false) && !self.shared.full.load(Ordering::Relaxed)
    }

    /// The writer's counters and histograms.
    pub fn metrics(&self) -> Arc<LogMetrics> {
        self.shared.metrics.clone()
    }

    /// The disk budget in bytes.
    pub fn max_disk_bytes(&self) -> u64 {
        self.shared.config.max_disk_bytes
    }

    /// Chunk files and their bytes.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.chunks.read().map(|c| c.iter().map(|c| c.len).sum()).unwrap_or(0)
    }

    /// Dedupe keys held in memory, and keys forgotten early because of the memory cap.
    /// (The memory layer; keys in run files are not counted here.)
    pub fn dedupe_stats(&self) -> (u64, u64) {
        (self.shared.dedupe_len.load(Ordering::Relaxed), self.shared.dedupe_evicted.load(Ordering::Relaxed))
    }

    /// Delete what retention allows now (the writer also does this on its own, every
    /// 10 s while appends arrive). Runs in the writer thread and waits for it: call it from
    /// a blocking context. Returns how many chunks were deleted.
    pub fn run_retention(&self) -> io::Result<usize> {
        let (done, wait) = mpsc::channel();
        self.tx.send(Message::Retention { done }).map_err(|_| io::Error::other("log is closed"))?;
        wait.recv().map_err(|_| io::Error::other("log is closed"))?
    }
}

fn read_cursors(dir: &Path) -> io::Result<BTreeMap<String, u64>> {
    let path = dir.join(CURSORS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct File {
        version: u64,
        cursors: BTreeMap<String, u64>,
    }
    let file: File = serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if file.version != CURSORS_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cursors file version {} is not supported", file.version),
        ));
    }
    Ok(file.cursors)
}

fn write_cursors(dir: &Path, cursors: &BTreeMap<String, u64>) -> io::Result<()> {
    let text = serde_json::to_string(&serde_json::json!({ "version": CURSORS_VERSION, "cursors": cursors }))?;
    let tmp = dir.join("cursors.json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(CURSORS_FILE))?;
    File::open(dir)?.sync_all()
}

/// The single writer: owns the open chunk and the dedupe index.
struct Writer {
    shared: Arc<Shared>,
    dedupe: dedupe::Dedupe,
    next_offset: u64,
    /// The current chunk; shared with a sync running outside the writer's lock.
    file: Arc<File>,
    file_len: u64,
    /// Frames written so far.
    frames_written: u64,
    /// How many of them are durable (and in named chunks): a sync covered them, or under
    /// `Never`, the writer thread finished the roll-over before them.
    frames_synced: u64,
    /// The append time of the newest frame (ms).
    last_append_ms: u64,
    /// The current chunk not yet named: an appender switched to it, the writer thread
    /// finishes the roll-over.
    roll_over: Option<Arc<RollOver>>,
    /// An empty file for the next chunk, made by the writer thread ahead of need.
    next: Option<NextFile>,
    /// The next chunk file, being zero-filled in the background (used instead of `next`
    /// once ready).
    spare: Option<std::thread::JoinHandle<io::Result<NextFile>>>,
    /// Housekeeping the appenders asked the writer thread for.
    wants: Wants,
    /// The directory lock; released before `close` reports done.
    lock: Option<File>,
    /// Its zstd context and buffers, kept for the writer's life.
    encoder: format::Encoder,
    /// Set when the log is closing: appends fail from then on.
    closed: bool,
}

/// A roll-over begun by an appender: it switched to a new chunk file (its header written,
/// not synced) under a temporary name; the writer thread finishes it ([`finish_roll_over`]).
/// Until then the new chunk's records are neither shown to readers nor answered.
struct RollOver {
    /// The chunk before, written no more.
    old: Arc<File>,
    old_len: u64,
    /// The new chunk: its offset, its file, and the file's temporary name.
    base_offset: u64,
    new: Arc<File>,
    temporary: PathBuf,
}

/// A file for the next chunk, made ready ahead of the roll-over.
struct NextFile {
    file: File,
    path: PathBuf,
}

/// Work the appenders leave to the writer thread; a store that sets a flag wakes it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Wants {
    /// Start zero-filling the next chunk (the current one is half full).
    spare: bool,
    /// Run retention ahead of need (a new chunk began with the disk budget nearly spent).
    retention: bool,
}

/// What a store left to do outside the writer's lock.
struct Stored {
    /// Answers that wait for the writer thread.
    unsynced: Option<Unsynced>,
    /// Appends the disk budget had no room for, for the writer thread to write after
    /// retention, and the bytes of the frame that did not fit.
    over_budget: Option<(Vec<Pending>, u64)>,
    housekeep: Housekeep,
}

/// Whether to wake the writer thread for housekeeping.
enum Housekeep {
    Nothing,
    /// Wake it for [`Wants`].
    Nudge,
    /// Have it sync and make room in the nearly full dedupe index, and wait for that.
    MakeRoom,
}

/// What a store does with a frame the disk budget has no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// Hand it (and the rest of the group) back, for the writer thread to retry after
    /// retention: an appender never deletes chunks.
    HandOver,
    /// Refuse it with `DiskFull`: retention has run.
    Refuse,
}

type Reply = oneshot::Sender<Result<Vec<Appended>, AppendError>>;
type Pending = (Vec<Record>, Reply);

/// The answers to groups written under `Always`, or while a new chunk is not named yet, to
/// send once a sync (or, under `Never`, the roll-over) covers the first `through` frames
/// the writer wrote.
struct Unsynced {
    through: u64,
    replies: Vec<(Reply, Vec<Appended>)>,
}

impl Unsynced {
    fn send(self) {
        for (reply, answer) in self.replies {
            let _ = reply.send(Ok(answer));
        }
    }

    fn fail(self, error: &AppendError) {
        for (reply, _) in self.replies {
            let _ = reply.send(Err(error.copy()));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done that matters more than
    // stopping: a frame is either written whole or the log is poisoned.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer's lock held. In tests it also counts, per thread, that it is held, so that
/// tests can check that no slow work runs under it.
struct WriterGuard<'a>(std::sync::MutexGuard<'a, Writer>);

fn lock_writer(writer: &Mutex<Writer>) -> WriterGuard<'_> {
    let guard = lock(writer);
    #[cfg(test)]
    HOLDING_WRITER.with(|held| held.set(held.get() + 1));
    WriterGuard(guard)
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;

    fn deref(&self) -> &Writer {
        &self.0
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.0
    }
}

#[cfg(test)]
impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        HOLDING_WRITER.with(|held| held.set(held.get() - 1));
    }
}

#[cfg(test)]
thread_local! {
    /// How many guards of a writer's lock this thread holds.
    static HOLDING_WRITER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread holds a writer's lock (tests).
#[cfg(test)]
fn holds_writer_lock() -> bool {
    HOLDING_WRITER.with(|held| held.get() > 0)
}

/// Tell the test hook about a piece of work, in the thread doing it.
#[cfg(test)]
fn work(shared: &Shared, work: Work) {
    if let Some(hook) = &shared.config.work_hook {
        (hook.0)(work);
    }
}

/// The writer thread (its work is listed in the module doc). One sync answers every group
/// waiting that was written before it started.
fn run(writer: &Mutex<Writer>, rx: mpsc::Receiver<Message>) {
    let (sync, shared) = {
        let w = lock_writer(writer);
        (w.shared.config.sync, w.shared.clone())
    };
    // Wake at least this often to sync (`Interval`) and run retention.
    let tick = match sync {
        SyncPolicy::Interval(every) => every.max(Duration::from_millis(1)),
        SyncPolicy::Always | SyncPolicy::Never => RETENTION_EVERY,
    };
    let mut last_tick = Instant::now();
    let mut last_retention = Instant::now();
    loop {
        let first = match rx.recv_timeout(tick.saturating_sub(last_tick.elapsed())) {
            Ok(message) => Some(message),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            if matches!(sync, SyncPolicy::Interval(_)) {
                sync_written(writer, &shared);
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                retention_logged(writer, &shared, None);
            }
        }
        let Some(first) = first else { continue };
        let mut waiting = Vec::new();
        let mut close = None;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Unsynced(unsynced) => waiting.push(unsynced),
                Message::Write(group) => {
                    answer_when_synced(writer, &shared, std::mem::take(&mut waiting));
                    write_handed(writer, &shared, group);
                }
                Message::Housekeep { done } => {
                    if let Some(done) = done {
                        // The dedupe index is nearly full: a sync lets keys move to disk.
                        sync_written(writer, &shared);
                        let _ = done.send(());
                    }
                }
                Message::Retention { done } => {
                    // After the groups so far are answered, as their keys may move to runs.
                    answer_when_synced(writer, &shared, std::mem::take(&mut waiting));
                    let _ = done.send(retention_pass(writer, &shared, None));
                }
                Message::Close { done } => {
                    close = Some(done);
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        answer_when_synced(writer, &shared, waiting);
        if let Some(done) = close {
            stop(writer, &shared);
            // Groups written before the stop are synced by it. Appends handed over now
            // are dropped, which answers them `Closed`.
            let unsynced = rx.try_iter().filter_map(|message| match message {
                Message::Unsynced(unsynced) => Some(unsynced),
                _ => None,
            });
            answer_when_synced(writer, &shared, unsynced.collect());
            let _ = done.send(());
            return;
        }
    }
    stop(writer, &shared);
}

/// Sync (unless a sync since already covers them) and answer groups waiting for the
/// writer thread; if the log is poisoned or closed instead, tell them so. The housekeeping
/// the appenders asked for runs first, so that an append returns only once the retention it
/// set off (a new chunk began near the budget) is done.
fn answer_when_synced(writer: &Mutex<Writer>, shared: &Shared, waiting: Vec<Unsynced>) {
    let through = waiting.iter().map(|u| u.through).max().unwrap_or(0);
    if lock_writer(writer).frames_synced < through {
        sync_written(writer, shared);
    }
    housekeep(writer, shared);
    let synced = lock_writer(writer).frames_synced;
    // Not synced: a sync failed, or the writer stopped without syncing them.
    let failure = match shared.poison_reason() {
        Some(reason) => AppendError::Poisoned(reason),
        None => AppendError::Closed,
    };
    for unsynced in waiting {
        if unsynced.through <= synced { unsynced.send() } else { unsynced.fail(&failure) }
    }
}

/// Sync what appends wrote since the last sync, without holding the writer's lock during
/// the fdatasync (appends go on meanwhile; what they write is synced next time), first
/// finishing a roll-over an appender began: frames in a new chunk count as durable only
/// once it is named. Then, as the keys inserted before the sync are durable, start moving
/// dedupe keys to disk if the index wants room: here, not in the appends, so that no
/// request waits for this sync.
///
/// Returns the dedupe index's insert position ([`dedupe::Dedupe::inserted`]) before which
/// every key's record is now durable, or `None` if the log is poisoned.
fn sync_written(writer: &Mutex<Writer>, shared: &Shared) -> Option<u64> {
    let (roll_over, file, through, frames, offset) = {
        let w = lock_writer(writer);
        if w.poisoned() {
            return None;
        }
        // While a roll-over is pending the current file is its new chunk, which finishing
        // the roll-over syncs after the frames counted here were written to it.
        let dirty = w.shared.config.sync != SyncPolicy::Never && w.frames_synced < w.frames_written;
        let file = (dirty && w.roll_over.is_none()).then(|| w.file.clone());
        (w.roll_over.clone(), file, w.dedupe.inserted(), w.frames_written, w.next_offset)
    };
    if let Some(roll_over) = &roll_over
        && let Err(error) = finish_roll_over(writer, shared, roll_over)
    {
        poison(shared, format!("starting a new chunk failed: {error}"));
        return None;
    }
    if let Some(file) = file {
        #[cfg(test)]
        work(shared, Work::Sync);
        let started = Instant::now();
        if let Err(error) = file.sync_data() {
            poison(shared, format!("fdatasync failed: {error}"));
            return None;
        }
        shared.metrics.fsync_seconds.observe_duration(started.elapsed());
    }
    let mut w = lock_writer(writer);
    w.synced(frames, offset);
    if !w.closed && !w.poisoned() && w.dedupe.over_cap() {
        w.dedupe.make_room_through(through);
        w.publish_dedupe_state();
    }
    Some(through)
}

/// Finish a roll-over an appender began ([`RollOver`]), outside the writer's lock: sync
/// the old chunk and cut its preallocated space, sync the new one (header and frames so
/// far) and only then rename it into place and fsync the directory, so that a named chunk
/// always has a durable header and every chunk but the last is whole. Then make a file
/// ready for the next roll-over.
fn finish_roll_over(writer: &Mutex<Writer>, shared: &Shared, roll_over: &Arc<RollOver>) -> io::Result<()> {
    #[cfg(test)]
    work(shared, Work::FinishRollOver);
    if shared.config.sync != SyncPolicy::Never {
        let started = Instant::now();
        roll_over.old.sync_data()?;
        shared.metrics.fsync_seconds.observe_duration(started.elapsed());
    }
    // Preallocated space past the last frame.
    if roll_over.old.metadata()?.len() > roll_over.old_len {
        roll_over.old.set_len(roll_over.old_len)?;
        roll_over.old.sync_all()?;
    }
    let started = Instant::now();
    roll_over.new.sync_data()?;
    shared.metrics.fsync_seconds.observe_duration(started.elapsed());
    std::fs::rename(&roll_over.temporary, chunk::chunk_path(&shared.dir, roll_over.base_offset))?;
    File::open(&shared.dir)?.sync_all()?;
    // No appender takes `next` while a roll-over is pending.
    if lock_writer(writer).next.is_none() {
        let next = prepare_next(&shared.dir)?;
        lock_writer(writer).next = Some(next);
    }
    let mut w = lock_writer(writer);
    w.roll_over = None;
    let mut chunks = shared.chunks.write().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
    if let Some(chunk) = chunks.iter_mut().rev().find(|c| c.base_offset == roll_over.base_offset) {
        chunk.named = true;
    }
    Ok(())
}

/// The housekeeping appenders asked for ([`Wants`]). The spare (zero-filling the next chunk
/// in a background thread, so that it is ready at the roll-over) is not started while a
/// roll-over is being finished: the new chunk may still be the last spare, under the name
/// the next one is written to. The want stays for the housekeeping after the roll-over
/// (its appends are answered after that).
fn housekeep(writer: &Mutex<Writer>, shared: &Shared) {
    let (spare, retention) = {
        let mut w = lock_writer(writer);
        let wants = std::mem::take(&mut w.wants);
        let spare = wants.spare && shared.config.preallocate && !w.closed && w.spare.is_none();
        let pending = w.roll_over.is_some();
        w.wants.spare = spare && pending;
        (spare && !pending, wants.retention)
    };
    if spare {
        let (dir, bytes) = (shared.dir.clone(), shared.config.chunk_bytes);
        let job = move || prepare_spare(&dir, bytes, Some(SPARE_BYTES_PER_SECOND));
        match background::spawn("ferry-log-spare", background::Priority::Lowest, job) {
            Ok(handle) => lock_writer(writer).spare = Some(handle),
            Err(error) => tracing::warn!(%error, "cannot start preallocating the next log chunk"),
        }
    }
    if retention {
        retention_logged(writer, shared, Some(retention_headroom(&shared.config)));
    }
}

/// How far below the disk budget the writer thread starts deleting chunks when a new chunk
/// begins, so that appends seldom find the budget spent: a chunk (a quarter of the budget
/// if that is less).
fn retention_headroom(config: &LogConfig) -> u64 {
    config.chunk_bytes.min(config.max_disk_bytes / 4)
}

/// [`retention_pass`], logging a failure.
fn retention_logged(writer: &Mutex<Writer>, shared: &Shared, needed: Option<u64>) {
    if let Err(error) = retention_pass(writer, shared, needed) {
        tracing::warn!(%error, "log retention failed");
    }
}

/// Delete the chunks that every cursor and the dedupe pin have passed and that are old
/// enough, or (with `needed`) only for the budget, until that many more bytes fit. Never
/// the chunk being written, nor the last named one (while the next is not named yet, it is
/// where a restart finds the next offset). Runs in the writer thread, without the writer's
/// lock; where only the dedupe pin holds a chunk back, it syncs, moves the chunk's keys to
/// a dedupe run and goes on. Returns how many chunks were deleted.
fn retention_pass(writer: &Mutex<Writer>, shared: &Shared, needed: Option<u64>) -> io::Result<usize> {
    let config = &shared.config;
    let mut deleted = 0;
    loop {
        // Keys in memory were appended at or after the oldest one (the writer's clock
        // never goes back), so chunks older than it hold none.
        let pin = {
            let w = lock_writer(writer);
            if w.closed {
                return Ok(deleted);
            }
            w.dedupe.oldest_in_memory_ms().unwrap_or(u64::MAX)
        };
        let now = (config.clock)();
        let cursors = shared.cursors.lock().map_err(|_| io::Error::other("cursor lock poisoned"))?;
        let min_cursor = cursors.values().copied().min();
        drop(cursors);
        let (path, last_ms) = {
            let chunks = shared.chunks.read().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
            let Some(first) = chunks.first().filter(|_| chunks[1..].iter().any(|c| c.named)) else {
                return Ok(deleted);
            };
            let total: u64 = chunks.iter().map(|c| c.len).sum();
            let over_budget = total + needed.unwrap_or(0) > config.max_disk_bytes;
            let old = needed.is_none() && first.last_append_ms() + (config.retention.as_millis() as u64) < now;
            let passed = min_cursor.is_none_or(|m| first.end_offset() <= m);
            if !passed || !(old || over_budget) {
                return Ok(deleted);
            }
            (first.path.clone(), first.last_append_ms())
        };
        if last_ms >= pin.max(now.saturating_sub(config.dedupe_window.as_millis() as u64)) {
            // Its keys are only in memory: move them to a run once their records are durable.
            let Some(durable) = sync_written(writer, shared) else { return Ok(deleted) };
            loop {
                let step = lock_writer(writer).dedupe.start_spill_through(last_ms, durable);
                match step {
                    dedupe::SpillThrough::Done(true) => break,
                    dedupe::SpillThrough::Done(false) => return Ok(deleted),
                    dedupe::SpillThrough::Wait(done) => done.wait(),
                }
            }
            lock_writer(writer).publish_dedupe_state();
            tracing::info!(through_ms = last_ms, "moved dedupe keys to disk so that retention can delete a chunk");
            continue;
        }
        #[cfg(test)]
        work(shared, Work::DeleteChunk);
        std::fs::remove_file(&path)?;
        tracing::info!(file = %path.display(), "retention deleted a log chunk");
        shared.chunks.write().map_err(|_| io::Error::other("chunk list lock poisoned"))?.remove(0);
        deleted += 1;
    }
}

/// Write appends handed to the writer thread, and answer them. What the disk budget has no
/// room for is written after retention, or refused with `DiskFull` when retention can
/// delete nothing more.
fn write_handed(writer: &Mutex<Writer>, shared: &Shared, mut group: Vec<Pending>) {
    let mut budget = Budget::HandOver;
    loop {
        let stored = lock_writer(writer).store(group, budget);
        if let Some(unsynced) = stored.unsynced {
            answer_when_synced(writer, shared, vec![unsynced]);
        }
        if matches!(stored.housekeep, Housekeep::MakeRoom) {
            sync_written(writer, shared);
        }
        let Some((rest, needed)) = stored.over_budget else { return };
        budget = match retention_pass(writer, shared, Some(needed)) {
            Ok(0) => Budget::Refuse,
            Ok(_) => Budget::HandOver,
            Err(error) => {
                tracing::warn!(%error, "log retention failed");
                Budget::Refuse
            }
        };
        group = rest;
    }
}

/// Close the log: appends fail from now on; finish a roll-over, sync, let background work
/// finish and release the directory lock. The last thing the writer thread does.
fn stop(writer: &Mutex<Writer>, shared: &Shared) {
    let spare = {
        let mut w = lock_writer(writer);
        w.closed = true;
        w.spare.take()
    };
    sync_written(writer, shared);
    // Wait for a spare chunk being zero-filled (before the directory lock goes, so that
    // a next process never shares the file with this one's thread).
    if let Some(handle) = spare {
        let _ = handle.join();
    }
    let mut w = lock_writer(writer);
    w.dedupe.finish();
    drop(w.lock.take());
}

impl Shared {
    /// Why the log is poisoned, if it is.
    fn poison_reason(&self) -> Option<String> {
        self.poisoned.lock().ok().and_then(|p| p.clone())
    }
}

fn poison(shared: &Shared, reason: String) {
    tracing::error!(%reason, "event log poisoned; restart ferry after fixing the disk");
    if let Ok(mut p) = shared.poisoned.lock() {
        p.get_or_insert(reason);
    }
}

/// Why a group could not be stored.
enum CommitError {
    /// Over the disk budget by this frame's bytes: for the writer thread ([`Budget`]).
    OverBudget(u64),
    /// The answer for its requests (an I/O error poisons the log first: `commit_records`).
    Refused(AppendError),
}

impl From<io::Error> for CommitError {
    fn from(error: io::Error) -> Self {
        CommitError::Refused(AppendError::Io(error))
    }
}

impl Writer {
    fn new(shared: Arc<Shared>, dedupe: dedupe::Dedupe, next_offset: u64, lock: File) -> io::Result<Writer> {
        let last = shared.chunks.read().map_err(|_| io::Error::other("lock poisoned"))?.last().cloned();
        let last_append_ms = last.as_ref().map_or(0, Chunk::last_append_ms);
        let (file, file_len) = match last {
            Some(chunk) if chunk.len < shared.config.chunk_bytes => {
                (OpenOptions::new().write(true).open(&chunk.path)?, chunk.len)
            }
            _ => {
                // The first chunk is zero-filled here at full speed (nothing appends yet:
                // a fraction of a second for the default 128 MiB); later ones in the
                // background, throttled.
                let first = match shared.config.preallocate {
                    true => prepare_spare(&shared.dir, shared.config.chunk_bytes, None)?,
                    false => prepare_next(&shared.dir)?,
                };
                (new_chunk(&shared, next_offset, first)?, format::CHUNK_HEADER_LEN as u64)
            }
        };
        let next = prepare_next(&shared.dir)?;
        let encoder = format::Encoder::new(shared.config.compress_min_bytes)?;
        Ok(Writer {
            shared,
            dedupe,
            next_offset,
            file: Arc::new(file),
            file_len,
            frames_written: 0,
            frames_synced: 0,
            last_append_ms,
            roll_over: None,
            next: Some(next),
            spare: None,
            wants: Wants::default(),
            lock: Some(lock),
            encoder,
            closed: false,
        })
    }

    /// A sync that started when `frames` frames were written, ending at `offset`, has
    /// succeeded. Under `Always`, readers see records only now.
    fn synced(&mut self, frames: u64, offset: u64) {
        self.frames_synced = self.frames_synced.max(frames);
        if offset > *self.shared.visible.borrow() {
            self.shared.visible.send_replace(offset);
        }
    }

    fn poisoned(&self) -> bool {
        self.shared.poisoned.lock().map(|p| p.is_some()).unwrap_or(true)
    }

    /// Store a group of requests (as one frame, or several past [`MAX_GROUP_BYTES`]) and
    /// answer each, then do the dedupe index's upkeep. What is left to the writer thread
    /// (answers that wait, see [`Writer::answers_wait`]) is returned.
    fn store(&mut self, mut group: Vec<Pending>, budget: Budget) -> Stored {
        let wants = self.wants;
        let mut unsynced = Unsynced { through: 0, replies: Vec::new() };
        let mut over_budget = None;
        while !group.is_empty() {
            let mut bytes = 0;
            let take = group
                .iter()
                .take_while(|(records, _)| {
                    bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
                    bytes <= MAX_GROUP_BYTES
                })
                .count()
                .max(1);
            let rest = group.split_off(take);
            let (requests, replies): (Vec<Vec<Record>>, Vec<_>) =
                std::mem::replace(&mut group, rest).into_iter().unzip();
            match self.commit_records(&requests, budget) {
                // Every answer waits, duplicates too: the record they repeat may be in a
                // frame not yet synced, or in a chunk not yet named.
                Ok(answers) if self.answers_wait() => {
                    unsynced.through = self.frames_written;
                    unsynced.replies.extend(replies.into_iter().zip(answers));
                }
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(CommitError::OverBudget(needed)) => {
                    let mut refused: Vec<Pending> = requests.into_iter().zip(replies).collect();
                    refused.append(&mut group);
                    over_budget = Some((refused, needed));
                }
                Err(CommitError::Refused(error)) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.copy()));
                    }
                }
            }
        }
        let make_room = self.upkeep();
        let housekeep = match (make_room, self.wants != wants) {
            (true, _) => Housekeep::MakeRoom,
            (false, true) => Housekeep::Nudge,
            (false, false) => Housekeep::Nothing,
        };
        Stored { unsynced: (!unsynced.replies.is_empty()).then_some(unsynced), over_budget, housekeep }
    }

    /// Whether the answers to what was just committed wait for the writer thread: under
    /// `Always` until a sync covers it, under any policy while the chunk it went to is not
    /// named yet (a crash would lose it, and readers must not see it before).
    fn answers_wait(&self) -> bool {
        (self.shared.config.sync == SyncPolicy::Always && self.frames_synced < self.frames_written)
            || self.roll_over.is_some()
    }

    /// Bounded upkeep of the dedupe index after a commit (spills and filter rebuilds run in
    /// background threads). A new spill starts only once the keys' records are durable:
    /// with `Always` and `Interval` the writer thread starts it after its next sync
    /// (`sync_written`); with `Never` here. Returns true when the index is so near full
    /// under `Interval` that room cannot wait for the periodic sync: the caller then has
    /// the writer thread sync and make room now, and waits for it.
    fn upkeep(&mut self) -> bool {
        self.dedupe.maintain();
        // A poisoned log's last frames may not be durable: no key moves to a run.
        let may_move_keys = self.dedupe.over_cap() && !self.closed && !self.poisoned();
        let make_room = match self.shared.config.sync {
            SyncPolicy::Never => {
                if may_move_keys {
                    self.dedupe.make_room();
                }
                false
            }
            // The sync that answers this group moves the keys.
            SyncPolicy::Always => false,
            SyncPolicy::Interval(_) => may_move_keys && self.dedupe.over_cap_urgently(),
        };
        self.publish_dedupe_state();
        make_room
    }

    /// Store the records of several requests as one frame: what became of each record,
    /// request by request.
    fn commit_records(&mut self, requests: &[Vec<Record>], budget: Budget) -> Result<Vec<Vec<Appended>>, CommitError> {
        if self.closed {
            return Err(CommitError::Refused(AppendError::Closed));
        }
        if let Some(reason) = self.shared.poison_reason() {
            return Err(CommitError::Refused(AppendError::Poisoned(reason)));
        }
        // Never earlier than the last frame: frame times and dedupe times stay monotonic
        // even if the wall clock steps back.
        let now = (self.shared.config.clock)().max(self.last_append_ms);
        self.last_append_ms = now;
        self.dedupe.expire(now);

        // Decide each record: duplicate, or the next offset.
        let mut answers: Vec<Vec<Appended>> = Vec::with_capacity(requests.len());
        let mut keys: Vec<Option<u128>> = Vec::new();
        let mut payloads: Vec<&[u8]> = Vec::new();
        // Keys are inserted as they are decided (this also catches repeats within the
        // group) and rolled back if the frame cannot be written.
        let mut inserted = 0;
        let mut offset = self.next_offset;
        let hashes: Vec<_> =
            requests.iter().flatten().map(|record| record.key.as_deref().map(format::key_hash)).collect();
        self.dedupe.prefetch(hashes.iter().flatten().copied());
        let mut hashes = hashes.into_iter();
        for records in requests {
            let mut answer = Vec::with_capacity(records.len());
            for record in records {
                let key = hashes.next().flatten();
                if let Some(hash) = key {
                    if !self.dedupe.insert(hash, now) {
                        answer.push(Appended::Duplicate);
                        continue;
                    }
                    inserted += 1;
                }
                answer.push(Appended::At(offset));
                offset += 1;
                keys.push(key);
                payloads.push(&record.payload);
            }
            answers.push(answer);
        }

        let result = if payloads.is_empty() { Ok(()) } else { self.write_frame(now, &keys, &payloads, budget) };
        match result {
            Ok(()) => {
                self.next_offset = offset;
                self.publish_dedupe_state();
                // Under `Always` readers see the records once they are synced (`synced`),
                // and under any policy not before their chunk is named.
                if self.shared.config.sync != SyncPolicy::Always && self.roll_over.is_none() {
                    self.shared.visible.send_replace(offset);
                }
                Ok(answers)
            }
            Err(error) => {
                self.dedupe.rollback(inserted);
                let CommitError::Refused(AppendError::Io(error)) = error else { return Err(error) };
                poison(&self.shared, format!("write failed: {error}"));
                Err(CommitError::Refused(AppendError::Poisoned(self.shared.poison_reason().unwrap_or_default())))
            }
        }
    }

    fn publish_dedupe_state(&self) {
        self.shared.dedupe_len.store(self.dedupe.len() as u64, Ordering::Relaxed);
        self.shared.dedupe_evicted.store(self.dedupe.evicted_early(), Ordering::Relaxed);
    }

    fn write_frame(
        &mut self,
        now: u64,
        keys: &[Option<u128>],
        payloads: &[&[u8]],
        budget: Budget,
    ) -> Result<(), CommitError> {
        let frame = self.encoder.encode(self.next_offset, now, keys, payloads)?;
        let result = self.store_frame(payloads, &frame, budget);
        self.encoder.recycle(frame);
        result
    }

    /// Write an encoded frame at the end of the current chunk (switching to the next chunk
    /// first when it does not fit) and record it; the writer thread syncs it. Over the
    /// disk budget it writes nothing: the writer thread makes room ([`Budget`]).
    fn store_frame(&mut self, payloads: &[&[u8]], frame: &[u8], budget: Budget) -> Result<(), CommitError> {
        let frame_len = frame.len() as u64;
        let max_disk_bytes = self.shared.config.max_disk_bytes;
        let used: u64 = self.shared.chunks.read().map(|c| c.iter().map(|c| c.len).sum()).unwrap_or(0);
        if used + frame_len > max_disk_bytes {
            if budget == Budget::HandOver {
                return Err(CommitError::OverBudget(frame_len));
            }
            self.shared.full.store(true, Ordering::Relaxed);
            return Err(CommitError::Refused(AppendError::DiskFull { retry_after: DISK_FULL_RETRY_AFTER }));
        }
        self.shared.full.store(false, Ordering::Relaxed);

        if self.file_len + frame_len > self.shared.config.chunk_bytes
            && self.file_len > format::CHUNK_HEADER_LEN as u64
            && self.begin_roll_over()?
            && used + frame_len + retention_headroom(&self.shared.config) > max_disk_bytes
        {
            self.wants.retention = true;
        }
        #[cfg(test)]
        work(&self.shared, Work::WriteFrame);
        self.file.write_all_at(frame, self.file_len)?;
        let records = payloads.len() as u64;
        self.shared.metrics.frames.inc();
        self.frames_written += 1;
        self.shared.metrics.records.add(records);
        self.shared.metrics.payload_bytes.add(payloads.iter().map(|p| p.len() as u64).sum());
        self.shared.metrics.frame_bytes.add(frame_len);
        self.shared.metrics.group_records.observe(records as f64);
        let header = format::FrameHeader::decode(frame[..format::FRAME_HEADER_LEN].try_into().unwrap_or(&[0; 36]))
            .ok_or_else(|| io::Error::other("encoded frame does not decode"))?;
        let meta = FrameMeta { pos: self.file_len, header };
        self.file_len += frame_len;
        if self.shared.config.preallocate && self.spare.is_none() && self.file_len > self.shared.config.chunk_bytes / 2
        {
            self.wants.spare = true;
        }
        let mut chunks = self.shared.chunks.write().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
        if let Some(last) = chunks.last_mut() {
            last.frames.push(meta);
            last.len = self.file_len;
        }
        Ok(())
    }

    /// Begin a roll-over: switch to the file made ready for the next chunk (its header
    /// written, not synced) and leave the rest to the writer thread ([`RollOver`]). While
    /// the last roll-over is not finished, or no file is ready, frames go on into the
    /// current chunk instead. Returns whether it switched.
    fn begin_roll_over(&mut self) -> io::Result<bool> {
        if self.roll_over.is_some() {
            return Ok(false);
        }
        let Some(next) = self.take_next() else { return Ok(false) };
        let base_offset = self.next_offset;
        let created_ms = (self.shared.config.clock)();
        next.file.write_all_at(&format::encode_chunk_header(base_offset, created_ms), 0)?;
        let new = Arc::new(next.file);
        let old = std::mem::replace(&mut self.file, new.clone());
        self.roll_over =
            Some(Arc::new(RollOver { old, old_len: self.file_len, base_offset, new, temporary: next.path }));
        self.file_len = format::CHUNK_HEADER_LEN as u64;
        let path = chunk::chunk_path(&self.shared.dir, base_offset);
        let len = self.file_len;
        let mut chunks = self.shared.chunks.write().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
        chunks.push(Chunk { path, base_offset, created_ms, frames: Vec::new(), len, named: false });
        Ok(true)
    }

    /// The file for the next chunk: the zero-filled spare if it is ready (not waiting for
    /// it: the next roll-over may use it), else the empty one the writer thread made.
    fn take_next(&mut self) -> Option<NextFile> {
        if self.spare.as_ref().is_some_and(|handle| handle.is_finished())
            && let Some(handle) = self.spare.take()
        {
            match handle.join() {
                Ok(Ok(spare)) => return Some(spare),
                Ok(Err(error)) => tracing::warn!(%error, "cannot preallocate a log chunk; appending without"),
                Err(_) => {}
            }
        }
        self.next.take()
    }
}

const SPARE_NAME: &str = "next.prealloc";

/// The spare is zero-filled this much at a time, each step synced...
const SPARE_STEP_BYTES: usize = 1 << 20;
/// ...and, while appends go on, at most this fast (bytes a second), so that it leaves the
/// disk to them.
const SPARE_BYTES_PER_SECOND: u64 = 64 << 20;

/// Zero-fill `<dir>/next.prealloc` to `bytes`, durably: the next chunk file.
///
/// Written in small synced steps, at most `rate` bytes a second when given, not at once:
/// one unthrottled 128 MiB fill kept the disk busy for seconds, and the writer's fdatasync
/// calls (which share the ext4 journal with it) waited behind it, up to 60-100 ms per
/// append. At 64 MiB/s a spare takes about 2 s, well inside the second half of a chunk even
/// at full speed; if it is not ready at the roll-over, the next chunk is created without it.
pub(crate) fn prepare_spare(dir: &Path, bytes: u64, rate: Option<u64>) -> io::Result<NextFile> {
    let path = dir.join(SPARE_NAME);
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0u8; SPARE_STEP_BYTES];
    let step_time = rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(SPARE_STEP_BYTES as f64 / r as f64));
    let mut left = bytes;
    while left > 0 {
        let started = Instant::now();
        let n = left.min(block.len() as u64) as usize;
        background::write_all(&mut file, &block[..n])?;
        file.sync_data()?;
        left -= n as u64;
        if let Some(rest) = step_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    file.sync_all()?;
    Ok(NextFile { file, path })
}

/// The empty file the writer thread makes ready for the next chunk (when no zero-filled
/// spare is ready at the roll-over).
const NEXT_NAME: &str = "next.tmp";

/// Create (empty) `<dir>/next.tmp`, the file for the next chunk.
fn prepare_next(dir: &Path) -> io::Result<NextFile> {
    let path = dir.join(NEXT_NAME);
    let file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    Ok(NextFile { file, path })
}

/// Create the first chunk file (at open) for `base_offset` from `next`, durable (file and
/// directory entry): its header is written and synced under the temporary name and then
/// renamed into place, so a chunk file never lacks its header.
fn new_chunk(shared: &Shared, base_offset: u64, next: NextFile) -> io::Result<File> {
    let path = chunk::chunk_path(&shared.dir, base_offset);
    let created_ms = (shared.config.clock)();
    next.file.write_all_at(&format::encode_chunk_header(base_offset, created_ms), 0)?;
    next.file.sync_data()?;
    std::fs::rename(&next.path, &path)?;
    File::open(&shared.dir)?.sync_all()?;
    let len = format::CHUNK_HEADER_LEN as u64;
    let mut chunks = shared.chunks.write().map_err(|_| io::Error::other("chunk list lock poisoned"))?;
    chunks.push(Chunk { path, base_offset, created_ms, frames: Vec::new(), len, named: true });
    Ok(next.file)
}

#[cfg(test)]
mod tests;
