//! Unit and model-based tests of the log: appends, dedupe, reads, cursors, retention,
//! restarts (clean and with a torn tail), budget, and golden files of the format.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::*;

/// Tests that use the fake clock run one at a time.
static CLOCK_LOCK: Mutex<()> = Mutex::new(());
static NOW: AtomicU64 = AtomicU64::new(1_000_000);

fn fake_clock() -> u64 {
    NOW.load(Ordering::SeqCst)
}

/// Small chunks, short windows, the wall clock.
fn config(dir: &Path) -> LogConfig {
    LogConfig {
        dir: dir.to_owned(),
        sync: SyncPolicy::Never,
        chunk_bytes: 4096,
        retention: Duration::from_millis(100),
        dedupe_window: Duration::from_secs(3600),
        ..LogConfig::default()
    }
}

/// The same with the fake clock (hold `CLOCK_LOCK`) and a 1 s dedupe window.
fn fake_config(dir: &Path) -> LogConfig {
    LogConfig { dedupe_window: Duration::from_millis(1000), clock: fake_clock, ..config(dir) }
}

fn rec(key: Option<&str>, payload: &[u8]) -> Record {
    Record { key: key.map(|k| k.as_bytes().to_vec()), payload: payload.to_vec() }
}

/// `log.append_blocking(records)` in a thread of its own.
fn append_in_thread(log: &Log, records: Vec<Record>) -> std::thread::JoinHandle<Result<Vec<Appended>, AppendError>> {
    let log = log.clone();
    std::thread::spawn(move || log.append_blocking(records))
}

/// Polls `done` every 5 ms, and fails saying `what` unless it holds within `within`.
fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One-byte records with the keys `id-<i>` for `range`.
fn ids(range: std::ops::Range<u32>) -> Vec<Record> {
    range.map(|i| rec(Some(&format!("id-{i}")), b"x")).collect()
}

/// The `b`th batch of 50 [`ids`].
fn batch(b: u32) -> Vec<Record> {
    ids(b * 50..(b + 1) * 50)
}

#[test]
fn appends_get_increasing_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = Log::open(LogConfig { sync: SyncPolicy::Always, ..config(dir.path()) }).unwrap();
    assert_eq!(report.next_offset, 0);
    let a = log.append_blocking(vec![rec(None, b"a"), rec(None, b"b")]).unwrap();
    let b = log.append_blocking(vec![rec(None, b"c")]).unwrap();
    assert_eq!(a, [Appended::At(0), Appended::At(1)]);
    assert_eq!(b, [Appended::At(2)]);
    assert_eq!(log.read(1, 10).unwrap(), vec![(1, b"b".to_vec()), (2, b"c".to_vec())]);
    assert_eq!(log.read(0, 1).unwrap().len(), 1);
    assert_eq!(log.next_offset(), 3);
}

#[test]
fn duplicate_keys_are_not_stored_twice_even_within_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let first = log.append_blocking(vec![rec(Some("m1"), b"1"), rec(Some("m1"), b"1 again"), rec(None, b"x")]).unwrap();
    assert_eq!(first, [Appended::At(0), Appended::Duplicate, Appended::At(1)]);
    let second = log.append_blocking(vec![rec(Some("m1"), b"1"), rec(Some("m2"), b"2")]).unwrap();
    assert_eq!(second, [Appended::Duplicate, Appended::At(2)]);
    log.close();
    // The index survives a restart.
    let (log, report) = Log::open(config(dir.path())).unwrap();
    assert_eq!(report.dedupe_keys, 2);
    assert_eq!(log.append_blocking(vec![rec(Some("m2"), b"2")]).unwrap(), [Appended::Duplicate]);
}

#[test]
fn dedupe_beyond_the_memory_cap_is_exact_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { dedupe_max_ids: 100, chunk_bytes: 1 << 20, ..config(dir.path()) };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    for chunk in 0..10 {
        let answers = log.append_blocking(ids(chunk * 100..(chunk + 1) * 100)).unwrap();
        assert!(answers.iter().all(|a| matches!(a, Appended::At(_))));
    }
    assert_eq!(log.dedupe_stats().1, 0, "nothing may be forgotten early with a dedupe directory");
    assert!(log.append_blocking(ids(0..1000)).unwrap().iter().all(|a| *a == Appended::Duplicate));
    log.close();
    let (log, _) = Log::open(cfg).unwrap();
    assert!(log.append_blocking(ids(0..1000)).unwrap().iter().all(|a| *a == Appended::Duplicate));
    assert_eq!(log.append_blocking(ids(1000..1001)).unwrap(), [Appended::At(1000)]);
}

/// A spill of dedupe keys to a run file never holds up appends: with the spill's thread
/// held at its start, the writer goes on answering (exactly) and every id stays known.
/// Were the spill written by the writer, as it once was, the appends below would wait in
/// the held job until its one-minute hang guard gave up, and the test would fail.
#[test]
fn appends_go_on_while_a_dedupe_spill_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = dedupe::tests::gate(dedupe::Job::Spill);
    let cfg = LogConfig { dedupe_max_ids: 1000, chunk_bytes: 1 << 20, dedupe_hook: Some(hook), ..config(dir.path()) };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    // A spill starts once more than half of the 1,000 ids of memory are taken.
    for b in 0..11 {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| matches!(a, Appended::At(_))));
    }
    gate.started.recv_timeout(Duration::from_secs(60)).expect("a spill started");
    // It is held; appends still complete, and room is left for these.
    for b in 11..17 {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| matches!(a, Appended::At(_))));
    }
    for b in 0..17 {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| *a == Appended::Duplicate), "batch {b}");
    }
    assert!(gate.started.try_recv().is_err(), "no second spill while the first is held");
    assert_eq!(log.dedupe_stats().0, 850, "the ids are all in memory still");
    drop(gate.release);
    log.close();
    assert!(!gate.timed_out.load(Ordering::SeqCst), "the writer waited for the held spill");
    // The spill finished before the close returned: its run is on disk and, like every id,
    // known after a restart.
    let (log, _) = Log::open(LogConfig { dedupe_hook: None, ..cfg }).unwrap();
    for b in 0..17 {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| *a == Appended::Duplicate), "batch {b}");
    }
    assert!(std::fs::read_dir(dir.path().join("dedupe")).unwrap().count() > 0, "no dedupe run written");
}

