//! A worker's Celery events on `memory://`: worker-online, heartbeats and worker-offline
//! always; task events (received, started, succeeded, failed, retried) when turned on, in
//! Celery's shapes (the wire against real Python receivers is proven in the broker crates'
//! broadcast interop tests and the Flower suite).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, init_logs};
use queue::broadcast::{Binding, ExchangeKind, Subscription};
use queue::events::{EVENT_EXCHANGE, Event};
use queue::{App, Broker, MemoryBroker, TaskContext, TaskError, Worker, task};
use serde_json::json;

#[task(name = "events.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "events.fail")]
async fn fail() -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", "boom"))
}

#[task(name = "events.flaky", max_retries = 1, retry_delay = 0)]
async fn flaky(context: TaskContext) -> Result<(), TaskError> {
    if context.retries() == 0 {
        return Err(context.retry());
    }
    Ok(())
}

/// An app on its own memory broker, and a subscription to every event on it.
async fn setup() -> (App, Subscription) {
    init_logs();
    let broker = Arc::new(MemoryBroker::new());
    let broadcast = (broker.clone() as Arc<dyn Broker>)
        .broadcast()
        .expect("the memory broker broadcasts");
    let events = broadcast
        .subscribe(Binding {
            exchange: EVENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            routing_key: "#".to_owned(),
            queue: "celeryev.test".to_owned(),
        })
        .await
        .unwrap();
    let app = App::builder()
        .broker_instance(broker)
        .backend("memory://")
        .task(add)
        .task(fail)
        .task(flaky)
        .build()
        .await
        .unwrap();
    (app, events)
}

/// Receives events until one of type `kind` (for task `uuid` when given) arrives; returns
/// every event received on the way, that one last.
async fn until(events: &mut Subscription, kind: &str, uuid: Option<&str>) -> Vec<Event> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(message) = events.next().await {
            let routing_key = message.routing_key.clone();
            for event in Event::decode(&message.body).expect("an event body") {
                let event = event.expect("a valid event");
                assert_eq!(
                    message.headers.get("hostname"),
                    Some(&json!(event.hostname)),
                    "the hostname header names the sender"
                );
                if !event.is_task_event() {
                    assert_eq!(routing_key, event.routing_key());
                }
                let done = event.kind == kind && (uuid.is_none() || event.uuid() == uuid);
                seen.push(event);
                if done {
                    return;
                }
            }
        }
    })
    .await;
    let kinds: Vec<&str> = seen.iter().map(|event| event.kind.as_str()).collect();
    assert!(found.is_ok(), "no {kind} within {WAIT:?}; saw {kinds:?}");
    seen
}

#[tokio::test]
async fn task_events_follow_a_task_from_received_to_succeeded() {
    let (app, mut events) = setup().await;
    let worker = Worker::new(app.clone())
        .node_name("celery@events-test")
        .task_events(true)
        .spawn();
    let online = until(&mut events, "worker-online", None).await;
    let online = online.last().unwrap();
    assert_eq!(online.hostname, "celery@events-test");
    assert_eq!(online.field("freq"), Some(&json!(2.0)));
    assert_eq!(online.field("sw_ident"), Some(&json!("rs-queue")));

    let sum = add::new(2, 2).send(&app).await.unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 4);
    let seen = until(&mut events, "task-succeeded", Some(sum.id())).await;
    let of_task: Vec<&Event> = seen
        .iter()
        .filter(|event| event.uuid() == Some(sum.id()))
        .collect();
    let kinds: Vec<&str> = of_task.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["task-received", "task-started", "task-succeeded"]);
    let received = of_task[0];
    assert_eq!(received.field("name"), Some(&json!("events.add")));
    assert_eq!(received.field("args"), Some(&json!("(2, 2)")));
    assert_eq!(received.field("retries"), Some(&json!(0)));
    let succeeded = of_task[2];
    assert_eq!(succeeded.field("result"), Some(&json!("4")));
    let runtime = succeeded.field("runtime").and_then(|value| value.as_f64());
    assert!(
        runtime.is_some_and(|seconds| seconds >= 0.0),
        "{succeeded:?}"
    );
    // Lamport clock: later events carry larger values.
    assert!(of_task.windows(2).all(|pair| pair[0].clock < pair[1].clock));

    worker.shutdown().await.unwrap();
    let offline = until(&mut events, "worker-offline", None).await;
    assert_eq!(offline.last().unwrap().hostname, "celery@events-test");
}

