//! ferry-nats against real nats-server processes, through the log contract: appends with
//! dedupe ids, the stream check, shared consumers with leases, a full stream, an outage,
//! and reads by sequence.

use std::time::{Duration, Instant};

use ferry_log_contract::{
    AppendError, Appended, BatchLimits, Consumer, ConsumerOptions, Leased, Log, Reader, Record, Start,
};
use ferry_nats::testing::{NatsNode, server_binary};
use ferry_nats::{Cluster, ClusterError, NatsConfig};

fn config(node: &NatsNode) -> NatsConfig {
    let mut config = NatsConfig::new(vec![node.url()]);
    config.replicas = 1;
    config.ack_wait = Duration::from_secs(2);
    config.publish_timeout = Duration::from_secs(2);
    config
}

async fn cluster(config: NatsConfig) -> Cluster {
    let cluster = Cluster::connect(config).await.expect("connect");
    cluster.ensure_stream().await.expect("stream");
    cluster
}

fn events(ids: &[&str]) -> Vec<Record> {
    ids.iter()
        .map(|id| Record {
            key: Some(id.as_bytes().to_vec()),
            payload: serde_json::json!({ "messageId": id }).to_string().into_bytes(),
        })
        .collect()
}

/// A request's appends, as a collector makes them: the events, then the quarantined items;
/// for each event whether it was a duplicate.
async fn publish(c: &Cluster, events: Vec<Record>, quarantine: Vec<Vec<u8>>) -> Result<Vec<bool>, AppendError> {
    let appended = c.events().await.unwrap().append(events).await?;
    let quarantine = quarantine.into_iter().map(|payload| Record { key: None, payload }).collect();
    c.quarantine().await.unwrap().append(quarantine).await?;
    Ok(appended.into_iter().map(|a| a == Appended::Duplicate).collect())
}

/// The shared consumer of `destination`, from the beginning or from the end.
async fn consumer(c: &Cluster, destination: &str, from_beginning: bool) -> std::sync::Arc<dyn Consumer> {
    let start = if from_beginning { Start::Beginning } else { Start::End };
    c.events().await.unwrap().consumer(destination, ConsumerOptions { start, stable_batches: false }).await.unwrap()
}

