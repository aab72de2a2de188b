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
//! - `add_queue` / `remove_queue` change what a running consumer consumes;
//! - `purge` removes ready messages; a batch of 1000 is delivered exactly once to two
//!   concurrent consumers;
//! - the backlog (`backlog_*`): `queue_stats` counts ready, delayed and dead messages and
//!   names the oldest ready one, `delayed` lists held messages soonest first and
//!   `run_delayed_now` readies one, dead letters are requeued (by id or all) and purged,
//!   `known_queues` names the queues used.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};

use super::CLOCK_TOLERANCE;
use crate::broker::{Broker, ConsumeOptions, Consumer, Delivery, Publish, QueueLength, QueueOrder};
use crate::protocol::time::parse_timestamp;
use crate::protocol::{Headers, Message, Properties, TaskBody, TimeLimit};

mod backlog;
mod change;
mod fetch;
mod order;
mod queues;
mod replace;
mod schedule;
mod settle;

pub use backlog::{
    backlog_dead_letters_requeued_and_purged, backlog_delayed_listed_and_run_now,
    backlog_known_queues_name_the_queue, backlog_stats_count_ready_delayed_and_dead,
};
pub use change::queues_added_and_removed_while_consuming;
pub use fetch::{fetch_respects_max_and_wait, fetch_returns_when_message_arrives};
pub use order::{
    fifo_within_priority, higher_priority_first, strict_queue_order, weighted_queue_order,
};
pub use queues::{batch_delivered_exactly_once, purge_removes_ready, queue_length_by_priority};
pub use replace::republish_and_ack_replaces_the_original;
pub use schedule::{defer_redelivers_at_time, eta_held_by_broker};
pub use settle::{
    ack_removes, dead_letter_lists_with_reason, reject_with_and_without_requeue,
    unacked_redelivered_after_close, unacked_redelivered_after_drop,
};

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