#[test]
fn dedupe_window_expires() {
    let _guard = CLOCK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(fake_config(dir.path())).unwrap();
    log.append_blocking(vec![rec(Some("k"), b"1")]).unwrap();
    NOW.fetch_add(2000, Ordering::SeqCst);
    assert!(matches!(log.append_blocking(vec![rec(Some("k"), b"1")]).unwrap()[0], Appended::At(_)));
}

/// Under `Always` the caller writes the frame and the writer thread syncs it: the append
/// is answered, and its record shown to readers, only once that sync has succeeded. A
/// repeat of the record meanwhile waits for the sync too, rather than be answered as a
/// duplicate of a record that may not survive a crash.
#[test]
fn always_answers_and_shows_records_only_once_their_sync_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = dedupe::tests::gate(Work::Sync);
    let cfg = LogConfig { sync: SyncPolicy::Always, work_hook: Some(hook), ..config(dir.path()) };
    let (log, _) = Log::open(cfg).unwrap();
    let first = append_in_thread(&log, vec![rec(Some("m1"), b"one")]);
    gate.started.recv_timeout(Duration::from_secs(60)).expect("the writer thread started a sync");
    assert_eq!(log.metrics().frames.get(), 1, "the frame is written before the sync");
    let repeat = append_in_thread(&log, vec![rec(Some("m1"), b"one again")]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!first.is_finished(), "answered before its sync");
    assert!(!repeat.is_finished(), "a repeat of an unsynced record was answered before the sync");
    assert_eq!(log.next_offset(), 0);
    assert!(log.read(0, 10).unwrap().is_empty(), "a reader saw an unsynced record");
    drop(gate.release);
    assert_eq!(first.join().unwrap().unwrap(), [Appended::At(0)]);
    assert_eq!(repeat.join().unwrap().unwrap(), [Appended::Duplicate]);
    assert_eq!(log.read(0, 10).unwrap(), vec![(0, b"one".to_vec())]);
    assert!(log.metrics().fsync_seconds.count() >= 1);
}

/// A gathered group is written as several frames when its payloads pass
/// `MAX_GROUP_BYTES`; a single request larger than that is one frame of its own.
#[test]
fn a_large_gathered_group_is_split_into_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig { chunk_bytes: 64 << 20, ..config(dir.path()) }).unwrap();
    let three_mib = |fill: u8| vec![rec(None, &vec![fill; 3 << 20])];
    let requests = [three_mib(b'a'), three_mib(b'b'), vec![rec(None, b"small")], vec![rec(None, &vec![b'c'; 5 << 20])]];
    let (group, answers): (Vec<Pending>, Vec<_>) = requests
        .into_iter()
        .map(|records| {
            let (reply, answer) = oneshot::channel();
            ((records, reply), answer)
        })
        .unzip();
    lock(&log.gather).pending.extend(group);
    log.write_gathered();
    let offsets: Vec<_> = answers.into_iter().map(|a| a.blocking_recv().unwrap().unwrap()).collect();
    assert_eq!(offsets, [[Appended::At(0)], [Appended::At(1)], [Appended::At(2)], [Appended::At(3)]]);
    // 3 MiB; 3 MiB and the small one; 5 MiB.
    assert_eq!(log.metrics().frames.get(), 3);
    let read: Vec<_> = log.read(0, 10).unwrap().into_iter().map(|(o, p)| (o, p.len(), p[0])).collect();
    assert_eq!(read, [(0, 3 << 20, b'a'), (1, 3 << 20, b'b'), (2, 5, b's'), (3, 5 << 20, b'c')]);
}

#[test]
fn concurrent_appends_share_groups_and_never_duplicate_a_key() {
    // Callers write under the writer's lock; with `Always` the writer thread syncs.
    for sync in [SyncPolicy::Always, SyncPolicy::Interval(Duration::from_millis(5)), SyncPolicy::Never] {
        concurrent_appends_never_duplicate_a_key(sync);
    }
}

fn concurrent_appends_never_duplicate_a_key(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig { sync, chunk_bytes: 1 << 20, ..config(dir.path()) }).unwrap();
    let mut threads = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            let mut stored = 0;
            for i in 0..50 {
                // Every thread sends the same keys: each must be stored exactly once.
                let key = format!("key-{i}");
                let answer = log.append_blocking(vec![rec(Some(&key), format!("{t}-{i}").as_bytes())]).unwrap();
                stored += usize::from(matches!(answer[0], Appended::At(_)));
            }
            stored
        }));
    }
    let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(stored, 50);
    assert_eq!(log.read(0, 1000).unwrap().len(), 50);
}

#[test]
fn interval_appends_are_synced_by_the_writer_thread_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(50);
    let (log, _) = Log::open(LogConfig { sync: SyncPolicy::Interval(every), ..config(dir.path()) }).unwrap();
    let syncs = || log.metrics().fsync_seconds.count();
    std::thread::sleep(every * 3);
    assert_eq!(syncs(), 0, "nothing written, nothing to sync");
    assert_eq!(log.append_blocking(vec![rec(Some("k"), b"a")]).unwrap(), [Appended::At(0)]);
    // Visible at once, before any sync; synced within about one interval, without
    // another append to prompt it.
    assert_eq!(log.read(0, 10).unwrap(), vec![(0, b"a".to_vec())]);
    wait_until(every * 40, &format!("no fdatasync within {:?}", every * 40), || syncs() > 0);
    std::thread::sleep(every * 3);
    assert_eq!(syncs(), 1, "one sync for one write");
    assert_eq!(log.append_blocking(vec![rec(Some("k"), b"again")]).unwrap(), [Appended::Duplicate]);
    // Once closed, appends through another handle fail instead of writing unsynced.
    let other = log.clone();
    log.close();
    assert!(matches!(other.append_blocking(vec![rec(None, b"late")]), Err(AppendError::Closed)));
    drop(other);
    let (log, report) = Log::open(config(dir.path())).unwrap();
    assert_eq!(report.next_offset, 1);
    assert_eq!(log.read(0, 10).unwrap(), vec![(0, b"a".to_vec())]);
}

