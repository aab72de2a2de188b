//! The backlog a monitor reads ([`queue_core::backlog`]) on RabbitMQ, with AMQP 0-9-1 alone
//! (no management API).
//!
//! - **Stats**: ready messages and dead letters are the queues' message counts (passive
//!   `queue.declare`); the oldest ready message is the head of the queue, read with
//!   `basic.get` and given back at once (RabbitMQ puts it back at the head). That marks it
//!   `redelivered`, which our workers ignore; a Python worker with
//!   `task_reject_on_worker_lost` would then not requeue it a second time if its process
//!   died while running it. Its enqueue time: when it left our delay levels (`x-death`),
//!   else its AMQP `timestamp` (set by our publishes) or its eta when later, to the second.
//!   Delayed messages are counted by browsing the delay levels (see [`delays`]).
//! - **Running a delayed message now**: it is found by a browse, published to its queue
//!   without its eta, and acked in the delay level only once RabbitMQ confirmed the copy.
//!   A connection lost between the two leaves both: the task then runs now and again when
//!   due, never not at all.
//! - **Requeueing dead letters**: the same way, from `<queue>.dead_letter` (in its order),
//!   without the reason header and RabbitMQ's dead-letter headers, with a new timestamp;
//!   dead letters not chosen are given back in their places.
//! - **Known queues**: AMQP cannot list queues. Those this broker declared, published to,
//!   consumed or read the stats of are remembered (the last [`REMEMBERED_QUEUES`]), and
//!   [`KnownQueues::complete`] is `false`. A monitor names further queues by asking for
//!   their stats.

pub mod delays;

use std::sync::Mutex;

use chrono::{DateTime, FixedOffset};
use hashlink::LruCache;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use queue_core::backlog::{DelayedMessage, KnownQueues, OldestMessage, QueueStats};
use queue_core::broker::{BrokerError, DEAD_LETTER_REASON_HEADER, QueueLength, dead_letter_queue};
use queue_core::protocol::time;
use tracing::debug;

use self::delays::{Held, eta_header, left_delay_at, seconds_to_time};
use crate::broker::BrokerInner;
use crate::error::{AmqpError, NOT_FOUND};
use crate::publisher::Outgoing;
use crate::wire;

/// Queue names a broker remembers for [`KnownQueues`].
pub const REMEMBERED_QUEUES: usize = 10_000;

/// Messages published per confirmed batch when requeueing dead letters.
const REQUEUE_BATCH: usize = 100;

/// The task queues this broker has seen, the least recently used forgotten first.
pub(crate) struct SeenQueues(Mutex<LruCache<String, ()>>);

impl Default for SeenQueues {
    fn default() -> Self {
        Self(Mutex::new(LruCache::new(REMEMBERED_QUEUES)))
    }
}

impl SeenQueues {
    /// Remembers `queue`, unless it is one of the broker's own (dead letters, delays,
    /// broadcast plumbing).
    pub(crate) fn note(&self, queue: &str, delay_prefix: &str) {
        if queue.is_empty()
            || queue.ends_with(".dead_letter")
            || queue.ends_with(".pidbox")
            || queue.starts_with("celeryev.")
            || queue.starts_with("amq.")
            || queue.starts_with(delay_prefix)
        {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(queue.to_owned(), ());
    }

    fn names(&self) -> Vec<String> {
        let seen = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut names: Vec<String> = seen.iter().map(|(name, _)| name.clone()).collect();
        names.sort();
        names
    }
}

/// `received` as it goes back into a task queue: headers edited by `edit`, RabbitMQ's
/// dead-letter headers and the TTL removed (see [`wire::republish_properties`]), the
/// timestamp now.
fn ready_again(received: &BasicProperties, edit: impl FnOnce(&mut FieldTable)) -> BasicProperties {
    let mut headers = received.headers().clone().unwrap_or_default();
    edit(&mut headers);
    let edited = received.clone().with_headers(headers);
    wire::republish_properties(&edited, None).with_timestamp(now_seconds())
}

/// `headers` without `key` (a `FieldTable` has no removal).
fn without(headers: &FieldTable, key: &str) -> FieldTable {
    let mut kept = FieldTable::default();
    for (name, value) in headers.inner() {
        if name.as_str() != key {
            kept.insert(name.clone(), value.clone());
        }
    }
    kept
}

fn now_seconds() -> u64 {
    u64::try_from(time::now().timestamp()).unwrap_or(0)
}

/// The republication of `delivery` to `queue` through the default exchange.
fn to_queue(queue: &str, delivery: &Delivery, properties: BasicProperties) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        properties,
        body: std::sync::Arc::new(delivery.data.clone()),
        mandatory: true,
    }
}

