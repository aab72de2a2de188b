//! Order of delivery: FIFO within a priority, higher priority first, strict and weighted
//! queue order.

use std::sync::Arc;

use super::{
    WAIT, ack, ack_all, close, consume, declare, delivery_id, fetch_exactly, fetch_one, ids,
    message, publish,
};
use crate::broker::{Broker, QueueOrder};

/// Messages of one priority come out in the order they were published, whether published one
/// per call or in one batch.
pub async fn fifo_within_priority(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let expected: Vec<String> = (0..20)
        .map(|index| format!("{prefix}-{index:02}"))
        .collect();
    for id in &expected[..10] {
        publish(&broker, &queue, vec![message(id.clone(), 4)]).await;
    }
    let batch = expected[10..]
        .iter()
        .map(|id| message(id.clone(), 4))
        .collect();
    publish(&broker, &queue, batch).await;

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&consumer, expected.len(), WAIT, "FIFO").await;
    assert_eq!(ids(&deliveries), expected, "FIFO within one priority");
    ack_all(&consumer, &deliveries, "FIFO").await;
    close(&consumer, "FIFO").await;
}

/// Within a queue, priority 9 comes first and 0 last; equal priorities stay FIFO.
pub async fn higher_priority_first(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let priorities = [0u8, 5, 9, 3, 9, 1, 7, 0, 2, 8, 6, 4, 5, 3, 1, 7, 2, 6, 8, 4];
    let sent: Vec<(String, u8)> = priorities
        .iter()
        .enumerate()
        .map(|(index, priority)| (format!("{prefix}-{index:02}-p{priority}"), *priority))
        .collect();
    let batch = sent
        .iter()
        .map(|(id, priority)| message(id.clone(), *priority))
        .collect();
    publish(&broker, &queue, batch).await;
    let mut expected = sent.clone();
    expected.sort_by_key(|(_, priority)| std::cmp::Reverse(*priority)); // stable: FIFO kept
    let expected: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&consumer, expected.len(), WAIT, "priorities").await;
    assert_eq!(
        ids(&deliveries),
        expected,
        "higher priority first, FIFO within a priority"
    );
    ack_all(&consumer, &deliveries, "priorities").await;
    close(&consumer, "priorities").await;
}

/// With [`QueueOrder::Strict`], the first queue is emptied before the second is served, and
/// so on, whatever the priorities and the order of publication.
pub async fn strict_queue_order(broker: Arc<dyn Broker>, prefix: &str) {
    let queues = [
        format!("{prefix}.a"),
        format!("{prefix}.b"),
        format!("{prefix}.c"),
    ];
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    declare(&broker, &names).await;
    // Published last-queue first; the first queue has the lowest priority.
    let priorities = [0u8, 9, 5];
    for (index, queue) in queues.iter().enumerate().rev() {
        for number in 0..3 {
            let id = format!("{queue}-{number}");
            publish(&broker, queue, vec![message(id, priorities[index])]).await;
        }
    }
    let expected: Vec<String> = queues
        .iter()
        .flat_map(|queue| (0..3).map(move |number| format!("{queue}-{number}")))
        .collect();

    let consumer = consume(&broker, &names, QueueOrder::Strict).await;
    let mut deliveries = Vec::new();
    for _ in 0..expected.len() {
        deliveries.push(fetch_one(&consumer, WAIT, "strict order").await);
    }
    assert_eq!(ids(&deliveries), expected, "strict order between queues");
    for delivery in &deliveries {
        let id = delivery_id(delivery);
        assert!(
            id.starts_with(&format!("{}-", delivery.queue)),
            "strict order: {id:?} delivered as coming from {:?}",
            delivery.queue
        );
    }
    ack_all(&consumer, &deliveries, "strict order").await;
    close(&consumer, "strict order").await;
}

/// With [`QueueOrder::Weighted`] 3:1 and both queues full, 2000 single fetches serve both
/// queues, the heavier one between 60 % and 90 % of the time (expected 75 %).
pub async fn weighted_queue_order(broker: Arc<dyn Broker>, prefix: &str) {
    const FETCHES: usize = 2000;
    let heavy = format!("{prefix}.heavy");
    let light = format!("{prefix}.light");
    declare(&broker, &[&heavy, &light]).await;
    for queue in [&heavy, &light] {
        for chunk in 0..4 {
            let batch = (0..FETCHES / 4)
                .map(|number| message(format!("{queue}-{chunk}-{number}"), 0))
                .collect();
            publish(&broker, queue, batch).await;
        }
    }

    let consumer = consume(&broker, &[&heavy, &light], QueueOrder::Weighted(vec![3, 1])).await;
    let mut from_heavy = 0usize;
    let mut from_light = 0usize;
    for _ in 0..FETCHES {
        let delivery = fetch_one(&consumer, WAIT, "weighted order").await;
        if delivery.queue == heavy {
            from_heavy += 1;
        } else if delivery.queue == light {
            from_light += 1;
        } else {
            panic!(
                "weighted order: delivery from unexpected queue {:?}",
                delivery.queue
            );
        }
        ack(&consumer, &delivery, "weighted order").await;
    }
    let share = from_heavy as f64 / FETCHES as f64;
    assert!(
        (0.6..=0.9).contains(&share),
        "weighted order 3:1: heavy queue served {from_heavy} times and light {from_light} times \
         out of {FETCHES} (share {share:.3}, expected about 0.75)"
    );
    assert!(from_light > 0, "weighted order: the light queue starved");
    close(&consumer, "weighted order").await;
    for queue in [&heavy, &light] {
        broker
            .purge(queue)
            .await
            .unwrap_or_else(|error| panic!("purge({queue:?}) failed: {error}"));
    }
}
