//! [`RedisConsumer`]: fetch, ack, reject, dead-letter, defer and renew on kombu's layout.
//!
//! A fetch takes messages with one script that also records them in `unacked` and
//! `unacked_index`, exactly as a kombu consumer does, so a message is never only in this
//! process's memory. When the queues are empty the consumer waits for a watcher of its lists
//! to see a message (a non-destructive `BLMOVE`, see `crate::wake`), then takes with the same
//! script: nothing is popped by a blocking command, so a crash at any point loses nothing.
//! The whole fetch runs in a task of its own: a caller that stops waiting (a dropped fetch
//! future) leaves the messages to the next fetch instead of losing them.
//!
//! Acks go out without waiting for the server, as AMQP's do, through a bounded queue of
//! writes (a full queue makes `ack` wait); `close` waits until those sent before it are
//! written. A process killed meanwhile loses at most the acks not yet written (at most
//! the write queue's capacity plus one batch, in practice those of the last round trip):
//! those messages are delivered again after the visibility timeout.

mod replace;
mod take;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use fred::prelude::SortedSetsInterface;
use fred::types::Value;
use fred::types::sorted_sets::Ordering as ZOrdering;
use queue_core::broker::{
    BrokerError, ConsumeOptions, Consumer, Delivery, DeliveryTag, Publish, QueueOrder,
};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::broker::{BrokerInner, Write, index_score};
use crate::error::broker_error;
use crate::restore;
use crate::scripts;
use crate::wake::Watcher;
use crate::wire;

/// Longest wait between two takes: bounds how late a delayed message published by another
/// process is promoted while this consumer waits, and what a watcher that lost its
/// connection costs.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// Longest interval between two visibility-timeout restores of a consumer: how late a
/// delayed message of a queue that no consumer here serves is brought back by us.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Most messages one fetch takes (Lua's stack bounds the script's batch).
const MAX_BATCH: usize = 1000;

/// A consumer of several queues; see the module docs.
pub(crate) struct RedisConsumer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) broker: Arc<BrokerInner>,
    /// Notified by a watcher, or by `close`, or when the queues change.
    wake: Arc<Notify>,
    /// What is consumed now; each take reads one snapshot (`add_queue` / `remove_queue`
    /// replace it).
    lanes: Mutex<Arc<Lanes>>,
    /// Lists per queue.
    per: usize,
    /// What this consumer holds: fetched and not yet acked, rejected, deferred or
    /// dead-lettered.
    held: Mutex<HashMap<String, Held>>,
    /// Deliveries fetched for a caller that went away; the next fetch returns them first.
    stash: Mutex<VecDeque<Delivery>>,
    /// One fetch at a time: a take and the wait after it go together.
    fetching: tokio::sync::Mutex<()>,
    /// One change of the queues at a time.
    changing: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    sequence: AtomicU64,
    /// Most messages held at once, counting those taken ahead (0: no reading ahead).
    prefetch: AtomicUsize,
    reading_ahead: AtomicBool,
    /// Whether the last take left the queues empty.
    drained: AtomicBool,
    /// When the earliest delayed message of the queues is due (ms since the epoch; MAX: none).
    next_due: AtomicI64,
}

/// The queues a consumer consumes, with their keys.
pub(crate) struct Lanes {
    queues: Vec<String>,
    order: QueueOrder,
    /// Every list of every queue, queue by queue, each queue's lists in serving order.
    lists: Vec<String>,
    delayed: Vec<String>,
    /// One per list, in the order of `lists`: they wake `Shared::wake` when a list gets a
    /// message.
    watchers: Vec<Arc<Watcher>>,
}

impl Lanes {
    async fn new(broker: &BrokerInner, options: &ConsumeOptions) -> Result<Self, BrokerError> {
        let keys = &broker.keys;
        let lists: Vec<String> = options
            .queues
            .iter()
            .flat_map(|queue| keys.lists(queue))
            .collect();
        let watchers = futures::future::try_join_all(
            lists
                .iter()
                .map(|list| broker.watchers.get(&broker.options, list)),
        )
        .await?;
        let delayed = options
            .queues
            .iter()
            .map(|queue| keys.delayed(queue))
            .collect();
        Ok(Self {
            queues: options.queues.clone(),
            order: options.order.clone(),
            lists,
            delayed,
            watchers,
        })
    }

