//! The [`Broadcast`] side of [`AmqpBroker`]: events (`celeryev`) and remote control
//! (`celery.pidbox` requests, `reply.celery.pidbox` replies), declared as kombu and Celery
//! 5.7 declare them on RabbitMQ, so that Python workers, control clients and monitors
//! (Flower, `celery events`) share them with us (wire spec §3.1, §6.1, §7).
//!
//! # Layout
//!
//! | entity | declared as | where |
//! | --- | --- | --- |
//! | exchange of a [`ExchangeKind::Topic`] (`celeryev`) | topic, **durable** (`celery.events.event_exchange`) | publishing connection, cached |
//! | exchange of a [`ExchangeKind::Fanout`] (`celery.pidbox`) | fanout, transient (`Mailbox.exchange`: `durable=False`) | same |
//! | exchange of a [`ExchangeKind::Direct`] (`reply.celery.pidbox`) | direct, transient (`Mailbox.reply_exchange`) | same |
//! | a subscription's queue ([`Binding::queue`]) | not durable, **exclusive**, **auto-delete**; topic: `x-message-ttl` 5000, `x-expires` 60000 (`event_queue_ttl`/`_expires`); fanout and direct: 300000 and 10000 (`control_queue_ttl`/`_expires`) | the subscription's own channel on the consuming connection |
//!
//! No exchange is auto-deleted or has arguments (kombu's `Exchange` defaults); the exchange
//! flags follow the kind, since on AMQP Celery's only topic exchange is the (durable) event
//! exchange and its fanout and direct ones are the (transient) mailbox exchanges. An exchange
//! that exists with other flags (another client's choice) is used as it is, with a warning,
//! rather than failing. Queue names are the subscriber's own (`celeryev.<uuid>`,
//! `<node>.celery.pidbox`, `<oid>.reply.celery.pidbox`), so no other client declares them.
//!
//! # Sending
//!
//! [`Broadcast::send`] declares the exchange (once per connection, in the topology's
//! bounded cache), then publishes as kombu does for events and replies: `application/json`,
//! `utf-8`, `delivery_mode` 1 (transient), priority 0, the headers as a field table, the
//! routing key. It goes through the crate's [`Publisher`](crate::publisher) channels: one
//! confirm per message, so `send` returns once RabbitMQ has it, and the same reconnection and
//! retry until `publish_timeout` as tasks (then [`BrokerError::Unavailable`]); the
//! declaration's retries count against that timeout too. Unlike tasks, broadcasts are not
//! `mandatory`: an exchange nobody listens to drops the message, which is no error.
//!
//! # Subscribing
//!
//! [`Broadcast::subscribe`] declares the exchange, opens a channel of its own on the
//! consuming connection, declares and binds the queue and consumes it with `no_ack` (as
//! kombu's pidbox and event consumers do), all before it returns. A task then moves each
//! delivery into the bounded [`Subscription`]; a delivery whose headers do not decode is
//! logged and skipped. When the subscriber drops its [`Subscription`] (seen at the next
//! delivery or within [`CLOSED_POLL`]) the consumer is cancelled and the channel closed,
//! so RabbitMQ deletes the auto-delete queue. When the channel or connection breaks, the
//! task declares and consumes again with backoff; what was sent meanwhile is lost, as
//! broadcasts are. A refusal that reconnecting cannot cure ends the subscription
//! ([`Subscription::next`] returns `None`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use queue_core::broadcast::{
    Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription, SubscriptionSender,
    subscription,
};
use queue_core::broker::BrokerError;
use serde_json::{Map, Value};
use tracing::{debug, error, info, warn};

use crate::broker::{AmqpBroker, BrokerInner};
use crate::error::AmqpError;
use crate::link;
use crate::publisher::Outgoing;
use crate::wire::{json_to_table, table_to_json};

/// Celery's `control_queue_ttl`: how long a request or reply waits in a mailbox queue.
pub const CONTROL_QUEUE_TTL: Duration = Duration::from_secs(300);
/// Celery's `control_queue_expires`: a mailbox queue unused this long is deleted.
pub const CONTROL_QUEUE_EXPIRES: Duration = Duration::from_secs(10);
/// Celery's `event_queue_ttl`: how long an event waits in a receiver's queue.
pub const EVENT_QUEUE_TTL: Duration = Duration::from_secs(5);
/// Celery's `event_queue_expires`: a receiver queue unused this long is deleted.
pub const EVENT_QUEUE_EXPIRES: Duration = Duration::from_secs(60);
/// How often an idle subscription looks whether its subscriber dropped it.
pub const CLOSED_POLL: Duration = Duration::from_millis(200);

