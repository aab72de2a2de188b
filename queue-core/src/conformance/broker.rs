//! Broker checks. Each takes the broker under test and a unique name prefix (see
//! [`unique_prefix`](super::unique_prefix)); every queue it uses starts with that prefix.
//!
//! What they hold a broker to (the contract of [`crate::broker`]):
//!
//! - a published message comes back with the same headers, standard properties, content type,
//!   encoding and body bytes;
//! - within a queue, higher priority (0–9) first, FIFO within one priority;
//! - between queues, [`QueueOrder::Strict`] and [`QueueOrder::Weighted`] as documented;
//! - `fetch(max, wait)` returns at most `max` deliveries, waits up to `wait` when idle and
//!   returns as soon as a message arrives;
//! - a delivery stays with the broker until acked, rejected, deferred or dead-lettered, and
//!   comes back (`redelivered`) when its consumer is closed or dropped without acking it;
//! - messages with a future `eta`, and deferred ones, are held by the broker until due and
//!   are not counted by `queue_length`;
//! - `dead_letter` moves a message to where `dead_letters` lists it, with the reason;
//! - `republish_and_ack` replaces a delivery in one step (or is `Unsupported`);
//! - `purge` removes ready messages; a batch of 1000 is delivered exactly once to two
//!   concurrent consumers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::{CLOCK_TOLERANCE, later, now};

mod replace;
use crate::broker::{Broker, ConsumeOptions, Consumer, Delivery, Publish, QueueLength, QueueOrder};
use crate::protocol::time::parse_timestamp;
use crate::protocol::{Headers, Message, Properties, TaskBody, TimeLimit};
pub use replace::republish_and_ack_replaces_the_original;

/// How long a check waits for messages it expects (generous: real servers, slow CI).
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a check waits to conclude that nothing comes.
pub const IDLE: Duration = Duration::from_millis(300);

/// How far ahead eta and defer checks schedule a message.
pub const DELAY: Duration = Duration::from_millis(500);

const TASK_NAME: &str = "conformance.task";

/// A small task message with id `id` and priority `priority`; its one argument is the id.
pub fn message(id: impl Into<String>, priority: u8) -> Message {
    let id = id.into();
    let headers = Headers::new(TASK_NAME, id.clone());
    let properties = Properties {
        correlation_id: Some(id.clone()),
        delivery_mode: Some(2),
        priority: Some(priority),
        ..Properties::default()
    };
    Message::new(
        headers,
        properties,
        &TaskBody::new(vec![Value::from(id)], Map::new()),
    )
}

/// The task id of a delivery; panics if it did not decode.
pub fn delivery_id(delivery: &Delivery) -> &str {
    match &delivery.content {
        Ok(message) => message.id(),
        Err(undecodable) => panic!(
            "delivery {} from queue {:?} did not decode: {}",
            delivery.tag, delivery.queue, undecodable.error
        ),
    }
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| delivery_id(d).to_owned())
        .collect()
}

async fn declare(broker: &Arc<dyn Broker>, queues: &[&str]) {
    for queue in queues {
        broker
            .declare_queue(queue)
            .await
            .unwrap_or_else(|error| panic!("declare_queue({queue:?}) failed: {error}"));
    }
}

async fn publish(broker: &Arc<dyn Broker>, queue: &str, messages: Vec<Message>) {
    let count = messages.len();
    let batch = messages
        .into_iter()
        .map(|message| Publish::new(queue, message))
        .collect();
    broker.publish(batch).await.unwrap_or_else(|error| {
        panic!("publishing {count} message(s) to {queue:?} failed: {error}")
    });
}

async fn consume(
    broker: &Arc<dyn Broker>,
    queues: &[&str],
    order: QueueOrder,
) -> Arc<dyn Consumer> {
    broker
        .consume(ConsumeOptions::new(queues.iter().copied()).order(order))
        .await
        .unwrap_or_else(|error| panic!("consume({queues:?}) failed: {error}"))
}

