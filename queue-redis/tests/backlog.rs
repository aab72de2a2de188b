//! The backlog on a Redis shared with Python Celery: what a monitor reads of messages and
//! bindings that kombu wrote (no `timestamp` in the envelope, Celery's binding tables for
//! task queues, the pidbox and the event receivers), with kombu's default four lists per
//! queue. Database 10, each test under a key prefix of its own.

mod common;

use fred::prelude::{ListInterface, SetsInterface};
use queue_core::{Broker, Publish};
use queue_redis::SEP;
use serde_json::{Value as Json, json};

use common::{message, unique};

const DB: u8 = 10;

/// A task envelope as a Python producer pushes it: no `timestamp` property.
fn python_envelope(id: &str, queue: &str, kombu_priority: u8) -> String {
    let sent = message(id, 0);
    let mut envelope: Json =
        serde_json::from_slice(&queue_core::protocol::envelope::encode(&sent)).unwrap();
    let properties = &mut envelope["properties"];
    properties["priority"] = json!(kombu_priority);
    properties["delivery_tag"] = json!(uuid::Uuid::new_v4().to_string());
    properties["delivery_info"] = json!({"exchange": "", "routing_key": queue});
    envelope.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_messages_have_no_age_and_celerys_bindings_name_the_queues() {
    let prefix = format!("{}:", unique("backlog"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let client = broker.client();
    let queue = "celery";
    // kombu's priority 0 (the plain list, served first) and 5 (the second list).
    let lists = broker.list_keys(queue);
    let _: i64 = client
        .lpush(lists[1].as_str(), python_envelope("python-low", queue, 5))
        .await
        .unwrap();
    let _: i64 = client
        .lpush(
            lists[0].as_str(),
            python_envelope("python-urgent", queue, 0),
        )
        .await
        .unwrap();
    // Celery's bindings: the task queue, a worker's pidbox, an event receiver.
    let bindings = [
        ("celery", format!("celery{SEP}{SEP}celery")),
        ("emails", format!("emails{SEP}{SEP}emails")),
        ("celery.pidbox", format!("{SEP}{SEP}w1@host.celery.pidbox")),
        ("celeryev", format!("worker.#{SEP}{SEP}celeryev.4f1e")),
        ("reply.celery.pidbox", format!("abc{SEP}{SEP}abc")),
    ];
    for (exchange, member) in &bindings {
        let _: i64 = client
            .sadd(
                format!("{prefix}_kombu.binding.{exchange}"),
                member.as_str(),
            )
            .await
            .unwrap();
    }

    let stats = broker.queue_stats(queue).await.unwrap();
    assert_eq!(stats.ready.total, 2);
    let oldest = stats.oldest_ready.expect("two messages are ready");
    assert_eq!(
        oldest.task_id.as_deref(),
        Some("python-urgent"),
        "without times, the message a consumer gets next"
    );
    assert_eq!(oldest.enqueued_at, None, "Python's envelopes carry no time");

    let known = broker.known_queues().await.unwrap();
    assert_eq!(
        known.names,
        ["celery", "emails"],
        "the task queues of the binding tables, not the pidbox or event queues"
    );
    assert!(known.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_message_is_the_earliest_published_whatever_its_priority() {
    let prefix = format!("{}:", unique("backlog"));
    let Some(broker) = common::broker(DB, &format!("global_keyprefix={prefix}")).await else {
        return;
    };
    let queue = "q";
    let before = queue_core::protocol::time::now();
    broker
        .publish(vec![Publish::new(queue, message("low-first", 0))])
        .await
        .unwrap();
    broker
        .publish(vec![Publish::new(queue, message("urgent-later", 9))])
        .await
        .unwrap();
    let stats = broker.queue_stats(queue).await.unwrap();
    assert_eq!(stats.ready.total, 2);
    let oldest = stats.oldest_ready.expect("ready messages");
    assert_eq!(
        oldest.task_id.as_deref(),
        Some("low-first"),
        "the urgent one is served first, but the low one has waited longest"
    );
    let enqueued_at = oldest.enqueued_at.expect("our publishes carry a timestamp");
    assert!(enqueued_at >= before - chrono::Duration::milliseconds(1));
    assert!(enqueued_at <= queue_core::protocol::time::now());
    broker.purge(queue).await.unwrap();

    let known = broker.known_queues().await.unwrap();
    assert_eq!(
        known.names,
        ["q"],
        "a queue we published to is bound as Celery does"
    );
}