/// The longest name or routing key AMQP carries (a short string).
const MAX_SHORT: usize = 255;

/// Consumer tags of this process's subscriptions.
static SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(0);

/// The lapin kind and durability an exchange of `kind` is declared with (module docs).
fn exchange_settings(kind: ExchangeKind) -> (lapin::ExchangeKind, bool) {
    match kind {
        ExchangeKind::Topic => (lapin::ExchangeKind::Topic, true),
        ExchangeKind::Fanout => (lapin::ExchangeKind::Fanout, false),
        ExchangeKind::Direct => (lapin::ExchangeKind::Direct, false),
    }
}

/// The options and arguments of a subscription's queue, as kombu declares them.
fn queue_settings(kind: ExchangeKind) -> (QueueDeclareOptions, FieldTable) {
    let (ttl, expires) = match kind {
        ExchangeKind::Topic => (EVENT_QUEUE_TTL, EVENT_QUEUE_EXPIRES),
        ExchangeKind::Fanout | ExchangeKind::Direct => (CONTROL_QUEUE_TTL, CONTROL_QUEUE_EXPIRES),
    };
    // py-amqp sends these small integers as `I` (signed 32 bits).
    let millis = |duration: Duration| {
        AMQPValue::LongInt(i32::try_from(duration.as_millis()).unwrap_or(i32::MAX))
    };
    let mut arguments = FieldTable::default();
    arguments.insert("x-message-ttl".into(), millis(ttl));
    arguments.insert("x-expires".into(), millis(expires));
    let options = QueueDeclareOptions {
        durable: false,
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    (options, arguments)
}

/// The properties of a broadcast, as kombu sets them for events and replies.
fn properties(headers: &Map<String, Value>) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_priority(0)
        .with_headers(json_to_table(headers))
}

/// Refuses what AMQP cannot carry (names and keys are short strings), before it reaches
/// the wire and breaks the channel there.
fn check_short(what: &str, value: &str) -> Result<(), AmqpError> {
    if value.len() > MAX_SHORT {
        return Err(AmqpError::Config(format!(
            "{what} is {} bytes long; AMQP allows {MAX_SHORT}",
            value.len()
        )));
    }
    Ok(())
}

fn check_headers(headers: &Map<String, Value>) -> Result<(), AmqpError> {
    headers
        .keys()
        .try_for_each(|key| check_short("a header name", key))
}

/// A delivery as a [`BroadcastMessage`]; `None` (logged) when its headers do not decode.
fn decode(queue: &str, delivery: lapin::message::Delivery) -> Option<BroadcastMessage> {
    let headers = match delivery.properties.headers() {
        None => Map::new(),
        Some(table) => match table_to_json(table) {
            Ok(headers) => headers,
            Err(error) => {
                warn!(
                    queue,
                    routing_key = delivery.routing_key.as_str(),
                    %error,
                    "broadcast message skipped: its headers do not decode"
                );
                return None;
            }
        },
    };
    Some(BroadcastMessage {
        routing_key: delivery.routing_key.as_str().to_owned(),
        headers,
        body: delivery.data,
    })
}

/// Declares `exchange` as `kind`, retrying transient failures with backoff until the
/// publish timeout, counted from `started`.
async fn declare_exchange(
    inner: &BrokerInner,
    exchange: &str,
    kind: ExchangeKind,
    started: Instant,
) -> Result<(), AmqpError> {
    let (lapin_kind, durable) = exchange_settings(kind);
    let topology = &inner.topology;
    retrying(
        inner,
        started,
        "declaring a broadcast exchange",
        move || topology.ensure_exchange(exchange, lapin_kind.clone(), durable),
    )
    .await
}