impl BrokerInner {
    fn task_id(&self, delivery: &Delivery) -> Option<String> {
        wire::decode(
            &delivery.properties,
            &delivery.data,
            &self.config.delay_prefix,
        )
        .ok()
        .map(|message| message.id().to_owned())
    }

    /// The head of `queue`, read and given back.
    async fn peek(&self, queue: &str) -> Result<Option<OldestMessage>, AmqpError> {
        let (channel, _) = self.publish_link.channel().await?;
        let got = channel
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await;
        // Closing the channel gives the message back at the head of its queue.
        let _ = channel.close(200, "queue head read").await;
        let got = match got {
            Ok(got) => got,
            Err(error) => {
                let error = AmqpError::operation(format!("basic.get {queue}"), error);
                if error.reply_code() == Some(NOT_FOUND) {
                    return Ok(None);
                }
                return Err(error);
            }
        };
        Ok(got.map(|got| {
            let delivery = got.delivery;
            let now = time::now();
            let headers = delivery.properties.headers().as_ref();
            let published = delivery.properties.timestamp().and_then(seconds_to_time);
            let eta = eta_header(headers).filter(|eta| *eta <= now);
            OldestMessage {
                task_id: self.task_id(&delivery),
                enqueued_at: entered(
                    left_delay_at(headers, &self.config.delay_prefix),
                    published,
                    eta,
                ),
            }
        }))
    }

