//! [`Consumer`] on AMQP push: RabbitMQ pushes deliveries (`basic.consume`) into buffers,
//! one per queue, and [`Consumer::fetch`] hands them out in the worker's queue order. A
//! fetch takes from the buffers without awaiting anything in between, so a fetch future
//! dropped at any point has taken nothing: cancel-safe. Deliveries stay unacked at
//! RabbitMQ until settled, and come back (`redelivered`) if the channel closes first.
//!
//! See [`driver`] for how prefetch and the queue order work together.

pub mod driver;
mod lineup;
mod settle;
mod state;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use queue_core::broker::{
    BrokerError, ConsumeOptions, Consumer, DEAD_LETTER_REASON_HEADER, Delivery,
};
use queue_core::protocol::time;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::BrokerInner;
use crate::error::AmqpError;
use crate::publisher::Outgoing;
use crate::topology::{delay_entry, delay_routing_key};
use crate::wire;
use lineup::Lineup;
use settle::{Kind, Settle};
use state::{State, decode_tag};

/// What the consumer's handle, its driver and its settling task share.
pub(crate) struct Shared {
    pub(crate) broker: Arc<BrokerInner>,
    /// The queues, replaced (copy on write) when one is added or removed.
    lineup: Mutex<Arc<Lineup>>,
    /// The prefetch hint (most messages pushed ahead); 0: none given.
    cap: AtomicUsize,
    /// The lineup version the driver's consumers follow (consumed and cancelled).
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
    state: Mutex<State>,
    /// Deliveries arrived or the channel changed: fetches look again.
    pub(crate) arrived: Notify,
    /// The worker's demand or the unacked count changed: the driver looks again.
    pub(crate) demand_changed: Notify,
    pub(crate) shutdown: CancellationToken,
    /// To the settling task; bounded, so that a stalled channel holds settles back (each
    /// caller waits for room) instead of queueing without limit. Nothing is dropped.
    settle: mpsc::Sender<Settle>,
}

/// How long a change of the queues waits for the driver to apply it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Settle operations waiting for the settling task at most (one batch of frames).
pub const SETTLE_QUEUE: usize = settle::BATCH;

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queues now.
    pub(crate) fn lineup(&self) -> Arc<Lineup> {
        self.lineup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The prefetch hint, if the worker gave one.
    pub(crate) fn cap(&self) -> Option<u16> {
        match self.cap.load(Ordering::Acquire) {
            0 => None,
            cap => Some(u16::try_from(cap).unwrap_or(u16::MAX)),
        }
    }

    /// Applies `change` to the queues; on a change, the buffers grow to the new queues and
    /// the driver consumes or cancels accordingly. Returns once RabbitMQ was told (or, while
    /// the channel is down, after [`APPLY_WAIT`]: the next channel consumes the new set).
    async fn change_lineup(&self, change: impl FnOnce(&mut Lineup) -> bool) -> bool {
        let mut applied = self.applied.subscribe();
        let version = {
            let mut lineup = self
                .lineup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut next = Lineup::clone(&lineup);
            if !change(&mut next) {
                return false;
            }
            self.lock().grow(next.len());
            info!(queues = ?next.consumed(), "consuming changed queues");
            let version = next.version;
            *lineup = Arc::new(next);
            version
        };
        self.demand_changed.notify_one();
        if tokio::time::timeout(APPLY_WAIT, applied.wait_for(|seen| *seen >= version))
            .await
            .is_err()
        {
            warn!("the consumer's channel is down: the queues change when it is back");
        }
        true
    }
}

/// A consumer of one or more RabbitMQ queues.
pub(crate) struct AmqpConsumer {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl AmqpConsumer {
    pub(crate) fn start(
        broker: Arc<BrokerInner>,
        options: ConsumeOptions,
    ) -> Result<Self, BrokerError> {
        let (consumer, operations) = Self::new(broker, options)?;
        let shared = &consumer.shared;
        *consumer
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = vec![
            tokio::spawn(driver::run(shared.clone())),
            tokio::spawn(settle::run(shared.clone(), operations)),
        ];
        Ok(consumer)
    }

