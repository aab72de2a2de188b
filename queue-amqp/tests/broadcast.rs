//! The broadcast side on a real RabbitMQ, beyond the conformance suite: the queues are
//! kombu's (exclusive, auto-delete), so a dropped subscription leaves no queue behind, and a
//! subscription survives its connection being closed by the server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_amqp::AmqpBroker;
use queue_core::broadcast::{Binding, Broadcast, BroadcastMessage, ExchangeKind};
use queue_core::broker::Broker;

const WAIT: Duration = Duration::from_secs(10);

async fn broadcast(url: &str) -> Arc<dyn Broadcast> {
    let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(url).await.expect("connect"));
    broker.broadcast().expect("AMQP has a broadcast side")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_removes_its_queue() {
    let Some(url) = common::amqp_url("") else {
        return;
    };
    let broadcast = broadcast(&url).await;
    let exchange = common::unique("drop.pidbox");
    let queue = format!("{exchange}.node");
    let subscription = broadcast
        .subscribe(Binding {
            exchange: exchange.clone(),
            kind: ExchangeKind::Fanout,
            routing_key: String::new(),
            queue: queue.clone(),
        })
        .await
        .expect("subscribe");
    let plain = std::env::var(common::URL_VARIABLE).expect("set");
    let (connection, channel) = common::raw_channel(&plain).await;
    // Exclusive to the broker's connection, as kombu declares it: it exists, locked.
    assert_eq!(
        common::passive_declare(&connection, &queue).await,
        Some(405)
    );
    drop(subscription);
    let started = Instant::now();
    loop {
        match common::passive_declare(&connection, &queue).await {
            Some(404) => break,
            code => assert!(
                started.elapsed() < WAIT,
                "the queue is still there after {WAIT:?} ({code:?})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sending on the exchange nobody listens to any more is no error (not mandatory).
    broadcast
        .send(
            &exchange,
            ExchangeKind::Fanout,
            BroadcastMessage::new("", b"{}".to_vec()),
        )
        .await
        .expect("send with no subscriber");
    let _ = channel.exchange_delete(&exchange, Default::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_subscribes_again_after_its_connection_is_closed() {
    let Some(rabbit) = common::PrivateRabbit::start() else {
        return;
    };
    let broadcast = broadcast(&rabbit.url("")).await;
    let exchange = common::unique("again.celeryev");
    let mut subscription = broadcast
        .subscribe(Binding {
            exchange: exchange.clone(),
            kind: ExchangeKind::Topic,
            routing_key: "worker.#".into(),
            queue: format!("{exchange}.q"),
        })
        .await
        .expect("subscribe");
    assert!(rabbit.close_connections(), "close the connections");
    // Sent until the subscription is back: broadcasts sent while it was away are lost.
    let started = Instant::now();
    let received = loop {
        assert!(
            started.elapsed() < WAIT * 3,
            "no message after the reconnection"
        );
        broadcast
            .send(
                &exchange,
                ExchangeKind::Topic,
                BroadcastMessage::new("worker.heartbeat", b"{}".to_vec()),
            )
            .await
            .expect("send through the reconnection");
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
        {
            break message;
        }
    };
    assert_eq!(received.routing_key, "worker.heartbeat");
}
