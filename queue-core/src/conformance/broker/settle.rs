//! Settling a delivery: ack, reject, dead letter, and the redelivery of what was never
//! settled.

use std::sync::Arc;

use super::{
    IDLE, TASK_NAME, WAIT, ack, ack_all, assert_length, assert_nothing, close, consume, declare,
    delivery_id, fetch_exactly, fetch_one, ids, length, message, publish,
};
use crate::broker::{Broker, QueueOrder};

/// An acked message is gone: not ready, not given to a new consumer after the first closed.
pub async fn ack_removes(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let batch = (0..2)
        .map(|index| message(format!("{prefix}-{index}"), 0))
        .collect();
    publish(&broker, &queue, batch).await;

    let first = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&first, 2, WAIT, "ack").await;
    ack_all(&first, &deliveries, "ack").await;
    assert_length(&length(&broker, &queue).await, &[], "after ack");
    close(&first, "ack").await;

    let second = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&second, IDLE, "new consumer after ack and close").await;
    close(&second, "ack").await;
}

async fn unacked_redelivered(broker: Arc<dyn Broker>, prefix: &str, drop_consumer: bool) {
    let how = if drop_consumer { "dropped" } else { "closed" };
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let acked = format!("{prefix}-acked");
    let held = format!("{prefix}-held");
    let sent_held = message(held.clone(), 0);
    publish(
        &broker,
        &queue,
        vec![message(acked.clone(), 0), sent_held.clone()],
    )
    .await;

    let first = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&first, 2, WAIT, "first consumer").await;
    assert_eq!(ids(&deliveries), vec![acked.clone(), held.clone()]);
    ack(&first, &deliveries[0], "first consumer").await;

    let second = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(
        &second,
        IDLE,
        "second consumer while the first holds the message",
    )
    .await;
    assert_length(
        &length(&broker, &queue).await,
        &[],
        "unacked messages are not ready",
    );

    if drop_consumer {
        drop(deliveries);
        drop(first);
    } else {
        close(&first, "first consumer").await;
    }
    let context = format!("after the first consumer was {how}");
    let again = fetch_one(&second, WAIT * 2, &context).await;
    assert_eq!(
        delivery_id(&again),
        held,
        "{context}: the unacked message comes back"
    );
    assert!(
        again.redelivered,
        "{context}: the message comes back with redelivered = true"
    );
    assert_eq!(again.queue, queue, "{context}: queue of the redelivery");
    let message = again.content.as_ref().expect("decoded");
    assert_eq!(
        message.body, sent_held.body,
        "{context}: body of the redelivery"
    );
    assert_eq!(
        message.task_name(),
        TASK_NAME,
        "{context}: task of the redelivery"
    );
    ack(&second, &again, &context).await;
    assert_nothing(
        &second,
        IDLE,
        &format!("{context}: the acked message stays acked"),
    )
    .await;
    close(&second, &context).await;
}

/// A message fetched and not acked is not given to anyone else while its consumer lives, and
/// comes back with `redelivered = true` to another consumer once the first is closed.
pub async fn unacked_redelivered_after_close(broker: Arc<dyn Broker>, prefix: &str) {
    unacked_redelivered(broker, prefix, false).await;
}

/// Same as [`unacked_redelivered_after_close`], the first consumer being dropped instead of
/// closed (a worker that died).
pub async fn unacked_redelivered_after_drop(broker: Arc<dyn Broker>, prefix: &str) {
    unacked_redelivered(broker, prefix, true).await;
}

