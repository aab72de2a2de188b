//! Whole queues: length by priority, purge, one batch shared by two consumers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{
    IDLE, WAIT, ack, ack_all, assert_length, assert_nothing, close, consume, declare, delivery_id,
    fetch_exactly, fetch_one, length, message, publish,
};
use crate::broker::{Broker, QueueOrder};

/// `queue_length` counts ready messages, in total and per priority (brokers that cannot tell
/// priorities apart report everything under 0); fetched but unacked messages are not counted.
pub async fn queue_length_by_priority(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    let unknown = format!("{prefix}.never-used");
    assert_length(&length(&broker, &unknown).await, &[], "unknown queue");
    declare(&broker, &[&queue]).await;
    assert_length(&length(&broker, &queue).await, &[], "empty queue");

    let priorities = [0u8, 5, 0, 9, 5, 0];
    let batch = priorities
        .iter()
        .enumerate()
        .map(|(index, priority)| message(format!("{prefix}-{index}"), *priority))
        .collect();
    publish(&broker, &queue, batch).await;
    assert_length(
        &length(&broker, &queue).await,
        &[(0, 3), (5, 2), (9, 1)],
        "after publishing",
    );

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let top = fetch_one(&consumer, WAIT, "queue length").await;
    assert_eq!(top.content.as_ref().expect("decoded").priority(), 9);
    assert_length(
        &length(&broker, &queue).await,
        &[(0, 3), (5, 2)],
        "with one message fetched and unacked",
    );
    ack(&consumer, &top, "queue length").await;
    let rest = fetch_exactly(&consumer, 5, WAIT, "queue length").await;
    ack_all(&consumer, &rest, "queue length").await;
    assert_length(&length(&broker, &queue).await, &[], "after acking all");
    close(&consumer, "queue length").await;
}

/// `purge` removes the ready messages and says how many; unacked ones are not ready, so they
/// survive and come back when their consumer closes.
pub async fn purge_removes_ready(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    let unknown = format!("{prefix}.never-used");
    let purged = broker
        .purge(&unknown)
        .await
        .unwrap_or_else(|error| panic!("purge of an unknown queue failed: {error}"));
    assert_eq!(purged, 0, "purge of an unknown queue");
    declare(&broker, &[&queue]).await;
    let batch = (0..5)
        .map(|index| message(format!("{prefix}-{index}"), 0))
        .collect();
    publish(&broker, &queue, batch).await;

    let holder = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let held = fetch_one(&holder, WAIT, "purge").await;
    let purged = broker
        .purge(&queue)
        .await
        .unwrap_or_else(|error| panic!("purge failed: {error}"));
    assert_eq!(
        purged, 4,
        "purge removes the 4 ready messages (one is unacked)"
    );
    assert_length(&length(&broker, &queue).await, &[], "after purge");
    let other = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&other, IDLE, "after purge").await;

    close(&holder, "purge").await;
    let again = fetch_one(
        &other,
        WAIT,
        "purge: unacked message after its consumer closed",
    )
    .await;
    assert_eq!(
        delivery_id(&again),
        delivery_id(&held),
        "purge keeps unacked messages"
    );
    ack(&other, &again, "purge").await;
    let purged = broker
        .purge(&queue)
        .await
        .unwrap_or_else(|error| panic!("purge failed: {error}"));
    assert_eq!(purged, 0, "purge of an empty queue");
    close(&other, "purge").await;
}

/// 1000 messages published in one call are delivered exactly once in total to two consumers
/// fetching and acking concurrently.
pub async fn batch_delivered_exactly_once(broker: Arc<dyn Broker>, prefix: &str) {
    const COUNT: usize = 1000;
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let sent: Vec<String> = (0..COUNT)
        .map(|index| format!("{prefix}-{index:04}"))
        .collect();
    let batch = sent.iter().map(|id| message(id.clone(), 0)).collect();
    publish(&broker, &queue, batch).await;

    let received = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for worker in 0..2 {
        let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
        let received = received.clone();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let deliveries = consumer
                    .fetch(32, Duration::from_millis(200))
                    .await
                    .unwrap_or_else(|error| panic!("consumer {worker}: fetch failed: {error}"));
                assert!(
                    deliveries.len() <= 32,
                    "consumer {worker}: fetch(32) returned more"
                );
                if deliveries.is_empty() {
                    if received.load(Ordering::SeqCst) >= COUNT || Instant::now() > deadline {
                        break;
                    }
                    continue;
                }
                for delivery in &deliveries {
                    consumer
                        .ack(delivery)
                        .await
                        .unwrap_or_else(|error| panic!("consumer {worker}: ack failed: {error}"));
                    ids.push(delivery_id(delivery).to_owned());
                }
                received.fetch_add(deliveries.len(), Ordering::SeqCst);
            }
            consumer
                .close()
                .await
                .unwrap_or_else(|error| panic!("consumer {worker}: close failed: {error}"));
            ids
        }));
    }
    let mut all = Vec::new();
    let mut per_consumer = Vec::new();
    for worker in workers {
        let ids = worker.await.expect("a consuming task panicked");
        per_consumer.push(ids.len());
        all.extend(ids);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "exactly once: {} deliveries but {} distinct messages (consumers got {per_consumer:?})",
        all.len(),
        unique.len()
    );
    let expected: HashSet<&String> = sent.iter().collect();
    assert_eq!(
        unique,
        expected,
        "exactly once: delivered {} of {COUNT} messages (consumers got {per_consumer:?})",
        unique.len()
    );
    assert_length(&length(&broker, &queue).await, &[], "after the batch");
    let fresh = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&fresh, IDLE, "after the batch was acked").await;
    close(&fresh, "batch").await;
}
