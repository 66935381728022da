//! The delivery engine against both real logs of the log contract, a temporary ferry-log
//! and a JetStream stream on a nats-server of the test's own, with scripted destinations:
//! batching, settling, retries and their schedule, dead letters, routing, isolation,
//! shutdown, replay and redrive. Each test body runs on both logs in turn (the ones a
//! shared consumer cannot serve, stable batches, on the embedded log only).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_delivery::dead_letter::Filter;
use ferry_delivery::{Backoff, DeadLetters, ReplayRequest, Start, Worker, WorkerConfig, WorkerStatus};
use ferry_destinations::scripted::Scripted;
use ferry_destinations::{Destination, Outcome};
use ferry_log::{LogConfig, SyncPolicy};
use ferry_log_contract::{ConsumerOptions, Log, Reader, Record};
use ferry_nats::testing::{NatsNode, server_binary};
use tokio::sync::watch;

/// The logs every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    JetStream,
}

const BOTH: [Backend; 2] = [Backend::Embedded, Backend::JetStream];

struct Setup {
    backend: Backend,
    dir: tempfile::TempDir,
    log: Arc<dyn Log>,
    dead_letters: Arc<DeadLetters>,
    /// Kept alive for the test (JetStream).
    _node: Option<NatsNode>,
    cluster: Option<ferry_nats::Cluster>,
}

async fn setup(backend: Backend) -> Setup {
    eprintln!("== on the {backend:?} log");
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = Arc::new(DeadLetters::open(&dir.path().join("dead-letters.db")).unwrap());
    match backend {
        Backend::Embedded => {
            let (log, _) = ferry_log::Log::open(LogConfig {
                dir: dir.path().join("log"),
                sync: SyncPolicy::Never,
                chunk_bytes: 4 << 20,
                preallocate: false,
                ..LogConfig::default()
            })
            .unwrap();
            Setup { backend, dir, log: Arc::new(log), dead_letters, _node: None, cluster: None }
        }
        Backend::JetStream => {
            let binary = server_binary("delivery on jetstream")
                .expect("FERRY_TEST_NATS_SERVER names the nats-server binary (scripts/test sets it)");
            let node = NatsNode::single(&binary, &dir.path().join("nats"));
            let mut config = ferry_nats::NatsConfig::new(vec![node.url()]);
            config.replicas = 1;
            let cluster = ferry_nats::Cluster::connect(config).await.unwrap();
            cluster.ensure_stream().await.unwrap();
            let log = Arc::new(cluster.events().await.unwrap());
            Setup { backend, dir, log, dead_letters, _node: Some(node), cluster: Some(cluster) }
        }
    }
}

impl Setup {
    /// The position of the `n`th record appended (from 0): the embedded log's offsets
    /// start at 0, the stream's sequences at 1.
    fn at(&self, n: u64) -> u64 {
        match self.backend {
            Backend::Embedded => n,
            Backend::JetStream => n + 1,
        }
    }

    /// Where consumer `name` reads next, asked of the log now.
    async fn settled(&self, name: &str) -> u64 {
        let options = ConsumerOptions { start: Start::Beginning, stable_batches: false };
        let consumer = self.log.consumer(name, options).await.unwrap();
        consumer.refresh().await.unwrap().position.max(self.at(0))
    }

    /// A second reader of the events, as `ferry replay` has beside a running server.
    async fn reader(&self) -> Box<dyn Reader> {
        match &self.cluster {
            None => Box::new(ferry_log::ReadOnly::open(&self.dir.path().join("log")).unwrap()),
            Some(cluster) => Box::new(cluster.events().await.unwrap()),
        }
    }
}

fn stored(id: &str, name: &str, integrations: &str, received: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"track","messageId":"{id}","userId":"u1","event":"{name}","properties":{{"n":1}},"integrations":{integrations},"timestamp":"{received}","receivedAt":"{received}","version":2,"sourceId":"web"}}"#
    )
    .into_bytes()
}

async fn append(log: &dyn Log, ids: impl IntoIterator<Item = String>) {
    let records: Vec<Record> = ids
        .into_iter()
        .map(|id| Record { key: None, payload: stored(&id, "E", "{}", "2026-11-28T10:00:00.000Z") })
        .collect();
    log.append(records).await.unwrap();
}

fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        linger: Duration::from_millis(20),
        backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(40) },
        start: Start::Beginning,
        ..WorkerConfig::new(name)
    }
}

