//! The backlog on a RabbitMQ shared with Python Celery, without the management API: a
//! message Python published (no AMQP `timestamp`) has no age but its task id, reading the
//! head of a queue for it changes neither the queue's content nor its order, and the
//! known queues are those this process used or asked about.

mod common;

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use queue_amqp::AmqpBroker;
use queue_core::{Broker, ConsumeOptions};

const WAIT: Duration = Duration::from_secs(5);

/// Publishes a protocol v2 task as py-amqp does: headers, JSON body, no timestamp.
async fn publish_as_python(channel: &lapin::Channel, queue: &str, id: &str) {
    let mut headers = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(LongString::from(value.as_bytes()));
    headers.insert(ShortString::from("lang"), text("py"));
    headers.insert(ShortString::from("task"), text("tasks.add"));
    headers.insert(ShortString::from("id"), text(id));
    headers.insert(ShortString::from("root_id"), text(id));
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(2)
        .with_priority(0)
        .with_correlation_id(ShortString::from(id))
        .with_headers(headers);
    channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            b"[[2, 3], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]",
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_message_has_no_age_and_reading_the_head_keeps_the_queue() {
    let Some(url) = common::amqp_url("") else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let queue = common::unique("backlog-head");
    broker.declare_queue(&queue).await.unwrap();
    let (_connection, channel) = common::raw_channel(&url).await;
    // Confirmed, so that the messages are in the queue before it is read.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    for id in ["first", "second"] {
        publish_as_python(&channel, &queue, id).await;
    }

    for _ in 0..3 {
        let stats = broker.queue_stats(&queue).await.unwrap();
        assert_eq!(stats.ready.total, 2, "reading the head takes nothing away");
        let oldest = stats.oldest_ready.expect("two messages are ready");
        assert_eq!(oldest.task_id.as_deref(), Some("first"));
        assert_eq!(oldest.enqueued_at, None, "Python sets no AMQP timestamp");
    }
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let deliveries = consumer.fetch(2 - ids.len(), WAIT).await.unwrap();
        assert!(!deliveries.is_empty(), "both messages arrive: got {ids:?}");
        for delivery in deliveries {
            ids.push(delivery.content.as_ref().expect("decoded").id().to_owned());
            consumer.ack(&delivery).await.unwrap();
        }
    }
    assert_eq!(ids, ["first", "second"], "the head stays the head");
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_known_once_used_or_asked_about() {
    let Some(url) = common::amqp_url("") else {
        return;
    };
    let declaring = AmqpBroker::connect(&url).await.expect("connect");
    let queue = common::unique("backlog-known");
    declaring.declare_queue(&queue).await.unwrap();
    assert!(
        declaring
            .known_queues()
            .await
            .unwrap()
            .names
            .contains(&queue),
        "a queue this broker declared"
    );

    let monitor = AmqpBroker::connect(&url).await.expect("connect");
    let known = monitor.known_queues().await.unwrap();
    assert!(!known.complete, "AMQP cannot list queues");
    assert!(
        !known.names.contains(&queue),
        "another process's queue is not seen"
    );
    let missing = common::unique("backlog-missing");
    monitor.queue_stats(&queue).await.unwrap();
    let unknown = monitor.queue_stats(&missing).await.unwrap();
    assert_eq!(unknown.ready.total, 0);
    let known = monitor.known_queues().await.unwrap();
    assert!(
        known.names.contains(&queue),
        "a queue asked about exists: known"
    );
    assert!(
        !known.names.contains(&missing),
        "a queue that does not exist stays unknown"
    );
    declaring.purge(&queue).await.unwrap();
}
