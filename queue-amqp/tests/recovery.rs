//! Recovery under load, on a RabbitMQ node of the test's own: its connections are closed by
//! force, then it is restarted, while a producer publishes and a worker consumes. Every
//! confirmed message must be consumed (at least once), consuming must resume by itself
//! after each outage, and what was unacked at the restart comes back marked redelivered.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_amqp::AmqpBroker;
use queue_core::broker::{Broker, ConsumeOptions, Consumer, Publish};
use queue_core::conformance::broker::{delivery_id, message};
use tokio::sync::Notify;

/// Longest a phase may take; a stall fails the test instead of hanging it.
const PHASE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<String>>,
    count: AtomicUsize,
    redelivered: AtomicUsize,
    progress: Notify,
}

impl Seen {
    /// Waits until `count` deliveries were processed in total.
    async fn reach(&self, count: usize, what: &str) {
        let waiting = async {
            loop {
                let notified = self.progress.notified();
                if self.count.load(Ordering::SeqCst) >= count {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PHASE, waiting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: stalled at {} deliveries, expected {count}",
                    self.count.load(Ordering::SeqCst)
                )
            });
    }
}

async fn consume_forever(consumer: Arc<dyn Consumer>, seen: Arc<Seen>) {
    loop {
        let deliveries = match consumer.fetch(16, Duration::from_millis(200)).await {
            Ok(deliveries) => deliveries,
            Err(queue_core::BrokerError::Closed) => return,
            Err(_) => continue, // the worker retries too
        };
        tokio::time::sleep(Duration::from_millis(1)).await; // the tasks' work
        for delivery in deliveries {
            if delivery.redelivered {
                seen.redelivered.fetch_add(1, Ordering::SeqCst);
            }
            // An ack for a delivery of a broken channel fails: RabbitMQ delivers it again.
            if consumer.ack(&delivery).await.is_ok() {
                seen.ids
                    .lock()
                    .unwrap()
                    .insert(delivery_id(&delivery).to_owned());
            }
            seen.count.fetch_add(1, Ordering::SeqCst);
            seen.progress.notify_waiters();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_forced_disconnects_and_a_restart_under_load() {
    let Some(rabbit) = common::PrivateRabbit::start() else {
        return;
    };
    let url = rabbit.url("publish_timeout=60&heartbeat=5");
    let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let queue = common::unique("recovery");
    broker.declare_queue(&queue).await.expect("declare");

    let confirmed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn({
        let (broker, queue, confirmed, stop) = (
            broker.clone(),
            queue.clone(),
            confirmed.clone(),
            stop.clone(),
        );
        async move {
            let mut batch_number = 0;
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..20)
                    .map(|index| format!("m-{batch_number}-{index}"))
                    .collect();
                let batch = ids
                    .iter()
                    .map(|id| Publish::new(&queue, message(id.clone(), 0)))
                    .collect();
                broker
                    .publish(batch)
                    .await
                    .expect("publish through the outage");
                confirmed.lock().unwrap().extend(ids);
                batch_number += 1;
                tokio::time::sleep(Duration::from_millis(10)).await; // steady load, not a flood
            }
        }
    });
    let consumer = broker
        .consume(ConsumeOptions::new([&queue]).prefetch(16))
        .await
        .expect("consume");
    let seen = Arc::new(Seen::default());
    let worker = tokio::spawn(consume_forever(consumer.clone(), seen.clone()));

    seen.reach(200, "before the disconnects").await;
    assert!(
        rabbit.close_connections(),
        "rabbitmqctl close_all_connections failed"
    );
    let at_disconnect = seen.count.load(Ordering::SeqCst);
    seen.reach(at_disconnect + 200, "after the forced disconnects")
        .await;

    rabbit.restart();
    let at_restart = seen.count.load(Ordering::SeqCst);
    seen.reach(at_restart + 200, "after the restart").await;

    stop.store(true, Ordering::SeqCst);
    producer.await.expect("producer");
    let sent: Vec<String> = confirmed.lock().unwrap().clone();
    let drained = async {
        loop {
            let notified = seen.progress.notified();
            let missing = {
                let ids = seen.ids.lock().unwrap();
                sent.iter().filter(|id| !ids.contains(*id)).count()
            };
            if missing == 0 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(PHASE, drained)
        .await
        .unwrap_or_else(|_| {
            let ids = seen.ids.lock().unwrap();
            let missing: Vec<&String> = sent
                .iter()
                .filter(|id| !ids.contains(*id))
                .take(10)
                .collect();
            panic!(
                "confirmed messages never consumed, e.g. {missing:?} ({} sent)",
                sent.len()
            )
        });
    let redelivered = seen.redelivered.load(Ordering::SeqCst);
    println!(
        "{} confirmed, {} deliveries, {redelivered} redelivered",
        sent.len(),
        seen.count.load(Ordering::SeqCst)
    );
    assert!(
        redelivered > 0,
        "messages unacked at the outages come back marked redelivered"
    );
    consumer.close().await.expect("close");
    worker.await.expect("worker");
}
