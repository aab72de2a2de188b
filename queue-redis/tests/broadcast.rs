//! The broadcast side against a private redis-server (so that the server-wide pub/sub and
//! connection counts are this test's alone): dropped subscriptions leave nothing behind, and
//! subscribers come back after the server was killed and restarted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientInterface, ClientLike, PubsubInterface, SetsInterface};
use fred::types::{ClusterHash, CustomCommand};
use queue_core::Broker;
use queue_core::broadcast::{Binding, BroadcastMessage, ExchangeKind, Subscription};
use queue_core::broker::BrokerError;
use queue_redis::RedisBroker;

use common::PrivateRedis;

const WAIT: Duration = Duration::from_secs(20);
const DIRECT: &str = "leak.reply.pidbox";

/// What a subscription may leave behind on the server.
#[derive(Debug, PartialEq)]
struct Counts {
    patterns: u64,
    channels: usize,
    connections: usize,
    bindings: u64,
    permanent: u64,
    lists: usize,
}

async fn counts(broker: &RedisBroker) -> Counts {
    let client = broker.client();
    let channels: Vec<String> = client.pubsub_channels("*").await.unwrap();
    let clients: String = client
        .client_list::<String, String>(None, None)
        .await
        .unwrap();
    let keys = CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false);
    let lists: Vec<String> = client.custom(keys, vec!["leak.q.*"]).await.unwrap();
    Counts {
        patterns: client.pubsub_numpat().await.unwrap(),
        channels: channels.len(),
        connections: clients.lines().count(),
        bindings: client
            .scard(format!("_kombu.binding.{DIRECT}"))
            .await
            .unwrap(),
        permanent: client
            .scard(format!("_kombu.binding_permanent.{DIRECT}"))
            .await
            .unwrap(),
        lists: lists.len(),
    }
}

async fn receive(subscription: &mut Subscription, context: &str) -> BroadcastMessage {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{context}: the subscription ended"),
        Err(_) => panic!("{context}: nothing within {WAIT:?}"),
    }
}

fn binding(kind: ExchangeKind, index: usize) -> Binding {
    let (exchange, routing_key) = match kind {
        ExchangeKind::Fanout => ("leak.pidbox", String::new()),
        ExchangeKind::Topic => ("leak.celeryev", "worker.#".to_owned()),
        ExchangeKind::Direct => (DIRECT, format!("client-{index}")),
    };
    Binding {
        exchange: exchange.into(),
        kind,
        routing_key,
        queue: format!("leak.q.{index}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_dropped_subscriptions_leave_nothing_behind() {
    let Some(server) = PrivateRedis::start() else {
        return;
    };
    let broker = Arc::new(RedisBroker::connect(&server.url("")).await.unwrap());
    let broadcast = broker.clone().broadcast().unwrap();
    let before = counts(&broker).await;
    let kinds = [
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Direct,
    ];
    // Ten rounds of 100 live subscriptions, each shown to work, then all dropped.
    for round in 0..10 {
        let mut live = Vec::new();
        for index in round * 100..(round + 1) * 100 {
            let kind = kinds[index % 3];
            live.push((
                kind,
                index,
                broadcast.subscribe(binding(kind, index)).await.unwrap(),
            ));
        }
        for kind in [ExchangeKind::Fanout, ExchangeKind::Topic] {
            let message = BroadcastMessage::new("worker.heartbeat", b"{}".to_vec());
            broadcast
                .send(&binding(kind, 0).exchange, kind, message)
                .await
                .unwrap();
        }
        for (kind, index, subscription) in &mut live {
            if *kind == ExchangeKind::Direct {
                let message = BroadcastMessage::new(format!("client-{index}"), b"{}".to_vec());
                broadcast.send(DIRECT, *kind, message).await.unwrap();
            }
            let received = receive(subscription, &format!("{kind:?} {index}")).await;
            assert_eq!(received.body, b"{}");
        }
        drop(live);
    }
    // Dropping ends each subscription on the server within its poll interval.
    let deadline = Instant::now() + WAIT;
    loop {
        let now = counts(&broker).await;
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {now:?}, was {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sends to what is gone still succeed, and are dropped.
    let message = BroadcastMessage::new("client-2", b"{}".to_vec());
    broadcast
        .send(DIRECT, ExchangeKind::Direct, message)
        .await
        .unwrap();
    assert_eq!(counts(&broker).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_come_back_after_a_restart() {
    let Some(mut server) = PrivateRedis::start() else {
        return;
    };
    let url = server.url("command_timeout=2");
    let broker = Arc::new(RedisBroker::connect(&url).await.unwrap());
    let broadcast = broker.clone().broadcast().unwrap();
    let mut fanout = broadcast
        .subscribe(binding(ExchangeKind::Fanout, 1))
        .await
        .unwrap();
    let mut direct = broadcast
        .subscribe(binding(ExchangeKind::Direct, 2))
        .await
        .unwrap();
    let patterns: u64 = broker.client().pubsub_numpat().await.unwrap();

    server.kill();
    let message = BroadcastMessage::new("", b"\"lost\"".to_vec());
    match broadcast
        .send("leak.pidbox", ExchangeKind::Fanout, message)
        .await
    {
        Err(BrokerError::Unavailable(_)) => {}
        other => panic!("a send during the outage: {other:?}"),
    }
    server.restart();

    // The subscriber resubscribes by itself: the server's count says when.
    let deadline = Instant::now() + WAIT;
    while broker.client().pubsub_numpat::<u64>().await.ok() != Some(patterns) {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not resubscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (kind, exchange, key) in [
        (ExchangeKind::Fanout, "leak.pidbox", ""),
        (ExchangeKind::Direct, DIRECT, "client-2"),
    ] {
        let message = BroadcastMessage::new(key, b"\"after\"".to_vec());
        broadcast.send(exchange, kind, message).await.unwrap();
    }
    assert_eq!(receive(&mut fanout, "fanout").await.body, b"\"after\"");
    assert_eq!(receive(&mut direct, "direct").await.body, b"\"after\"");
    // The direct binding is declared again after the reconnect (it survived here anyway).
    let bound: bool = broker
        .client()
        .sismember(
            format!("_kombu.binding.{DIRECT}"),
            "client-2\x06\x16\x06\x16leak.q.2",
        )
        .await
        .unwrap();
    assert!(bound);
}
