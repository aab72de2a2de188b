//! The visibility timeout: a live worker keeps what it holds however long it works; a dead
//! worker's messages come back after the timeout, to any consumer; entries a Python worker
//! left behind are restored the way kombu restores them. Each test uses its own key prefix
//! (kombu's `global_keyprefix`) in database 11, so its `unacked` bookkeeping is its own.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::{HashesInterface, ListInterface, SortedSetsInterface};
use fred::types::Value;
use queue_core::{Broker, ConsumeOptions, Publish};
use serde_json::{Value as Json, json};

use common::{id_of, message, unique};

const DB: u8 = 11;
const CHILD_URL: &str = "QUEUE_REDIS_TEST_CHILD_URL";
const CHILD_QUEUE: &str = "QUEUE_REDIS_TEST_CHILD_QUEUE";
const CHILD_WAITING_QUEUE: &str = "QUEUE_REDIS_TEST_CHILD_WAITING_QUEUE";

/// Run as a child process by `a_dead_workers_message_comes_back_after_the_timeout`: takes a
/// message and dies without acking or closing anything. Does nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_takes_a_message_and_dies() {
    let (Ok(url), Ok(queue)) = (std::env::var(CHILD_URL), std::env::var(CHILD_QUEUE)) else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let consumer = broker.consume(ConsumeOptions::new([queue])).await.unwrap();
    let taken = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(taken.len(), 1);
    println!("child took {}", id_of(&taken[0]));
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_message_comes_back_after_the_timeout() {
    let prefix = unique("dead");
    let query = format!("visibility_timeout=1&global_keyprefix={prefix}:");
    let Some(url) = common::redis_url(DB, &query) else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let queue = unique("q");
    broker
        .publish(vec![Publish::new(&queue, message("orphan", 0))])
        .await
        .unwrap();

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_takes_a_message_and_dies", "--nocapture"])
        .env(CHILD_URL, &url)
        .env(CHILD_QUEUE, &queue)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&child.stdout);
    assert!(
        output.contains("child took orphan"),
        "child output: {output}"
    );
    assert_eq!(
        broker.queue_length(&queue).await.unwrap().total,
        0,
        "the dead worker's message is unacked"
    );

    // Another consumer restores it once the timeout passed, marked redelivered.
    let started = Instant::now();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut again = Vec::new();
    while again.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the message did not come back"
        );
        again = consumer.fetch(1, Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(id_of(&again[0]), "orphan");
    assert!(again[0].redelivered);
    consumer.ack(&again[0]).await.unwrap();
    consumer.close().await.unwrap();
}

