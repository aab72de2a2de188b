//! `fetch(max, wait)`: bounded, waits when idle, returns as soon as a message arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{WAIT, ack_all, close, consume, declare, fetch, ids, message, publish};
use crate::broker::{Broker, QueueOrder};

/// `fetch(max, wait)` never returns more than `max` deliveries (and none for `max = 0`), and
/// when idle returns empty after about `wait`, not before.
pub async fn fetch_respects_max_and_wait(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let expected: Vec<String> = (0..10).map(|index| format!("{prefix}-{index}")).collect();
    let batch = expected.iter().map(|id| message(id.clone(), 0)).collect();
    publish(&broker, &queue, batch).await;

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let none = fetch(&consumer, 0, Duration::from_millis(100), "fetch(0)").await;
    assert!(none.is_empty(), "fetch(max = 0) returned {:?}", ids(&none));

    let deadline = Instant::now() + WAIT;
    let mut deliveries = Vec::new();
    while deliveries.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "fetch(3): only {} of {} messages within {WAIT:?}",
            deliveries.len(),
            expected.len()
        );
        let batch = fetch(&consumer, 3, WAIT, "fetch(3)").await;
        assert!(
            !batch.is_empty(),
            "fetch(3, {WAIT:?}) returned nothing while messages are ready"
        );
        deliveries.extend(batch);
    }
    assert_eq!(ids(&deliveries), expected, "fetch(3) in batches");
    ack_all(&consumer, &deliveries, "fetch(3)").await;

    let wait = Duration::from_millis(500);
    let started = Instant::now();
    let idle = fetch(&consumer, 5, wait, "idle fetch").await;
    let elapsed = started.elapsed();
    assert!(idle.is_empty(), "idle fetch returned {:?}", ids(&idle));
    assert!(
        elapsed >= wait.mul_f64(0.8),
        "idle fetch with wait {wait:?} returned after {elapsed:?}: it should wait"
    );
    assert!(
        elapsed < wait + WAIT,
        "idle fetch with wait {wait:?} took {elapsed:?}"
    );
    close(&consumer, "fetch").await;
}

/// A fetch that is waiting returns as soon as a message is published, long before its wait
/// is over.
pub async fn fetch_returns_when_message_arrives(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let long_wait = Duration::from_secs(30);
    let (started_tx, started_rx) = oneshot::channel();
    let waiter = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            let _ = started_tx.send(());
            let started = Instant::now();
            let deliveries = consumer.fetch(1, long_wait).await;
            (deliveries, started.elapsed())
        }
    });
    started_rx.await.expect("the fetching task started");
    let id = format!("{prefix}-late");
    publish(&broker, &queue, vec![message(id.clone(), 0)]).await;
    let (deliveries, elapsed) = waiter.await.expect("the fetching task panicked");
    let deliveries = deliveries.unwrap_or_else(|error| panic!("waiting fetch failed: {error}"));
    assert_eq!(
        ids(&deliveries),
        vec![id],
        "the waiting fetch gets the new message"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "a fetch waiting up to {long_wait:?} returned {elapsed:?} after it started, \
         not as soon as the message arrived"
    );
    ack_all(&consumer, &deliveries, "waiting fetch").await;
    close(&consumer, "waiting fetch").await;
}
