//! Redis killed and restarted under load: producers and consumers reconnect with backoff
//! and go on; every message acked late is delivered (at least once), none stays behind,
//! and nothing stalls. Runs a private append-only redis-server (fsync on every write) that
//! the test kills with SIGKILL by pid and starts again on the same port and data.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::HashesInterface;
use queue_core::{Broker, ConsumeOptions, Publish};
use tokio::sync::Notify;

use common::{PrivateRedis, id_of, message};

const MESSAGES: usize = 3000;
const BATCH: usize = 50;
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_loses_nothing_and_does_not_stall() {
    let Some(mut server) = PrivateRedis::start() else {
        return;
    };
    // A short visibility timeout: a fetch whose reply died with the server is restored soon.
    let url = server.url("visibility_timeout=2&command_timeout=5");
    let broker = Arc::new(queue_redis::RedisBroker::connect(&url).await.unwrap());
    let queue = "restart.q".to_owned();
    let started = Instant::now();

    let published_some = Arc::new(Notify::new());
    let producer = tokio::spawn({
        let (broker, queue, published_some) =
            (broker.clone(), queue.clone(), published_some.clone());
        async move {
            let mut failures = 0;
            for batch in 0..MESSAGES / BATCH {
                let messages: Vec<Publish> = (batch * BATCH..(batch + 1) * BATCH)
                    .map(|index| Publish::new(&queue, message(&format!("m{index:05}"), 0)))
                    .collect();
                // A batch that failed is sent again: at least once.
                while let Err(error) = broker.publish(messages.clone()).await {
                    failures += 1;
                    assert!(started.elapsed() < DEADLINE, "publishing stalled: {error}");
                }
                if batch == MESSAGES / BATCH / 3 {
                    published_some.notify_one();
                }
            }
            failures
        }
    });

    let received = Arc::new(Mutex::new(HashSet::new()));
    let consumer_task = tokio::spawn({
        let (broker, queue, received) = (broker.clone(), queue.clone(), received.clone());
        async move {
            let consumer = broker.consume(ConsumeOptions::new([queue])).await.unwrap();
            let mut errors = 0;
            while received.lock().unwrap().len() < MESSAGES {
                assert!(started.elapsed() < DEADLINE, "consuming stalled");
                match consumer.fetch(BATCH, Duration::from_millis(200)).await {
                    Ok(deliveries) => {
                        for delivery in deliveries {
                            // An ack lost with the server only means a redelivery.
                            if consumer.ack(&delivery).await.is_err() {
                                errors += 1;
                            }
                            received.lock().unwrap().insert(id_of(&delivery));
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (consumer, errors)
        }
    });

    published_some.notified().await;
    tokio::task::block_in_place(|| server.restart());
    let restarted_at = Instant::now();

    let failures = producer.await.unwrap();
    let (consumer, errors) = consumer_task.await.unwrap();
    let expected: HashSet<String> = (0..MESSAGES).map(|index| format!("m{index:05}")).collect();
    assert_eq!(
        *received.lock().unwrap(),
        expected,
        "every message delivered"
    );
    eprintln!(
        "all {MESSAGES} delivered {:?} after the restart ({failures} publish retries, {errors} consumer errors)",
        restarted_at.elapsed()
    );
    // Nothing left behind: not ready, not unacked (duplicates are acked as they come).
    let client = broker.client();
    loop {
        let ready = broker.queue_length(&queue).await.unwrap().total;
        let unacked: u64 = client.hlen("unacked").await.unwrap();
        if ready == 0 && unacked == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{ready} ready and {unacked} unacked left"
        );
        for delivery in consumer
            .fetch(BATCH, Duration::from_millis(500))
            .await
            .unwrap()
        {
            consumer.ack(&delivery).await.unwrap();
        }
    }
    consumer.close().await.unwrap();
}
