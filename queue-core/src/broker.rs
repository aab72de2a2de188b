//! The [`Broker`] contract: what the worker and the client need from RabbitMQ, Redis or the
//! in-memory broker. Batch-shaped where a broker can batch (publish many, fetch many).
//!
//! Semantics every broker keeps (checked by `conformance::broker`):
//! - priority 0–9 inside a queue, higher first; FIFO within one priority;
//! - [`Consumer::fetch`] takes from several queues in the [`QueueOrder`] given;
//! - a message whose `eta` is in the future waits in the broker, not in the worker;
//! - a fetched message stays with the broker until acked, rejected, deferred or
//!   dead-lettered; when its consumer goes away unacknowledged, it is delivered again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use rand::Rng;

use crate::backlog::{DelayedMessage, KnownQueues, QueueStats};
use crate::broadcast::Broadcast;
use crate::protocol::{Message, ProtocolError};

/// Header added to a dead-lettered message: why it was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-dead-letter-reason";

/// The queue where dead letters of `queue` go.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead_letter")
}

/// Errors of broker operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached or the connection broke; retrying may help.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the operation.
    #[error("broker refused the operation: {0}")]
    Refused(String),
    /// The consumer was closed.
    #[error("consumer closed")]
    Closed,
    /// The broker does not support this operation.
    #[error("not supported by this broker: {0}")]
    Unsupported(&'static str),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// A message to publish and where to.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Target queue (on AMQP: routing key on the default exchange, unless `exchange` is set).
    pub queue: String,
    /// AMQP exchange; `None` is the default exchange.
    pub exchange: Option<String>,
    /// AMQP routing key; the queue name by default.
    pub routing_key: Option<String>,
    /// The message.
    pub message: Message,
}

impl Publish {
    /// Publishes `message` to `queue` through the default exchange.
    pub fn new(queue: impl Into<String>, message: Message) -> Self {
        Self {
            queue: queue.into(),
            exchange: None,
            routing_key: None,
            message,
        }
    }
}

/// How a worker orders the queues it consumes.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum QueueOrder {
    /// The first queue listed is always served first; a later queue only when the earlier
    /// ones are empty (Sidekiq's strict order).
    #[default]
    Strict,
    /// Each fetch picks the queue order at random, weighted: a queue of weight 3 comes first
    /// three times as often as one of weight 1, and none starves (Sidekiq's weighted order).
    /// One weight per queue, in the order of the queues.
    Weighted(Vec<u32>),
}

impl QueueOrder {
    /// The order in which to try `queue_count` queues for one fetch (indexes).
    pub fn sequence(&self, queue_count: usize) -> Vec<usize> {
        match self {
            QueueOrder::Strict => (0..queue_count).collect(),
            QueueOrder::Weighted(weights) => {
                let mut remaining: Vec<(usize, u64)> = (0..queue_count)
                    .map(|index| (index, u64::from(*weights.get(index).unwrap_or(&1)).max(1)))
                    .collect();
                let mut order = Vec::with_capacity(queue_count);
                let mut rng = rand::rng();
                while !remaining.is_empty() {
                    let total: u64 = remaining.iter().map(|(_, weight)| weight).sum();
                    let mut pick = rng.random_range(0..total);
                    let position = remaining
                        .iter()
                        .position(|(_, weight)| {
                            if pick < *weight {
                                true
                            } else {
                                pick -= weight;
                                false
                            }
                        })
                        .unwrap_or(0);
                    order.push(remaining.remove(position).0);
                }
                order
            }
        }
    }
}

/// What to consume and how.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// Queues, in the worker's order.
    pub queues: Vec<String>,
    /// Order between the queues.
    pub order: QueueOrder,
    /// Most messages the broker may push ahead of a fetch (AMQP `basic.qos`); brokers that
    /// fetch on demand ignore it.
    pub prefetch: usize,
}

