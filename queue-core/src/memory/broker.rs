use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::broadcast::Subscribers;
use crate::backlog::{DelayedMessage, KnownQueues, QueueStats};
use crate::broadcast::Broadcast;
use crate::broker::{
    Broker, BrokerError, ConsumeOptions, Consumer, DEAD_LETTER_REASON_HEADER, DeadLetter, Delivery,
    DeliveryTag, Publish, QueueLength, QueueOrder, Undecodable, dead_letter_queue,
};
use crate::protocol::{Message, envelope, time};

mod backlog;

const PRIORITY_LEVELS: usize = crate::MAX_PRIORITY as usize + 1;

/// The in-memory broker. Clones share the same queues.
///
/// ```
/// # async fn example() -> Result<(), queue_core::Error> {
/// use std::sync::Arc;
/// use queue_core::{App, MemoryBroker};
/// let broker = Arc::new(MemoryBroker::new());
/// let producer = App::builder().broker_instance(broker.clone()).build().await?;
/// let worker_side = App::builder().broker_instance(broker).build().await?;
/// # let _ = (producer, worker_side); Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    subscribers: Subscribers,
    changed: Notify,
    next_tag: AtomicU64,
    next_sequence: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, QueueState>,
    delayed: BinaryHeap<Reverse<Delayed>>,
}

#[derive(Debug, Default)]
struct QueueState {
    by_priority: [VecDeque<Stored>; PRIORITY_LEVELS],
}

#[derive(Clone, Debug)]
struct Stored {
    content: Result<Message, Undecodable>,
    redelivered: bool,
    /// Why and when (a broker-wide sequence number) it was dead-lettered.
    dead_letter: Option<(String, u64)>,
    /// When it entered its queue (a delayed message: when it came due); kept when it is
    /// delivered again, so that the age of the oldest message counts from its first arrival.
    enqueued_at: DateTime<FixedOffset>,
}

impl Stored {
    fn priority(&self) -> usize {
        match &self.content {
            Ok(message) => usize::from(message.priority()).min(PRIORITY_LEVELS - 1),
            Err(_) => 0,
        }
    }
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    /// `due` on the wall clock, for listings.
    eta: DateTime<FixedOffset>,
    sequence: u64,
    queue: String,
    stored: Stored,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

impl QueueState {
    fn len(&self) -> usize {
        self.by_priority.iter().map(VecDeque::len).sum()
    }

