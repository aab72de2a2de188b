//! Changing what a consumer consumes while it runs (Celery's `add_consumer` and
//! `cancel_consumer`).

use std::sync::Arc;

use super::{
    IDLE, WAIT, ack, assert_nothing, close, consume, declare, delivery_id, fetch_one, message,
    publish,
};
use crate::broker::{Broker, QueueOrder};

/// `add_queue` starts delivering a queue's messages, published before or after; after
/// `remove_queue` nothing new comes from the queue, while a delivery fetched from it can
/// still be acked; a queue added back delivers what waited meanwhile. Adding a queue
/// consumed already, or removing one that is not, changes nothing and says so.
pub async fn queues_added_and_removed_while_consuming(broker: Arc<dyn Broker>, prefix: &str) {
    let first = format!("{prefix}.first");
    let added = format!("{prefix}.added");
    declare(&broker, &[&first, &added]).await;
    let consumer = consume(&broker, &[&first], QueueOrder::Strict).await;
    publish(&broker, &added, vec![message(format!("{prefix}-early"), 0)]).await;
    assert_nothing(&consumer, IDLE, "a queue not consumed yet").await;

    assert!(
        consumer.add_queue(&added).await.expect("add_queue"),
        "add_queue of a new queue says it was added"
    );
    assert!(
        !consumer.add_queue(&added).await.expect("add_queue again"),
        "add_queue of a consumed queue says it was there"
    );
    let early = fetch_one(&consumer, WAIT, "after add_queue").await;
    assert_eq!(delivery_id(&early), format!("{prefix}-early"));
    assert_eq!(early.queue, added, "the delivery names the added queue");
    publish(&broker, &added, vec![message(format!("{prefix}-late"), 0)]).await;
    let late = fetch_one(&consumer, WAIT, "published after add_queue").await;
    assert_eq!(delivery_id(&late), format!("{prefix}-late"));

    publish(&broker, &first, vec![message(format!("{prefix}-held"), 0)]).await;
    let held = fetch_one(&consumer, WAIT, "the first queue still consumed").await;
    assert!(
        consumer.remove_queue(&first).await.expect("remove_queue"),
        "remove_queue of a consumed queue says it was removed"
    );
    assert!(
        !consumer
            .remove_queue(&first)
            .await
            .expect("remove_queue again"),
        "remove_queue of a queue not consumed says so"
    );
    ack(&consumer, &held, "ack after its queue was removed").await;
    publish(&broker, &first, vec![message(format!("{prefix}-waits"), 0)]).await;
    assert_nothing(&consumer, IDLE, "a removed queue").await;

    assert!(consumer.add_queue(&first).await.expect("add_queue back"));
    let waited = fetch_one(&consumer, WAIT, "a queue added back").await;
    assert_eq!(delivery_id(&waited), format!("{prefix}-waits"));
    assert_eq!(waited.queue, first);
    for delivery in [&early, &late, &waited] {
        ack(&consumer, delivery, "ack").await;
    }
    close(&consumer, "queues changed").await;
    for queue in [&first, &added] {
        let length = broker.queue_length(queue).await.expect("queue_length");
        assert_eq!(length.total, 0, "{queue}: every message was delivered once");
    }
}
