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