    /// The consumer without its tasks, and the receiving end of its settle operations.
    fn new(
        broker: Arc<BrokerInner>,
        options: ConsumeOptions,
    ) -> Result<(Self, mpsc::Receiver<Settle>), BrokerError> {
        if options.queues.is_empty() {
            return Err(BrokerError::Refused("no queue to consume".into()));
        }
        let (settle, operations) = mpsc::channel(SETTLE_QUEUE);
        let cap =
            (options.prefetch > 0).then(|| u16::try_from(options.prefetch).unwrap_or(u16::MAX));
        let shared = Arc::new(Shared {
            broker,
            state: Mutex::new(State::new(
                options.queues.len(),
                driver::weighted_prefetch(&options.order, options.queues.len(), cap),
            )),
            lineup: Mutex::new(Arc::new(Lineup::new(&options))),
            cap: AtomicUsize::new(cap.map_or(0, usize::from)),
            applied: tokio::sync::watch::Sender::new(0),
            arrived: Notify::new(),
            demand_changed: Notify::new(),
            shutdown: CancellationToken::new(),
            settle,
        });
        let consumer = Self {
            shared,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        Ok((consumer, operations))
    }

    async fn settle(&self, delivery: &Delivery, kind: Kind) -> Result<(), BrokerError> {
        let (done, outcome) = oneshot::channel();
        self.shared
            .settle
            .send(Settle::Op {
                tag: delivery.tag.clone(),
                kind,
                done,
            })
            .await
            .map_err(|_| BrokerError::Closed)?;
        outcome.await.map_err(|_| BrokerError::Closed)?
    }

    /// The queue, properties and body of an unsettled delivery, for re-publishing it.
    fn outstanding(
        &self,
        delivery: &Delivery,
    ) -> Result<(usize, lapin::BasicProperties, Arc<Vec<u8>>), BrokerError> {
        let state = self.shared.lock();
        let (generation, amqp_tag) = decode_tag(&delivery.tag).ok_or_else(|| {
            BrokerError::Refused(format!("unknown delivery tag {}", delivery.tag))
        })?;
        if generation != state.generation {
            return Err(AmqpError::StaleDelivery(amqp_tag).into());
        }
        let outstanding = state.outstanding.get(&amqp_tag).ok_or_else(|| {
            BrokerError::Refused(format!("delivery {} is not unacked here", delivery.tag))
        })?;
        Ok((
            outstanding.queue,
            outstanding.properties.clone(),
            outstanding.body.clone(),
        ))
    }
}

/// Registers a fetch's demand while it waits, and withdraws it however the fetch ends.
struct Demand<'a> {
    shared: &'a Shared,
    amount: usize,
}

impl<'a> Demand<'a> {
    fn new(shared: &'a Shared, amount: usize) -> Self {
        shared.lock().demand += amount;
        shared.demand_changed.notify_one();
        Self { shared, amount }
    }
}

impl Demand<'_> {
    /// The fetch got its messages: its demand ends with the same lock that handed them out,
    /// so the driver never counts both the messages and the demand for them.
    fn satisfied(&mut self, state: &mut State) {
        state.demand = state.demand.saturating_sub(self.amount);
        self.amount = 0;
    }
}

impl Drop for Demand<'_> {
    fn drop(&mut self) {
        if self.amount > 0 {
            let mut state = self.shared.lock();
            state.demand = state.demand.saturating_sub(self.amount);
        }
    }
}