impl ConsumeOptions {
    /// Consumes `queues` in strict order.
    pub fn new<I, S>(queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            queues: queues.into_iter().map(Into::into).collect(),
            order: QueueOrder::Strict,
            prefetch: 0,
        }
    }

    /// Sets the order between queues.
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Sets the prefetch hint.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Adds `queue` after the others (weight 1 in a weighted order); `false` when it is
    /// there already. What [`Consumer::add_queue`] does to a consumer's options.
    pub fn add_queue(&mut self, queue: &str) -> bool {
        if self.queues.iter().any(|known| known == queue) {
            return false;
        }
        if let QueueOrder::Weighted(weights) = &mut self.order {
            weights.resize(self.queues.len(), 1);
            weights.push(1);
        }
        self.queues.push(queue.to_owned());
        true
    }

    /// Removes `queue` (and its weight); `false` when it was not there.
    pub fn remove_queue(&mut self, queue: &str) -> bool {
        let Some(index) = self.queues.iter().position(|known| known == queue) else {
            return false;
        };
        self.queues.remove(index);
        if let QueueOrder::Weighted(weights) = &mut self.order {
            if index < weights.len() {
                weights.remove(index);
            }
        }
        true
    }
}

/// Identifies a delivery to its broker for ack, reject and renew.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryTag {
    /// A numeric tag (AMQP, memory).
    Number(u64),
    /// A textual tag (Redis: kombu's `delivery_tag` UUID).
    Text(String),
}

impl fmt::Display for DeliveryTag {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryTag::Number(number) => write!(formatter, "{number}"),
            DeliveryTag::Text(text) => formatter.write_str(text),
        }
    }
}

/// A message that did not decode: its raw bytes and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// What is wrong with them.
    pub error: String,
}

/// One fetched message.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// What ack and reject need.
    pub tag: DeliveryTag,
    /// The queue it came from.
    pub queue: String,
    /// Whether it was delivered before (to a consumer that did not ack it).
    pub redelivered: bool,
    /// The message, or the raw bytes that did not decode.
    pub content: Result<Message, Undecodable>,
}

/// A dead-lettered message, as [`Broker::dead_letters`] lists it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Why.
    pub reason: String,
    /// The message, or its raw bytes.
    pub content: Result<Message, Undecodable>,
}

/// Number of ready messages in a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueLength {
    /// All ready messages.
    pub total: u64,
    /// Ready messages per priority (brokers that cannot tell put everything under 0).
    pub by_priority: BTreeMap<u8, u64>,
}

/// A message broker: RabbitMQ, Redis, memory.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Declares a queue (idempotent); publishing and consuming declare as needed too.
    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError>;

    /// Publishes messages and returns when the broker holds all of them. Messages whose
    /// `eta` is in the future are held by the broker until due.
    async fn publish(&self, messages: Vec<Publish>) -> Result<(), BrokerError>;

    /// Starts consuming.
    async fn consume(&self, options: ConsumeOptions) -> Result<Arc<dyn Consumer>, BrokerError>;

    /// Ready messages in `queue` (not counting delayed or unacked ones).
    async fn queue_length(&self, queue: &str) -> Result<QueueLength, BrokerError>;

    /// Removes all ready messages of `queue`; returns how many.
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError>;

    /// Lists up to `limit` dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: usize)
    -> Result<Vec<DeadLetter>, BrokerError>;

    /// The broker's fanout side (events, remote control), if it has one.
    ///
    /// ```
    /// # async fn example() {
    /// use std::sync::Arc;
    /// use queue_core::{Broker, MemoryBroker};
    ///
    /// let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    /// assert!(broker.clone().broadcast().is_some());
    /// # }
    /// ```
    fn broadcast(self: Arc<Self>) -> Option<Arc<dyn Broadcast>> {
        None
    }

    /// What a monitor shows for `queue`: ready messages per priority, the ready message that
    /// has waited longest and since when, where the broker knows (see [`crate::backlog`]),
    /// and how many messages wait for their eta and lie in the dead-letter place. An
    /// unknown queue has all zero.
    async fn queue_stats(&self, _queue: &str) -> Result<QueueStats, BrokerError> {
        Err(BrokerError::Unsupported("queue_stats"))
    }

    /// Lists up to `limit` messages of `queue` that the broker holds until their eta, the
    /// soonest due first.
    async fn delayed(
        &self,
        _queue: &str,
        _limit: usize,
    ) -> Result<Vec<DelayedMessage>, BrokerError> {
        Err(BrokerError::Unsupported("delayed"))
    }

    /// Makes the delayed message of `queue` with this task id ready now, at the end of
    /// `queue`, its eta header removed so that a worker (ours or Python's) runs it at once.
    /// `Ok(false)` when no delayed message of `queue` has that id. The message is never
    /// lost: it moves in one step where the broker allows, else it is published (and
    /// confirmed) before the delayed copy is removed.
    async fn run_delayed_now(&self, _queue: &str, _task_id: &str) -> Result<bool, BrokerError> {
        Err(BrokerError::Unsupported("run_delayed_now"))
    }

    /// Moves dead letters of `queue` back to the end of `queue` (all of them, or those whose
    /// task id is in `task_ids`), without their dead-letter reason header; returns how many
    /// moved. The same guarantee as [`Broker::run_delayed_now`]: none is lost.
    async fn requeue_dead_letters(
        &self,
        _queue: &str,
        _task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        Err(BrokerError::Unsupported("requeue_dead_letters"))
    }

    /// Removes all dead letters of `queue`; returns how many.
    async fn purge_dead_letters(&self, _queue: &str) -> Result<u64, BrokerError> {
        Err(BrokerError::Unsupported("purge_dead_letters"))
    }

    /// The task queues the broker can name (see [`KnownQueues`] for what each broker can
    /// know).
    async fn known_queues(&self) -> Result<KnownQueues, BrokerError> {
        Err(BrokerError::Unsupported("known_queues"))
    }
}

