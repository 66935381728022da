//! ferry-nats against real nats-server processes: publish with dedupe ids, the stream
//! check, shared consumers with leases, a full stream, an outage, and reads by sequence.

use std::time::{Duration, Instant};

use ferry_delivery::SharedFeed;
use ferry_delivery::replay::Records;
use ferry_nats::testing::{NatsNode, server_binary};
use ferry_nats::{Cluster, ClusterError, NatsConfig, PublishFailure};

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

fn events(ids: &[&str]) -> Vec<(String, Vec<u8>)> {
    ids.iter().map(|id| (id.to_string(), serde_json::json!({ "messageId": id }).to_string().into_bytes())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_deduplicated_by_message_id_and_read_back_by_sequence() {
    let Some(binary) = server_binary("publish and dedupe") else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::single(&binary, dir.path());
    let c = cluster(config(&node)).await;
    let duplicate = c.publish(events(&["a", "b", "a"]), vec![b"{\"bad\":1}".to_vec()]).await.unwrap();
    assert_eq!(duplicate, [false, false, true], "the second `a` in one request is a duplicate");
    let duplicate = c.publish(events(&["b", "c", "id with spaces\n"]), Vec::new()).await.unwrap();
    assert_eq!(duplicate, [true, false, false], "`b` again, from a retry");
    let m = c.metrics();
    assert_eq!((m.published.get(), m.duplicates.get(), m.quarantined.get()), (4, 2, 1));

    // Events and quarantine are read apart, by stream sequence.
    let records = c.events().await.unwrap();
    let all = records.read_async(0, 100).await.unwrap();
    let ids: Vec<String> = all
        .iter()
        .map(|(_, r)| serde_json::from_slice::<serde_json::Value>(r).unwrap()["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "id with spaces\n"]);
    let positions: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, [1, 2, 4, 5], "sequence 3 is the quarantined item");
    assert_eq!(records.end(), 6);
    // One at a time, skipping the other subject, as replay's search reads (blocking).
    assert_eq!(Records::read(&records, 3, 1).unwrap()[0].0, 4);
    assert!(Records::read(&records, 6, 1).unwrap().is_empty());
    // A run continued where the last one stopped, and one started elsewhere.
    assert_eq!(records.read_async(1, 2).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(records.read_async(3, 2).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(records.read_async(2, 1).await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
    let quarantine = c.quarantine().await.unwrap();
    let items = quarantine.read_async(0, 10).await.unwrap();
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
    c.publish(events(&refs), Vec::new()).await.unwrap();
    // Two workers of one destination: each gets its own part, nothing twice.
    let a = c.consumer("warehouse", true).await.unwrap();
    let b = c.consumer("warehouse", true).await.unwrap();
    let first = a.next_batch(4, 1 << 20, Duration::ZERO).await.unwrap().unwrap();
    let second = b.next_batch(4, 1 << 20, Duration::ZERO).await.unwrap().unwrap();
    let seqs = |l: &ferry_delivery::Leased| l.records.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(seqs(&first), [1, 2, 3, 4]);
    assert_eq!(seqs(&second), [5, 6, 7, 8]);
    // `first` is worked on past the 2 s lease, extended; `second` is given back (and what
    // comes again is extended too).
    second.lease.release().await.unwrap();
    let again = b.next_batch(10, 1 << 20, Duration::from_millis(50)).await.unwrap().unwrap();
    let mut got = seqs(&again);
    got.sort_unstable();
    assert_eq!(got, [5, 6, 7, 8, 9, 10], "what was given back comes again, with the rest");
    for _ in 0..6 {
        tokio::time::sleep(first.lease.extend_every()).await;
        first.lease.extend().await.unwrap();
        again.lease.extend().await.unwrap();
    }
    first.lease.ack().await.unwrap();
    again.lease.ack().await.unwrap();
    // Nothing is left: the extended lease was never given to anyone else.
    let started = Instant::now();
    let none = tokio::time::timeout(Duration::from_secs(8), a.next_batch(10, 1 << 20, Duration::ZERO)).await.unwrap();
    assert!(none.unwrap().is_none(), "nothing is redelivered after acks");
    assert!(started.elapsed() >= Duration::from_secs(4), "the idle poll waited");
    // A lease that is neither extended nor settled runs out: the batch goes to another worker.
    c.publish(events(&["late"]), Vec::new()).await.unwrap();
    let taken = a.next_batch(10, 1 << 20, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&taken), [11]);
    let redelivered = b.next_batch(10, 1 << 20, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&redelivered), [11], "the abandoned batch came to the other worker after ack_wait");
    redelivered.lease.ack().await.unwrap();
    // A second destination has its own consumer, from the end when asked.
    let other = c.consumer("hook", false).await.unwrap();
    c.publish(events(&["new"]), Vec::new()).await.unwrap();
    let fresh = other.next_batch(10, 1 << 20, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(seqs(&fresh), [12]);
    other.refresh_lag().await.unwrap();
    assert_eq!(other.lag().leased.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(other.lag().pending.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_says_so_and_an_outage_fails_fast_then_recovers() {
    let Some(binary) = server_binary("full stream and outage") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NatsNode::single(&binary, dir.path());
    let mut small = config(&node);
    small.max_bytes = 4096;
    let c = cluster(small).await;
    let big = vec![(String::from("x"), vec![b'x'; 3000]), (String::from("y"), vec![b'y'; 3000])];
    match c.publish(big, Vec::new()).await {
        Err(PublishFailure::Full(reason)) => assert!(reason.contains("maximum"), "{reason}"),
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
    let refused = c.publish(events(&["during"]), Vec::new()).await;
    assert!(matches!(refused, Err(PublishFailure::Unavailable(_))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "refused at once: {:?}", started.elapsed());
    node.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.publish(events(&["after"]), Vec::new()).await {
            Ok(duplicate) => {
                assert_eq!(duplicate, [false]);
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "did not recover: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