    fn options(&self) -> ConsumeOptions {
        ConsumeOptions::new(self.queues.clone()).order(self.order.clone())
    }
}

/// A held message: where it came from and its bytes as stored, to give it back.
#[derive(Clone)]
pub(crate) struct Held {
    /// The queue it was taken from.
    queue: Arc<str>,
    /// Index of its list among the queue's lists (kombu's priority steps).
    lane: usize,
    raw: Vec<u8>,
    /// Whether it is recorded in `unacked` (elements that are not JSON objects are not).
    recorded: bool,
    /// Fetch order, to give messages back in the order they were taken.
    sequence: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedisConsumer {
    pub(crate) async fn start(
        broker: Arc<BrokerInner>,
        options: ConsumeOptions,
    ) -> Result<Self, BrokerError> {
        let lanes = Lanes::new(&broker, &options).await?;
        let shared = Arc::new(Shared {
            per: broker.keys.steps().len(),
            broker,
            wake: Arc::new(Notify::new()),
            lanes: Mutex::new(Arc::new(lanes)),
            held: Mutex::new(HashMap::new()),
            stash: Mutex::new(VecDeque::new()),
            fetching: tokio::sync::Mutex::new(()),
            changing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
            prefetch: AtomicUsize::new(options.prefetch),
            reading_ahead: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            next_due: AtomicI64::new(i64::MAX),
        });
        tokio::spawn(maintain(Arc::downgrade(&shared)));
        debug!(queues = ?options.queues, "consuming");
        Ok(Self { shared })
    }
}

/// Renews what the consumer holds well within the visibility timeout, whatever interval the
/// worker renews at, and restores overdue messages of dead consumers (kombu's sweep).
async fn maintain(shared: Weak<Shared>) {
    let Some(visibility) = shared
        .upgrade()
        .map(|s| s.broker.options.visibility_timeout)
    else {
        return;
    };
    let renew_every = (visibility / 4).max(Duration::from_millis(50));
    let sweep_every = (visibility / 2).clamp(Duration::from_millis(100), MAX_SWEEP_INTERVAL);
    let mut next_renew = Instant::now() + renew_every;
    let mut next_sweep = Instant::now();
    loop {
        tokio::time::sleep_until(next_renew.min(next_sweep)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if now >= next_renew {
            next_renew = now + renew_every;
            let tags: Vec<DeliveryTag> = lock(&shared.held)
                .iter()
                .filter(|(_, held)| held.recorded)
                .map(|(tag, _)| DeliveryTag::Text(tag.clone()))
                .collect();
            if let Err(error) = shared.renew_tags(&tags).await {
                warn!(%error, count = tags.len(), "renewing visibility failed");
            }
        }
        if now >= next_sweep {
            next_sweep = now + sweep_every;
            match restore::sweep(&shared.broker).await {
                Ok(0) => {}
                Ok(restored) => info!(
                    restored,
                    "restored messages whose visibility timeout passed"
                ),
                Err(error) => warn!(%error, "restoring overdue messages failed"),
            }
        }
    }
}

impl Shared {
    pub(super) fn lanes(&self) -> Arc<Lanes> {
        lock(&self.lanes).clone()
    }

    /// The list a held message goes back to.
    fn list_of(&self, held: &Held) -> String {
        let keys = &self.broker.keys;
        let step = keys.steps().get(held.lane).copied().unwrap_or(0);
        keys.list(&held.queue, step)
    }

    /// Replaces what is consumed by `change` applied to the current queues; wakes a
    /// waiting fetch so that it takes from the new set. `false` when nothing changed.
    async fn change_queues(
        &self,
        change: impl FnOnce(&mut ConsumeOptions) -> bool,
    ) -> Result<bool, BrokerError> {
        // One change at a time, so that two do not both start from the same snapshot.
        let _guard = self.changing.lock().await;
        let mut options = self.lanes().options();
        if !change(&mut options) {
            return Ok(false);
        }
        let lanes = Lanes::new(&self.broker, &options).await?;
        *lock(&self.lanes) = Arc::new(lanes);
        self.drained.store(false, Ordering::Release);
        // Due at once: the next fetch takes (and promotes the new queues' delayed messages).
        self.next_due.store(0, Ordering::Release);
        self.wake.notify_one();
        info!(queues = ?options.queues, "consuming changed queues");
        Ok(true)
    }

    fn release(&self, delivery: &Delivery) -> Result<(String, Held), BrokerError> {
        let DeliveryTag::Text(tag) = &delivery.tag else {
            return Err(BrokerError::Refused(format!(
                "unknown delivery tag {}",
                delivery.tag
            )));
        };
        lock(&self.held)
            .remove(tag)
            .map(|held| (tag.clone(), held))
            .ok_or_else(|| BrokerError::Refused(format!("delivery {tag} is not unacked here")))
    }

    /// Runs the move script for `(op, tag, destination, payload, score, index score)` groups.
    async fn move_out(&self, groups: Vec<[Value; 6]>) -> Result<(), BrokerError> {
        if groups.is_empty() {
            return Ok(());
        }
        let broker = &self.broker;
        let keys = vec![
            broker.keys.unacked.clone(),
            broker.keys.unacked_index.clone(),
        ];
        let args: Vec<Value> = groups.into_iter().flatten().collect();
        scripts::run(&broker.client, &broker.scripts.moves, keys, args).await?;
        Ok(())
    }

    /// A group of the move script that pushes `payload` to the list `destination`.
    fn group(
        op: &str,
        tag: &str,
        held: &Held,
        destination: String,
        payload: Vec<u8>,
    ) -> [Value; 6] {
        let tag = if held.recorded { tag } else { "" };
        [
            Value::from(op),
            Value::from(tag),
            Value::from(destination),
            Value::Bytes(payload.into()),
            Value::from(""),
            Value::from(""),
        ]
    }

    async fn renew_tags(&self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        let now = index_score() as f64;
        let values: Vec<(f64, Value)> = tags
            .iter()
            .filter_map(|tag| match tag {
                DeliveryTag::Text(tag) if !tag.starts_with("local:") => {
                    Some((now, Value::from(tag.as_str())))
                }
                _ => None,
            })
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        // XX: only tags still unacked; a renew never resurrects an acked message.
        let _: Value = self
            .broker
            .client
            .zadd(
                self.broker.keys.unacked_index.as_str(),
                Some(fred::types::SetOptions::XX),
                None::<ZOrdering>,
                false,
                false,
                values,
            )
            .await
            .map_err(broker_error)?;
        Ok(())
    }

    /// Gives back everything held and stashed, first fetched in front (kombu restores
    /// unacked messages of a closing consumer to the head of their lists).
    async fn give_back_all(&self) -> Result<(), BrokerError> {
        let stashed: Vec<Delivery> = lock(&self.stash).drain(..).collect();
        drop(stashed); // Their held entries are given back below.
        let mut held: Vec<(String, Held)> = lock(&self.held).drain().collect();
        if held.is_empty() {
            return Ok(());
        }
        held.sort_by_key(|(_, held)| std::cmp::Reverse(held.sequence));
        let groups = held
            .iter()
            .map(|(tag, held)| {
                let payload = wire::mark_redelivered(&held.raw);
                Self::group("R", tag, held, self.list_of(held), payload)
            })
            .collect();
        let count = held.len();
        match self.move_out(groups).await {
            Ok(()) => {
                info!(count, "gave back unacked messages");
                Ok(())
            }
            Err(error) => {
                // Still in `unacked`: the visibility timeout brings them back.
                warn!(%error, count, "giving back unacked messages failed; they return after the visibility timeout");
                Err(error)
            }
        }
    }

    async fn shut(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Wake a waiting fetch, then wait for it: what it took is then held.
        self.wake.notify_one();
        let _guard = self.fetching.lock().await;
        for watcher in &self.lanes().watchers {
            watcher.deregister(&self.wake);
        }
        // Writes go out in order: the mark comes back when those before it are done.
        if let Err(error) = self.broker.writes.submit(Write::Mark).await {
            warn!(%error, "acks before close may be lost; those messages come back after the visibility timeout");
        }
        self.give_back_all().await
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_BATCH);
        // Taken ahead while the caller was busy: no round trip.
        let stashed = shared.take_stash(max);
        if !stashed.is_empty() {
            shared.clone().read_ahead();
            return Ok(stashed);
        }
        let (sender, receiver) = oneshot::channel();
        let task = shared.clone();
        tokio::spawn(async move {
            let guard = task.fetching.lock().await;
            let stashed = task.take_stash(max);
            let result = if stashed.is_empty() {
                task.fetch_locked(max, wait).await
            } else {
                Ok(stashed)
            };
            drop(guard);
            if let Err(Ok(deliveries)) = sender.send(result) {
                // The caller went away: keep them for the next fetch (or the close).
                lock(&task.stash).extend(deliveries);
            }
        });
        let result = receiver.await.unwrap_or(Err(BrokerError::Closed));
        if result
            .as_ref()
            .is_ok_and(|deliveries| !deliveries.is_empty())
        {
            shared.clone().read_ahead();
        }
        result
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        let (tag, held) = self.shared.release(delivery)?;
        if held.recorded {
            // As an AMQP ack, without waiting for the server: the slot of the task is free at
            // once. An ack lost with the connection or the process means a redelivery after
            // the visibility timeout (at least once); `close` waits for the acks sent before it.
            self.shared.broker.writes.send(Write::Ack(tag)).await;
        }
        Ok(())
    }

    async fn reject(&self, delivery: &Delivery, requeue: bool) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let (tag, held) = shared.release(delivery)?;
        if !requeue {
            if held.recorded {
                shared.broker.writes.submit(Write::Ack(tag)).await?;
            }
            return Ok(());
        }
        // kombu requeues a rejected message at the tail (LPUSH): it does not jump the queue.
        let payload = wire::mark_redelivered(&held.raw);
        let destination = shared.list_of(&held);
        shared
            .move_out(vec![Shared::group("L", &tag, &held, destination, payload)])
            .await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let (tag, held) = shared.release(delivery)?;
        let entry = wire::dead_letter_entry(&held.raw, reason);
        let destination = shared.broker.keys.dead_letters(&delivery.queue);
        match &delivery.content {
            Ok(message) => warn!(
                task_id = message.id(),
                task_name = message.task_name(),
                queue = %delivery.queue,
                reason,
                "dead-lettered"
            ),
            Err(_) => warn!(queue = %delivery.queue, reason, "dead-lettered undecodable message"),
        }
        shared
            .move_out(vec![Shared::group("L", &tag, &held, destination, entry)])
            .await
    }