#[tokio::test]
async fn failures_and_retries_carry_the_exception_repr() {
    let (app, mut events) = setup().await;
    let worker = Worker::new(app.clone()).task_events(true).spawn();
    let failed = fail::new().send(&app).await.unwrap();
    assert!(failed.get(WAIT).await.is_err());
    let seen = until(&mut events, "task-failed", Some(failed.id())).await;
    let event = seen.last().unwrap();
    assert_eq!(event.field("exception"), Some(&json!("ValueError('boom')")));
    assert!(event.field("traceback").is_some());

    let retried = flaky::new().send(&app).await.unwrap();
    retried.get(WAIT).await.unwrap();
    let seen = until(&mut events, "task-succeeded", Some(retried.id())).await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|event| event.uuid() == Some(retried.id()))
        .map(|event| event.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "task-received",
            "task-started",
            "task-retried",
            "task-received",
            "task-started",
            "task-succeeded"
        ]
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_task_events_only_worker_events_are_sent() {
    let (app, mut events) = setup().await;
    let worker = Worker::new(app.clone())
        .heartbeat_interval(Duration::from_millis(100))
        .spawn();
    let mut seen = until(&mut events, "worker-online", None).await;
    let sum = add::new(1, 2).send(&app).await.unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 3);
    // A heartbeat that counts the task as processed and none active was made after the
    // task ended: any task event of it would have come before.
    loop {
        let more = until(&mut events, "worker-heartbeat", None).await;
        let heartbeat = more.last().unwrap().clone();
        seen.extend(more);
        if heartbeat.field("processed") == Some(&json!(1))
            && heartbeat.field("active") == Some(&json!(0))
        {
            assert_eq!(heartbeat.field("freq"), Some(&json!(0.1)));
            break;
        }
    }
    let task_events: Vec<&Event> = seen.iter().filter(|event| event.is_task_event()).collect();
    assert!(task_events.is_empty(), "{task_events:?}");
    assert_eq!(worker.stats().events_dropped.get(), 0);
    worker.shutdown().await.unwrap();
    until(&mut events, "worker-offline", None).await;
}

#[tokio::test]
async fn producers_send_task_sent_when_asked() {
    init_logs();
    let broker = Arc::new(MemoryBroker::new());
    let mut events = (broker.clone() as Arc<dyn Broker>)
        .broadcast()
        .unwrap()
        .subscribe(Binding {
            exchange: EVENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            routing_key: "task.#".to_owned(),
            queue: "celeryev.sent-test".to_owned(),
        })
        .await
        .unwrap();
    let app = App::builder()
        .broker_instance(broker)
        .send_sent_events(true)
        .task(add)
        .build()
        .await
        .unwrap();
    let sent = add::new(2, 2).send(&app).await.unwrap();
    let seen = until(&mut events, "task-sent", Some(sent.id())).await;
    let event = seen.last().unwrap();
    assert!(event.hostname.starts_with("gen"), "{event:?}");
    assert_eq!(event.field("name"), Some(&json!("events.add")));
    assert_eq!(event.field("queue"), Some(&json!("celery")));
    assert_eq!(event.field("routing_key"), Some(&json!("celery")));
    assert_eq!(event.field("args"), Some(&json!("(2, 2)")));

    // Off by default: nothing but the task itself.
    let quiet = App::builder().task(add).build().await.unwrap();
    let quiet_broadcast = quiet.broker().clone().broadcast().unwrap();
    let mut nothing = quiet_broadcast
        .subscribe(Binding {
            exchange: EVENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            routing_key: "#".to_owned(),
            queue: "celeryev.quiet".to_owned(),
        })
        .await
        .unwrap();
    add::new(1, 1).send(&quiet).await.unwrap();
    // The marker sent after the task: any task-sent event would have come before it.
    quiet_broadcast
        .send(
            EVENT_EXCHANGE,
            ExchangeKind::Topic,
            queue::broadcast::BroadcastMessage::new("test.marker", b"{}".to_vec()),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, nothing.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.routing_key, "test.marker");
}