struct Running {
    status: Arc<WorkerStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(s: &Setup, config: WorkerConfig, destination: Arc<dyn Destination>) -> Running {
    let worker = Worker::open(config, s.log.as_ref(), destination, s.dead_letters.clone()).await.unwrap();
    let status = worker.status();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(worker.run(stopped));
    Running { status, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("worker stops").unwrap();
    }
}

/// Wait (up to 30 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait (up to 30 s) until consumer `name` has settled through `position`.
async fn until_settled(s: &Setup, name: &str, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.settled(name).await != position {
        assert!(Instant::now() < deadline, "timed out waiting for {name} to settle through {position}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn count(status: &WorkerStatus) -> u64 {
    status.delivered.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_batches_once_and_commits_the_cursor() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 250)).await;
        let destination = Arc::new(Scripted::accepting());
        let running = start(&s, config("hook"), destination.clone()).await;
        until("250 delivered", || count(&running.status) == 250).await;
        running.stop().await;
        assert_eq!(destination.sent_ids(), ids("m", 250));
        assert!(destination.batches().iter().all(|b| b.len() <= 100), "batches of at most 100");
        assert_eq!(s.settled("hook").await, s.at(250));
        // A restart continues after the cursor.
        append(s.log.as_ref(), ids("n", 5)).await;
        let again = Arc::new(Scripted::accepting());
        let running = start(&s, config("hook"), again.clone()).await;
        until("5 more", || count(&running.status) == 5).await;
        running.stop().await;
        assert_eq!(again.sent_ids(), ids("n", 5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_bytes_too() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 50)).await;
        let record_len = stored("m10", "E", "{}", "2026-11-28T10:00:00.000Z").len();
        let destination = Arc::new(Scripted::accepting());
        let running =
            start(&s, WorkerConfig { batch_bytes: record_len * 7, ..config("hook") }, destination.clone()).await;
        until("50 delivered", || count(&running.status) == 50).await;
        running.stop().await;
        assert!(
            destination.batches().iter().all(|b| b.len() <= 7),
            "{:?}",
            destination.batches().iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_delivered_and_honours_retry_after() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 3)).await;
        let destination = Arc::new(Scripted::new(|event, attempt| match (event.message_id.as_str(), attempt) {
            ("m2", _) => Outcome::Delivered,
            ("m1", 0) => {
                Outcome::Retry { after: Some(Duration::from_millis(300)), error: "429 too many requests".into() }
            }
            (_, 0 | 1) => Outcome::retry("503 unavailable"),
            _ => Outcome::Delivered,
        }));
        let running = start(&s, config("hook"), destination.clone()).await;
        until("3 delivered", || count(&running.status) == 3).await;
        let retried = running.status.retried.load(std::sync::atomic::Ordering::Relaxed);
        running.stop().await;
        let batches = destination.batches();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 2, 2], "first try, then only the events still pending");
        let times = destination.times();
        assert!(times[1] - times[0] >= Duration::from_millis(300), "retry-after is a floor: {:?}", times[1] - times[0]);
        assert_eq!(retried, 2 + 2);
        assert!(s.dead_letters.list(&Filter::default()).unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_and_exhausted_retries_become_dead_letters_with_every_attempt() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ["ok".to_owned(), "bad".to_owned(), "flaky".to_owned()]).await;
        let destination = Arc::new(Scripted::new(|event, _| match event.message_id.as_str() {
            "bad" => Outcome::reject("400 invalid email"),
            "flaky" => Outcome::retry("503 unavailable"),
            _ => Outcome::Delivered,
        }));
        let running =
            start(&s, WorkerConfig { max_age: Duration::from_millis(300), ..config("hook") }, destination).await;
        until("two dead letters", || running.status.dead_lettered.load(std::sync::atomic::Ordering::Relaxed) == 2)
            .await;
        until_settled(&s, "hook", s.at(3)).await;
        running.stop().await;
        let dead = s.dead_letters.list(&Filter { destination: Some("hook".into()), ..Filter::default() }).unwrap();
        assert_eq!(dead.len(), 2);
        let bad = dead.iter().find(|d| d.message_id == "bad").unwrap();
        assert_eq!(bad.reason, "400 invalid email");
        assert_eq!((bad.kind.as_str(), bad.event.as_deref(), bad.position), ("track", Some("E"), s.at(1)));
        assert!(bad.payload.contains(r#""messageId":"bad""#));
        let flaky = dead.iter().find(|d| d.message_id == "flaky").unwrap();
        assert!(
            flaky.reason.starts_with("gave up after") && flaky.reason.ends_with("503 unavailable"),
            "{}",
            flaky.reason
        );
        assert!(flaky.attempts.len() >= 3, "every attempt is kept: {:?}", flaky.attempts);
        assert!(flaky.attempts.iter().all(|a| a.error == "503 unavailable" && a.at.ends_with('Z')));
        // Filters.
        let by_error =
            s.dead_letters.list(&Filter { error: Some("invalid email".into()), ..Filter::default() }).unwrap();
        assert_eq!(by_error.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>(), ["bad"]);
        let by_attempt_error = s.dead_letters.list(&Filter { error: Some("503".into()), ..Filter::default() }).unwrap();
        assert_eq!(by_attempt_error.len(), 1);
        assert!(
            s.dead_letters.list(&Filter { error: Some("%".into()), ..Filter::default() }).unwrap().is_empty(),
            "like patterns are escaped"
        );
        assert!(s.dead_letters.list(&Filter { event: Some("Other".into()), ..Filter::default() }).unwrap().is_empty());
        assert_eq!(s.dead_letters.counts().unwrap(), [("hook".to_owned(), 2)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_route_by_destination_name_and_warehouses_ignore_them() {
    for backend in BOTH {
        let s = setup(backend).await;
        let cases = [
            ("all-off", r#"{"All": false}"#),
            ("own-on", r#"{"All": false, "Mixpanel": true}"#),
            ("own-off", r#"{"Mixpanel": false}"#),
            ("options", r#"{"Mixpanel": {"api_secret": "x"}}"#),
            ("default", "{}"),
            ("other-case", r#"{"mixpanel": false}"#),
        ];
        let records = cases
            .iter()
            .map(|(id, integrations)| Record {
                key: None,
                payload: stored(id, "E", integrations, "2026-11-28T10:00:00.000Z"),
            })
            .collect();
        s.log.append(records).await.unwrap();
        let mixpanel = Arc::new(Scripted::accepting());
        let warehouse = Arc::new(Scripted::accepting().ignoring_integrations());
        let a = start(&s, config("Mixpanel"), mixpanel.clone()).await;
        let b = start(&s, config("warehouse"), warehouse.clone()).await;
        until("routing done", || {
            a.status.position.load(std::sync::atomic::Ordering::Relaxed) == s.at(6)
                && b.status.position.load(std::sync::atomic::Ordering::Relaxed) == s.at(6)
        })
        .await;
        assert_eq!(a.status.filtered.load(std::sync::atomic::Ordering::Relaxed), 2);
        a.stop().await;
        b.stop().await;
        assert_eq!(mixpanel.sent_ids(), ["own-on", "options", "default", "other-case"]);
        assert_eq!(warehouse.sent_ids().len(), 6);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_slow_another() {
    for backend in BOTH {
        const N: usize = 20_000;
        // Alone first, then beside a destination that fails every event, hot (1 ms backoff).
        let mut rates = Vec::new();
        for with_failing in [false, true] {
            let s = setup(backend).await;
            let healthy = Arc::new(Scripted::accepting());
            let failing = Arc::new(Scripted::new(|_, _| Outcome::retry("500 internal server error")));
            let failing_worker = if with_failing {
                let c = WorkerConfig {
                    backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(1) },
                    ..config("failing")
                };
                Some(start(&s, c, failing.clone()).await)
            } else {
                None
            };
            let ok = start(&s, WorkerConfig { batch_events: 1000, ..config("healthy") }, healthy.clone()).await;
            let began = Instant::now();
            for chunk in ids("m", N).chunks(500) {
                append(s.log.as_ref(), chunk.iter().cloned()).await;
            }
            until("healthy delivered everything", || count(&ok.status) == N as u64).await;
            rates.push(N as f64 / began.elapsed().as_secs_f64());
            if let Some(failing_worker) = failing_worker {
                assert_eq!(count(&failing_worker.status), 0);
                assert!(failing.batches().len() > 1, "the failing destination kept being retried");
                assert_eq!(s.settled("failing").await, s.at(0), "and never moved on");
                failing_worker.stop().await;
            }
            ok.stop().await;
            assert_eq!(healthy.sent_ids().len(), N);
            assert_eq!(s.log.end().await.unwrap(), s.at(N as u64), "ingestion went on");
        }
        eprintln!("healthy destination: {:.0} events/s alone, {:.0} beside a failing one", rates[0], rates[1]);
        // Generous: a shared 2-core machine is noisy; blocking would show as a collapse.
        assert!(rates[1] > rates[0] * 0.25, "{rates:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_retries_leaves_the_cursor_and_the_batch_comes_again() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 10)).await;
        let failing = Arc::new(Scripted::new(|_, _| Outcome::retry("503")));
        let running = start(&s, config("hook"), failing.clone()).await;
        until("first attempt", || !failing.batches().is_empty()).await;
        running.stop().await;
        assert_eq!(s.settled("hook").await, s.at(0));
        let accepting = Arc::new(Scripted::accepting());
        let running = start(&s, config("hook"), accepting.clone()).await;
        until("redelivered", || count(&running.status) == 10).await;
        running.stop().await;
        assert_eq!(accepting.sent_ids(), ids("m", 10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_asking_for_stable_batches_gets_the_same_batch_after_a_stop() {
    for backend in BOTH {
        let s = setup(backend).await;
        if backend == Backend::JetStream {
            // A consumer shared by many workers cannot promise it: refused, not ignored.
            let files = Arc::new(Scripted::accepting().with_stable_batches());
            let refused = Worker::open(config("files"), s.log.as_ref(), files, s.dead_letters.clone()).await;
            let error = refused.err().expect("stable batches are refused on a shared consumer").to_string();
            assert!(error.contains("cannot hand out the same batches"), "{error}");
            continue;
        }
        append(s.log.as_ref(), ids("m", 150)).await;
        let failing = Arc::new(Scripted::new(|_, _| Outcome::retry("disk full")).with_stable_batches());
        let running = start(&s, config("files"), failing.clone()).await;
        until("first attempt", || !failing.batches().is_empty()).await;
        running.stop().await;
        assert_eq!(failing.batches()[0].len(), 100);
        // More events arrive, and the batch size grows: the first batch is still 0..100.
        append(s.log.as_ref(), ids("n", 50)).await;
        let files = Arc::new(Scripted::accepting().with_stable_batches());
        let running = start(&s, WorkerConfig { batch_events: 1000, ..config("files") }, files.clone()).await;
        until("all delivered", || count(&running.status) == 200).await;
        running.stop().await;
        let sizes: Vec<usize> = files.batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100]);
        assert_eq!(files.batches()[0].iter().map(|e| e.message_id.clone()).collect::<Vec<_>>(), ids("m", 100));
        // A destination without the need is not held to it.
        let plain = Arc::new(Scripted::accepting());
        let running = start(&s, WorkerConfig { batch_events: 1000, ..config("plain") }, plain.clone()).await;
        until("plain delivered", || count(&running.status) == 200).await;
        running.stop().await;
        assert_eq!(plain.batches().iter().map(Vec::len).collect::<Vec<_>>(), [200]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_send_finishes_it_and_commits() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 10)).await;
        let slow = Arc::new(Scripted::accepting().with_delay(Duration::from_millis(500)));
        let running = start(&s, config("hook"), slow.clone()).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        running.stop().await;
        assert_eq!(slow.sent_ids(), ids("m", 10));
        assert_eq!(s.settled("hook").await, s.at(10), "the finished batch is settled");
    }
}

/// With a backlog the next batch is leased and decoded while one is sent (on a log of the
/// worker's own); a stop then finishes the batch in hand and gives the next one back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_prepared_ahead_is_given_back_at_a_stop() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 450)).await;
        let slow = Arc::new(Scripted::accepting().with_delay(Duration::from_millis(400)));
        let running = start(&s, config("hook"), slow.clone()).await;
        // A send is counted when it ends: the next one is under way, and (embedded) the
        // batch after it is prepared.
        until("the first send", || !slow.batches().is_empty()).await;
        running.stop().await;
        let sent = slow.sent_ids();
        assert!(sent.len().is_multiple_of(100) && sent.len() < 450, "whole batches, not all: {}", sent.len());
        assert_eq!(sent, ids("m", sent.len()), "in order, none skipped");
        assert_eq!(s.settled("hook").await, s.at(sent.len() as u64));
        let accepting = Arc::new(Scripted::accepting());
        let running = start(&s, config("hook"), accepting.clone()).await;
        until("the rest", || count(&running.status) == (450 - sent.len()) as u64).await;
        running.stop().await;
        assert_eq!(accepting.sent_ids(), ids("m", 450)[sent.len()..], "the rest, once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_starts_where_configured() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("old", 3)).await;
        let from_end = Arc::new(Scripted::accepting());
        let from_start = Arc::new(Scripted::accepting());
        let a = start(&s, WorkerConfig { start: Start::End, ..config("end") }, from_end.clone()).await;
        let b = start(&s, config("beginning"), from_start.clone()).await;
        append(s.log.as_ref(), ids("new", 2)).await;
        until("delivered", || count(&a.status) == 2 && count(&b.status) == 5).await;
        a.stop().await;
        b.stop().await;
        assert_eq!(from_end.sent_ids(), ids("new", 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_worker_fixes_its_start_before_it_runs() {
    for backend in BOTH {
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("old", 3)).await;
        let destination = Arc::new(Scripted::accepting());
        let config = WorkerConfig { start: Start::End, ..config("end") };
        let worker = Worker::open(config, s.log.as_ref(), destination.clone(), s.dead_letters.clone()).await.unwrap();
        assert_eq!(s.settled("end").await, s.at(3));
        // Stored after the worker is opened and before its task runs: delivered, not skipped.
        append(s.log.as_ref(), ids("early", 2)).await;
        let status = worker.status();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(worker.run(stopped));
        until("delivered", || count(&status) == 2).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(destination.sent_ids(), ids("early", 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_dead_lettered_not_lost() {
    for backend in BOTH {
        let s = setup(backend).await;
        s.log.append(vec![Record { key: None, payload: b"not an event".to_vec() }]).await.unwrap();
        append(s.log.as_ref(), ids("m", 1)).await;
        let destination = Arc::new(Scripted::accepting());
        let running = start(&s, config("hook"), destination.clone()).await;
        until("delivered", || count(&running.status) == 1).await;
        running.stop().await;
        let dead = s.dead_letters.list(&Filter::default()).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].payload.as_str(), dead[0].position), ("not an event", s.at(0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_sends_dead_letters_again_by_filter() {
    for backend in BOTH {
        let s = setup(backend).await;
        let records = [("a", "Signed Up"), ("b", "Order Completed"), ("c", "Order Completed")]
            .iter()
            .map(|(id, name)| Record { key: None, payload: stored(id, name, "{}", "2026-11-28T10:00:00.000Z") })
            .collect();
        s.log.append(records).await.unwrap();
        let refusing = Arc::new(Scripted::new(|_, _| Outcome::reject("401 bad api key")));
        let running = start(&s, config("hook"), refusing).await;
        until("dead", || running.status.dead_lettered.load(std::sync::atomic::Ordering::Relaxed) == 3).await;
        running.stop().await;

        let fixed = Arc::new(Scripted::new(|event, _| {
            if event.message_id == "c" { Outcome::retry("still down") } else { Outcome::Delivered }
        }));
        let destinations = |name: &str| (name == "hook").then(|| fixed.clone() as Arc<dyn Destination>);
        let filter = Filter { event: Some("Order Completed".into()), ..Filter::default() };
        let mut seen = Vec::new();
        let report = ferry_delivery::redrive(&s.dead_letters, &filter, &destinations, 100, &mut |p| {
            seen.push(p.clone());
            true
        })
        .await
        .unwrap();
        assert_eq!((report.total, report.delivered, report.failed), (2, 1, 1));
        assert_eq!(fixed.sent_ids(), ["b", "c"], "only the filtered ones");
        assert!(!seen.is_empty(), "progress is reported");
        let left: Vec<String> =
            s.dead_letters.list(&Filter::default()).unwrap().into_iter().map(|d| d.message_id).collect();
        assert_eq!(left, ["a", "c"]);
        let c = s
            .dead_letters
            .list(&Filter { event: Some("Order Completed".into()), ..Filter::default() })
            .unwrap()
            .remove(0);
        assert_eq!(c.redrive_attempts, 1);
        assert_eq!(c.attempts.last().unwrap().error, "redrive: still down");
        let all = s.dead_letters.list(&Filter { include_redriven: true, ..Filter::default() }).unwrap();
        assert!(all.iter().find(|d| d.message_id == "b").unwrap().redriven_at.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_a_time_range_from_a_read_only_view() {
    for backend in BOTH {
        let s = setup(backend).await;
        let records = (0..10)
            .map(|i| Record {
                key: None,
                payload: stored(&format!("m{i}"), "E", "{}", &format!("2026-11-28T10:0{i}:00.000Z")),
            })
            .collect();
        s.log.append(records).await.unwrap();
        let view = s.reader().await;
        let destination = Scripted::accepting();
        let request = ReplayRequest {
            destination: "hook".into(),
            since: "2026-11-28T10:03:00Z".parse().unwrap(),
            until: Some("2026-11-28T10:06:00Z".parse().unwrap()),
            batch_events: 2,
            retries: 2,
            backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(5) },
        };
        let mut updates = 0;
        let report = ferry_delivery::replay(view.as_ref(), &destination, &request, &mut |_| {
            updates += 1;
            true
        })
        .await
        .unwrap();
        assert_eq!(destination.sent_ids(), ["m3", "m4", "m5"]);
        assert_eq!((report.delivered, report.failed), (3, 0));
        assert!(updates >= 2);
    }
}

#[test]
fn dead_letter_format_v1_matches_its_golden_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetters::open(&dir.path().join("dead-letters.db")).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dead-letters-v1.sql");
    let sql = store.schema_sql().unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &sql).unwrap();
    }
    assert_eq!(sql, std::fs::read_to_string(&golden).unwrap(), "the dead letter format changed: bump FORMAT_VERSION");
    drop(store);
    // A store from a newer ferry is refused, not misread.
    let conn = rusqlite::Connection::open(dir.path().join("dead-letters.db")).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);
    let error = DeadLetters::open(&dir.path().join("dead-letters.db")).err().unwrap();
    assert!(error.to_string().contains("format version 2"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_with_the_batches_and_hold_every_event_once() {
    for backend in [Backend::Embedded] {
        use ferry_destinations::files::{Files, FilesConfig};
        let s = setup(backend).await;
        append(s.log.as_ref(), ids("m", 95)).await;
        let root = s.dir.path().join("lake");
        let files = Arc::new(Files::open(FilesConfig { root: root.clone(), level: 6 }).unwrap());
        let running = start(&s, WorkerConfig { batch_events: 10, ..config("lake") }, files).await;
        until_settled(&s, "lake", s.at(95)).await;
        running.stop().await;
        let dir = root.join("source=web/type=track/date=2026-11-28/hour=10");
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names.len(), 10, "one file per batch of 10: {names:?}");
        let mut seen = Vec::new();
        for name in names {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
            for line in text.lines() {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                seen.push(json["messageId"].as_str().unwrap().to_owned());
            }
        }
        seen.sort();
        let mut expected = ids("m", 95);
        expected.sort();
        assert_eq!(seen, expected);
    }
}

/// Every stored event of the real-client captures, as log records.
fn real_client_records() -> Vec<Record> {
    let events = ferry_destinations::testing::real_client_events();
    events.iter().map(|event| Record { key: None, payload: event.json().as_bytes().to_vec() }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_events_reach_each_tool_as_integrations_say() {
    for backend in BOTH {
        use ferry_destinations::amplitude::{Amplitude, AmplitudeConfig};
        use ferry_destinations::ga4::{Ga4, Ga4Config};
        use ferry_destinations::mixpanel::{Mixpanel, MixpanelConfig};
        use ferry_destinations::standins;
        let s = setup(backend).await;
        let records = real_client_records();
        let total = records.len() as u64;
        s.log.append(records).await.unwrap();
        let (mp, amp, ga) =
            (standins::mixpanel("tok").await, standins::amplitude("key").await, standins::ga4("G-1", "sec").await);
        let timeout = Duration::from_secs(5);
        let mixpanel = Mixpanel::new(MixpanelConfig {
            api_url: mp.url.clone(),
            project_token: "tok".into(),
            service_account: None,
            timeout,
        })
        .unwrap();
        let amplitude =
            Amplitude::new(AmplitudeConfig { api_url: amp.url.clone(), api_key: "key".into(), timeout }).unwrap();
        let ga4 = Ga4::new(Ga4Config {
            api_url: ga.url.clone(),
            measurement_id: "G-1".into(),
            api_secret: "sec".into(),
            timeout,
        })
        .unwrap();
        let warehouse = Arc::new(Scripted::accepting().ignoring_integrations());
        let workers = [
            start(&s, config("Mixpanel"), Arc::new(mixpanel)).await,
            start(&s, config("Amplitude"), Arc::new(amplitude)).await,
            start(&s, config("Google Analytics 4"), Arc::new(ga4)).await,
            start(&s, config("warehouse"), warehouse.clone()).await,
        ];
        until("every destination through the log", || {
            workers.iter().all(|w| w.status.position.load(std::sync::atomic::Ordering::Relaxed) == s.at(total))
        })
        .await;
        for w in workers {
            w.stop().await;
        }
        // "Mixpanel Only" carries {"All": false, "Mixpanel": true}.
        let mixpanel_only =
            |events: &[serde_json::Value], key: &str| events.iter().filter(|e| e[key] == "Mixpanel Only").count();
        assert!(mixpanel_only(&mp.accepted("/import"), "event") > 0);
        assert_eq!(mixpanel_only(&amp.accepted("/2/httpapi"), "event_type"), 0);
        assert_eq!(ga.accepted("/mp/collect").iter().filter(|e| e["name"] == "mixpanel_only").count(), 0);
        assert!(warehouse.sent_ids().len() as u64 == total, "the warehouse ignores integrations");
        // The EUR revenue event: a Mixpanel transaction, Amplitude revenue.
        assert!(mp.accepted("/engage").iter().any(|u| u["$append"]["$transactions"]["$amount"] == 19.99));
        assert!(
            amp.accepted("/2/httpapi").iter().any(|e| e["event_type"] == "Order Completed" && e["revenue"] == 19.99)
        );
        // GA4 rejects the purchases without an order id: they are dead letters, not lost.
        let dead = s
            .dead_letters
            .list(&Filter { destination: Some("Google Analytics 4".into()), ..Filter::default() })
            .unwrap();
        assert!(
            !dead.is_empty()
                && dead
                    .iter()
                    .all(|d| d.event.as_deref() == Some("Order Completed") && d.reason.contains("transaction_id"))
        );
        assert!(ga.problems().is_empty(), "{:?}", ga.problems());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_hears_what_became_of_each_event() {
    for backend in BOTH {
        let s = setup(backend).await;
        let records = [("ok", "{}"), ("bad", "{}"), ("flaky", "{}"), ("off", r#"{"Mixpanel": false}"#)]
            .iter()
            .map(|(id, integrations)| Record {
                key: None,
                payload: stored(id, "E", integrations, "2026-11-28T10:00:00.000Z"),
            })
            .collect();
        s.log.append(records).await.unwrap();
        let destination = Arc::new(Scripted::new(|event, attempt| match (event.message_id.as_str(), attempt) {
            ("bad", _) => Outcome::reject("400 invalid email"),
            ("flaky", 0) => Outcome::retry("503 unavailable"),
            _ => Outcome::Delivered,
        }));
        let tap = Arc::new(ferry_tap::Tap::new());
        let (_, mut feed) = tap.subscribe();
        let worker = Worker::open(config("Mixpanel"), s.log.as_ref(), destination, s.dead_letters.clone())
            .await
            .unwrap()
            .with_tap(tap.clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(worker.run(stopped));
        let mut seen: Vec<(String, String, Option<String>)> = Vec::new();
        while !seen.iter().any(|(outcome, id, _)| outcome == "delivered" && id == "flaky") {
            let observation =
                tokio::time::timeout(Duration::from_secs(30), feed.recv()).await.expect("observations").unwrap();
            let ferry_tap::Observation::Delivery(d) = &*observation else { panic!("not a delivery: {observation:?}") };
            assert_eq!(d.destination, "Mixpanel");
            seen.extend(d.message_ids.iter().map(|id| (d.outcome.clone(), id.clone(), d.error.clone())));
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        let expected = [
            ("filtered", "off", None),
            ("delivered", "ok", None),
            ("dead_lettered", "bad", Some("400 invalid email")),
            ("retrying", "flaky", Some("503 unavailable")),
            ("delivered", "flaky", None),
        ];
        let seen: Vec<(&str, &str, Option<&str>)> =
            seen.iter().map(|(o, id, e)| (o.as_str(), id.as_str(), e.as_deref())).collect();
        assert_eq!(seen, expected);
    }
}