async fn fetch(
    consumer: &Arc<dyn Consumer>,
    max: usize,
    wait: Duration,
    context: &str,
) -> Vec<Delivery> {
    let deliveries = consumer
        .fetch(max, wait)
        .await
        .unwrap_or_else(|error| panic!("{context}: fetch({max}, {wait:?}) failed: {error}"));
    assert!(
        deliveries.len() <= max,
        "{context}: fetch(max = {max}) returned {} deliveries: {:?}",
        deliveries.len(),
        ids(&deliveries)
    );
    deliveries
}

/// Fetches until exactly `count` deliveries arrived, within `wait` in total.
async fn fetch_exactly(
    consumer: &Arc<dyn Consumer>,
    count: usize,
    wait: Duration,
    context: &str,
) -> Vec<Delivery> {
    let deadline = Instant::now() + wait;
    let mut deliveries = Vec::with_capacity(count);
    while deliveries.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "{context}: expected {count} deliveries within {wait:?}, got {}: {:?}",
            deliveries.len(),
            ids(&deliveries)
        );
        let batch = fetch(consumer, count - deliveries.len(), remaining, context).await;
        deliveries.extend(batch);
    }
    deliveries
}

/// Fetches one message, waiting up to `wait`.
async fn fetch_one(consumer: &Arc<dyn Consumer>, wait: Duration, context: &str) -> Delivery {
    fetch_exactly(consumer, 1, wait, context)
        .await
        .pop()
        .expect("one delivery")
}

/// Asserts that nothing is delivered within `wait`.
async fn assert_nothing(consumer: &Arc<dyn Consumer>, wait: Duration, context: &str) {
    let deliveries = fetch(consumer, 10, wait, context).await;
    assert!(
        deliveries.is_empty(),
        "{context}: expected no delivery, got {:?}",
        ids(&deliveries)
    );
}

async fn ack(consumer: &Arc<dyn Consumer>, delivery: &Delivery, context: &str) {
    consumer.ack(delivery).await.unwrap_or_else(|error| {
        panic!(
            "{context}: ack of {:?} failed: {error}",
            delivery_id(delivery)
        )
    });
}

async fn ack_all(consumer: &Arc<dyn Consumer>, deliveries: &[Delivery], context: &str) {
    for delivery in deliveries {
        ack(consumer, delivery, context).await;
    }
}

async fn close(consumer: &Arc<dyn Consumer>, context: &str) {
    consumer
        .close()
        .await
        .unwrap_or_else(|error| panic!("{context}: closing the consumer failed: {error}"));
}

async fn length(broker: &Arc<dyn Broker>, queue: &str) -> QueueLength {
    broker
        .queue_length(queue)
        .await
        .unwrap_or_else(|error| panic!("queue_length({queue:?}) failed: {error}"))
}

/// Ready messages per priority, without zero entries.
fn non_zero(length: &QueueLength) -> BTreeMap<u8, u64> {
    length
        .by_priority
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(priority, count)| (*priority, *count))
        .collect()
}

/// Checks a queue length: `total`, and per priority either `expected` exactly or, for brokers
/// that cannot tell priorities apart, everything under priority 0.
fn assert_length(length: &QueueLength, expected: &[(u8, u64)], context: &str) {
    let total: u64 = expected.iter().map(|(_, count)| count).sum();
    assert_eq!(
        length.total, total,
        "{context}: total ready messages ({length:?})"
    );
    let sum: u64 = length.by_priority.values().sum();
    assert_eq!(
        sum, length.total,
        "{context}: by_priority does not add up to total ({length:?})"
    );
    let expected: BTreeMap<u8, u64> = expected
        .iter()
        .copied()
        .filter(|(_, count)| *count > 0)
        .collect();
    let actual = non_zero(length);
    let all_under_zero: BTreeMap<u8, u64> = (total > 0).then_some((0, total)).into_iter().collect();
    assert!(
        actual == expected || actual == all_under_zero,
        "{context}: ready messages by priority: expected {expected:?} (or all under 0), got {actual:?}"
    );
}

/// Asserts that `delivered_at` is not before `due` (with [`CLOCK_TOLERANCE`]).
fn assert_not_before(
    delivered_at: DateTime<FixedOffset>,
    due: DateTime<FixedOffset>,
    context: &str,
) {
    let tolerance = chrono::Duration::from_std(CLOCK_TOLERANCE).expect("small duration");
    assert!(
        delivered_at + tolerance >= due,
        "{context}: delivered at {delivered_at}, before it was due at {due}"
    );
}