    async fn defer(
        &self,
        delivery: &Delivery,
        until: DateTime<FixedOffset>,
    ) -> Result<(), BrokerError> {
        self.shared.park(delivery, until.timestamp_millis()).await
    }

    async fn republish_and_ack(
        &self,
        delivery: &Delivery,
        replacement: Publish,
    ) -> Result<(), BrokerError> {
        self.shared.replace(delivery, replacement).await
    }

    async fn renew(&self, deliveries: &[DeliveryTag]) -> Result<(), BrokerError> {
        self.shared.renew_tags(deliveries).await
    }

    async fn set_prefetch(&self, prefetch: usize) -> Result<(), BrokerError> {
        self.shared.prefetch.store(prefetch, Ordering::Release);
        Ok(())
    }

    async fn add_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        self.shared
            .change_queues(|options| options.add_queue(queue))
            .await
    }

    async fn remove_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        self.shared
            .change_queues(|options| options.remove_queue(queue))
            .await
    }

    async fn close(&self) -> Result<(), BrokerError> {
        self.shared.shut().await
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        // A consumer that goes away without closing (a worker task that died) gives its
        // messages back; without a runtime, the visibility timeout does.
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = shared.shut().await;
                });
            }
            Err(_) => warn!(
                "consumer dropped outside a runtime: its messages return after the visibility timeout"
            ),
        }
    }
}
