//! Messages the broker holds until due: a future eta, a deferred delivery.

use std::sync::Arc;
use std::time::Duration;

use super::super::{later, now};
use super::{
    DELAY, IDLE, WAIT, ack, ack_all, assert_length, assert_not_before, assert_nothing, close,
    consume, declare, delivery_id, fetch, fetch_exactly, fetch_one, ids, length, message, publish,
};
use crate::broker::{Broker, QueueOrder};

/// A message whose eta is in the future waits in the broker: not delivered before it is due
/// (a fetch with wait 0 right after publishing gets nothing), delivered once due (a fetch with
/// a 5 s wait gets it), and not counted by `queue_length` meanwhile but counted once due.
pub async fn eta_held_by_broker(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    let counted = format!("{prefix}.counted");
    let unfetched = format!("{prefix}.unfetched");
    declare(&broker, &[&queue, &counted, &unfetched]).await;

    // Far-future etas are never counted as ready.
    let ready = format!("{prefix}-ready");
    let mut far = Vec::new();
    for (index, priority) in [0u8, 5].into_iter().enumerate() {
        let mut delayed = message(format!("{prefix}-far-{index}"), priority);
        delayed.headers.eta = Some(later(Duration::from_secs(3600)));
        far.push(delayed);
    }
    far.push(message(ready.clone(), 0));
    publish(&broker, &counted, far).await;
    assert_length(
        &length(&broker, &counted).await,
        &[(0, 1)],
        "ready and far-future messages",
    );
    let consumer = consume(&broker, &[&counted], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&consumer, 1, WAIT, "eta: ready message").await;
    assert_eq!(
        ids(&deliveries),
        vec![ready],
        "only the ready message is delivered"
    );
    ack_all(&consumer, &deliveries, "eta").await;
    assert_nothing(&consumer, IDLE, "far-future eta").await;
    close(&consumer, "eta").await;

    // A near eta: held, then delivered. A message due 300 ms earlier in another queue is
    // ready (counted) by the time this one is delivered, though nobody fetched it.
    let mut earlier = message(format!("{prefix}-earlier"), 0);
    earlier.headers.eta = Some(later(DELAY - Duration::from_millis(300)));
    publish(&broker, &unfetched, vec![earlier]).await;
    let id = format!("{prefix}-soon");
    let mut soon = message(id.clone(), 0);
    let due = later(DELAY);
    soon.headers.eta = Some(due);
    publish(&broker, &queue, vec![soon]).await;
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let early = fetch(&consumer, 10, Duration::ZERO, "eta: immediate fetch").await;
    let checked_at = now();
    if !early.is_empty() {
        assert_not_before(checked_at, due, "eta: immediate fetch");
    }
    let early_length = length(&broker, &queue).await;
    if early_length.total > 0 {
        assert_not_before(now(), due, "eta: queue_length counted the delayed message");
    }
    let delivery = match early.into_iter().next() {
        Some(delivery) => delivery,
        None => fetch_one(&consumer, WAIT, "eta: fetch after the eta").await,
    };
    assert_not_before(now(), due, "eta");
    assert_eq!(
        delivery_id(&delivery),
        id,
        "eta: the delayed message is delivered when due"
    );
    assert_length(
        &length(&broker, &unfetched).await,
        &[(0, 1)],
        "eta: a message whose eta passed is ready, fetched or not",
    );
    ack(&consumer, &delivery, "eta").await;
    close(&consumer, "eta").await;
    broker
        .purge(&unfetched)
        .await
        .unwrap_or_else(|error| panic!("purge({unfetched:?}) failed: {error}"));
}

/// `defer(delivery, until)` hands the message back; it is delivered again at `until`, not
/// before, and meanwhile is not ready.
pub async fn defer_redelivers_at_time(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let id = format!("{prefix}-d");
    publish(&broker, &queue, vec![message(id.clone(), 0)]).await;
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let first = fetch_one(&consumer, WAIT, "defer").await;
    let until = later(DELAY);
    consumer
        .defer(&first, until)
        .await
        .unwrap_or_else(|error| panic!("defer failed: {error}"));

    let early = fetch(&consumer, 10, Duration::ZERO, "defer: immediate fetch").await;
    if !early.is_empty() {
        assert_not_before(now(), until, "defer: immediate fetch");
    }
    if length(&broker, &queue).await.total > 0 {
        assert_not_before(
            now(),
            until,
            "defer: queue_length counted the deferred message",
        );
    }
    let again = match early.into_iter().next() {
        Some(delivery) => delivery,
        None => fetch_one(&consumer, WAIT, "defer: fetch after the time").await,
    };
    assert_not_before(now(), until, "defer");
    assert_eq!(
        delivery_id(&again),
        id,
        "defer: the same message comes back"
    );
    ack(&consumer, &again, "defer").await;
    close(&consumer, "defer").await;
    let fresh = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(&fresh, IDLE, "after the deferred message was acked").await;
    close(&fresh, "defer").await;
}