/// Runs `op` until it succeeds, fails for good, or the publish timeout since `started`
/// passed (then [`AmqpError::PublishTimeout`], which is [`BrokerError::Unavailable`]).
async fn retrying<T, F, Fut>(
    inner: &BrokerInner,
    started: Instant,
    what: &str,
    mut op: F,
) -> Result<T, AmqpError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AmqpError>>,
{
    let timeout = inner.config.publish_timeout;
    let mut attempt = 0;
    loop {
        let failure = match op().await {
            Ok(value) => return Ok(value),
            Err(failure) if !failure.is_transient() => return Err(failure),
            Err(failure) => failure,
        };
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(AmqpError::PublishTimeout {
                seconds: elapsed.as_secs_f64(),
                last: failure.to_string(),
            });
        }
        let delay = link::backoff(attempt).min(timeout - elapsed);
        attempt += 1;
        warn!(error = %failure, ?delay, attempt, "{what} failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl Broadcast for AmqpBroker {
    async fn send(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        message: BroadcastMessage,
    ) -> Result<(), BrokerError> {
        let started = Instant::now();
        check_short("the exchange name", exchange)?;
        check_short("the routing key", &message.routing_key)?;
        check_headers(&message.headers)?;
        let inner = &self.inner;
        declare_exchange(inner, exchange, kind, started).await?;
        let outgoing = Outgoing {
            exchange: exchange.to_owned(),
            routing_key: message.routing_key,
            properties: properties(&message.headers),
            body: Arc::new(message.body),
            mandatory: false,
        };
        if let Err(error) = inner.publisher.publish_since(&[outgoing], started).await {
            warn!(%error, exchange, "broadcast send failed");
            return Err(error.into());
        }
        Ok(())
    }

    async fn subscribe(&self, binding: Binding) -> Result<Subscription, BrokerError> {
        check_short("the exchange name", &binding.exchange)?;
        check_short("the routing key", &binding.routing_key)?;
        check_short("the queue name", &binding.queue)?;
        let started = Instant::now();
        let subscriber = Subscriber {
            inner: self.inner.clone(),
            binding,
        };
        let session = retrying(&self.inner, started, "subscribing", || subscriber.open()).await?;
        let (sender, subscription) = subscription();
        debug!(queue = %subscriber.binding.queue, exchange = %subscriber.binding.exchange, "subscribed");
        tokio::spawn(subscriber.run(session, sender));
        Ok(subscription)
    }
}

/// One subscription's queue, consumed on a channel of its own.
struct Session {
    channel: Channel,
    consumer: lapin::Consumer,
    tag: String,
}

/// Why a session ended.
enum Ending {
    /// The subscriber dropped its [`Subscription`].
    Dropped,
    /// The channel or connection broke, or RabbitMQ cancelled the consumer.
    Lost(AmqpError),
}

struct Subscriber {
    inner: Arc<BrokerInner>,
    binding: Binding,
}

impl Subscriber {
    /// Declares the exchange, then on a new channel declares and binds the queue and
    /// consumes it.
    async fn open(&self) -> Result<Session, AmqpError> {
        let binding = &self.binding;
        let (kind, durable) = exchange_settings(binding.kind);
        self.inner
            .topology
            .ensure_exchange(&binding.exchange, kind, durable)
            .await?;
        let (channel, _) = self.inner.consume_link.channel().await?;
        match self.consume(&channel).await {
            Ok((consumer, tag)) => Ok(Session {
                channel,
                consumer,
                tag,
            }),
            Err(error) => {
                let _ = channel.close(200, "subscribe failed").await;
                Err(error)
            }
        }
    }

    async fn consume(&self, channel: &Channel) -> Result<(lapin::Consumer, String), AmqpError> {
        let binding = &self.binding;
        let queue = &binding.queue;
        let (options, arguments) = queue_settings(binding.kind);
        channel
            .queue_declare(queue, options, arguments)
            .await
            .map_err(|error| AmqpError::operation(format!("queue.declare {queue}"), error))?;
        channel
            .queue_bind(
                queue,
                &binding.exchange,
                &binding.routing_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| AmqpError::operation(format!("queue.bind {queue}"), error))?;
        let number = SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let tag = format!("queue-amqp.broadcast.{}.{number}", std::process::id());
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(queue, &tag, options, FieldTable::default())
            .await
            .map_err(|error| AmqpError::operation(format!("basic.consume {queue}"), error))?;
        Ok((consumer, tag))
    }

    /// Feeds the subscription until it is dropped, subscribing again after losses.
    async fn run(self, mut session: Session, sender: SubscriptionSender) {
        let queue = self.binding.queue.clone();
        let mut attempt = 0u32;
        loop {
            match self.pump(&mut session, &sender).await {
                Ending::Dropped => {
                    // Cancelling, then closing the channel: RabbitMQ deletes the queue.
                    let channel = &session.channel;
                    let _ = channel
                        .basic_cancel(&session.tag, BasicCancelOptions::default())
                        .await;
                    let _ = channel.close(200, "subscription dropped").await;
                    debug!(%queue, "subscription dropped: unsubscribed");
                    return;
                }
                Ending::Lost(error) => {
                    warn!(%queue, %error, "subscription lost its channel; subscribing again");
                    let _ = session.channel.close(200, "subscription lost").await;
                }
            }
            session = loop {
                let delay = link::backoff(attempt);
                attempt = attempt.saturating_add(1);
                if !wait_unless_dropped(&sender, delay).await {
                    debug!(%queue, "subscription dropped while reconnecting");
                    return;
                }
                match self.open().await {
                    Ok(session) => break session,
                    Err(error) if error.is_transient() => {
                        warn!(%queue, %error, attempt, "subscribing again failed; retrying");
                    }
                    Err(error) => {
                        // Dropping the sender ends the subscription.
                        error!(%queue, %error, "subscribing again was refused; subscription ended");
                        return;
                    }
                }
            };
            info!(%queue, attempts = attempt, "subscribed again");
            attempt = 0;
        }
    }

    /// Moves deliveries into the subscription until it is dropped or the consumer ends.
    async fn pump(&self, session: &mut Session, sender: &SubscriptionSender) -> Ending {
        let queue = &self.binding.queue;
        let mut poll = tokio::time::interval(CLOSED_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = session.consumer.next() => match item {
                    Some(Ok(delivery)) => {
                        if let Some(message) = decode(queue, delivery) {
                            if !sender.deliver(message) {
                                return Ending::Dropped;
                            }
                        }
                    }
                    Some(Err(error)) => {
                        return Ending::Lost(AmqpError::operation(format!("consuming {queue}"), error));
                    }
                    None => return Ending::Lost(AmqpError::ConsumerEnded { queue: queue.clone() }),
                },
                _ = poll.tick() => {
                    if sender.is_closed() {
                        return Ending::Dropped;
                    }
                }
            }
        }
    }
}