/// A consumer of several queues. All methods take `&self`: tasks ack concurrently.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Waits up to `wait` for at least one message, then returns up to `max` of them, taken
    /// in the consumer's queue order and by priority. Empty when `wait` elapsed.
    ///
    /// Cancel-safe: a fetch future dropped before it completes loses no message (one the
    /// broker handed out at that moment counts as unacked and is delivered again).
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError>;

    /// The message is done: the broker forgets it.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError>;

    /// Gives the message back to its queue (`requeue`) or drops it.
    async fn reject(&self, delivery: &Delivery, requeue: bool) -> Result<(), BrokerError>;

    /// Moves the message to the dead-letter place of its queue with `reason`.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError>;

    /// Hands the message back to the broker to be delivered again at `until` (used for
    /// messages whose eta is in the future, so that workers do not hold them).
    async fn defer(
        &self,
        delivery: &Delivery,
        until: DateTime<FixedOffset>,
    ) -> Result<(), BrokerError>;

    /// Publishes `replacement` (the retry of this delivery's message) and acks `delivery` as
    /// one step, so that a crash between the two never leaves two copies of the task.
    ///
    /// Brokers that can do this atomically (Redis: one script; memory: one lock) override
    /// it. The default answers [`BrokerError::Unsupported`], and the worker then publishes
    /// and acks in two steps: a crash in between delivers the original again (the task runs
    /// once more, which acks-late semantics allow).
    async fn republish_and_ack(
        &self,
        _delivery: &Delivery,
        _replacement: Publish,
    ) -> Result<(), BrokerError> {
        Err(BrokerError::Unsupported("republish_and_ack"))
    }

    /// Starts consuming `queue` as well, after the queues consumed now (weight 1 in a
    /// weighted order). `Ok(false)` when it is consumed already. Celery's `add_consumer`.
    async fn add_queue(&self, _queue: &str) -> Result<bool, BrokerError> {
        Err(BrokerError::Unsupported("add_queue"))
    }

    /// Stops consuming `queue`: no new message comes from it, and deliveries already fetched
    /// from it can still be acked or rejected. `Ok(false)` when it was not consumed.
    /// Celery's `cancel_consumer`.
    async fn remove_queue(&self, _queue: &str) -> Result<bool, BrokerError> {
        Err(BrokerError::Unsupported("remove_queue"))
    }

    /// Changes how many messages the broker may push ahead of a fetch (AMQP `basic.qos`),
    /// when the worker's concurrency changes. Brokers that fetch on demand ignore it.
    async fn set_prefetch(&self, _prefetch: usize) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Tells the broker these messages are still being worked on (renews a visibility
    /// timeout where the broker has one). The worker calls it periodically.
    async fn renew(&self, _deliveries: &[DeliveryTag]) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Stops consuming. Messages not acked are delivered again to another consumer.
    async fn close(&self) -> Result<(), BrokerError>;
}