/// With `Interval`, an append that takes the dedupe index over its cap neither syncs nor
/// spills: the writer thread's next periodic sync makes the keys durable and then starts
/// the spill, so that no request waits for an fdatasync.
#[test]
fn interval_appends_leave_dedupe_spills_to_the_writer_threads_sync() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_secs(2);
    let cfg = LogConfig {
        sync: SyncPolicy::Interval(every),
        dedupe_max_ids: 1000,
        chunk_bytes: 1 << 20,
        ..config(dir.path())
    };
    // The writer thread's first periodic sync comes one interval after it starts.
    let opened = Instant::now();
    let (log, _) = Log::open(cfg).unwrap();
    let runs = || std::fs::read_dir(dir.path().join("dedupe")).map_or(0, |d| d.count());
    let syncs = || log.metrics().fsync_seconds.count();
    // 600 of 1,000 ids: over the cap that starts a spill (half), not near full.
    assert!(log.append_blocking(ids(0..600)).unwrap().iter().all(|a| matches!(a, Appended::At(_))));
    let (synced, spilled) = (syncs(), runs());
    assert!(opened.elapsed() < every, "the test needs the open and the append within one interval");
    assert_eq!((synced, spilled), (0, 0), "the append synced or spilled");
    wait_until(every * 10, "no spill after the writer thread's sync", || runs() > 0);
    assert!(syncs() >= 1, "a spill started before the keys were synced");
    assert!(log.append_blocking(ids(0..600)).unwrap().iter().all(|a| *a == Appended::Duplicate));
}

/// When the index fills faster than the interval syncs, the append that takes it near
/// full syncs and spills itself: memory stays within its cap.
#[test]
fn interval_appends_make_room_themselves_when_the_index_is_nearly_full() {
    let dir = tempfile::tempdir().unwrap();
    let (log, most) = outrun_the_syncs(config(dir.path()), 60);
    assert!(most <= 1000, "the recent layer grew to {most} ids, past its cap of 1,000");
    assert!(log.metrics().fsync_seconds.count() >= 1, "room was made without a sync");
    assert!(std::fs::read_dir(dir.path().join("dedupe")).unwrap().count() > 0, "no dedupe run written");
    for b in 0..60 {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| *a == Appended::Duplicate), "batch {b}");
    }
}

/// Opens `cfg` with an index of 1,000 ids and an hour between `Interval` syncs, and appends
/// `batches` [`batch`]es, which outrun the syncs. Returns the log and the most ids its memory
/// layer held after an append.
fn outrun_the_syncs(cfg: LogConfig, batches: u32) -> (Log, u64) {
    let sync = SyncPolicy::Interval(Duration::from_secs(3600));
    let (log, _) = Log::open(LogConfig { sync, dedupe_max_ids: 1000, chunk_bytes: 1 << 20, ..cfg }).unwrap();
    let mut most = 0;
    for b in 0..batches {
        assert!(log.append_blocking(batch(b)).unwrap().iter().all(|a| matches!(a, Appended::At(_))));
        most = most.max(log.dedupe_stats().0);
    }
    (log, most)
}

/// `body` with a log in a fresh directory, on a single-threaded runtime (so that the order
/// in which tasks run is the test's).
fn on_one_thread<F: std::future::Future<Output = ()>>(
    cfg: impl FnOnce(&Path) -> LogConfig,
    body: impl FnOnce(Log) -> F,
) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(cfg(dir.path())).unwrap();
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(body(log));
}

#[test]
fn async_appends_ready_together_share_one_frame() {
    on_one_thread(config, |log| async move {
        // The first task yields once before it writes: the other 19, ready meanwhile,
        // append into the same frame.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(vec![rec(Some(&format!("k{i}")), b"x")]).await })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            match task.await.unwrap().unwrap()[..] {
                [Appended::At(offset)] => offsets.push(offset),
                ref other => panic!("{other:?}"),
            }
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..20).collect::<Vec<u64>>());
        assert_eq!(log.metrics().frames.get(), 1);
        // A task that comes later writes a frame of its own.
        assert_eq!(
            log.append(vec![rec(Some("k0"), b"x"), rec(None, b"y")]).await.unwrap(),
            [Appended::Duplicate, Appended::At(20)]
        );
        assert_eq!(log.metrics().frames.get(), 2);
    });
}

#[test]
fn a_cancelled_append_still_writes_the_appends_that_waited_for_it() {
    on_one_thread(config, cancel_a_leader);
}

/// The first of two appends is cancelled (its client went away) before it wrote anything:
/// the second, which waited for its write, is answered, and both are stored.
async fn cancel_a_leader(log: Log) {
    use std::future::Future;
    // Polled once, the first append takes on the write and yields.
    let mut first = Box::pin(log.append(vec![rec(Some("a"), b"a")]));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let follower = tokio::spawn({
        let log = log.clone();
        async move { log.append(vec![rec(Some("b"), b"b")]).await }
    });
    tokio::task::yield_now().await;
    assert!(!follower.is_finished(), "the follower waits for the first append's write");
    drop(first);
    assert_eq!(follower.await.unwrap().unwrap(), [Appended::At(1)]);
    assert_eq!(log.read(0, 10).unwrap(), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
}

#[test]
fn a_read_copies_only_the_frames_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig { chunk_bytes: 1 << 20, ..config(dir.path()) }).unwrap();
    for i in 0..100 {
        // One frame of two records each.
        log.append_blocking(vec![rec(None, format!("{i}").as_bytes()), rec(None, b"x")]).unwrap();
    }
    {
        let chunks = log.shared.chunks.read().unwrap();
        assert_eq!(chunks.iter().map(|c| c.frames.len()).sum::<usize>(), 100);
        // Offsets 51..61 lie in frames 25 (50, 51) to 30 (60, 61).
        let picked = chunk::select(&chunks, 51, 200, 10);
        assert_eq!(picked.len(), 1);
        let firsts: Vec<u64> = picked[0].frames.iter().map(|f| f.header.first_offset).collect();
        assert_eq!(firsts, [50, 52, 54, 56, 58, 60]);
        // Nothing past the visible end.
        assert!(chunk::select(&chunks, 51, 52, 10)[0].frames.len() == 1);
    }
    let offsets: Vec<u64> = log.read(51, 10).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(offsets, (51..61).collect::<Vec<u64>>());
}