/// Sleeps `delay`, waking every [`CLOSED_POLL`] to see whether the subscriber is gone;
/// `false` if it is.
async fn wait_unless_dropped(sender: &SubscriptionSender, delay: Duration) -> bool {
    let until = tokio::time::Instant::now() + delay;
    loop {
        if sender.is_closed() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        tokio::time::sleep((until - now).min(CLOSED_POLL)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_follow_kombu() {
        assert_eq!(
            exchange_settings(ExchangeKind::Topic),
            (lapin::ExchangeKind::Topic, true)
        );
        assert_eq!(
            exchange_settings(ExchangeKind::Fanout),
            (lapin::ExchangeKind::Fanout, false)
        );
        assert_eq!(
            exchange_settings(ExchangeKind::Direct),
            (lapin::ExchangeKind::Direct, false)
        );
        let (options, arguments) = queue_settings(ExchangeKind::Topic);
        assert!(options.exclusive && options.auto_delete && !options.durable);
        let argument = |table: &FieldTable, key: &str| table.inner().get(key).cloned();
        assert_eq!(
            argument(&arguments, "x-message-ttl"),
            Some(AMQPValue::LongInt(5000))
        );
        assert_eq!(
            argument(&arguments, "x-expires"),
            Some(AMQPValue::LongInt(60000))
        );
        let (_, arguments) = queue_settings(ExchangeKind::Fanout);
        assert_eq!(
            argument(&arguments, "x-message-ttl"),
            Some(AMQPValue::LongInt(300_000))
        );
        assert_eq!(
            argument(&arguments, "x-expires"),
            Some(AMQPValue::LongInt(10_000))
        );
    }

    #[test]
    fn properties_are_transient_json() {
        let mut headers = Map::new();
        headers.insert("hostname".into(), Value::from("celery@host"));
        let properties = properties(&headers);
        assert_eq!(*properties.delivery_mode(), Some(1));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(
            properties
                .content_encoding()
                .as_ref()
                .map(ShortString::as_str),
            Some("utf-8")
        );
        let table = properties.headers().as_ref().expect("headers");
        assert_eq!(table_to_json(table).expect("decodes"), headers);
    }

    #[test]
    fn names_longer_than_a_short_string_are_refused() {
        assert!(check_short("x", &"a".repeat(255)).is_ok());
        let error = check_short("the routing key", &"a".repeat(256)).unwrap_err();
        assert!(!error.is_transient(), "{error}");
        let mut headers = Map::new();
        headers.insert("k".repeat(300), Value::Null);
        assert!(check_headers(&headers).is_err());
    }
}
