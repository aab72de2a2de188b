//! Delayed messages parked in `unacked` until due, the retry that takes its original's
//! place in one step (`republish_and_ack`), and the non-destructive wait of an idle consumer
//! next to another client's `BRPOP`. Database 14, a key prefix per test.

mod common;

use std::time::Duration;

use fred::prelude::{
    ClientLike, HashesInterface, KeysInterface, ListInterface, SortedSetsInterface,
};
use fred::types::{ClusterHash, CustomCommand, Value};
use queue_core::{Broker, ConsumeOptions, Delivery, DeliveryTag, Publish};
use serde_json::Value as Json;

use common::{PrivateRedis, id_of, message, unique};

const DB: u8 = 14;
const WAIT: Duration = Duration::from_secs(5);

fn tag(delivery: &Delivery) -> String {
    match &delivery.tag {
        DeliveryTag::Text(tag) => tag.clone(),
        other => panic!("a Redis tag is text: {other}"),
    }
}

/// The task ids and retries of the `unacked` entries under `prefix`.
async fn unacked(broker: &queue_redis::RedisBroker, prefix: &str) -> Vec<(String, u64)> {
    let entries: std::collections::HashMap<String, String> = broker
        .client()
        .hgetall(format!("{prefix}unacked"))
        .await
        .unwrap();
    let mut found: Vec<(String, u64)> = entries
        .values()
        .map(|value| {
            let triple: Json = serde_json::from_str(value).unwrap();
            let headers = &triple[0]["headers"];
            (
                headers["id"].as_str().unwrap().to_owned(),
                headers["retries"].as_u64().unwrap(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_publish_is_parked_where_any_restore_finds_it_when_due() {
    let prefix = format!("{}:", unique("parked"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let queue = unique("q");
    let mut later = message("later", 0);
    let due = chrono::Utc::now() + chrono::Duration::hours(2);
    later.headers.eta = Some(due.fixed_offset());
    broker
        .publish(vec![Publish::new(&queue, later)])
        .await
        .unwrap();
    // Not ready, not in any list: an unacked entry whose visibility ends when it is due.
    assert_eq!(broker.queue_length(&queue).await.unwrap().total, 0);
    for list in broker.list_keys(&queue) {
        let length: i64 = broker.client().llen(list).await.unwrap();
        assert_eq!(length, 0);
    }
    assert_eq!(unacked(&broker, &prefix).await, [("later".to_owned(), 0)]);
    let index: Vec<(String, f64)> = broker
        .client()
        .zrange(
            format!("{prefix}unacked_index"),
            0,
            -1,
            None,
            false,
            None,
            true,
        )
        .await
        .unwrap();
    assert_eq!(index.len(), 1);
    let expected = due.timestamp_millis() as f64 / 1000.0 - 3600.0;
    assert!(
        (index[0].1 - expected).abs() < 0.01,
        "index score {}: due minus the visibility timeout ({expected})",
        index[0].1
    );
    let delayed: i64 = broker
        .client()
        .zcard(format!("{prefix}_queue.delayed.{queue}"))
        .await
        .unwrap();
    assert_eq!(delayed, 1, "indexed for an exact promotion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_and_ack_puts_the_retry_in_place_of_the_original() {
    let prefix = format!("{}:", unique("retry"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let queue = unique("q");
    broker
        .publish(vec![
            Publish::new(&queue, message("soon", 0)),
            Publish::new(&queue, message("later", 0)),
        ])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let taken = consumer.fetch(2, WAIT).await.unwrap();
    assert_eq!(
        taken.iter().map(id_of).collect::<Vec<_>>(),
        ["soon", "later"]
    );
    let originals: Vec<String> = taken.iter().map(tag).collect();

    // A retry due now goes to the queue; one with an eta is parked until due.
    let mut soon = taken[0].content.clone().unwrap();
    soon.headers.retries = 1;
    consumer
        .republish_and_ack(&taken[0], Publish::new(&queue, soon))
        .await
        .unwrap();
    let mut later = taken[1].content.clone().unwrap();
    later.headers.retries = 1;
    later.headers.eta = Some((chrono::Utc::now() + chrono::Duration::hours(1)).fixed_offset());
    consumer
        .republish_and_ack(&taken[1], Publish::new(&queue, later))
        .await
        .unwrap();

    for original in &originals {
        let still: bool = broker
            .client()
            .hexists(format!("{prefix}unacked"), original.as_str())
            .await
            .unwrap();
        assert!(!still, "the original is acked in the same step");
    }
    assert_eq!(
        unacked(&broker, &prefix).await,
        [("later".to_owned(), 1)],
        "only the parked retry is left in unacked"
    );
    assert_eq!(broker.queue_length(&queue).await.unwrap().total, 1);
    let again = consumer.fetch(2, WAIT).await.unwrap();
    assert_eq!(again.iter().map(id_of).collect::<Vec<_>>(), ["soon"]);
    assert_eq!(again[0].content.as_ref().unwrap().headers.retries, 1);
    assert_ne!(tag(&again[0]), originals[0], "a fresh delivery tag");
    consumer.ack(&again[0]).await.unwrap();
    consumer.close().await.unwrap();
    // Closing gives back only what the consumer held: the parked retry stays parked.
    assert_eq!(unacked(&broker, &prefix).await, [("later".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_an_original_restored_meanwhile_adds_no_copy() {
    let prefix = format!("{}:", unique("restored"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let queue = unique("q");
    broker
        .publish(vec![Publish::new(&queue, message("slow", 0))])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let taken = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    // As a visibility restore (ours or kombu's) does when the worker stalled too long:
    // the entry leaves `unacked` and the message goes back to its list.
    let client = broker.client();
    let value: String = client
        .hget(format!("{prefix}unacked"), tag(&taken).as_str())
        .await
        .unwrap();
    let triple: Json = serde_json::from_str(&value).unwrap();
    let _: i64 = client
        .hdel(format!("{prefix}unacked"), tag(&taken).as_str())
        .await
        .unwrap();
    let _: i64 = client
        .zrem(format!("{prefix}unacked_index"), tag(&taken).as_str())
        .await
        .unwrap();
    let _: i64 = client
        .rpush(format!("{prefix}{queue}"), triple[0].to_string())
        .await
        .unwrap();

    let mut retry = taken.content.clone().unwrap();
    retry.headers.retries = 1;
    consumer
        .republish_and_ack(&taken, Publish::new(&queue, retry))
        .await
        .unwrap();
    // One copy: the restored original, which runs again; no retry beside it.
    let left = consumer.fetch(10, WAIT).await.unwrap();
    assert_eq!(left.iter().map(id_of).collect::<Vec<_>>(), ["slow"]);
    assert_eq!(left[0].content.as_ref().unwrap().headers.retries, 0);
    consumer.ack(&left[0]).await.unwrap();
    assert!(consumer.fetch(10, Duration::ZERO).await.unwrap().is_empty());
    consumer.close().await.unwrap();
}

/// `BRPOP <list> <seconds>` on a connection of its own, as a kombu worker waits.
async fn brpop(client: &fred::clients::Client, list: &str) -> Value {
    let command = CustomCommand::new_static("BRPOP", ClusterHash::FirstKey, true);
    client
        .custom(command, vec![Value::from(list), Value::from("10")])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_takes_nothing_from_a_kombu_worker_waiting_beside_it() {
    // A server of our own, so that its count of blocked clients is ours alone.
    let Some(server) = PrivateRedis::start() else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&server.url(""))
        .await
        .unwrap();
    let queue = "shared.q";
    let consumer = broker.consume(ConsumeOptions::new([queue])).await.unwrap();
    let python = fred::types::Builder::from_config(broker.client().client_config())
        .build()
        .unwrap();
    python.init().await.unwrap();
    let ours = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.fetch(1, Duration::from_secs(2)).await.unwrap() }
    });
    let theirs = tokio::spawn(async move { brpop(&python, queue).await });
    // Both blocked (our watchers, one per list of the queue, and the kombu-like BRPOP).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let info: String = broker
            .client()
            .info(Some(fred::types::InfoKind::Clients))
            .await
            .unwrap();
        if info.contains(&format!(
            "blocked_clients:{}",
            broker.list_keys(queue).len() + 1
        )) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not both blocked: {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker
        // Our 9 is kombu's 0: the plain list the BRPOP waits on.
        .publish(vec![Publish::new(queue, message("one", 9))])
        .await
        .unwrap();
    let popped = theirs.await.unwrap();
    let Value::Array(pair) = popped else {
        panic!("BRPOP got nothing: {popped:?}")
    };
    let envelope: Json = serde_json::from_slice(pair[1].as_bytes().unwrap()).unwrap();
    assert_eq!(
        envelope["headers"]["id"], "one",
        "the waiting BRPOP is served"
    );
    let taken = ours.await.unwrap();
    assert!(
        taken.is_empty(),
        "our consumer's wait left the message to the other worker, and no copy behind"
    );
    let length: i64 = broker.client().llen(queue).await.unwrap();
    let unacked: i64 = broker.client().hlen("unacked").await.unwrap();
    assert_eq!((length, unacked), (0, 0));

    // And a message published while only we wait is ours, taken and recorded at once.
    let ours = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.fetch(1, WAIT).await.unwrap() }
    });
    broker
        .publish(vec![Publish::new(queue, message("two", 9))])
        .await
        .unwrap();
    let taken = ours.await.unwrap();
    assert_eq!(taken.iter().map(id_of).collect::<Vec<_>>(), ["two"]);
    consumer.ack(&taken[0]).await.unwrap();
    consumer.close().await.unwrap();
    let left: i64 = broker
        .client()
        .exists(vec!["unacked", queue])
        .await
        .unwrap();
    assert_eq!(left, 0);
}