    fn pop(&mut self) -> Option<Stored> {
        self.by_priority
            .iter_mut()
            .rev()
            .find_map(VecDeque::pop_front)
    }
}

/// Converts a wall-clock time into the monotonic clock, so that tokio's paused time works.
fn instant_of(when: DateTime<FixedOffset>) -> Instant {
    let now = Instant::now();
    let ahead = time::until(when);
    // A year-9999 eta is about 2.5e11 s away: far, but checked all the same.
    now.checked_add(ahead)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts raw bytes (a kombu envelope, or garbage) into `queue`, as another producer
    /// sharing the broker could. They are decoded when fetched; bytes that do not decode are
    /// delivered as [`Undecodable`].
    pub fn publish_raw(&self, queue: &str, raw: Vec<u8>) {
        let content = envelope::decode(&raw).map_err(|error| Undecodable {
            raw,
            error: error.to_string(),
        });
        self.push(
            queue,
            Stored {
                content,
                redelivered: false,
                dead_letter: None,
                enqueued_at: time::now(),
            },
            false,
        );
        self.shared.changed.notify_waiters();
    }

    /// Messages waiting for their eta, over all queues.
    pub fn delayed_count(&self) -> usize {
        self.lock().delayed.len()
    }

    fn push(&self, queue: &str, stored: Stored, front: bool) {
        let mut state = self.lock();
        let priority = stored.priority();
        let lane = &mut state
            .queues
            .entry(queue.to_owned())
            .or_default()
            .by_priority[priority];
        if front {
            lane.push_front(stored);
        } else {
            lane.push_back(stored);
        }
    }

    /// Publishing: into the queues, or the delayed store for a future eta.
    fn put(&self, messages: Vec<Publish>) {
        let now = time::now();
        for publish in messages {
            let eta = publish.message.headers.eta.filter(|eta| *eta > now);
            let stored = Stored {
                content: Ok(publish.message),
                redelivered: false,
                dead_letter: None,
                enqueued_at: now,
            };
            match eta {
                Some(eta) => self.delay_until(&publish.queue, stored, instant_of(eta), eta),
                None => self.push(&publish.queue, stored, false),
            }
        }
        self.shared.changed.notify_waiters();
    }

    fn delay(&self, queue: &str, stored: Stored, due: Instant) {
        let ahead = due.saturating_duration_since(Instant::now());
        self.delay_until(queue, stored, due, time::add(time::now(), ahead));
    }

    /// Holds `stored` until `due`, which is `eta` on the wall clock.
    fn delay_until(&self, queue: &str, stored: Stored, due: Instant, eta: DateTime<FixedOffset>) {
        let sequence = self.shared.next_sequence.fetch_add(1, Ordering::Relaxed);
        self.lock().delayed.push(Reverse(Delayed {
            due,
            eta,
            sequence,
            queue: queue.to_owned(),
            stored,
        }));
    }
}

impl MemoryBroker {
    pub(super) fn subscribers(&self) -> &Subscribers {
        &self.shared.subscribers
    }
}

impl State {
    /// Moves due delayed messages into their queues; returns when the next one is due.
    fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(next)) = self.delayed.peek() {
            if next.due > now {
                return Some(next.due);
            }
            let Reverse(mut due) = self.delayed.pop().expect("peeked");
            let priority = due.stored.priority();
            // Ready from its due time on: the age of a ready message counts from there.
            due.stored.enqueued_at = due.eta;
            self.queues.entry(due.queue).or_default().by_priority[priority].push_back(due.stored);
        }
        None
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn broadcast(self: Arc<Self>) -> Option<Arc<dyn Broadcast>> {
        Some(self)
    }

    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.lock().queues.entry(queue.to_owned()).or_default();
        Ok(())
    }

    async fn publish(&self, messages: Vec<Publish>) -> Result<(), BrokerError> {
        self.put(messages);
        Ok(())
    }

    async fn consume(&self, options: ConsumeOptions) -> Result<Arc<dyn Consumer>, BrokerError> {
        if options.queues.is_empty() {
            return Err(BrokerError::Refused("no queue to consume".into()));
        }
        Ok(Arc::new(MemoryConsumer {
            broker: self.clone(),
            options: Mutex::new(options),
            unacked: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }))
    }

    async fn queue_length(&self, queue: &str) -> Result<QueueLength, BrokerError> {
        let mut state = self.lock();
        // Delayed messages that became due are ready, fetched or not.
        state.promote_due(Instant::now());
        let mut length = QueueLength::default();
        if let Some(queue) = state.queues.get(queue) {
            for (priority, lane) in queue.by_priority.iter().enumerate() {
                if !lane.is_empty() {
                    length.by_priority.insert(priority as u8, lane.len() as u64);
                }
            }
            length.total = queue.len() as u64;
        }
        Ok(length)
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut state = self.lock();
        state.promote_due(Instant::now());
        Ok(state
            .queues
            .remove(queue)
            .map_or(0, |queue| queue.len() as u64))
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let state = self.lock();
        let Some(dead) = state.queues.get(&dead_letter_queue(queue)) else {
            return Ok(Vec::new());
        };
        // Oldest first, whatever their priorities (the dead-letter queue is a queue like
        // any other, ordered by priority for consumers).
        let mut listed: Vec<&Stored> = dead.by_priority.iter().flatten().collect();
        listed.sort_by_key(|stored| stored.dead_letter.as_ref().map_or(0, |(_, at)| *at));
        Ok(listed
            .into_iter()
            .take(limit)
            .map(|stored| DeadLetter {
                queue: queue.to_owned(),
                reason: stored
                    .dead_letter
                    .as_ref()
                    .map(|(reason, _)| reason.clone())
                    .unwrap_or_default(),
                content: stored.content.clone(),
            })
            .collect())
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let mut state = self.lock();
        state.promote_due(Instant::now());
        Ok(state.stats(queue))
    }

    async fn delayed(&self, queue: &str, limit: usize) -> Result<Vec<DelayedMessage>, BrokerError> {
        Ok(self.lock().delayed_of(queue, limit))
    }

    async fn run_delayed_now(&self, queue: &str, task_id: &str) -> Result<bool, BrokerError> {
        let ran = self.lock().run_delayed_now(queue, task_id);
        if ran {
            self.shared.changed.notify_waiters();
        }
        Ok(ran)
    }

    async fn requeue_dead_letters(
        &self,
        queue: &str,
        task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let moved = self.lock().requeue_dead_letters(queue, task_ids);
        if moved > 0 {
            self.shared.changed.notify_waiters();
        }
        Ok(moved)
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        Ok(self
            .lock()
            .queues
            .remove(&dead_letter_queue(queue))
            .map_or(0, |dead| dead.len() as u64))
    }

    async fn known_queues(&self) -> Result<KnownQueues, BrokerError> {
        Ok(self.lock().known_queues())
    }
}

struct MemoryConsumer {
    broker: MemoryBroker,
    /// Changed by `add_queue` / `remove_queue` while the consumer runs.
    options: Mutex<ConsumeOptions>,
    unacked: Mutex<HashMap<u64, (String, Stored)>>,
    closed: AtomicBool,
}