/// The next batch of at most `max` events, waiting `linger` for more.
async fn next_batch(consumer: &dyn Consumer, max: usize, linger: Duration) -> std::io::Result<Option<Leased>> {
    consumer.lease(BatchLimits { records: max, bytes: 1 << 20, linger }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_deduplicated_by_message_id_and_read_back_by_sequence() {
    let Some(binary) = server_binary("publish and dedupe") else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, dir.path());
    let c = cluster(config(&node)).await;
    let duplicate = publish(&c, events(&["a", "b", "a"]), vec![b"{\"bad\":1}".to_vec()]).await.unwrap();
    assert_eq!(duplicate, [false, false, true], "the second `a` in one request is a duplicate");
    let duplicate = publish(&c, events(&["b", "c", "id with spaces\n"]), Vec::new()).await.unwrap();
    assert_eq!(duplicate, [true, false, false], "`b` again, from a retry");
    let m = c.metrics();
    assert_eq!((m.published.get(), m.duplicates.get(), m.quarantined.get()), (4, 2, 1));

    // Events and quarantine are read apart, by stream sequence.
    let records = c.events().await.unwrap();
    let all = records.read(0, 100).await.unwrap();
    let ids: Vec<String> = all
        .iter()
        .map(|(_, r)| serde_json::from_slice::<serde_json::Value>(r).unwrap()["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "id with spaces\n"]);
    let positions: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, [1, 2, 4, 5], "sequence 3 is the quarantined item");
    assert_eq!(records.end().await.unwrap(), 6);
    // One at a time, skipping the other subject, as replay's search reads.
    assert_eq!(records.read(3, 1).await.unwrap()[0].0, 4);
    assert!(records.read(6, 1).await.unwrap().is_empty());
    // A run continued where the last one stopped, and one started elsewhere.
    assert_eq!(records.read(1, 2).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(records.read(3, 2).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(records.read(2, 1).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
    // The server removed the reader's consumer meanwhile (it does after a minute unused):
    // the next page still comes, from a new one.
    assert_eq!(records.read(1, 4).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 4, 5]);
    let stream =
        async_nats::jetstream::new(async_nats::connect(node.url()).await.unwrap()).get_stream("FERRY").await.unwrap();
    let names: Vec<String> = futures_util::StreamExt::collect::<Vec<_>>(stream.consumer_names())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(!names.is_empty(), "the reader's consumer exists");
    for name in names {
        stream.delete_consumer(&name).await.unwrap();
    }
    publish(&c, events(&["d", "e"]), Vec::new()).await.unwrap();
    assert_eq!(records.read(6, 2).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [6, 7]);
    let quarantine = c.quarantine().await.unwrap();
    let items = quarantine.read(0, 10).await.unwrap();
    assert_eq!(items, [(3, b"{\"bad\":1}".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_stream_is_refused_with_every_problem() {
    let Some(binary) = server_binary("incompatible stream") else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, dir.path());
    let client = async_nats::connect(node.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FERRY".into(),
        subjects: vec!["ferry.events".into()],
        duplicate_window: Duration::from_secs(60),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = Cluster::connect(config(&node)).await.unwrap();
    let error = c.ensure_stream().await.unwrap_err();
    let ClusterError::Incompatible { problems, .. } = &error else { panic!("{error}") };
    assert_eq!(problems.len(), 3, "{problems:?}");
    let text = error.to_string();
    for want in ["ferry.quarantine", "discard policy is old", "duplicate window is 60 s"] {
        assert!(text.contains(want), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_a_consumer_and_leases_hold_until_settled() {
    let Some(binary) = server_binary("shared consumer") else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, dir.path());
    let c = cluster(config(&node)).await;
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    publish(&c, events(&refs), Vec::new()).await.unwrap();
    // Two workers of one destination: each gets its own part, nothing twice.
    let a = consumer(&c, "warehouse", true).await;
    let b = consumer(&c, "warehouse", true).await;
    let first = next_batch(a.as_ref(), 4, Duration::ZERO).await.unwrap().unwrap();
    let second = next_batch(b.as_ref(), 4, Duration::ZERO).await.unwrap().unwrap();
    let seqs = |l: &Leased| l.records.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(seqs(&first), [1, 2, 3, 4]);
    assert_eq!(seqs(&second), [5, 6, 7, 8]);
    // `first` is worked on past the 2 s lease, extended; `second` is given back (and what
    // comes again is extended too).
    second.lease.release().await.unwrap();
    let again = next_batch(b.as_ref(), 10, Duration::from_millis(50)).await.unwrap().unwrap();
    let mut got = seqs(&again);
    got.sort_unstable();
    assert_eq!(got, [5, 6, 7, 8, 9, 10], "what was given back comes again, with the rest");
    for _ in 0..6 {
        tokio::time::sleep(first.lease.extend_every().unwrap()).await;
        first.lease.extend().await.unwrap();
        again.lease.extend().await.unwrap();
    }
    first.lease.settle().await.unwrap();
    again.lease.settle().await.unwrap();
    // Nothing is left: the extended lease was never given to anyone else.
    let started = Instant::now();
    let none = tokio::time::timeout(Duration::from_secs(8), next_batch(a.as_ref(), 10, Duration::ZERO)).await.unwrap();
    assert!(none.unwrap().is_none(), "nothing is redelivered after acks");
    assert!(started.elapsed() >= Duration::from_secs(4), "the idle poll waited");
    // A lease that is neither extended nor settled runs out: the batch goes to another worker.
    publish(&c, events(&["late"]), Vec::new()).await.unwrap();
    let taken = next_batch(a.as_ref(), 10, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&taken), [11]);
    let redelivered = next_batch(b.as_ref(), 10, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&redelivered), [11], "the abandoned batch came to the other worker after ack_wait");
    redelivered.lease.settle().await.unwrap();
    // A second destination has its own consumer, from the end when asked.
    let other = consumer(&c, "hook", false).await;
    publish(&c, events(&["new"]), Vec::new()).await.unwrap();
    let fresh = next_batch(other.as_ref(), 10, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&fresh), [12]);
    let backlog = other.refresh().await.unwrap();
    assert_eq!(backlog.records, 1, "one leased, none pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_says_so_and_an_outage_fails_fast_then_recovers() {
    let Some(binary) = server_binary("full stream and outage") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NatsNode::single(&binary, dir.path());
    let mut small = config(&node);
    small.max_bytes = 4096;
    let c = cluster(small).await;
    let big = vec![
        Record { key: Some(b"x".to_vec()), payload: vec![b'x'; 3000] },
        Record { key: Some(b"y".to_vec()), payload: vec![b'y'; 3000] },
    ];
    match publish(&c, big, Vec::new()).await {
        Err(AppendError::Full { reason, .. }) => assert!(reason.contains("maximum"), "{reason}"),
        other => panic!("expected a full stream, got {other:?}"),
    }
    assert_eq!(c.metrics().full.get(), 1);

    node.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.connected() {
        assert!(Instant::now() < deadline, "the client did not notice the server is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let refused = publish(&c, events(&["during"]), Vec::new()).await;
    assert!(matches!(refused, Err(AppendError::Unavailable { .. })), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "refused at once: {:?}", started.elapsed());
    node.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match publish(&c, events(&["after"]), Vec::new()).await {
            Ok(duplicate) => {
                assert_eq!(duplicate, [false]);
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "did not recover: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
