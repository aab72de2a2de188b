//! Broadcast checks (the contract of [`crate::broadcast`]). Each takes the broker under test
//! and a unique name prefix; every exchange and queue it uses starts with that prefix.
//!
//! - a fanout message reaches every subscriber, with its routing key, headers and body;
//! - a topic exchange routes by pattern (`*`, `#`);
//! - a direct exchange routes to the subscriber bound with exactly the routing key;
//! - a dropped subscription does not make later sends fail.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::broker::{IDLE, WAIT};
use crate::broadcast::{Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription};
use crate::broker::Broker;

fn broadcast_of(broker: Arc<dyn Broker>) -> Arc<dyn Broadcast> {
    broker
        .broadcast()
        .expect("the broker has no broadcast side (Broker::broadcast is None)")
}

async fn subscribe(
    broadcast: &Arc<dyn Broadcast>,
    exchange: &str,
    kind: ExchangeKind,
    routing_key: &str,
    queue: &str,
) -> Subscription {
    broadcast
        .subscribe(Binding {
            exchange: exchange.to_owned(),
            kind,
            routing_key: routing_key.to_owned(),
            queue: queue.to_owned(),
        })
        .await
        .unwrap_or_else(|error| panic!("subscribe to {exchange} ({kind:?}): {error}"))
}

async fn send(
    broadcast: &Arc<dyn Broadcast>,
    exchange: &str,
    kind: ExchangeKind,
    message: BroadcastMessage,
) {
    broadcast
        .send(exchange, kind, message)
        .await
        .unwrap_or_else(|error| panic!("send on {exchange} ({kind:?}): {error}"));
}

async fn receive(
    subscription: &mut Subscription,
    wait: Duration,
    context: &str,
) -> BroadcastMessage {
    match tokio::time::timeout(wait, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{context}: the subscription ended"),
        Err(_) => panic!("{context}: nothing received within {wait:?}"),
    }
}

async fn assert_nothing(subscription: &mut Subscription, context: &str) {
    if let Ok(Some(message)) = tokio::time::timeout(IDLE, subscription.next()).await {
        panic!(
            "{context}: received {:?} that was not for it",
            message.routing_key
        );
    }
}

/// A fanout message reaches every subscriber unchanged: routing key, headers, body.
pub async fn fanout_reaches_every_subscriber(broker: Arc<dyn Broker>, prefix: &str) {
    let broadcast = broadcast_of(broker);
    let exchange = format!("{prefix}.pidbox");
    let kind = ExchangeKind::Fanout;
    let mut first = subscribe(&broadcast, &exchange, kind, "", &format!("{prefix}.a")).await;
    let mut second = subscribe(&broadcast, &exchange, kind, "", &format!("{prefix}.b")).await;
    let body = serde_json::to_vec(&json!({"method": "ping", "arguments": {}})).unwrap();
    let message = BroadcastMessage::new("", body)
        .header("clock", 7)
        .header("ticket", "t-1");
    send(&broadcast, &exchange, kind, message.clone()).await;
    for (subscription, name) in [(&mut first, "first"), (&mut second, "second")] {
        let received = receive(subscription, WAIT, name).await;
        assert_eq!(received.body, message.body, "{name}: body");
        assert_eq!(
            received.routing_key, message.routing_key,
            "{name}: routing key"
        );
        assert_eq!(
            received.headers.get("ticket"),
            Some(&json!("t-1")),
            "{name}"
        );
        assert_eq!(received.headers.get("clock"), Some(&json!(7)), "{name}");
    }
}

/// A topic exchange delivers by pattern: `worker.#` takes worker events and not task
/// events; `#` takes everything; messages keep their routing key.
pub async fn topic_routes_by_pattern(broker: Arc<dyn Broker>, prefix: &str) {
    let broadcast = broadcast_of(broker);
    let exchange = format!("{prefix}.celeryev");
    let kind = ExchangeKind::Topic;
    let mut workers = subscribe(
        &broadcast,
        &exchange,
        kind,
        "worker.#",
        &format!("{prefix}.w"),
    )
    .await;
    let mut all = subscribe(&broadcast, &exchange, kind, "#", &format!("{prefix}.all")).await;
    for key in ["task.succeeded", "worker.heartbeat", "task.multi"] {
        let body = serde_json::to_vec(&json!({"type": key})).unwrap();
        let message = BroadcastMessage::new(key, body).header("hostname", "celery@conformance");
        send(&broadcast, &exchange, kind, message).await;
    }
    let heartbeat = receive(&mut workers, WAIT, "worker.#").await;
    assert_eq!(heartbeat.routing_key, "worker.heartbeat");
    assert_eq!(
        heartbeat.headers.get("hostname"),
        Some(&json!("celery@conformance"))
    );
    assert_nothing(&mut workers, "worker.#").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(receive(&mut all, WAIT, "#").await.routing_key);
    }
    assert_eq!(
        keys,
        ["task.succeeded", "worker.heartbeat", "task.multi"],
        "# in order"
    );
}

/// A direct exchange delivers to the subscriber bound with exactly the routing key (each
/// client's reply queue), not to the others.
pub async fn direct_routes_to_its_key(broker: Arc<dyn Broker>, prefix: &str) {
    let broadcast = broadcast_of(broker);
    let exchange = format!("{prefix}.reply.pidbox");
    let kind = ExchangeKind::Direct;
    let (one, two) = (format!("{prefix}-one"), format!("{prefix}-two"));
    let mut first = subscribe(&broadcast, &exchange, kind, &one, &format!("{one}.reply")).await;
    let mut second = subscribe(&broadcast, &exchange, kind, &two, &format!("{two}.reply")).await;
    let body = serde_json::to_vec(&json!({"celery@w1": {"ok": "pong"}})).unwrap();
    send(
        &broadcast,
        &exchange,
        kind,
        BroadcastMessage::new(&one, body.clone()),
    )
    .await;
    let reply = receive(&mut first, WAIT, "bound key").await;
    assert_eq!(reply.body, body);
    assert_nothing(&mut second, "other key").await;
}

/// Sending after a subscriber dropped its subscription still succeeds, and the remaining
/// subscriber still receives.
pub async fn a_dropped_subscription_is_left_behind(broker: Arc<dyn Broker>, prefix: &str) {
    let broadcast = broadcast_of(broker);
    let exchange = format!("{prefix}.fan");
    let kind = ExchangeKind::Fanout;
    let gone = subscribe(&broadcast, &exchange, kind, "", &format!("{prefix}.gone")).await;
    let mut staying = subscribe(&broadcast, &exchange, kind, "", &format!("{prefix}.stay")).await;
    drop(gone);
    for index in 0..3 {
        let message = BroadcastMessage::new("", format!("{index}").into_bytes());
        send(&broadcast, &exchange, kind, message).await;
    }
    for index in 0..3 {
        let message = receive(&mut staying, WAIT, "staying subscriber").await;
        assert_eq!(message.body, format!("{index}").into_bytes());
    }
}
