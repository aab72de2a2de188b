//! The worker's events: what `worker-heartbeat` reports, and the publisher (every event
//! out in order, in few bodies, and a stalled broker costing dropped events, never a wait).

use std::sync::Mutex;

use async_trait::async_trait;
use queue_core::broadcast::{Binding, BroadcastMessage, ExchangeKind, Subscription};
use queue_core::broker::BrokerError;
use queue_core::events::{BATCH_ROUTING_KEY, Event};
use tokio::sync::Notify;

use super::*;

#[test]
fn processed_counts_started_runs_not_received_messages() {
    let stats = Arc::new(WorkerStats::default());
    let (events, _) = Events::new(
        None,
        "celery@test",
        Arc::default(),
        &EventOptions::default(),
        stats.clone(),
        Arc::default(),
    );
    // Three messages: one ran and was retried, its retry ran and succeeded, one expired.
    for _ in 0..3 {
        stats.received.increment();
    }
    stats.started.increment();
    stats.retried.increment();
    stats.started.increment();
    stats.succeeded.increment();
    stats.revoked.increment();
    let status = events.status(Duration::from_secs(2));
    assert_eq!((status.processed, status.active), (2, 0));
}

/// A broadcast side that records what it is sent, or (`stalled`) never answers.
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<BroadcastMessage>>,
    stalled: bool,
    entered: Notify,
}

#[async_trait]
impl Broadcast for Recording {
    async fn send(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        message: BroadcastMessage,
    ) -> Result<(), BrokerError> {
        assert_eq!((exchange, kind), ("celeryev", ExchangeKind::Topic));
        self.entered.notify_one();
        if self.stalled {
            std::future::pending::<()>().await;
        }
        self.sent.lock().unwrap().push(message);
        Ok(())
    }

    async fn subscribe(&self, _binding: Binding) -> Result<Subscription, BrokerError> {
        Err(BrokerError::Unsupported("subscribe"))
    }
}

fn task_events_on(broadcast: Arc<Recording>) -> (Arc<Events>, Publisher, Arc<WorkerStats>) {
    let stats = Arc::new(WorkerStats::default());
    let options = EventOptions {
        task_events: true,
        heartbeat: Duration::from_secs(2),
    };
    let (events, publisher) = Events::new(
        Some(broadcast),
        "celery@test",
        Arc::default(),
        &options,
        stats.clone(),
        Arc::default(),
    );
    (events, publisher.expect("a broadcast side"), stats)
}

/// What a task that succeeds sends.
fn one_task(events: &Events, number: usize) {
    let headers = Headers::new("tasks.add", format!("task-{number}"));
    events.received(&headers);
    events.task(|| TaskEvent::Started {
        uuid: headers.id.clone(),
    });
    events.task(|| TaskEvent::Succeeded {
        uuid: headers.id.clone(),
        result: "4".into(),
        runtime: 0.001,
    });
}

#[tokio::test]
async fn a_burst_of_task_events_goes_out_whole_in_order_in_few_bodies() {
    let broadcast = Arc::new(Recording::default());
    let (events, publisher, stats) = task_events_on(broadcast.clone());
    let closing = CancellationToken::new();
    let running = tokio::spawn(publisher.run(closing.clone()));
    let tasks = 2000;
    for number in 0..tasks {
        one_task(&events, number);
    }
    go_offline(&events, Duration::from_secs(2), closing, Some(running)).await;

    assert_eq!(stats.events_dropped.get(), 0);
    let sent = std::mem::take(&mut *broadcast.sent.lock().unwrap());
    let (offline, bodies) = sent.split_last().expect("something sent");
    assert_eq!(offline.routing_key, "worker.offline");
    assert_eq!(offline.headers["hostname"], "celery@test");
    // Celery's 24 a body would take 250 PUBLISHes.
    assert!(
        bodies.len() <= 3 * tasks / MAX_BODY_EVENTS + 2,
        "{}",
        bodies.len()
    );
    let mut received: Vec<Event> = Vec::new();
    for body in bodies {
        assert_eq!(body.routing_key, BATCH_ROUTING_KEY);
        let events = Event::decode(&body.body).expect("a JSON array");
        assert!(events.len() <= MAX_BODY_EVENTS);
        received.extend(events.into_iter().map(|event| event.expect("an event")));
    }
    assert_eq!(received.len(), 3 * tasks);
    assert!(
        received
            .windows(2)
            .all(|pair| pair[0].clock < pair[1].clock)
    );
    let kinds: Vec<&str> = received[..3].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["task-received", "task-started", "task-succeeded"]);
    let last = &received[3 * tasks - 1];
    assert_eq!(last.uuid(), Some(format!("task-{}", tasks - 1).as_str()));
    assert_eq!(last.field("result"), Some(&Value::from("4")));
}

#[tokio::test]
async fn a_stalled_broker_costs_dropped_events_never_a_wait() {
    let broadcast = Arc::new(Recording {
        stalled: true,
        ..Recording::default()
    });
    let (events, publisher, stats) = task_events_on(broadcast.clone());
    let closing = CancellationToken::new();
    let running = tokio::spawn(publisher.run(closing.clone()));
    one_task(&events, 0);
    // The publisher took those three and is stuck sending them: the buffer is empty.
    tokio::time::timeout(Duration::from_secs(10), broadcast.entered.notified())
        .await
        .expect("the publisher sends");
    let over = 100;
    for number in 1..=(BUFFER + over) / 3 + 1 {
        one_task(&events, number);
    }
    let pushed = 3 * ((BUFFER + over) / 3 + 1);
    assert_eq!(stats.events_dropped.get(), (pushed - BUFFER) as u64);
    // Shutdown gives up on a broker that does not answer, within its bound.
    go_offline(&events, Duration::from_secs(2), closing, Some(running)).await;
    assert_eq!(stats.events_dropped.get(), (pushed - BUFFER + 1) as u64);
}
