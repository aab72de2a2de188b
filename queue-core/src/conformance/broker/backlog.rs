//! The backlog a monitor reads (see [`crate::backlog`]): queue stats, delayed messages and
//! what can be done to them, dead letters requeued and purged, the queues a broker names.
//!
//! Counts are read until they match, within [`WAIT`]: a broker may browse shared places to
//! count (RabbitMQ's delay levels), and a browse by another check at the same moment hides
//! what it holds for a few milliseconds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{later, now};
use super::{
    IDLE, WAIT, ack, ack_all, assert_length, assert_nothing, close, consume, declare, delivery_id,
    fetch_exactly, fetch_one, ids, message, publish,
};
use crate::backlog::{DelayedMessage, QueueStats};
use crate::broker::{Broker, DEAD_LETTER_REASON_HEADER, QueueOrder};

/// How far the eta a broker lists may be from the one published: RabbitMQ rounds delays up
/// to the millisecond and estimates some to the second.
const ETA_TOLERANCE: Duration = Duration::from_millis(1_500);

/// Calls `read` until `done` holds for its answer or [`WAIT`] passed; returns the last answer.
async fn eventually<T, F, Fut>(mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = read().await;
        if done(&answer) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stats(broker: &Arc<dyn Broker>, queue: &str) -> QueueStats {
    broker
        .queue_stats(queue)
        .await
        .unwrap_or_else(|error| panic!("queue_stats({queue:?}) failed: {error}"))
}

/// The stats of `queue` once `done` holds (or the last ones read).
async fn stats_when(
    broker: &Arc<dyn Broker>,
    queue: &str,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    eventually(|| stats(broker, queue), done).await
}

async fn delayed(broker: &Arc<dyn Broker>, queue: &str, limit: usize) -> Vec<DelayedMessage> {
    broker
        .delayed(queue, limit)
        .await
        .unwrap_or_else(|error| panic!("delayed({queue:?}, {limit}) failed: {error}"))
}

fn delayed_ids(listed: &[DelayedMessage]) -> Vec<String> {
    listed
        .iter()
        .map(|delayed| match &delayed.content {
            Ok(message) => message.id().to_owned(),
            Err(undecodable) => panic!("delayed message did not decode: {}", undecodable.error),
        })
        .collect()
}

async fn run_now(broker: &Arc<dyn Broker>, queue: &str, id: &str) -> bool {
    broker
        .run_delayed_now(queue, id)
        .await
        .unwrap_or_else(|error| panic!("run_delayed_now({queue:?}, {id:?}) failed: {error}"))
}

async fn dead_letter_ids(broker: &Arc<dyn Broker>, queue: &str) -> Vec<String> {
    broker
        .dead_letters(queue, 100)
        .await
        .unwrap_or_else(|error| panic!("dead_letters({queue:?}) failed: {error}"))
        .iter()
        .map(|dead| match &dead.content {
            Ok(message) => message.id().to_owned(),
            Err(undecodable) => panic!("dead letter did not decode: {}", undecodable.error),
        })
        .collect()
}

/// Publishes `ids` to `queue`, fetches them and dead-letters them in that order.
async fn dead_letter_all(broker: &Arc<dyn Broker>, queue: &str, ids: &[String], context: &str) {
    let batch = ids.iter().map(|id| message(id.clone(), 0)).collect();
    publish(broker, queue, batch).await;
    let consumer = consume(broker, &[queue], QueueOrder::Strict).await;
    let deliveries = fetch_exactly(&consumer, ids.len(), WAIT, context).await;
    for id in ids {
        let delivery = deliveries
            .iter()
            .find(|delivery| delivery_id(delivery) == id)
            .unwrap_or_else(|| panic!("{context}: {id:?} not delivered"));
        consumer
            .dead_letter(delivery, "conformance: backlog")
            .await
            .unwrap_or_else(|error| panic!("{context}: dead_letter({id:?}) failed: {error}"));
    }
    close(&consumer, context).await;
}

/// `queue_stats` of an unknown queue is all zero; then it counts ready messages per priority
/// (as `queue_length`), the delayed messages of this queue only, and its dead letters; the
/// oldest ready message is the first published, with an enqueue time, when the broker gives
/// one, between its publication and now.
pub async fn backlog_stats_count_ready_delayed_and_dead(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    let other = format!("{prefix}.other");
    let empty = stats(&broker, &format!("{prefix}.never-used")).await;
    assert_length(&empty.ready, &[], "stats of an unknown queue");
    assert!(
        empty.oldest_ready.is_none() && empty.delayed == 0 && empty.dead_letters == 0,
        "stats of an unknown queue: {empty:?}"
    );
    declare(&broker, &[&queue, &other]).await;

    let dead = vec![format!("{prefix}-dead")];
    dead_letter_all(&broker, &queue, &dead, "stats: dead letter").await;
    let mut far = Vec::new();
    for index in 0..2 {
        let mut delayed = message(format!("{prefix}-far-{index}"), 0);
        delayed.headers.eta = Some(later(Duration::from_secs(3600)));
        far.push(delayed);
    }
    publish(&broker, &queue, far).await;
    let mut elsewhere = message(format!("{prefix}-elsewhere"), 0);
    elsewhere.headers.eta = Some(later(Duration::from_secs(3600)));
    publish(&broker, &other, vec![elsewhere]).await;

    let published_at = now();
    let first = format!("{prefix}-first");
    let ready = vec![
        message(first.clone(), 0),
        message(format!("{prefix}-second"), 0),
        message(format!("{prefix}-third"), 0),
    ];
    publish(&broker, &queue, ready).await;
    let read = stats_when(&broker, &queue, |stats| stats.delayed == 2).await;
    let read_at = now();
    assert_eq!(read.queue, queue, "stats name their queue");
    assert_length(&read.ready, &[(0, 3)], "stats: ready messages");
    assert_eq!(
        read.delayed, 2,
        "stats: the delayed messages of this queue ({read:?})"
    );
    assert_eq!(read.dead_letters, 1, "stats: dead letters ({read:?})");
    let oldest = read
        .oldest_ready
        .unwrap_or_else(|| panic!("stats: three messages are ready but none is the oldest"));
    assert_eq!(
        oldest.task_id.as_deref(),
        Some(first.as_str()),
        "stats: the oldest ready message is the first published"
    );
    if let Some(enqueued_at) = oldest.enqueued_at {
        // RabbitMQ's timestamps are whole seconds.
        let slack = chrono::Duration::from_std(ETA_TOLERANCE).expect("small");
        assert!(
            enqueued_at + slack >= published_at && enqueued_at <= read_at + slack,
            "stats: the oldest message entered at {enqueued_at}, not between its publication \
             at {published_at} and {read_at}"
        );
    }

    // Run the delayed ones now, so that nothing waits an hour on a real server.
    for id in [format!("{prefix}-far-0"), format!("{prefix}-far-1")] {
        assert!(run_now(&broker, &queue, &id).await, "stats: run {id:?} now");
    }
    assert!(
        run_now(&broker, &other, &format!("{prefix}-elsewhere")).await,
        "stats: run the other queue's message now"
    );
    for purged in [&queue, &other] {
        broker
            .purge(purged)
            .await
            .unwrap_or_else(|error| panic!("purge({purged:?}) failed: {error}"));
    }
    let after = stats_when(&broker, &queue, |stats| stats.delayed == 0).await;
    assert_eq!(after.delayed, 0, "stats after running them: {after:?}");
    assert_length(&after.ready, &[], "stats after purge");
    assert!(after.oldest_ready.is_none(), "stats after purge: {after:?}");
}

/// `delayed` lists a queue's messages held for their eta, soonest first, up to `limit`, with
/// their eta; a deferred message is listed at its new time. `run_delayed_now` makes one ready
/// at once (a consumer gets it without waiting, with no eta in the future) and says `false`
/// for an id that is not delayed in that queue.
pub async fn backlog_delayed_listed_and_run_now(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    let other = format!("{prefix}.other");
    declare(&broker, &[&queue, &other]).await;
    assert!(
        delayed(&broker, &queue, 10).await.is_empty(),
        "delayed of a fresh queue"
    );
    let plan = [
        (format!("{prefix}-hour"), 3600u64),
        (format!("{prefix}-two-hours"), 7200),
    ];
    let soonest = (format!("{prefix}-half-hour"), 1800u64);
    let mut batch = Vec::new();
    let mut etas = Vec::new();
    for (id, seconds) in plan.iter().chain([&soonest]) {
        let mut delayed = message(id.clone(), 0);
        let eta = later(Duration::from_secs(*seconds));
        delayed.headers.eta = Some(eta);
        etas.push((id.clone(), eta));
        batch.push(delayed);
    }
    publish(&broker, &queue, batch).await;
    let mut elsewhere = message(format!("{prefix}-elsewhere"), 0);
    elsewhere.headers.eta = Some(later(Duration::from_secs(3600)));
    publish(&broker, &other, vec![elsewhere]).await;

    // A deferred message, held again until a time of the consumer's choosing.
    let deferred = format!("{prefix}-deferred");
    publish(&broker, &queue, vec![message(deferred.clone(), 0)]).await;
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let first = fetch_one(&consumer, WAIT, "delayed: the message to defer").await;
    let until = later(Duration::from_secs(900));
    consumer
        .defer(&first, until)
        .await
        .unwrap_or_else(|error| panic!("delayed: defer failed: {error}"));
    etas.push((deferred.clone(), until));

    let expected = vec![
        deferred.clone(),
        soonest.0.clone(),
        plan[0].0.clone(),
        plan[1].0.clone(),
    ];
    let listed = eventually(
        || delayed(&broker, &queue, 10),
        |listed| delayed_ids(listed) == expected,
    )
    .await;
    assert_eq!(
        delayed_ids(&listed),
        expected,
        "delayed lists this queue's delayed messages, soonest first"
    );
    let tolerance = chrono::Duration::from_std(ETA_TOLERANCE).expect("small");
    for (listed, (id, eta)) in listed.iter().zip(
        expected
            .iter()
            .map(|id| etas.iter().find(|(known, _)| known == id).expect("planned")),
    ) {
        assert_eq!(listed.queue, queue, "delayed {id:?}: its queue");
        assert!(
            (listed.eta - *eta).abs() <= tolerance,
            "delayed {id:?}: listed due at {}, published for {eta}",
            listed.eta
        );
    }
    let two = eventually(|| delayed(&broker, &queue, 2), |listed| listed.len() == 2).await;
    assert_eq!(
        delayed_ids(&two),
        expected[..2],
        "delayed with limit 2: the two soonest"
    );

    assert!(
        !run_now(&broker, &queue, &format!("{prefix}-unknown")).await,
        "run_delayed_now of an unknown id"
    );
    assert!(
        !run_now(&broker, &queue, &format!("{prefix}-elsewhere")).await,
        "run_delayed_now of another queue's message"
    );
    assert_nothing(&consumer, IDLE, "delayed: nothing is ready yet").await;
    assert!(
        run_now(&broker, &queue, &plan[0].0).await,
        "run_delayed_now of a delayed message"
    );
    let ran = fetch_one(&consumer, WAIT, "delayed: the message run now").await;
    assert_eq!(delivery_id(&ran), plan[0].0, "the message run now arrives");
    let message = ran.content.as_ref().expect("decoded");
    assert!(
        message.headers.eta.is_none_or(|eta| eta <= now()),
        "the message run now has no eta ahead: {:?}",
        message.headers.eta
    );
    ack(&consumer, &ran, "delayed: run now").await;
    let left = eventually(|| delayed(&broker, &queue, 10), |listed| listed.len() == 3).await;
    assert!(
        !delayed_ids(&left).contains(&plan[0].0),
        "the message run now is no longer delayed: {:?}",
        delayed_ids(&left)
    );
    assert!(
        !run_now(&broker, &queue, &plan[0].0).await,
        "run_delayed_now of a message already run"
    );

    // Run the rest now, so that nothing waits on a real server.
    let rest: Vec<String> = expected
        .iter()
        .filter(|id| **id != plan[0].0)
        .cloned()
        .collect();
    for id in &rest {
        assert!(run_now(&broker, &queue, id).await, "run {id:?} now");
    }
    assert!(
        run_now(&broker, &other, &format!("{prefix}-elsewhere")).await,
        "run the other queue's message now"
    );
    let deliveries = fetch_exactly(&consumer, rest.len(), WAIT, "delayed: the rest").await;
    let mut got = ids(&deliveries);
    got.sort();
    let mut want = rest.clone();
    want.sort();
    assert_eq!(got, want, "every message run now arrives once");
    ack_all(&consumer, &deliveries, "delayed").await;
    close(&consumer, "delayed").await;
    broker
        .purge(&other)
        .await
        .unwrap_or_else(|error| panic!("purge({other:?}) failed: {error}"));
}

/// `requeue_dead_letters` moves the chosen dead letters (by task id, or all) back to the end
/// of their queue, oldest first and without their reason header, and says how many;
/// `purge_dead_letters` removes the rest and says how many. Unknown ids and queues move
/// nothing.
pub async fn backlog_dead_letters_requeued_and_purged(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let unknown = format!("{prefix}.never-used");
    let requeue = |queue: String, ids: Option<Vec<String>>| {
        let broker = broker.clone();
        async move {
            broker
                .requeue_dead_letters(&queue, ids.as_deref())
                .await
                .unwrap_or_else(|error| panic!("requeue_dead_letters({queue:?}) failed: {error}"))
        }
    };
    assert_eq!(
        requeue(unknown.clone(), None).await,
        0,
        "requeue of an unknown queue"
    );
    let purged = broker
        .purge_dead_letters(&unknown)
        .await
        .unwrap_or_else(|error| panic!("purge_dead_letters failed: {error}"));
    assert_eq!(purged, 0, "purge_dead_letters of an unknown queue");

    let sent: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| format!("{prefix}-{name}"))
        .collect();
    dead_letter_all(&broker, &queue, &sent, "requeue").await;
    let counted = stats_when(&broker, &queue, |stats| stats.dead_letters == 4).await;
    assert_eq!(counted.dead_letters, 4, "stats count the dead letters");

    let chosen = vec![sent[1].clone(), format!("{prefix}-unknown")];
    assert_eq!(
        requeue(queue.clone(), Some(chosen)).await,
        1,
        "requeue by task id moves the one known id"
    );
    let remaining = vec![sent[0].clone(), sent[2].clone(), sent[3].clone()];
    assert_eq!(
        dead_letter_ids(&broker, &queue).await,
        remaining,
        "the other dead letters stay, oldest first"
    );
    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let back = fetch_one(&consumer, WAIT, "requeue: by id").await;
    assert_eq!(
        delivery_id(&back),
        sent[1],
        "the requeued dead letter arrives"
    );
    let headers = &back.content.as_ref().expect("decoded").headers;
    assert!(
        !headers.extra.contains_key(DEAD_LETTER_REASON_HEADER),
        "a requeued dead letter has no reason header: {:?}",
        headers.extra
    );
    ack(&consumer, &back, "requeue").await;

    assert_eq!(
        requeue(queue.clone(), None).await,
        3,
        "requeue of all dead letters"
    );
    let all = fetch_exactly(&consumer, 3, WAIT, "requeue: all").await;
    assert_eq!(
        ids(&all),
        remaining,
        "requeued dead letters arrive oldest first"
    );
    ack_all(&consumer, &all, "requeue").await;
    assert_nothing(&consumer, IDLE, "requeue: each requeued once").await;
    close(&consumer, "requeue").await;
    assert!(
        dead_letter_ids(&broker, &queue).await.is_empty(),
        "no dead letter is left after requeueing all"
    );

    let again: Vec<String> = ["e", "f"]
        .iter()
        .map(|name| format!("{prefix}-{name}"))
        .collect();
    dead_letter_all(&broker, &queue, &again, "purge dead letters").await;
    let purged = broker
        .purge_dead_letters(&queue)
        .await
        .unwrap_or_else(|error| panic!("purge_dead_letters failed: {error}"));
    assert_eq!(purged, 2, "purge_dead_letters says how many it removed");
    assert!(
        dead_letter_ids(&broker, &queue).await.is_empty(),
        "no dead letter is left after purge_dead_letters"
    );
    let after = stats(&broker, &queue).await;
    assert_eq!(after.dead_letters, 0, "stats after purge: {after:?}");
    assert_length(&after.ready, &[], "purging dead letters readies nothing");
}

/// `known_queues` names a queue this broker declared and used, by its own name (not its
/// dead-letter queue's), in sorted order.
pub async fn backlog_known_queues_name_the_queue(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    dead_letter_all(&broker, &queue, &[format!("{prefix}-dead")], "known queues").await;
    let known = broker
        .known_queues()
        .await
        .unwrap_or_else(|error| panic!("known_queues failed: {error}"));
    assert!(
        known.names.contains(&queue),
        "known_queues names {queue:?}: {:?}",
        known.names
    );
    let dead = crate::broker::dead_letter_queue(&queue);
    assert!(
        !known.names.contains(&dead),
        "known_queues leaves dead-letter queues out: {:?}",
        known.names
    );
    assert!(
        known.names.windows(2).all(|pair| pair[0] < pair[1]),
        "known_queues are sorted, each once"
    );
    let purged = broker
        .purge_dead_letters(&queue)
        .await
        .unwrap_or_else(|error| panic!("purge_dead_letters failed: {error}"));
    assert_eq!(purged, 1, "known queues: the dead letter purged");
}