fn task_fields(delivery: &Delivery) -> (&str, &str) {
    match &delivery.content {
        Ok(message) => (message.id(), message.task_name()),
        Err(_) => ("?", "?"),
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut demand = Demand::new(&self.shared, max);
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let held_back = {
                let mut state = self.shared.lock();
                if state.closed {
                    return Err(BrokerError::Closed);
                }
                let lineup = self.shared.lineup();
                let taken = state.take(max, lineup.names(), &lineup.order);
                if !taken.is_empty() {
                    demand.satisfied(&mut state);
                    return Ok(taken);
                }
                // Weighted order waits for a queue being refilled while others have
                // messages; look again soon, in case its refill never comes.
                state.buffered > 0
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = if held_back {
                deadline.min(now + Duration::from_millis(5))
            } else {
                deadline
            };
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        self.settle(delivery, Kind::Ack).await
    }

    async fn reject(&self, delivery: &Delivery, requeue: bool) -> Result<(), BrokerError> {
        self.settle(delivery, Kind::Reject { requeue }).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let (_, properties, body) = self.outstanding(delivery)?;
        let queue = &delivery.queue;
        let broker = &self.shared.broker;
        broker.topology.ensure_dead_letter(queue).await?;
        let outgoing = Outgoing {
            exchange: broker.config.dead_letter_exchange.clone(),
            routing_key: queue.clone(),
            properties: wire::republish_properties(
                &properties,
                Some((DEAD_LETTER_REASON_HEADER, reason)),
            ),
            body,
            mandatory: true,
        };
        broker.publisher.publish(&[outgoing]).await?;
        let (task_id, task_name) = task_fields(delivery);
        info!(task_id, task_name, queue = %queue, reason, "dead-lettered");
        self.ack(delivery).await
    }

    async fn defer(
        &self,
        delivery: &Delivery,
        until: DateTime<FixedOffset>,
    ) -> Result<(), BrokerError> {
        let delay = until - time::now();
        let delay_ms = delay
            .num_microseconds()
            .map_or(i64::MAX, |micros| (micros + 999) / 1000);
        if delay_ms <= 0 {
            return self.reject(delivery, true).await;
        }
        let (_, properties, body) = self.outstanding(delivery)?;
        let queue = &delivery.queue;
        let broker = &self.shared.broker;
        broker.topology.ensure_queue(queue).await?;
        broker.topology.ensure_delay(queue).await?;
        let delay_ms = delay_ms.unsigned_abs();
        let outgoing = Outgoing {
            exchange: delay_entry(&broker.config.delay_prefix, delay_ms),
            routing_key: delay_routing_key(delay_ms, queue),
            properties: wire::republish_properties(&properties, None),
            body,
            mandatory: true,
        };
        broker.publisher.publish(&[outgoing]).await?;
        self.ack(delivery).await
    }

    async fn add_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        if self.shared.lineup().consumed().contains(&queue) {
            return Ok(false);
        }
        self.shared.broker.topology.ensure_queue(queue).await?;
        Ok(self.shared.change_lineup(|lineup| lineup.add(queue)).await)
    }

    async fn remove_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        Ok(self
            .shared
            .change_lineup(|lineup| lineup.remove(queue))
            .await)
    }

    async fn set_prefetch(&self, prefetch: usize) -> Result<(), BrokerError> {
        self.shared
            .cap
            .store(prefetch.min(usize::from(u16::MAX)), Ordering::Release);
        self.shared.demand_changed.notify_one();
        Ok(())
    }

    async fn close(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        close(&self.shared, self.take_tasks()).await;
        Ok(())
    }
}