/// Run as a child process by `a_worker_killed_as_its_wait_ends_loses_nothing`: waits on an
/// empty queue, says so, and kills itself (SIGKILL) the moment the fetch returns what was
/// published meanwhile (abort: no ack, no close, no destructor, no write after it). Does
/// nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_waits_takes_and_is_killed() {
    let (Ok(url), Ok(queue)) = (std::env::var(CHILD_URL), std::env::var(CHILD_WAITING_QUEUE))
    else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let consumer = broker.consume(ConsumeOptions::new([queue])).await.unwrap();
    // An empty fetch first: the next one waits on queues known to be empty.
    assert!(consumer.fetch(1, Duration::ZERO).await.unwrap().is_empty());
    println!("child waiting");
    let taken = consumer.fetch(1, Duration::from_secs(10)).await.unwrap();
    // As `kill -9` as the task starts: nothing more leaves this process.
    if !taken.is_empty() {
        std::process::abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_as_its_wait_ends_loses_nothing() {
    use std::io::{BufRead, BufReader};
    let prefix = unique("killed");
    let query = format!("visibility_timeout=1&global_keyprefix={prefix}:");
    let Some(url) = common::redis_url(DB, &query) else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    // A queue per round: a later child's restore sweep may give an earlier round's message
    // back to its own queue, never to the queue the later child takes from.
    let queues: Vec<String> = (0..5).map(|_| unique("q")).collect();
    for (round, queue) in queues.iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_waits_takes_and_is_killed", "--nocapture"])
            .env(CHILD_URL, &url)
            .env(CHILD_WAITING_QUEUE, queue)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let waiting = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("child waiting"));
        assert!(waiting, "the child did not start waiting");
        let id = format!("taken-{round}");
        broker
            .publish(vec![Publish::new(queue, message(&id, 0))])
            .await
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child died having taken it: {status}"
        );
        // Taken, so not in the queue; but recorded as unacked as it left the list.
        assert_eq!(broker.queue_length(queue).await.unwrap().total, 0);
        let entries: Vec<String> = broker
            .client()
            .hvals(format!("{prefix}:unacked"))
            .await
            .unwrap();
        assert!(
            entries
                .iter()
                .any(|entry| entry.contains(&format!("\"root_id\":\"{id}\""))),
            "round {round}: the taken message is unacked: {entries:?}"
        );
    }
    // And every one comes back once its visibility timeout passed.
    let consumer = broker
        .consume(ConsumeOptions::new(queues.clone()))
        .await
        .unwrap();
    let started = Instant::now();
    let mut back = std::collections::BTreeSet::new();
    while back.len() < queues.len() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "back so far: {back:?}"
        );
        for delivery in consumer.fetch(10, Duration::from_secs(1)).await.unwrap() {
            assert!(delivery.redelivered);
            back.insert(id_of(&delivery));
            consumer.ack(&delivery).await.unwrap();
        }
    }
    let expected: std::collections::BTreeSet<String> = (0..queues.len())
        .map(|round| format!("taken-{round}"))
        .collect();
    assert_eq!(back, expected);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_writes_the_acks_sent_before_it() {
    let prefix = unique("acks");
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}:")).await else {
        return;
    };
    let queue = unique("q");
    let count = 2000;
    let messages = (0..count)
        .map(|index| Publish::new(&queue, message(&format!("m{index}"), 0)))
        .collect();
    broker.publish(messages).await.unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut taken = 0;
    while taken < count {
        let deliveries = consumer.fetch(500, Duration::from_secs(5)).await.unwrap();
        taken += deliveries.len();
        // Acks go out without waiting for the server (more than the write queue holds).
        for delivery in &deliveries {
            consumer.ack(delivery).await.unwrap();
        }
    }
    consumer.close().await.unwrap();
    // Written by the time close returns: nothing would come back after a crash now.
    let unacked: u64 = broker
        .client()
        .hlen(format!("{prefix}:unacked"))
        .await
        .unwrap();
    let index: u64 = broker
        .client()
        .zcard(format!("{prefix}:unacked_index"))
        .await
        .unwrap();
    assert_eq!((unacked, index), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_keeps_its_message_past_the_timeout() {
    let prefix = unique("live");
    let query = format!("visibility_timeout=2&global_keyprefix={prefix}:");
    let Some(broker) = common::broker(DB, &query).await else {
        return;
    };
    let queue = unique("q");
    broker
        .publish(vec![Publish::new(&queue, message("long", 0))])
        .await
        .unwrap();
    let holder = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let held = holder.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(held.len(), 1);

    // Three timeouts long (the holder renews every half second), another consumer, which
    // restores overdue messages, gets nothing.
    let other = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let stolen = other.fetch(1, Duration::from_millis(500)).await.unwrap();
        assert!(
            stolen.is_empty(),
            "a message held by a live worker was handed out again"
        );
    }
    holder.ack(&held[0]).await.unwrap();
    holder.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_by_a_python_worker_are_restored_as_kombu_does() {
    let prefix = unique("kombu");
    let query = format!("visibility_timeout=1&global_keyprefix={prefix}:");
    let Some(broker) = common::broker(DB, &query).await else {
        return;
    };
    let queue = unique("q");
    // What a kombu consumer that died leaves: the envelope as taken, with kombu priority 4
    // (our 5), under its tag, fetched long ago (float seconds, as kombu writes them).
    let tag = uuid::Uuid::new_v4().to_string();
    let mut envelope: Json =
        serde_json::from_slice(&queue_core::protocol::envelope::encode(&message("py", 5))).unwrap();
    envelope["properties"]["priority"] = json!(4);
    envelope["properties"]["delivery_tag"] = json!(tag);
    envelope["properties"]["delivery_info"] = json!({"exchange": "", "routing_key": queue});
    let client = broker.client();
    let value = json!([envelope, "", queue]).to_string();
    let _: Value = client
        .hset(format!("{prefix}:unacked"), (tag.as_str(), value))
        .await
        .unwrap();
    let _: Value = client
        .zadd(
            format!("{prefix}:unacked_index"),
            None,
            None,
            false,
            false,
            (1_000_000.5, tag.as_str()),
        )
        .await
        .unwrap();

    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let again = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.iter().map(id_of).collect::<Vec<_>>(), ["py"]);
    assert!(again[0].redelivered);
    assert_eq!(again[0].content.as_ref().unwrap().priority(), 5);
    consumer.close().await.unwrap();
    // Back in kombu's list for priority 4 (step 3), marked as kombu marks restored messages.
    let restored: Vec<String> = client
        .lrange(format!("{prefix}:{queue}\x06\x163"), 0, -1)
        .await
        .unwrap();
    assert_eq!(restored.len(), 1, "given back on close to the same list");
    let restored: Json = serde_json::from_str(&restored[0]).unwrap();
    assert_eq!(restored["headers"]["redelivered"], true);
    assert_eq!(restored["properties"]["delivery_info"]["redelivered"], true);
    assert_eq!(restored["properties"]["delivery_tag"], json!(tag));
}
