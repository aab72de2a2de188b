//! What the broker declares and how it uses it, on a real RabbitMQ: queues declared by
//! another client with other arguments, the delay levels, RabbitMQ's own dead-lettering,
//! unroutable messages, and connection errors that keep the password out of sight.

mod common;

use std::sync::Arc;
use std::time::Duration;

use queue_amqp::{AmqpBroker, AmqpError};
use queue_core::broker::{Broker, ConsumeOptions, Publish};
use queue_core::conformance::broker::{delivery_id, message};
use queue_core::protocol::time;

const WAIT: Duration = Duration::from_secs(10);

async fn broker(query: &str) -> Option<Arc<dyn Broker>> {
    let url = common::amqp_url(query)?;
    Some(Arc::new(AmqpBroker::connect(&url).await.expect("connect")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_queue_with_other_arguments_is_used_as_it_is() {
    let (Some(plain), Some(priority)) = (broker("").await, broker("max_priority=9").await) else {
        return;
    };
    let queue = common::unique("celery-declared");
    plain
        .declare_queue(&queue)
        .await
        .expect("declare without arguments");
    // RabbitMQ refuses `x-max-priority` on this queue: the broker warns and goes on.
    priority
        .declare_queue(&queue)
        .await
        .expect("declare with other arguments");
    priority
        .publish(vec![Publish::new(&queue, message("other-args", 5))])
        .await
        .expect("publish");
    let consumer = priority
        .consume(ConsumeOptions::new([&queue]))
        .await
        .expect("consume");
    let delivery = consumer
        .fetch(1, WAIT)
        .await
        .expect("fetch")
        .pop()
        .expect("delivered");
    assert_eq!(delivery_id(&delivery), "other-args");
    consumer.ack(&delivery).await.expect("ack");
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_wait_in_rabbitmq_and_defer_repeatedly() {
    let Some(broker) = broker("").await else {
        return;
    };
    let queue = common::unique("delayed");
    broker.declare_queue(&queue).await.expect("declare");
    let mut delayed = message("delayed-1", 0);
    let eta = time::now() + chrono::Duration::milliseconds(1500);
    delayed.headers.eta = Some(eta);
    broker
        .publish(vec![Publish::new(&queue, delayed)])
        .await
        .expect("publish");
    // 1500 ms = 0b101_1101_1100: it waits first in level 10 (1024 ms), in RabbitMQ.
    let level = broker.queue_length("queue.delay.10").await.expect("length");
    assert!(
        level.total >= 1,
        "the message waits in delay level 10: {level:?}"
    );
    assert_eq!(broker.queue_length(&queue).await.expect("length").total, 0);

    let consumer = broker
        .consume(ConsumeOptions::new([&queue]))
        .await
        .expect("consume");
    let mut delivery = consumer
        .fetch(1, WAIT)
        .await
        .expect("fetch")
        .pop()
        .expect("delivered");
    assert!(time::now() >= eta, "delivered before its eta");
    // Deferred twice through the same levels: RabbitMQ's dead-letter cycle detection
    // would drop it if the dead-letter headers of the first trip were kept.
    for round in 0..2 {
        let until = time::now() + chrono::Duration::milliseconds(300);
        consumer.defer(&delivery, until).await.expect("defer");
        delivery = consumer
            .fetch(1, WAIT)
            .await
            .expect("fetch")
            .pop()
            .unwrap_or_else(|| {
                panic!(
                    "the message deferred {} time(s) did not come back",
                    round + 1
                )
            });
        assert!(time::now() >= until, "delivered before the deferral ended");
    }
    let message = delivery.content.as_ref().expect("decodes");
    assert_eq!(message.id(), "delayed-1");
    assert!(
        !message
            .headers
            .extra
            .keys()
            .any(|key| key.starts_with("x-death") || key.starts_with("x-first-death")),
        "the delay queues leave no trace in the headers: {:?}",
        message.headers.extra
    );
    consumer.ack(&delivery).await.expect("ack");
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dead_letters_rejected_messages_when_asked() {
    let Some(broker) = broker("dead_letter_rejected=true").await else {
        return;
    };
    let queue = common::unique("rejected");
    broker.declare_queue(&queue).await.expect("declare");
    broker
        .publish(vec![Publish::new(&queue, message("rejected-1", 0))])
        .await
        .expect("publish");
    let consumer = broker
        .consume(ConsumeOptions::new([&queue]))
        .await
        .expect("consume");
    let delivery = consumer
        .fetch(1, WAIT)
        .await
        .expect("fetch")
        .pop()
        .expect("delivered");
    consumer.reject(&delivery, false).await.expect("reject");
    // RabbitMQ dead-letters on its own time: wait for the letter by consuming the
    // dead-letter queue, then give it back (closing the channel requeues it).
    let dead = queue_core::broker::dead_letter_queue(&queue);
    let watcher = broker
        .consume(ConsumeOptions::new([&dead]))
        .await
        .expect("consume");
    let letter = watcher
        .fetch(1, WAIT)
        .await
        .expect("fetch")
        .pop()
        .expect("dead-lettered");
    assert_eq!(delivery_id(&letter), "rejected-1");
    watcher.close().await.expect("close");
    let listed = broker.dead_letters(&queue, 10).await.expect("dead letters");
    assert_eq!(listed.len(), 1, "the rejected message is a dead letter");
    assert!(
        listed[0].reason.contains("rejected"),
        "reason: {}",
        listed[0].reason
    );
    assert_eq!(
        listed[0].content.as_ref().expect("decodes").id(),
        "rejected-1"
    );
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_errors_not_silent_losses() {
    let Some(broker) = broker("").await else {
        return;
    };
    let queue = common::unique("routed");
    let mut publish = Publish::new(&queue, message("lost", 0));
    publish.exchange = Some("amq.direct".into());
    publish.routing_key = Some(common::unique("nobody-bound"));
    let error = broker.publish(vec![publish]).await.expect_err("unroutable");
    assert!(error.to_string().contains("unroutable"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_server_not_the_password() {
    let Some(url) = common::amqp_url("") else {
        return;
    };
    let mut wrong = url::Url::parse(&url).expect("url");
    wrong
        .set_password(Some("not-the-password"))
        .expect("password");
    let error = AmqpBroker::connect(wrong.as_str())
        .await
        .expect_err("wrong password");
    let text = format!("{error} {error:?}");
    assert!(matches!(error, AmqpError::Connect { .. }), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let tls = AmqpBroker::builder("amqps://guest:guest@127.0.0.1:5671/%2f")
        .expect("amqps URL")
        .tls_ca_file("/nonexistent/ca.pem")
        .connect()
        .await
        .expect_err("no CA file");
    assert!(matches!(tls, AmqpError::TlsCaFile { .. }), "{tls}");
}