#[test]
fn cursors_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    log.commit_cursor("warehouse", 7).unwrap();
    log.commit_cursor("webhook", 3).unwrap();
    log.close();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    assert_eq!(log.cursor("warehouse"), Some(7));
    assert_eq!(log.cursors(), vec![("warehouse".to_owned(), 7), ("webhook".to_owned(), 3)]);
    log.remove_cursor("webhook").unwrap();
    assert_eq!(log.cursor("webhook"), None);
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = Log::open(config(dir.path())).unwrap();
    assert!(matches!(Log::open(config(dir.path())), Err(OpenError::Locked(_))));
}

#[test]
fn torn_tail_is_cut_and_reported_and_mid_corruption_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    // Without preallocation: this test reads and edits the file's exact bytes.
    let (log, _) = Log::open(LogConfig { chunk_bytes: 1 << 20, preallocate: false, ..config(dir.path()) }).unwrap();
    for i in 0..5 {
        log.append_blocking(vec![rec(None, format!("record {i}").as_bytes())]).unwrap();
    }
    log.close();
    let path = chunk::chunk_path(dir.path(), 0);
    let clean = std::fs::read(&path).unwrap();
    // A torn tail: half a frame header.
    let mut torn = clean.clone();
    torn.extend_from_slice(&format::FRAME_MAGIC.to_le_bytes());
    torn.extend_from_slice(&[9, 9, 9]);
    std::fs::write(&path, &torn).unwrap();
    let (log, report) = Log::open(config(dir.path())).unwrap();
    assert_eq!(report.truncated_bytes, 7);
    assert_eq!(log.read(0, 100).unwrap().len(), 5);
    log.close();
    assert_eq!(std::fs::read(&path).unwrap(), clean);
    // Flip a byte inside the second frame: corruption with valid frames after it.
    let mut corrupt = clean.clone();
    let second_frame = format::CHUNK_HEADER_LEN + (clean.len() - format::CHUNK_HEADER_LEN) / 5 + 40;
    corrupt[second_frame] ^= 0xff;
    std::fs::write(&path, &corrupt).unwrap();
    match Log::open(config(dir.path())) {
        Err(OpenError::Corrupt { path: p, position, .. }) => {
            assert_eq!(p, path);
            assert!(position > format::CHUNK_HEADER_LEN as u64);
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    let report = inspect::verify(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].frames_after, 3);
    let salvaged = inspect::salvage(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(salvaged[0].lost_offsets, vec![(1, 2)]);
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let offsets: Vec<u64> = log.read(0, 100).unwrap().into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, [0, 2, 3, 4]);
    assert_eq!(log.append_blocking(vec![rec(None, b"after")]).unwrap(), [Appended::At(5)]);
}

