//! [`AmqpBroker`]: the [`Broker`] on RabbitMQ.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use queue_core::backlog::{DelayedMessage, KnownQueues, QueueStats};
use queue_core::broadcast::Broadcast;
use queue_core::broker::{
    Broker, BrokerError, ConsumeOptions, Consumer, DEAD_LETTER_REASON_HEADER, DeadLetter, Publish,
    QueueLength, dead_letter_queue,
};
use queue_core::protocol::time;
use tracing::{debug, warn};

use crate::config::{AmqpBrokerBuilder, AmqpConfig};
use crate::consumer::AmqpConsumer;
use crate::error::{AmqpError, NOT_FOUND};
use crate::link::Link;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{Topology, delay_entry, delay_routing_key};
use crate::wire;

/// The RabbitMQ broker. Clones share connections and channels.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let broker = queue_amqp::AmqpBroker::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// let app = queue_core::App::builder().broker_instance(Arc::new(broker)).build().await?;
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpBroker {
    pub(crate) inner: Arc<BrokerInner>,
}

pub(crate) struct BrokerInner {
    pub(crate) config: Arc<AmqpConfig>,
    pub(crate) publish_link: Arc<Link>,
    pub(crate) consume_link: Arc<Link>,
    pub(crate) topology: Topology,
    pub(crate) publisher: Publisher,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AmqpBroker")
            .field("url", &self.inner.config.url)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Connects to `url` (`amqp://` or `amqps://`, options in its query: see
    /// [`AmqpConfig`](crate::AmqpConfig)).
    pub async fn connect(url: &str) -> Result<Self, AmqpError> {
        Self::builder(url)?.connect().await
    }

    /// A builder starting from `url`, to override its options.
    pub fn builder(url: &str) -> Result<AmqpBrokerBuilder, AmqpError> {
        AmqpBrokerBuilder::new(url)
    }

    /// Connects with `config`. The publishing connection is opened at once, so that a wrong
    /// URL or password fails here; the consuming one with the first consumer.
    pub async fn with_config(config: AmqpConfig) -> Result<Self, AmqpError> {
        let config = Arc::new(config);
        let publish_link = Arc::new(Link::new(config.clone(), "publish"));
        let consume_link = Arc::new(Link::new(config.clone(), "consume"));
        publish_link.live().await?;
        let inner = BrokerInner {
            topology: Topology::new(config.clone(), publish_link.clone()),
            publisher: Publisher::new(config.clone(), publish_link.clone()),
            config,
            publish_link,
            consume_link,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Closes both connections. Consumers still open lose their channels (RabbitMQ takes
    /// their unacked messages back).
    pub async fn close(&self) {
        self.inner.publish_link.close().await;
        self.inner.consume_link.close().await;
    }

    /// The message as it goes on the wire: straight to its queue, or into the delay levels
    /// when its eta is in the future.
    fn outgoing(&self, publish: Publish) -> Result<(Outgoing, Option<String>), BrokerError> {
        let Publish {
            queue,
            exchange,
            routing_key,
            message,
        } = publish;
        let delay_ms = message
            .headers
            .eta
            .map(|eta| eta - time::now())
            .and_then(|ahead| ahead.num_microseconds())
            .filter(|micros| *micros > 0)
            .map(|micros| micros.unsigned_abs().div_ceil(1000));
        // The time of publication, for the age of the oldest message (see `crate::backlog`).
        let now = u64::try_from(time::now().timestamp()).unwrap_or(0);
        let properties = wire::properties(&message, delay_ms.is_none())?.with_timestamp(now);
        let body = Arc::new(message.body);
        Ok(match delay_ms {
            Some(delay_ms) => (
                Outgoing {
                    exchange: delay_entry(&self.inner.config.delay_prefix, delay_ms),
                    routing_key: delay_routing_key(delay_ms, &queue),
                    properties,
                    body,
                    mandatory: true,
                },
                Some(queue),
            ),
            None => (
                Outgoing {
                    exchange: exchange.unwrap_or_default(),
                    routing_key: routing_key.unwrap_or_else(|| queue.clone()),
                    properties,
                    body,
                    mandatory: true,
                },
                None,
            ),
        })
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.inner.topology.ensure_queue(queue).await?;
        self.inner
            .topology
            .seen
            .note(queue, &self.inner.config.delay_prefix);
        Ok(())
    }

    async fn publish(&self, messages: Vec<Publish>) -> Result<(), BrokerError> {
        let (mut queues, mut delayed) = (HashSet::new(), HashSet::new());
        let mut batch = Vec::with_capacity(messages.len());
        let first = messages.first().map(|publish| {
            (
                publish.message.id().to_owned(),
                publish.message.task_name().to_owned(),
            )
        });
        for publish in messages {
            queues.insert(publish.queue.clone());
            let (outgoing, delayed_to) = self.outgoing(publish)?;
            delayed.extend(delayed_to);
            batch.push(outgoing);
        }
        let topology = &self.inner.topology;
        for queue in &queues {
            topology.ensure_queue(queue).await?;
            self.inner
                .topology
                .seen
                .note(queue, &self.inner.config.delay_prefix);
        }
        for queue in &delayed {
            topology.ensure_delay(queue).await?;
        }
        if let Err(error) = self.inner.publisher.publish(&batch).await {
            let (task_id, task_name) = first.unwrap_or_default();
            warn!(%error, count = batch.len(), task_id, task_name, queues = ?queues, "publish failed");
            return Err(error.into());
        }
        debug!(count = batch.len(), delayed = delayed.len(), "published");
        Ok(())
    }

    async fn consume(&self, options: ConsumeOptions) -> Result<Arc<dyn Consumer>, BrokerError> {
        for queue in &options.queues {
            self.inner
                .topology
                .seen
                .note(queue, &self.inner.config.delay_prefix);
        }
        Ok(Arc::new(AmqpConsumer::start(self.inner.clone(), options)?))
    }

    async fn queue_length(&self, queue: &str) -> Result<QueueLength, BrokerError> {
        let ready = self.inner.topology.queue_message_count(queue).await?;
        let total = u64::from(ready.unwrap_or(0));
        let mut by_priority = BTreeMap::new();
        if total > 0 {
            // AMQP does not count by priority.
            by_priority.insert(0, total);
        }
        Ok(QueueLength { total, by_priority })
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        Ok(self.inner.topology.purge(queue).await?)
    }

    /// Events and remote control, as kombu has them on RabbitMQ (see [`crate::broadcast`]).
    fn broadcast(self: Arc<Self>) -> Option<Arc<dyn Broadcast>> {
        Some(self)
    }

    /// See [`crate::backlog`] for this and the other backlog methods.
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        self.inner.queue_stats(queue).await
    }

    async fn delayed(&self, queue: &str, limit: usize) -> Result<Vec<DelayedMessage>, BrokerError> {
        self.inner.delayed(queue, limit).await
    }

    async fn run_delayed_now(&self, queue: &str, task_id: &str) -> Result<bool, BrokerError> {
        self.inner.run_delayed_now(queue, task_id).await
    }

    async fn requeue_dead_letters(
        &self,
        queue: &str,
        task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        self.inner.requeue_dead_letters(queue, task_ids).await
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.purge_dead_letters(queue).await
    }

    async fn known_queues(&self) -> Result<KnownQueues, BrokerError> {
        Ok(self.inner.known_queues())
    }

    /// Reads the dead-letter queue with `basic.get` on a channel of its own, then closes
    /// that channel, which puts every message back in its place: listing never removes a
    /// dead letter. Messages being listed at the same moment by another caller are not
    /// seen by this one.
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let dead = dead_letter_queue(queue);
        if limit == 0
            || self
                .inner
                .topology
                .queue_message_count(&dead)
                .await?
                .is_none()
        {
            return Ok(Vec::new());
        }
        let (channel, _) = self.inner.publish_link.channel().await?;
        let mut listed = Vec::new();
        let mut failure = None;
        while listed.len() < limit {
            match channel
                .basic_get(&dead, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => {
                    let delivery = got.delivery;
                    let reason = death_reason(delivery.properties.headers().as_ref());
                    listed.push(DeadLetter {
                        queue: queue.to_owned(),
                        reason,
                        content: wire::decode(
                            &delivery.properties,
                            &delivery.data,
                            &self.inner.config.delay_prefix,
                        ),
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    failure = Some(AmqpError::operation(format!("basic.get {dead}"), error));
                    break;
                }
            }
        }
        let _ = channel.close(200, "dead letters listed").await;
        match failure {
            Some(error) if error.reply_code() != Some(NOT_FOUND) => Err(error.into()),
            _ => Ok(listed),
        }
    }
}

/// Why a message was dead-lettered: our header, or else RabbitMQ's latest `x-death` entry.
fn death_reason(headers: Option<&lapin::types::FieldTable>) -> String {
    let Some(headers) = headers else {
        return String::new();
    };
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    };
    if let Some(reason) = headers
        .inner()
        .get(DEAD_LETTER_REASON_HEADER)
        .and_then(text)
    {
        return reason;
    }
    let latest = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first(),
        _ => None,
    };
    match latest {
        Some(AMQPValue::FieldTable(death)) => {
            let field = |key: &str| death.inner().get(key).and_then(text).unwrap_or_default();
            format!("{} by RabbitMQ (queue {})", field("reason"), field("queue"))
        }
        _ => String::new(),
    }
}