/// A published message comes back unchanged: every header (known ones, stamps, custom ones),
/// the standard properties, content type and encoding, and the exact body bytes; the delivery
/// names its queue and is not marked redelivered.
pub async fn publish_consume_round_trip(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let id = format!("{prefix}-rt");
    let mut headers = Headers::new("conformance.round_trip", id.clone());
    headers.lang = Some("py".into());
    headers.shadow = Some("shadow-name".into());
    // An eta in the past: ready at once.
    headers.eta = parse_timestamp("2000-01-01T00:00:00.123456+00:00");
    headers.expires = parse_timestamp("2099-12-31T23:59:59.654321+00:00");
    headers.group = Some(format!("{prefix}-group"));
    headers.group_index = Some(2);
    headers.retries = 3;
    headers.timelimit = TimeLimit(Some(30.into()), serde_json::Number::from_f64(20.5));
    headers.root_id = Some(format!("{prefix}-root"));
    headers.parent_id = Some(format!("{prefix}-parent"));
    headers.argsrepr = Some("('rt', 1.0, 'é ✓')".into());
    headers.kwargsrepr = Some("{'z': 1}".into());
    headers.origin = Some("gen4242@conformance".into());
    headers.ignore_result = Some(false);
    headers.replaced_task_nesting = Some(1);
    headers.stamped_headers = Some(vec!["mystamp".into()]);
    headers.stamps = json!({"mystamp": "blue"}).as_object().cloned();
    headers.extra = json!({
        "custom_hdr": "x",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "nested": {"list": [1, 2.5, null, true, "s"], "empty": {}},
    })
    .as_object()
    .cloned()
    .expect("object");
    let properties = Properties {
        correlation_id: Some(id.clone()),
        reply_to: Some("fa0a9c1c-3f14-3e3a-ad31-6c064374550c".into()),
        delivery_mode: Some(2),
        priority: Some(3),
        expiration: Some("3600000".into()),
        ..Properties::default()
    };
    // Python's spacing and a float written `1.0`: re-encoding would change these bytes.
    let body = r#"[["rt", 1.0, "é ✓"], {"z": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    let sent = Message {
        headers,
        properties,
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body: body.as_bytes().to_vec(),
    };
    publish(&broker, &queue, vec![sent.clone()]).await;

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let delivery = fetch_one(&consumer, WAIT, "round trip").await;
    assert_eq!(
        delivery.queue, queue,
        "round trip: the delivery names its queue"
    );
    assert!(
        !delivery.redelivered,
        "round trip: first delivery marked redelivered"
    );
    let received = delivery.content.as_ref().unwrap_or_else(|undecodable| {
        panic!("round trip: message did not decode: {}", undecodable.error)
    });
    assert_eq!(received.headers, sent.headers, "round trip: headers differ");
    let (got, want) = (&received.properties, &sent.properties);
    assert_eq!(
        got.correlation_id, want.correlation_id,
        "round trip: correlation_id"
    );
    assert_eq!(got.reply_to, want.reply_to, "round trip: reply_to");
    assert_eq!(
        got.delivery_mode, want.delivery_mode,
        "round trip: delivery_mode"
    );
    assert_eq!(got.priority, want.priority, "round trip: priority");
    assert_eq!(got.expiration, want.expiration, "round trip: expiration");
    assert_eq!(
        received.content_type, sent.content_type,
        "round trip: content type"
    );
    assert_eq!(
        received.content_encoding, sent.content_encoding,
        "round trip: content encoding"
    );
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        body,
        "round trip: body bytes differ"
    );
    assert_eq!(received.body, sent.body, "round trip: body bytes differ");
    let decoded = received
        .decode_body()
        .unwrap_or_else(|error| panic!("round trip: body does not decode: {error}"));
    assert_eq!(decoded.args, vec![json!("rt"), json!(1.0), json!("é ✓")]);
    ack(&consumer, &delivery, "round trip").await;
    close(&consumer, "round trip").await;
}

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