#[test]
fn disk_budget_full_refuses_appends_without_losing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { max_disk_bytes: 2000, chunk_bytes: 1000, ..config(dir.path()) };
    let (log, _) = Log::open(cfg).unwrap();
    // A consumer that reads nothing pins every chunk.
    log.commit_cursor("slow", 0).unwrap();
    let mut full = false;
    for i in 0..100u32 {
        match log.append_blocking(vec![rec(None, &[i as u8; 300])]) {
            Ok(_) => {}
            Err(AppendError::DiskFull { retry_after }) => {
                assert!(retry_after > Duration::ZERO);
                full = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(full);
    assert!(!log.writable());
    let stored = log.next_offset();
    // Once the consumer moves on, retention frees space and appends work again.
    log.commit_cursor("slow", stored).unwrap();
    assert!(log.append_blocking(vec![rec(None, &[1; 300])]).is_ok());
    assert!(log.writable());
}

#[test]
fn retention_under_budget_pressure_keeps_the_dedupe_keys_of_deleted_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { max_disk_bytes: 3000, chunk_bytes: 1000, ..config(dir.path()) };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    append_past_the_budget(&log);
    assert!(log.read(0, 1).unwrap()[0].0 > 0, "retention deleted nothing");
    assert!(std::fs::read_dir(dir.path().join("dedupe")).unwrap().count() > 0, "no dedupe run written");
    log.close();
    // After a restart every key is still known, also those whose chunks are gone.
    let (log, _) = Log::open(cfg).unwrap();
    assert_keys_known_past_the_budget(&log);
}

/// Records `id-0` to `id-39` of 300 bytes each: far more than a budget of 3,000 bytes
/// holds, so old chunks must go while their keys are in the window.
fn append_past_the_budget(log: &Log) {
    for i in 0..40u32 {
        let answer = log.append_blocking(vec![rec(Some(&format!("id-{i}")), &[i as u8; 300])]).unwrap();
        assert_eq!(answer, [Appended::At(u64::from(i))]);
    }
    assert!(log.disk_bytes() <= 3000);
}

/// Every key [`append_past_the_budget`] appended is still known.
fn assert_keys_known_past_the_budget(log: &Log) {
    for i in 0..40u32 {
        let answer = log.append_blocking(vec![rec(Some(&format!("id-{i}")), b"again")]).unwrap();
        assert_eq!(answer, [Appended::Duplicate], "id-{i} forgotten");
    }
}

#[test]
fn preallocated_chunks_are_cut_at_roll_over_and_reopen_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { chunk_bytes: 64 * 1024, preallocate: true, ..config(dir.path()) };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let first = chunk::chunk_path(dir.path(), 0);
    assert_eq!(std::fs::metadata(&first).unwrap().len(), 64 * 1024, "the first chunk is zero-filled at open");
    let mut n = 0u64;
    while chunk::list_chunks(dir.path()).unwrap().len() < 2 {
        log.append_blocking(vec![rec(None, &payload(n, 1000))]).unwrap();
        n += 1;
        if n == 40 {
            // Past half of the chunk: give the spare time to be ready.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let chunks = chunk::list_chunks(dir.path()).unwrap();
    let valid = chunk::scan(&chunks[0]).unwrap().chunk.len;
    assert_eq!(std::fs::metadata(&chunks[0]).unwrap().len(), valid, "a full chunk keeps no preallocated space");
    assert_eq!(std::fs::metadata(&chunks[1]).unwrap().len(), 64 * 1024, "the spare became the next chunk");
    log.close();
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.next_offset(), n);
    assert_eq!(log.read(0, 1000).unwrap().len() as u64, n);
    assert_eq!(log.append_blocking(vec![rec(None, b"more")]).unwrap(), [Appended::At(n)]);
    assert!(inspect::verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
}

#[test]
fn follow_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let follower = log.clone();
    let waiter = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(follower.wait_for(0)).unwrap();
        follower.read(0, 10).unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    log.append_blocking(vec![rec(None, b"wake")]).unwrap();
    assert_eq!(waiter.join().unwrap(), vec![(0, b"wake".to_vec())]);
}

/// Where each piece of [`Work`] ran: its thread's name, and whether that thread held the
/// writer's lock.
type Seen = Arc<Mutex<Vec<(Work, Option<String>, bool)>>>;

fn watch_work() -> (dedupe::Hook<Work>, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let hook = dedupe::Hook(Arc::new(move |work| {
        let thread = std::thread::current().name().map(str::to_owned);
        record.lock().unwrap().push((work, thread, holds_writer_lock()));
    }));
    (hook, seen)
}

/// How many times `work` was done; asserts that each time it ran in the log's writer
/// thread, and (unless it is writing a frame) not under the writer's lock.
fn done_by_the_writer_thread(seen: &Seen, work: Work) -> usize {
    let seen = seen.lock().unwrap();
    let mut times = 0;
    for (done, thread, held) in seen.iter().filter(|(done, _, _)| *done == work) {
        assert_eq!(thread.as_deref(), Some("ferry-log-writer"), "{done:?} ran in an appending thread");
        assert!(work == Work::WriteFrame || !held, "{done:?} ran under the writer's lock");
        times += 1;
    }
    times
}

/// A chunk's roll-over (syncing and cutting the old chunk, syncing, renaming and fsyncing
/// the new one) runs in the writer thread without the writer's lock, under every policy,
/// with and without preallocation; appends find every record, and so does a restart.
#[test]
fn roll_overs_run_in_the_writer_thread_outside_the_lock() {
    let policies = [SyncPolicy::Always, SyncPolicy::Interval(Duration::from_millis(5)), SyncPolicy::Never];
    for (sync, preallocate) in policies.into_iter().flat_map(|sync| [(sync, false), (sync, true)]) {
        let dir = tempfile::tempdir().unwrap();
        let (hook, seen) = watch_work();
        let cfg = LogConfig { sync, preallocate, work_hook: Some(hook), ..config(dir.path()) };
        let (log, _) = Log::open(cfg.clone()).unwrap();
        // About two frames of 1.5 KB fit a chunk of 4 KiB.
        for i in 0..12u64 {
            assert_eq!(log.append_blocking(vec![rec(None, &payload(i, 1500))]).unwrap(), [Appended::At(i)]);
        }
        let rolled = done_by_the_writer_thread(&seen, Work::FinishRollOver);
        assert!(rolled >= 4, "{sync:?}, preallocate {preallocate}: {rolled} roll-overs");
        done_by_the_writer_thread(&seen, Work::Sync);
        // An append that went into a new chunk returned only once it was named.
        assert_eq!(chunk::list_chunks(dir.path()).unwrap().len(), rolled + 1);
        assert_eq!(log.read(0, 100).unwrap().len(), 12);
        log.close();
        let (log, report) = Log::open(LogConfig { work_hook: None, ..cfg }).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        let read: Vec<_> = log.read(0, 100).unwrap();
        assert_eq!(read, (0..12u64).map(|i| (i, payload(i, 1500))).collect::<Vec<_>>());
        assert!(inspect::verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
    }
}

/// While the writer thread finishes a roll-over, appends are still written (they wait
/// only for their answers): nothing holds the writer's lock meanwhile. The new chunk's
/// records are answered, shown and named only once the roll-over is done.
#[test]
fn appends_are_written_while_a_roll_over_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = dedupe::tests::gate(Work::FinishRollOver);
    let cfg = LogConfig { sync: SyncPolicy::Always, preallocate: false, work_hook: Some(hook), ..config(dir.path()) };
    let (log, _) = Log::open(cfg).unwrap();
    let append = |i: u64| append_in_thread(&log, vec![rec(None, &payload(i, 1500))]);
    for i in 0..2 {
        assert_eq!(append(i).join().unwrap().unwrap(), [Appended::At(i)]);
    }
    // The third frame does not fit the chunk: its appender switches to the next one.
    let third = append(2);
    gate.started.recv_timeout(Duration::from_secs(60)).expect("the writer thread began finishing the roll-over");
    let fourth = append(3);
    let written = || log.metrics().frames.get() >= 4;
    wait_until(Duration::from_secs(30), "an append could not write while a roll-over was held", written);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!third.is_finished() && !fourth.is_finished(), "answered before the new chunk was named");
    assert_eq!(log.next_offset(), 2, "a reader was shown a record of a chunk not named yet");
    assert_eq!(chunk::list_chunks(dir.path()).unwrap().len(), 1);
    drop(gate.release);
    assert_eq!(third.join().unwrap().unwrap(), [Appended::At(2)]);
    assert_eq!(fourth.join().unwrap().unwrap(), [Appended::At(3)]);
    assert_eq!(chunk::list_chunks(dir.path()).unwrap().len(), 2);
    assert_eq!(log.read(0, 10).unwrap().len(), 4);
}

