//! kombu's layout with the default settings, as a Python worker or producer sharing the
//! Redis sees it: list names, envelope fields, priorities as kombu numbers, the `unacked`
//! bookkeeping, dead letters and delayed messages. Database 10.

mod common;

use std::time::Duration;

use fred::prelude::{HashesInterface, KeysInterface, ListInterface, SortedSetsInterface};
use fred::types::Value;
use queue_core::{Broker, ConsumeOptions, Publish};
use serde_json::{Value as Json, json};

use common::{id_of, message, unique};

const DB: u8 = 10;
const WAIT: Duration = Duration::from_secs(5);

async fn raw_list(broker: &queue_redis::RedisBroker, key: &str) -> Vec<Json> {
    let items: Vec<String> = broker.client().lrange(key, 0, -1).await.unwrap();
    items
        .iter()
        .map(|item| serde_json::from_str(item).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_envelope_is_kombus_with_priority_as_kombu_number() {
    let Some(broker) = common::broker(DB, "").await else {
        return;
    };
    let queue = unique("envelope");
    let id = unique("id");
    broker
        .publish(vec![Publish::new(&queue, message(&id, 8))])
        .await
        .unwrap();

    // Our 8 is kombu's 1: the plain list, which kombu serves first.
    let lists = broker.list_keys(&queue);
    assert_eq!(
        lists,
        [
            queue.clone(),
            format!("{queue}\x06\x163"),
            format!("{queue}\x06\x166"),
            format!("{queue}\x06\x169")
        ]
    );
    let stored = raw_list(&broker, &queue).await;
    assert_eq!(stored.len(), 1, "one envelope in the plain list");
    let envelope = &stored[0];
    assert_eq!(envelope["content-type"], "application/json");
    assert_eq!(envelope["content-encoding"], "utf-8");
    assert_eq!(envelope["headers"]["id"], json!(id));
    assert_eq!(envelope["headers"]["task"], "conformance.task");
    let properties = &envelope["properties"];
    assert_eq!(properties["priority"], 1);
    assert_eq!(properties["body_encoding"], "base64");
    assert_eq!(
        properties["delivery_info"],
        json!({"exchange": "", "routing_key": queue})
    );
    assert_eq!(
        properties["delivery_tag"].as_str().unwrap().len(),
        36,
        "a UUID4 tag"
    );
    // kombu's binding, as Celery declares it.
    let bindings: Vec<String> =
        fred::prelude::SetsInterface::smembers(broker.client(), format!("_kombu.binding.{queue}"))
            .await
            .unwrap();
    assert_eq!(bindings, [format!("{queue}\x06\x16\x06\x16{queue}")]);
    broker.purge(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_kombu_lists_serve_urgent_first_and_fifo_within_a_list() {
    let Some(broker) = common::broker(DB, "").await else {
        return;
    };
    let queue = unique("lanes");
    let sent = [
        ("p0", 0u8),
        ("p8", 8),
        ("p5", 5),
        ("p9", 9),
        ("p3", 3),
        ("p4", 4),
    ];
    let batch = sent
        .iter()
        .map(|(id, priority)| Publish::new(&queue, message(id, *priority)))
        .collect();
    broker.publish(batch).await.unwrap();

    for (list, expected) in broker.list_keys(&queue).iter().zip([2, 2, 1, 1]) {
        let length: i64 = broker.client().llen(list.as_str()).await.unwrap();
        assert_eq!(length, expected, "list {list:?}");
    }
    let length = broker.queue_length(&queue).await.unwrap();
    assert_eq!(length.total, 6);
    // Each list under the highest of our priorities it holds.
    assert_eq!(
        length.by_priority.into_iter().collect::<Vec<_>>(),
        [(0, 1), (3, 1), (6, 2), (9, 2)]
    );

    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut order = Vec::new();
    while order.len() < sent.len() {
        for delivery in consumer.fetch(10, WAIT).await.unwrap() {
            let priority = delivery.content.as_ref().unwrap().priority();
            order.push((id_of(&delivery), priority));
            consumer.ack(&delivery).await.unwrap();
        }
    }
    // 8 and 9 share kombu's plain list (FIFO), 5 and 4 the next one.
    let expected: Vec<(String, u8)> = [
        ("p8", 8),
        ("p9", 9),
        ("p5", 5),
        ("p4", 4),
        ("p3", 3),
        ("p0", 0),
    ]
    .iter()
    .map(|(id, p)| (id.to_string(), *p))
    .collect();
    assert_eq!(order, expected);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_records_unacked_as_kombu_and_ack_forgets() {
    let Some(broker) = common::broker(DB, "global_keyprefix=unacked-test:").await else {
        return;
    };
    let queue = unique("unacked");
    broker
        .publish(vec![Publish::new(&queue, message("u1", 0))])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let delivery = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    let queue_core::DeliveryTag::Text(tag) = &delivery.tag else {
        panic!("text tag")
    };

    let client = broker.client();
    let stored: String = client
        .hget("unacked-test:unacked", tag.as_str())
        .await
        .unwrap();
    let triple: Json = serde_json::from_str(&stored).unwrap();
    assert_eq!(triple[1], "", "exchange");
    assert_eq!(triple[2], json!(queue), "routing key");
    assert_eq!(triple[0]["properties"]["delivery_tag"], json!(tag));
    assert_eq!(
        triple[0]["properties"]["priority"], 9,
        "kombu's number for our 0"
    );
    let score: Option<f64> = client
        .zscore("unacked-test:unacked_index", tag.as_str())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        score.is_some_and(|score| (score - now).abs() < 5.0),
        "index score {score:?} is now ({now})"
    );

    consumer.ack(&delivery).await.unwrap();
    // Acks go out without waiting (as AMQP's); closing waits for those sent before it.
    consumer.close().await.unwrap();
    let stored: Option<String> = client
        .hget("unacked-test:unacked", tag.as_str())
        .await
        .unwrap();
    let score: Option<f64> = client
        .zscore("unacked-test:unacked_index", tag.as_str())
        .await
        .unwrap();
    assert_eq!((stored, score), (None, None), "ack removes both entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_elements_are_delivered_and_dead_lettered_with_raw_text() {
    let Some(broker) = common::broker(DB, "").await else {
        return;
    };
    let queue = unique("garbage");
    let client = broker.client();
    let _: i64 = client
        .lpush(
            queue.as_str(),
            vec!["not json at all", r#"{"no": "envelope"}"#],
        )
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    while deliveries.len() < 2 {
        deliveries.extend(consumer.fetch(2, WAIT).await.unwrap());
    }
    for (delivery, raw) in deliveries
        .iter()
        .zip(["not json at all", r#"{"no": "envelope"}"#])
    {
        let undecodable = delivery.content.as_ref().expect_err("undecodable");
        assert_eq!(undecodable.raw, raw.as_bytes());
        consumer
            .dead_letter(delivery, &format!("cannot decode: {}", undecodable.error))
            .await
            .unwrap();
    }
    let dead = broker.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].content.as_ref().unwrap_err().raw,
        b"not json at all"
    );
    assert!(
        dead[0].reason.starts_with("cannot decode"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        dead[1].content.as_ref().unwrap_err().raw,
        br#"{"no": "envelope"}"#
    );
    assert_eq!(broker.queue_length(&queue).await.unwrap().total, 0);
    consumer.close().await.unwrap();
    let _: i64 = client.del(format!("{queue}.dead_letter")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fetch_loses_nothing() {
    let Some(broker) = common::broker(DB, "").await else {
        return;
    };
    let queue = unique("cancel");
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    // A fetch waiting on the empty queue whose caller gives up.
    let waiting = consumer.fetch(1, Duration::from_secs(3));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), waiting)
            .await
            .is_err()
    );
    broker
        .publish(vec![Publish::new(&queue, message("kept", 0))])
        .await
        .unwrap();
    let delivery = consumer.fetch(1, WAIT).await.unwrap();
    assert_eq!(delivery.iter().map(id_of).collect::<Vec<_>>(), ["kept"]);
    consumer.ack(&delivery[0]).await.unwrap();
    assert_eq!(broker.queue_length(&queue).await.unwrap().total, 0);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eta_message_found_in_the_queue_is_deferred_into_redis() {
    let Some(broker) = common::broker(DB, "").await else {
        return;
    };
    let queue = unique("defer");
    // As a Python producer sends a countdown: straight into the list, eta in the header.
    let mut sent = message("later", 0);
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(600);
    sent.headers.eta = Some(due.fixed_offset());
    let mut envelope: Json =
        serde_json::from_slice(&queue_core::protocol::envelope::encode(&sent)).unwrap();
    envelope["properties"]["delivery_tag"] = json!(uuid::Uuid::new_v4().to_string());
    envelope["properties"]["delivery_info"] = json!({"exchange": "", "routing_key": queue});
    let _: i64 = broker
        .client()
        .lpush(queue.as_str(), envelope.to_string())
        .await
        .unwrap();

    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let delivery = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    let queue_core::DeliveryTag::Text(tag) = delivery.tag.clone() else {
        panic!()
    };
    consumer.defer(&delivery, due.fixed_offset()).await.unwrap();
    // Parked in Redis as an unacked entry whose visibility ends at its eta, so that any
    // restore (kombu's too) brings it back when due; the delayed set indexes it.
    let in_unacked: Option<String> = broker.client().hget("unacked", tag.as_str()).await.unwrap();
    let in_unacked: Json = serde_json::from_str(&in_unacked.expect("still in unacked")).unwrap();
    assert_eq!(in_unacked[0]["headers"]["id"], "later");
    assert_eq!(
        (&in_unacked[1], &in_unacked[2]),
        (&json!(""), &json!(queue))
    );
    let score: f64 = broker
        .client()
        .zscore("unacked_index", tag.as_str())
        .await
        .unwrap();
    let due_seconds = due.timestamp_millis() as f64 / 1000.0;
    assert!(
        (score - (due_seconds - 3600.0)).abs() < 0.01,
        "index score {score}: due time minus the visibility timeout"
    );
    let members: Vec<String> = broker
        .client()
        .zrange(
            format!("_queue.delayed.{queue}"),
            0,
            -1,
            None,
            false,
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].starts_with("1|") && members[0].ends_with(&format!("|{tag}")));
    let again = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    assert!(
        chrono::Utc::now() + chrono::Duration::milliseconds(50) >= due,
        "not before its eta"
    );
    assert_eq!(id_of(&again), "later");
    consumer.ack(&again).await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_touches_only_unacked_messages() {
    let Some(broker) = common::broker(DB, "global_keyprefix=renew-test:").await else {
        return;
    };
    let queue = unique("renew");
    broker
        .publish(vec![Publish::new(&queue, message("r", 0))])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let delivery = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    let queue_core::DeliveryTag::Text(tag) = delivery.tag.clone() else {
        panic!()
    };
    let client = broker.client();
    let _: Value = client
        .zadd(
            "renew-test:unacked_index",
            None,
            None,
            false,
            false,
            (1.0, tag.as_str()),
        )
        .await
        .unwrap();
    consumer
        .renew(std::slice::from_ref(&delivery.tag))
        .await
        .unwrap();
    let score: f64 = client
        .zscore("renew-test:unacked_index", tag.as_str())
        .await
        .unwrap();
    assert!(score > 1.0e9, "renewed to now: {score}");
    consumer.ack(&delivery).await.unwrap();
    consumer.close().await.unwrap(); // the ack is written
    consumer
        .renew(std::slice::from_ref(&delivery.tag))
        .await
        .unwrap();
    let score: Option<f64> = client
        .zscore("renew-test:unacked_index", tag.as_str())
        .await
        .unwrap();
    assert_eq!(score, None, "a renew never resurrects an acked message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_taken_while_waiting_is_recorded_when_taken() {
    let prefix = format!("{}:", unique("waiting"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let client = broker.client();
    let queue = unique("waiting");
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let take = |consumer: std::sync::Arc<dyn queue_core::Consumer>| {
        tokio::spawn(async move { consumer.fetch(5, WAIT).await.unwrap() })
    };
    for id in ["first", "second"] {
        // Published while the consumer waits on the empty queue: recorded in `unacked` by
        // the time the fetch returns it (in the same step as it left the list).
        let waiting = take(consumer.clone());
        broker
            .publish(vec![Publish::new(&queue, message(id, 0))])
            .await
            .unwrap();
        let taken = waiting.await.unwrap();
        assert_eq!(taken.iter().map(id_of).collect::<Vec<_>>(), [id]);
        let queue_core::DeliveryTag::Text(tag) = &taken[0].tag else {
            panic!()
        };
        let recorded: bool = client
            .hexists(format!("{prefix}unacked"), tag.as_str())
            .await
            .unwrap();
        let indexed: Option<f64> = client
            .zscore(format!("{prefix}unacked_index"), tag.as_str())
            .await
            .unwrap();
        assert!(recorded && indexed.is_some(), "{id} is unacked once taken");
        assert_eq!(broker.queue_length(&queue).await.unwrap().total, 0);
        consumer.ack(&taken[0]).await.unwrap();
    }

    // Deferring finds it unacked and parks it.
    let waiting = take(consumer.clone());
    broker
        .publish(vec![Publish::new(&queue, message("deferred", 0))])
        .await
        .unwrap();
    let taken = waiting.await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    consumer
        .defer(&taken[0], later.fixed_offset())
        .await
        .unwrap();
    let delayed: i64 = client
        .zcard(format!("{prefix}_queue.delayed.{queue}"))
        .await
        .unwrap();
    assert_eq!(delayed, 1, "the deferred message waits in Redis");

    consumer.close().await.unwrap();
    let unacked: i64 = client.hlen(format!("{prefix}unacked")).await.unwrap();
    let index: i64 = client
        .zcard(format!("{prefix}unacked_index"))
        .await
        .unwrap();
    assert_eq!(
        (unacked, index),
        (1, 1),
        "the acks are written by close; only the parked message is left"
    );
    let _: i64 = client
        .del(vec![
            format!("{prefix}_queue.delayed.{queue}"),
            format!("{prefix}unacked"),
            format!("{prefix}unacked_index"),
        ])
        .await
        .unwrap();
}