/// `reject(requeue = true)` delivers the message again (redelivered); `reject(requeue =
/// false)` removes it from the queue.
pub async fn reject_with_and_without_requeue(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let id = format!("{prefix}-r");
    publish(&broker, &queue, vec![message(id.clone(), 0)]).await;

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let first = fetch_one(&consumer, WAIT, "reject").await;
    consumer
        .reject(&first, true)
        .await
        .unwrap_or_else(|error| panic!("reject(requeue = true) failed: {error}"));
    let again = fetch_one(&consumer, WAIT, "after reject with requeue").await;
    assert_eq!(
        delivery_id(&again),
        id,
        "reject with requeue: same message again"
    );
    assert!(again.redelivered, "reject with requeue: redelivered = true");

    consumer
        .reject(&again, false)
        .await
        .unwrap_or_else(|error| panic!("reject(requeue = false) failed: {error}"));
    assert_nothing(&consumer, IDLE, "after reject without requeue").await;
    assert_length(
        &length(&broker, &queue).await,
        &[],
        "after reject without requeue",
    );
    close(&consumer, "reject").await;
    let fresh = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&fresh, IDLE, "new consumer after reject without requeue").await;
    close(&fresh, "reject").await;
}

/// `dead_letter` moves a message out of its queue to where `dead_letters(queue, n)` lists it,
/// oldest first, with its reason and content; it is not delivered again.
pub async fn dead_letter_lists_with_reason(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let none = broker
        .dead_letters(&queue, 10)
        .await
        .unwrap_or_else(|error| panic!("dead_letters failed: {error}"));
    assert!(
        none.is_empty(),
        "dead_letters of a fresh queue: {} entries",
        none.len()
    );

    // Priorities differ from the dead-lettering order: the list is by age, not priority.
    let sent = [
        (format!("{prefix}-low"), 0u8),
        (format!("{prefix}-mid"), 5),
        (format!("{prefix}-high"), 9),
    ];
    let batch = sent
        .iter()
        .map(|(id, priority)| message(id.clone(), *priority))
        .collect();
    publish(&broker, &queue, batch).await;
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&consumer, 3, WAIT, "dead letter").await;
    for (index, (id, _)) in sent.iter().enumerate() {
        let delivery = deliveries
            .iter()
            .find(|delivery| delivery_id(delivery) == id)
            .unwrap_or_else(|| panic!("dead letter: {id:?} not delivered"));
        let reason = format!("conformance reason {index}: bad input");
        consumer
            .dead_letter(delivery, &reason)
            .await
            .unwrap_or_else(|error| panic!("dead_letter({id:?}) failed: {error}"));
    }
    assert_nothing(&consumer, IDLE, "after dead_letter").await;
    assert_length(&length(&broker, &queue).await, &[], "after dead_letter");

    let listed = broker
        .dead_letters(&queue, 10)
        .await
        .unwrap_or_else(|error| panic!("dead_letters failed: {error}"));
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|dead| match &dead.content {
            Ok(message) => message.id(),
            Err(undecodable) => panic!("dead letter did not decode: {}", undecodable.error),
        })
        .collect();
    let expected: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        listed_ids, expected,
        "dead_letters lists every dead letter, oldest first"
    );
    for (index, dead) in listed.iter().enumerate() {
        assert_eq!(dead.queue, queue, "dead letter {index}: queue");
        assert_eq!(
            dead.reason,
            format!("conformance reason {index}: bad input"),
            "dead letter {index}: reason"
        );
        let message = dead.content.as_ref().expect("decoded");
        let (id, priority) = &sent[index];
        assert_eq!(
            message.body,
            self::message(id.clone(), *priority).body,
            "dead letter {index}: body"
        );
    }
    let limited = broker
        .dead_letters(&queue, 2)
        .await
        .unwrap_or_else(|error| panic!("dead_letters failed: {error}"));
    assert_eq!(limited.len(), 2, "dead_letters(queue, 2) returns 2 entries");
    assert_eq!(
        limited
            .iter()
            .map(|dead| dead.reason.clone())
            .collect::<Vec<_>>(),
        listed[..2]
            .iter()
            .map(|dead| dead.reason.clone())
            .collect::<Vec<_>>(),
        "dead_letters(queue, 2) returns the two oldest"
    );
    close(&consumer, "dead letter").await;
    let fresh = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&fresh, IDLE, "new consumer after dead_letter").await;
    close(&fresh, "dead letter").await;
}