/// Retention deletes chunks in the writer thread, without the writer's lock: when the
/// disk budget is spent (an appender hands its append to the writer thread instead of
/// deleting), ahead of it, every 10 s and when asked.
#[test]
fn retention_deletes_in_the_writer_thread_outside_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, seen) = watch_work();
    let cfg = LogConfig { max_disk_bytes: 3000, chunk_bytes: 1000, work_hook: Some(hook), ..config(dir.path()) };
    let (log, _) = Log::open(cfg).unwrap();
    append_past_the_budget(&log);
    let for_budget = done_by_the_writer_thread(&seen, Work::DeleteChunk);
    assert!(for_budget > 0, "retention deleted nothing");
    // Old enough (100 ms) for time-based retention, which a caller asks for.
    std::thread::sleep(Duration::from_millis(200));
    assert!(log.run_retention().unwrap() > 0);
    assert!(done_by_the_writer_thread(&seen, Work::DeleteChunk) > for_budget);
    done_by_the_writer_thread(&seen, Work::Sync);
    assert_keys_known_past_the_budget(&log);
}

/// When retention must first move dedupe keys to a run (the dedupe pin), the writer
/// thread waits for that run without the writer's lock: appends go on meanwhile.
#[test]
fn appends_go_on_while_retention_waits_for_a_dedupe_spill() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = dedupe::tests::gate(dedupe::Job::Spill);
    let (log, _) = Log::open(LogConfig { dedupe_hook: Some(hook), ..config(dir.path()) }).unwrap();
    for i in 0..10u32 {
        log.append_blocking(vec![rec(Some(&format!("id-{i}")), &[i as u8; 1500])]).unwrap();
    }
    // Past the 100 ms retention, but the keys are only in memory: their chunks are pinned.
    std::thread::sleep(Duration::from_millis(200));
    let retention = {
        let log = log.clone();
        std::thread::spawn(move || log.run_retention())
    };
    gate.started.recv_timeout(Duration::from_secs(60)).expect("retention started a dedupe spill");
    let append = append_in_thread(&log, vec![rec(Some("late"), b"late")]);
    wait_until(Duration::from_secs(30), "an append waited for retention's dedupe spill", || append.is_finished());
    assert_eq!(append.join().unwrap().unwrap(), [Appended::At(10)]);
    drop(gate.release);
    assert!(retention.join().unwrap().unwrap() > 0, "retention deleted nothing");
    assert!(!gate.timed_out.load(Ordering::SeqCst));
    assert_eq!(log.append_blocking(vec![rec(Some("id-0"), b"again")]).unwrap(), [Appended::Duplicate]);
}

/// A cancelled leader's appends are written by the writer thread, not by whichever thread
/// drops the cancelled request.
#[test]
fn a_cancelled_leaders_appends_are_written_by_the_writer_thread() {
    let (hook, seen) = watch_work();
    on_one_thread(|dir| LogConfig { work_hook: Some(hook), ..config(dir) }, cancel_a_leader);
    assert_eq!(done_by_the_writer_thread(&seen, Work::WriteFrame), 1);
}

/// Under `Interval`, when the dedupe index is nearly full, the writer thread syncs so that
/// keys can move to disk; the appender waits for it but does not sync itself.
#[test]
fn interval_appends_leave_the_sync_for_a_nearly_full_index_to_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, seen) = watch_work();
    let (_log, most) = outrun_the_syncs(LogConfig { work_hook: Some(hook), ..config(dir.path()) }, 40);
    assert!(most <= 1000);
    assert!(done_by_the_writer_thread(&seen, Work::Sync) >= 1, "no sync made room");
}

/// Golden files: what version 1 looks like on disk. Regenerate with `UPDATE_EXPECT=1` only
/// when adding a new version (then keep the old file and a test that still reads it).
#[test]
fn golden_chunk_v1_is_read_and_written_byte_for_byte() {
    let _guard = CLOCK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    NOW.store(1_795_862_235_000, Ordering::SeqCst);
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let dir = tempfile::tempdir().unwrap();
    // Preallocated space is not part of the format, nor is the size from which frames are
    // compressed (the golden file was written with 512 bytes: its second frame is zstd).
    let (log, _) = Log::open(LogConfig {
        chunk_bytes: 1 << 20,
        preallocate: false,
        compress_min_bytes: 512,
        ..fake_config(dir.path())
    })
    .unwrap();
    let big =
        br#"{"type":"track","event":"Order Completed","properties":{"revenue":19.99,"currency":"EUR"}}"#.repeat(8);
    log.append_blocking(vec![rec(Some("m1"), b"{\"small\":1}"), rec(None, b"")]).unwrap();
    log.append_blocking(vec![rec(Some("m2"), &big)]).unwrap();
    log.commit_cursor("warehouse", 2).unwrap();
    log.close();
    let written = std::fs::read(chunk::chunk_path(dir.path(), 0)).unwrap();
    let cursors = std::fs::read(dir.path().join("cursors.json")).unwrap();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(&golden_dir).unwrap();
        std::fs::write(golden_dir.join("00000000000000000000.chunk"), &written).unwrap();
        std::fs::write(golden_dir.join("cursors.json"), &cursors).unwrap();
    }
    assert_eq!(written, std::fs::read(golden_dir.join("00000000000000000000.chunk")).unwrap(), "chunk format changed");
    assert_eq!(cursors, std::fs::read(golden_dir.join("cursors.json")).unwrap(), "cursor format changed");
    // And the golden files open and read back.
    let copy = tempfile::tempdir().unwrap();
    for name in ["00000000000000000000.chunk", "cursors.json"] {
        std::fs::copy(golden_dir.join(name), copy.path().join(name)).unwrap();
    }
    let view = inspect::open_view(copy.path()).unwrap();
    let records = view.read(0, 10).unwrap();
    assert_eq!(records, vec![(0, b"{\"small\":1}".to_vec()), (1, Vec::new()), (2, big.clone())]);
    assert_eq!(view.stat().unwrap().cursors[0].lag, 1);
    let (log, report) = Log::open(fake_config(copy.path())).unwrap();
    assert_eq!(report.dedupe_keys, 2);
    assert_eq!(log.append_blocking(vec![rec(Some("m1"), b"again")]).unwrap(), [Appended::Duplicate]);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(Option<u8>, u16)>),
    Read(u16),
    Commit(u8, u16),
    Retention,
    Tick(u16),
    Restart,
    RestartTorn(Vec<u8>),
    /// A crash in the middle of writing this append: the chunk ends partway into its frame.
    TornAppend(Vec<(Option<u8>, u16)>, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((prop::option::of(0u8..20), 0u16..600), 1..6).prop_map(Op::Append),
        2 => any::<u16>().prop_map(|o| Op::Read(o % 64)),
        1 => (0u8..2, any::<u16>()).prop_map(|(c, o)| Op::Commit(c, o)),
        1 => Just(Op::Retention),
        1 => (0u16..1500).prop_map(Op::Tick),
        1 => Just(Op::Restart),
        1 => prop::collection::vec(any::<u8>(), 1..80).prop_map(Op::RestartTorn),
        1 => (prop::collection::vec((prop::option::of(0u8..20), 0u16..600), 1..4), any::<u16>())
            .prop_map(|(batch, cut)| Op::TornAppend(batch, cut)),
    ]
}