impl MemoryConsumer {
    fn take_unacked(&self, delivery: &Delivery) -> Result<(String, Stored), BrokerError> {
        let DeliveryTag::Number(tag) = delivery.tag else {
            return Err(BrokerError::Refused(format!(
                "unknown delivery tag {}",
                delivery.tag
            )));
        };
        self.unacked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&tag)
            .ok_or_else(|| BrokerError::Refused(format!("delivery {tag} is not unacked here")))
    }

    fn take_ready(&self, state: &mut State, max: usize) -> Vec<(String, Stored)> {
        let mut taken = Vec::new();
        let options = self
            .options
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let queues = &options.queues;
        match &options.order {
            QueueOrder::Strict => {
                for queue in queues {
                    let Some(ready) = state.queues.get_mut(queue) else {
                        continue;
                    };
                    while taken.len() < max {
                        match ready.pop() {
                            Some(stored) => taken.push((queue.clone(), stored)),
                            None => break,
                        }
                    }
                    if taken.len() == max {
                        break;
                    }
                }
            }
            order @ QueueOrder::Weighted(_) => {
                // A fresh weighted order per message, so one fetch does not drain a queue.
                while taken.len() < max {
                    let next = order.sequence(queues.len()).into_iter().find_map(|index| {
                        let queue = &queues[index];
                        state
                            .queues
                            .get_mut(queue)
                            .and_then(QueueState::pop)
                            .map(|stored| (queue.clone(), stored))
                    });
                    match next {
                        Some(item) => taken.push(item),
                        None => break,
                    }
                }
            }
        }
        taken
    }

    fn requeue_all(&self) {
        let mut unacked: Vec<(u64, (String, Stored))> = self
            .unacked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .collect();
        if unacked.is_empty() {
            return;
        }
        // Back to the head of their queues in the order they were fetched: the last fetched
        // goes back first, so that the first fetched ends up in front.
        unacked.sort_unstable_by_key(|(tag, _)| std::cmp::Reverse(*tag));
        for (_, (queue, mut stored)) in unacked {
            stored.redelivered = true;
            self.broker.push(&queue, stored, true);
        }
        self.broker.shared.changed.notify_waiters();
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = time::deadline_in(wait);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(BrokerError::Closed);
            }
            if max == 0 {
                return Ok(Vec::new());
            }
            let changed = self.broker.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next_due = {
                let mut state = self.broker.lock();
                let next_due = state.promote_due(Instant::now());
                let taken = self.take_ready(&mut state, max);
                drop(state);
                if !taken.is_empty() {
                    let mut unacked = self
                        .unacked
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let deliveries = taken
                        .into_iter()
                        .map(|(queue, stored)| {
                            let tag = self.broker.shared.next_tag.fetch_add(1, Ordering::Relaxed);
                            let delivery = Delivery {
                                tag: DeliveryTag::Number(tag),
                                queue: queue.clone(),
                                redelivered: stored.redelivered,
                                content: stored.content.clone(),
                            };
                            unacked.insert(tag, (queue, stored));
                            delivery
                        })
                        .collect();
                    return Ok(deliveries);
                }
                next_due
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake_at = next_due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        self.take_unacked(delivery).map(drop)
    }

    async fn reject(&self, delivery: &Delivery, requeue: bool) -> Result<(), BrokerError> {
        let (queue, mut stored) = self.take_unacked(delivery)?;
        if requeue {
            stored.redelivered = true;
            self.broker.push(&queue, stored, true);
            self.broker.shared.changed.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let (queue, mut stored) = self.take_unacked(delivery)?;
        if let Ok(message) = &mut stored.content {
            message
                .headers
                .extra
                .insert(DEAD_LETTER_REASON_HEADER.to_owned(), reason.into());
        }
        let sequence = self
            .broker
            .shared
            .next_sequence
            .fetch_add(1, Ordering::Relaxed);
        stored.dead_letter = Some((reason.to_owned(), sequence));
        self.broker.push(&dead_letter_queue(&queue), stored, false);
        self.broker.shared.changed.notify_waiters();
        Ok(())
    }

    async fn defer(
        &self,
        delivery: &Delivery,
        until: DateTime<FixedOffset>,
    ) -> Result<(), BrokerError> {
        let (queue, stored) = self.take_unacked(delivery)?;
        self.broker.delay(&queue, stored, instant_of(until));
        self.broker.shared.changed.notify_waiters();
        Ok(())
    }

    async fn republish_and_ack(
        &self,
        delivery: &Delivery,
        replacement: Publish,
    ) -> Result<(), BrokerError> {
        // No await between the two: nothing can come between them in this process.
        self.take_unacked(delivery)?;
        self.broker.put(vec![replacement]);
        Ok(())
    }

    async fn add_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        let added = self
            .options
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add_queue(queue);
        // A fetch waiting on the old queues looks again, now at this one too.
        self.broker.shared.changed.notify_waiters();
        Ok(added)
    }

    async fn remove_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        Ok(self
            .options
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove_queue(queue))
    }

    async fn close(&self) -> Result<(), BrokerError> {
        self.closed.store(true, Ordering::Release);
        self.requeue_all();
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // A consumer that goes away (a worker that died) gives its messages back.
        self.requeue_all();
    }
}