    pub(crate) async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let ready = self.topology.queue_message_count(queue).await?;
        if ready.is_some() {
            self.topology.seen.note(queue, &self.config.delay_prefix);
        }
        let ready = u64::from(ready.unwrap_or(0));
        let dead_letters = self
            .topology
            .queue_message_count(&dead_letter_queue(queue))
            .await?
            .map_or(0, u64::from);
        let oldest_ready = if ready > 0 {
            self.peek(queue).await?
        } else {
            None
        };
        let delayed = self
            .browse_delays(Some(queue), |_, held| async move { Ok(held.len() as u64) })
            .await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready: QueueLength {
                total: ready,
                // AMQP does not count by priority.
                by_priority: (ready > 0).then_some((0, ready)).into_iter().collect(),
            },
            oldest_ready,
            delayed,
            dead_letters,
        })
    }

    pub(crate) async fn delayed(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DelayedMessage>, BrokerError> {
        let prefix = self.config.delay_prefix.clone();
        let listed = self
            .browse_delays(Some(queue), |_, mut held| async move {
                held.sort_by_key(|held| held.due);
                Ok(held
                    .into_iter()
                    .take(limit)
                    .map(|held| DelayedMessage {
                        content: wire::decode(
                            &held.delivery.properties,
                            &held.delivery.data,
                            &prefix,
                        ),
                        queue: held.queue,
                        eta: held.due,
                    })
                    .collect())
            })
            .await?;
        Ok(listed)
    }

    pub(crate) async fn run_delayed_now(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<bool, BrokerError> {
        self.topology.ensure_queue(queue).await?;
        let ran = self
            .browse_delays(Some(queue), |channel, held| async move {
                let Some(found) = held
                    .into_iter()
                    .filter(|held| self.task_id(&held.delivery).as_deref() == Some(task_id))
                    .min_by_key(|held: &Held| held.due)
                else {
                    return Ok(false);
                };
                let properties = ready_again(&found.delivery.properties, |headers| {
                    headers.insert(ShortString::from("eta"), AMQPValue::Void);
                });
                let outgoing = to_queue(queue, &found.delivery, properties);
                self.publisher.publish(&[outgoing]).await?;
                channel
                    .basic_ack(found.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|error| AmqpError::operation("basic.ack (delayed)", error))?;
                Ok(true)
            })
            .await?;
        debug!(queue, task_id, ran, "delayed message run now");
        Ok(ran)
    }

    pub(crate) async fn requeue_dead_letters(
        &self,
        queue: &str,
        task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let dead = dead_letter_queue(queue);
        // At most what is there now: a task that fails again at once is not requeued twice.
        let Some(count) = self.topology.queue_message_count(&dead).await? else {
            return Ok(0);
        };
        if count == 0 {
            return Ok(0);
        }
        self.topology.ensure_queue(queue).await?;
        let (channel, _) = self.publish_link.channel().await?;
        let moved = self
            .requeue_on(&channel, queue, &dead, count, task_ids)
            .await;
        // Gives back every dead letter not chosen, in its place.
        let _ = channel.close(200, "dead letters requeued").await;
        let moved = moved?;
        debug!(queue, moved, "dead letters requeued");
        Ok(moved)
    }

    async fn requeue_on(
        &self,
        channel: &lapin::Channel,
        queue: &str,
        dead: &str,
        count: u32,
        task_ids: Option<&[String]>,
    ) -> Result<u64, AmqpError> {
        let mut moved = 0u64;
        let mut chosen: Vec<Delivery> = Vec::new();
        for _ in 0..count {
            let got = channel
                .basic_get(dead, BasicGetOptions { no_ack: false })
                .await
                .map_err(|error| AmqpError::operation(format!("basic.get {dead}"), error))?;
            let Some(got) = got else { break };
            let wanted = match task_ids {
                None => true,
                Some(ids) => self
                    .task_id(&got.delivery)
                    .is_some_and(|id| ids.contains(&id)),
            };
            if wanted {
                chosen.push(got.delivery);
            }
            if chosen.len() >= REQUEUE_BATCH {
                moved += self
                    .move_back(channel, queue, std::mem::take(&mut chosen))
                    .await?;
            }
        }
        moved += self.move_back(channel, queue, chosen).await?;
        Ok(moved)
    }

    /// Publishes `chosen` to `queue`, confirmed, then acks them where they were.
    async fn move_back(
        &self,
        channel: &lapin::Channel,
        queue: &str,
        chosen: Vec<Delivery>,
    ) -> Result<u64, AmqpError> {
        if chosen.is_empty() {
            return Ok(0);
        }
        let batch: Vec<Outgoing> = chosen
            .iter()
            .map(|delivery| {
                let properties = ready_again(&delivery.properties, |headers| {
                    *headers = without(headers, DEAD_LETTER_REASON_HEADER);
                });
                to_queue(queue, delivery, properties)
            })
            .collect();
        self.publisher.publish(&batch).await?;
        for delivery in &chosen {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await
                .map_err(|error| AmqpError::operation("basic.ack (dead letter)", error))?;
        }
        Ok(chosen.len() as u64)
    }

    pub(crate) async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        Ok(self.topology.purge(&dead_letter_queue(queue)).await?)
    }

    pub(crate) fn known_queues(&self) -> KnownQueues {
        KnownQueues {
            names: self.topology.seen.names(),
            complete: false,
        }
    }
}

/// When a ready message entered its queue: when it left the delay levels, else the later
/// of its publication and its (past) eta.
fn entered(
    left_delay: Option<DateTime<FixedOffset>>,
    published: Option<DateTime<FixedOffset>>,
    eta: Option<DateTime<FixedOffset>>,
) -> Option<DateTime<FixedOffset>> {
    left_delay.or(published.max(eta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_queues_are_not_remembered_as_task_queues() {
        let seen = SeenQueues::default();
        for queue in [
            "celery",
            "emails",
            "celery.dead_letter",
            "queue.delay.3",
            "celeryev.1234",
            "w1@host.celery.pidbox",
            "amq.gen-1",
            "emails",
        ] {
            seen.note(queue, "queue.delay");
        }
        assert_eq!(seen.names(), ["celery", "emails"]);
    }

    #[test]
    fn a_message_entered_when_it_left_the_delays_or_when_published() {
        let at = |text: &str| time::parse_timestamp(text);
        let left = at("2024-05-01T12:00:00+00:00");
        let published = at("2024-05-01T11:00:00+00:00");
        assert_eq!(entered(left, published, None), left);
        assert_eq!(entered(None, published, None), published);
        let eta = at("2024-05-01T11:30:00+00:00");
        assert_eq!(entered(None, published, eta), eta, "ready from its eta on");
        assert_eq!(
            entered(None, None, None),
            None,
            "a Python message has no time"
        );
    }
}