/// Incompressible bytes (so chunks fill up and retention has work), different per offset.
fn payload(offset_hint: u64, len: u16) -> Vec<u8> {
    let mut x = offset_hint.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The log against an in-memory model: same offsets, same duplicates, same records;
    /// retention never removes what a cursor has not passed; restarts (also with a torn
    /// tail) lose nothing that was acknowledged.
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40), dedupe_cap in prop_oneof![Just(4usize), Just(10_000)], preallocate in any::<bool>()) {
        let _guard = CLOCK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        NOW.store(10_000_000, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        // A small budget (retention deletes chunks early, or appends are refused) and a tiny
        // dedupe memory layer (keys go to run files) exercise the dedupe pin.
        let cfg = LogConfig { max_disk_bytes: 10_000, chunk_bytes: 2048, dedupe_max_ids: dedupe_cap, preallocate, ..fake_config(dir.path()) };
        let (mut log, _) = Log::open(cfg.clone()).unwrap();
        let mut records: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut keys: HashMap<u8, u64> = HashMap::new();
        let mut cursors: [Option<u64>; 2] = [None, None];
        let mut next = 0u64;
        let window = 1000;
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let before = next;
                    let now = fake_clock();
                    let mut expected = Vec::new();
                    let mut batch_records = Vec::new();
                    let mut group = Vec::new();
                    for (key, len) in batch {
                        let dup = key.is_some_and(|k| keys.get(&k).is_some_and(|at| at + window >= now) || group.contains(&k));
                        let body = payload(next, len);
                        if dup {
                            expected.push(Appended::Duplicate);
                        } else {
                            expected.push(Appended::At(next));
                            records.insert(next, body.clone());
                            if let Some(k) = key { group.push(k); }
                            next += 1;
                        }
                        batch_records.push(Record { key: key.map(|k| vec![b'k', k]), payload: body });
                    }
                    match log.append_blocking(batch_records) {
                        Ok(answers) => {
                            prop_assert_eq!(answers, expected);
                            for k in group { keys.insert(k, now); }
                        }
                        // Refused whole: nothing stored, no key remembered.
                        Err(AppendError::DiskFull { .. }) => {
                            records.split_off(&before);
                            next = before;
                        }
                        Err(other) => prop_assert!(false, "append failed: {}", other),
                    }
                }
                Op::Read(from) => {
                    let got = log.read(u64::from(from), 1000).unwrap();
                    let first = log.read(0, 1).unwrap().first().map_or(next, |(o, _)| *o);
                    let start = u64::from(from).max(first);
                    let want: Vec<(u64, Vec<u8>)> = records.range(start..).map(|(o, r)| (*o, r.clone())).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Commit(c, offset) => {
                    let offset = u64::from(offset) % (next + 1);
                    log.commit_cursor(&format!("c{c}"), offset).unwrap();
                    // A cursor set before the first kept offset holds back nothing older.
                    let first = log.read(0, 1).unwrap().first().map_or(next, |(o, _)| *o);
                    cursors[c as usize] = Some(offset.max(first));
                }
                Op::Retention => {
                    log.run_retention().unwrap();
                    if let Some(min) = cursors.iter().flatten().min() {
                        let first = log.read(0, 1).unwrap().first().map_or(next, |(o, _)| *o);
                        prop_assert!(first <= *min, "retention removed offset {} a cursor at {} still needs", first, min);
                    }
                }
                Op::Tick(ms) => { NOW.fetch_add(u64::from(ms), Ordering::SeqCst); }
                Op::Restart => {
                    log.close();
                    let (reopened, report) = Log::open(cfg.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, 0);
                    prop_assert_eq!(reopened.next_offset(), next);
                    log = reopened;
                }
                Op::RestartTorn(garbage) => {
                    // Garbage where the next frame would go (over preallocated zeros, if any).
                    log.close();
                    let last = chunk::list_chunks(dir.path()).unwrap().pop().unwrap();
                    let valid = chunk::scan(&last).unwrap().chunk.len;
                    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
                    std::os::unix::fs::FileExt::write_all_at(&file, &garbage, valid).unwrap();
                    // Trailing zero bytes look like preallocated space, not damage.
                    let torn = garbage.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
                    let (reopened, report) = Log::open(cfg.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, torn);
                    prop_assert_eq!(reopened.next_offset(), next);
                    log = reopened;
                }
                Op::TornAppend(batch, cut) => {
                    // Never acknowledged, so the model does not change.
                    let last = chunk::list_chunks(dir.path()).unwrap().pop().unwrap();
                    let valid_before = chunk::scan(&last).unwrap().chunk.len;
                    let records_in: Vec<Record> = batch
                        .iter()
                        .map(|(key, len)| Record { key: key.map(|k| vec![b't', k]), payload: payload(next, *len) })
                        .collect();
                    let stored = log.append_blocking(records_in).is_ok_and(|a| a.iter().any(|a| matches!(a, Appended::At(_))));
                    log.close();
                    let mut expected_cut = 0;
                    if stored {
                        // The frame is in the last chunk, a new one if it rolled over.
                        let last_now = chunk::list_chunks(dir.path()).unwrap().pop().unwrap();
                        let from = if last_now == last { valid_before } else { format::CHUNK_HEADER_LEN as u64 };
                        let valid_after = chunk::scan(&last_now).unwrap().chunk.len;
                        // Over preallocated zeros, a write torn after the frame's last
                        // non-zero byte leaves the frame whole: cut before it.
                        let written = std::fs::read(&last_now).unwrap();
                        let end = if preallocate {
                            let frame = &written[from as usize..valid_after as usize];
                            from + frame.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1)
                        } else {
                            valid_after
                        };
                        let keep = from + u64::from(cut) % (end - from);
                        let file = std::fs::OpenOptions::new().write(true).open(&last_now).unwrap();
                        if preallocate {
                            // The rest of the frame never reached the preallocated zeros.
                            let zeros = vec![0u8; (valid_after - keep) as usize];
                            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, keep).unwrap();
                        } else {
                            file.set_len(keep).unwrap();
                        }
                        let bytes = std::fs::read(&last_now).unwrap();
                        let part = &bytes[from as usize..keep as usize];
                        expected_cut = part.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
                    }
                    let (reopened, report) = Log::open(cfg.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, expected_cut);
                    prop_assert_eq!(reopened.next_offset(), next);
                    log = reopened;
                }
            }
        }
        // Finally everything the model holds from the first surviving offset is there.
        let first = log.read(0, 1).unwrap().first().map_or(next, |(o, _)| *o);
        let got = log.read(0, 10_000).unwrap();
        let want: Vec<(u64, Vec<u8>)> = records.range(first..).map(|(o, r)| (*o, r.clone())).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn small_frames_are_stored_as_they_are_and_large_ones_compressed() {
    let frame = |payloads: &[&[u8]], min: usize| {
        let keys = vec![None; payloads.len()];
        let out = format::Encoder::new(min).unwrap().encode(0, 0, &keys, payloads).unwrap();
        let header = format::FrameHeader::decode(out[..format::FRAME_HEADER_LEN].try_into().unwrap()).unwrap();
        let records = format::decode_records(&header, &out[format::FRAME_HEADER_LEN..]).unwrap();
        (header.flags & format::FLAG_ZSTD != 0, out.len(), records)
    };
    let event = br#"{"type":"track","event":"Order Completed","properties":{"revenue":19.99}}"#.repeat(16);
    let default = LogConfig::default().compress_min_bytes;
    // One event: below the threshold, stored as it is (and read back).
    let (compressed, _, records) = frame(&[&event], default);
    assert!(!compressed && event.len() < default);
    assert_eq!(records, std::slice::from_ref(&event));
    // A busy group commit: compressed, much smaller, the same records.
    let many: Vec<&[u8]> = (0..40).map(|_| event.as_slice()).collect();
    let (compressed, len, records) = frame(&many, default);
    assert!(compressed && len * 10 < event.len() * 40, "{len}");
    assert_eq!(records.len(), 40);
    // The threshold is the writer's choice: the same event compressed from 512 bytes.
    assert!(frame(&[&event], 512).0);
}