impl AmqpConsumer {
    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// Sends what was settled, stops the tasks and closes the channel: RabbitMQ takes back
/// every delivery not settled, buffered or handed out.
async fn close(shared: &Arc<Shared>, tasks: Vec<JoinHandle<()>>) {
    shared.lock().closed = true;
    shared.arrived.notify_waiters();
    let (flushed, done) = oneshot::channel();
    if shared.settle.send(Settle::Flush(flushed)).await.is_ok() {
        let _ = done.await;
    }
    shared.shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let channel = {
        let mut state = shared.lock();
        let generation = state.generation;
        let channel = state.channel.take();
        state.reset(generation, None);
        channel
    };
    if let Some(channel) = channel {
        if let Err(error) = channel.close(200, "consumer closed").await {
            warn!(queues = ?shared.lineup().consumed(), %error, "closing the consumer channel failed");
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // A consumer dropped without close (a worker that died): give its messages back now
        // rather than when the connection goes.
        let tasks = self.take_tasks();
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { close(&shared, tasks).await });
            }
            Err(_) => {
                shared.shutdown.cancel();
                tasks.iter().for_each(JoinHandle::abort);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;
    use crate::config::AmqpConfig;
    use crate::link::Link;
    use crate::publisher::Publisher;
    use crate::topology::Topology;

    /// A broker that never connects (nothing here needs a server).
    fn offline_broker() -> Arc<BrokerInner> {
        let url = "amqp://guest:guest@127.0.0.1:1/%2f".parse().unwrap();
        let config = Arc::new(AmqpConfig::from_url(&url).unwrap());
        let publish_link = Arc::new(Link::new(config.clone(), "publish"));
        let consume_link = Arc::new(Link::new(config.clone(), "consume"));
        Arc::new(BrokerInner {
            topology: Topology::new(config.clone(), publish_link.clone()),
            publisher: Publisher::new(config.clone(), publish_link.clone()),
            config,
            publish_link,
            consume_link,
        })
    }

    fn delivery(tag: u64) -> Delivery {
        Delivery {
            tag: state::encode_tag(1, tag),
            queue: "q".into(),
            redelivered: false,
            content: Err(queue_core::broker::Undecodable {
                raw: Vec::new(),
                error: "test".into(),
            }),
        }
    }

    type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

    /// Polls every future once; returns how many are still pending.
    fn poll_all(futures: &mut [Option<Pending<'_>>]) -> usize {
        let waker = futures::task::noop_waker();
        let mut context = std::task::Context::from_waker(&waker);
        let mut pending = 0;
        for slot in futures.iter_mut() {
            if let Some(future) = slot {
                match future.as_mut().poll(&mut context) {
                    Poll::Ready(result) => {
                        result.expect("settled");
                        *slot = None;
                    }
                    Poll::Pending => pending += 1,
                }
            }
        }
        pending
    }

    /// Issue 9, defect 8: with the settling task stalled (a slow or blocked channel), acks
    /// wait for room instead of queueing without bound, and every one of them still goes
    /// through once the task catches up.
    #[tokio::test]
    async fn settles_wait_for_room_and_none_is_lost() {
        let (consumer, mut operations) =
            AmqpConsumer::new(offline_broker(), ConsumeOptions::new(["q"])).unwrap();
        let total = SETTLE_QUEUE + 100;
        let deliveries: Vec<Delivery> = (1..=total as u64).map(delivery).collect();
        let mut acks: Vec<Option<Pending<'_>>> = deliveries
            .iter()
            // Unconstrained: tokio's cooperative budget would hold sends back after 128
            // polls, which is not what is measured here.
            .map(|delivery| {
                Some(Box::pin(tokio::task::unconstrained(consumer.ack(delivery))) as Pending<'_>)
            })
            .collect();

        assert_eq!(poll_all(&mut acks), total, "nothing is answered yet");
        assert_eq!(operations.len(), SETTLE_QUEUE, "the queue is bounded");

        // The stalled task takes one operation: exactly one waiting ack gets in.
        let mut answered = Vec::new();
        answered.push(operations.recv().await.expect("an operation"));
        poll_all(&mut acks);
        assert_eq!(operations.len(), SETTLE_QUEUE);

        // It catches up: every ack reaches it, once, and each caller gets its answer.
        let mut tags = std::collections::HashSet::new();
        loop {
            for operation in answered.drain(..) {
                let Settle::Op { tag, kind, done } = operation else {
                    panic!("only acks were sent");
                };
                assert!(matches!(kind, Kind::Ack));
                assert!(tags.insert(tag.to_string()), "{tag} queued twice");
                done.send(Ok(())).expect("the caller waits");
            }
            let pending = poll_all(&mut acks);
            while let Ok(operation) = operations.try_recv() {
                answered.push(operation);
            }
            if pending == 0 && answered.is_empty() {
                break;
            }
        }
        assert_eq!(tags.len(), total);
    }

    #[tokio::test]
    async fn settling_after_the_task_ended_is_closed_not_lost_silently() {
        let (consumer, operations) =
            AmqpConsumer::new(offline_broker(), ConsumeOptions::new(["q"])).unwrap();
        drop(operations);
        let error = consumer.ack(&delivery(1)).await.unwrap_err();
        assert!(matches!(error, BrokerError::Closed), "{error}");
    }
}