#[test]
fn a_spare_chunk_is_filled_no_faster_than_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = 4u64 << 20;
    let started = std::time::Instant::now();
    let spare = crate::prepare_spare(dir.path(), bytes, Some(32 << 20)).unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(110), "4 MiB at 32 MiB/s took only {took:?}");
    assert_eq!(spare.file.metadata().unwrap().len(), bytes);
    let zeros = std::fs::read(dir.path().join("next.prealloc")).unwrap();
    assert!(zeros.iter().all(|b| *b == 0));
}

/// A consumer hands out batches ahead of the one in hand; settling commits in order, and
/// whichever order two batches are given back in, the earlier one comes first again.
#[test]
fn a_consumer_leases_ahead_and_gives_back_from_the_earliest_released() {
    use ferry_log_contract::{BatchLimits, ConsumerOptions, Log as _, Start};
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    log.append_blocking(ids(0..10)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let options = ConsumerOptions { start: Start::Beginning, stable_batches: false };
        let consumer = log.consumer("hook", options).await.unwrap();
        let limits = BatchLimits { records: 4, bytes: 1 << 20, linger: Duration::ZERO };
        let positions = |leased: &ferry_log_contract::Leased| leased.records.iter().map(|r| r.0).collect::<Vec<_>>();
        let first = consumer.lease(limits).await.unwrap().unwrap();
        let ahead = consumer.lease(limits).await.unwrap().unwrap();
        assert_eq!((positions(&first), positions(&ahead)), (vec![0, 1, 2, 3], vec![4, 5, 6, 7]));
        first.lease.settle().await.unwrap();
        assert_eq!((log.cursor("delivery.hook"), consumer.backlog().position), (Some(4), 4));
        ahead.lease.release().await.unwrap();
        for later_first in [false, true] {
            let a = consumer.lease(limits).await.unwrap().unwrap();
            let b = consumer.lease(limits).await.unwrap().unwrap();
            assert_eq!(positions(&b), [8, 9], "the batch after the one handed out last");
            let order = if later_first { [b.lease, a.lease] } else { [a.lease, b.lease] };
            for lease in order {
                lease.release().await.unwrap();
            }
            let again = consumer.lease(limits).await.unwrap().unwrap();
            assert_eq!(positions(&again), [4, 5, 6, 7], "released later first: {later_first}");
            again.lease.release().await.unwrap();
        }
        assert_eq!(log.cursor("delivery.hook"), Some(4), "nothing given back was committed");
    });
}

/// When each record was appended, across chunks and frames, and nothing past the end.
#[test]
fn the_append_time_of_each_record_is_found() {
    let _clock = CLOCK_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(fake_config(dir.path())).unwrap();
    for round in 0..20u32 {
        NOW.store(1_000_000 + u64::from(round) * 10, Ordering::SeqCst);
        log.append_blocking(ids(round * 50..(round + 1) * 50)).unwrap();
    }
    assert!(log.shared.chunks.read().unwrap().len() > 2, "the records span chunks");
    for offset in [0, 49, 50, 499, 999] {
        assert_eq!(log.appended_ms(offset), Some(1_000_000 + offset / 50 * 10), "offset {offset}");
    }
    assert_eq!(log.appended_ms(1000), None);
}
