//! Exchanges, queues and bindings: Celery's for task queues, ours for dead letters and
//! delays. Declarations are cached per connection (a new connection declares again, which
//! also recreates what a RabbitMQ restart lost), for the [`DECLARED_CACHE`] queue names
//! used last: a producer that sends to ever new queue names keeps a bounded cache, and a
//! name evicted from it is declared again (declarations are idempotent) when next used.
//!
//! **Task queue** `q` (as Celery's `task_create_missing_queues` does it): direct exchange
//! `q`, durable queue `q` (arguments: `x-max-priority` when configured, `x-expires` and
//! `x-dead-letter-exchange` when asked for), bound with routing key `q`. Messages go
//! through the default exchange with routing key `q`, as Celery sends them.
//!
//! **Dead letters**: direct exchange `dead_letter` (configurable), queue `q.dead_letter`
//! bound to it with routing key `q`.
//!
//! **Delays** (eta, countdown, [`Consumer::defer`](queue_core::Consumer::defer)): 32
//! levels, as Celery 5.5's native delayed delivery but in milliseconds and for classic
//! queues and the default exchange. Level `L` is a topic exchange and a queue
//! `queue.delay.L` whose messages all live `2^L` ms (`x-message-ttl`) and are then
//! dead-lettered to level `L-1`'s exchange (level 0's to the topic exchange
//! `queue.delay.deliver`). The routing key spells the delay in binary, bit 31 first, then
//! the target queue: `0.0. … .1.0.1.q`. Exchange `L` sends a message whose bit `L` is 1 into
//! queue `L` (it waits `2^L` ms there) and one whose bit is 0 straight on to exchange `L-1`;
//! `queue.delay.deliver` hands it to `q` through the binding `*.*. … .*.q`. A message
//! therefore waits exactly its delay in RabbitMQ, rounded up to the millisecond, never
//! less; every queue holds messages of one TTL only, so expiry at the head is never blocked
//! by a longer-lived message. Delays beyond 2^32 - 1 ms (49.7 days) are cut to that; the
//! worker defers such a message again when it arrives early.

use std::future::Future;
use std::sync::Arc;

use hashlink::LruCache;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use queue_core::broker::dead_letter_queue;
use tokio::sync::Mutex;
use tracing::warn;

use crate::backlog::SeenQueues;
use crate::config::AmqpConfig;
use crate::error::{AmqpError, NOT_FOUND, PRECONDITION_FAILED};
use crate::link::Link;

/// Delay levels: bit `L` of the delay in milliseconds waits in level `L`.
pub const DELAY_LEVELS: u32 = 32;

/// The longest delay the levels can express.
pub const MAX_DELAY_MS: u64 = (1 << DELAY_LEVELS) - 1;

/// Queue names remembered as declared, per kind (task queue, dead letters, delay binding).
pub const DECLARED_CACHE: usize = 1024;

/// Queue names declared on the current connection, the least recently used forgotten first.
struct Names(LruCache<String, ()>);

impl Names {
    fn new() -> Self {
        Self(LruCache::new(DECLARED_CACHE))
    }

    /// Whether `name` was declared (and, if so, marks it as used now).
    fn contains(&mut self, name: &str) -> bool {
        self.0.get(name).is_some()
    }

    fn insert(&mut self, name: &str) {
        self.0.insert(name.to_owned(), ());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Declared {
    generation: u64,
    queues: Names,
    dead_letters: Names,
    delay_levels: bool,
    delay_targets: Names,
    /// Broadcast exchanges (`celeryev`, `celery.pidbox`, …), see [`crate::broadcast`].
    exchanges: Names,
}

impl Declared {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            queues: Names::new(),
            dead_letters: Names::new(),
            delay_levels: false,
            delay_targets: Names::new(),
            exchanges: Names::new(),
        }
    }
}

pub(crate) struct Topology {
    config: Arc<AmqpConfig>,
    link: Arc<Link>,
    /// The admin channel; one operation at a time, because a refusal (404, 406) closes the
    /// channel under every operation sharing it.
    admin: Mutex<Option<(Channel, u64)>>,
    declared: std::sync::Mutex<Declared>,
    /// The task queues used through this broker, for `known_queues` (see
    /// [`crate::backlog`]).
    pub(crate) seen: SeenQueues,
}

impl Topology {
    pub(crate) fn new(config: Arc<AmqpConfig>, link: Arc<Link>) -> Self {
        Self {
            config,
            link,
            admin: Mutex::new(None),
            declared: std::sync::Mutex::new(Declared::new(0)),
            seen: SeenQueues::default(),
        }
    }

    fn declared(&self) -> std::sync::MutexGuard<'_, Declared> {
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` on the admin channel, opening a new one when the last was closed.
    async fn admin<T, F, Fut>(&self, what: String, op: F) -> Result<T, AmqpError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let mut admin = self.admin.lock().await;
        let usable = admin
            .as_ref()
            .filter(|(channel, _)| channel.status().connected())
            .cloned();
        let (channel, generation) = match usable {
            Some(open) => open,
            None => {
                let open = self.link.channel().await?;
                *admin = Some(open.clone());
                open
            }
        };
        {
            let mut declared = self.declared();
            if declared.generation != generation {
                *declared = Declared::new(generation);
            }
        }
        let result = op(channel.clone()).await;
        if result.is_err() && !channel.status().connected() {
            *admin = None;
        }
        result.map_err(|error| AmqpError::operation(what, error))
    }

    /// Declares a task queue the way Celery does, once per connection.
    pub(crate) async fn ensure_queue(&self, queue: &str) -> Result<(), AmqpError> {
        if self.declared().queues.contains(queue) {
            return Ok(());
        }
        let exchange_ok = if queue.is_empty() || queue.starts_with("amq.") {
            false // reserved names: the default exchange routes to the queue anyway
        } else {
            let name = queue.to_owned();
            self.tolerate_precondition(
                self.admin(format!("exchange.declare {queue}"), |channel| async move {
                    channel
                        .exchange_declare(
                            &name,
                            ExchangeKind::Direct,
                            durable_exchange(),
                            FieldTable::default(),
                        )
                        .await
                })
                .await,
                queue,
                "exchange",
            )?
        };
        let arguments = self.task_queue_arguments();
        let name = queue.to_owned();
        let declared = self
            .admin(format!("queue.declare {queue}"), |channel| async move {
                channel
                    .queue_declare(&name, durable_queue(), arguments)
                    .await
            })
            .await;
        if !self.tolerate_precondition(declared.map(drop), queue, "queue")? {
            // It exists with other arguments: check it exists, then use it as it is.
            self.queue_message_count(queue).await?;
        }
        if exchange_ok {
            let name = queue.to_owned();
            self.admin(format!("queue.bind {queue}"), |channel| async move {
                channel
                    .queue_bind(
                        &name,
                        &name,
                        &name,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
        }
        if self.config.dead_letter_rejected {
            self.ensure_dead_letter(queue).await?;
        }
        self.declared().queues.insert(queue);
        Ok(())
    }

    /// Declares the exchange `name` of `kind` (not auto-deleted, no arguments, as kombu
    /// does), once per connection. One that exists with other settings is used as it is
    /// (logged): declaring it differently would not change it anyway.
    pub(crate) async fn ensure_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        durable: bool,
    ) -> Result<(), AmqpError> {
        if self.declared().exchanges.contains(name) {
            return Ok(());
        }
        let exchange = name.to_owned();
        let options = ExchangeDeclareOptions {
            durable,
            ..ExchangeDeclareOptions::default()
        };
        self.tolerate_precondition(
            self.admin(format!("exchange.declare {name}"), |channel| async move {
                channel
                    .exchange_declare(&exchange, kind, options, FieldTable::default())
                    .await
            })
            .await,
            name,
            "exchange",
        )?;
        self.declared().exchanges.insert(name);
        Ok(())
    }

    /// `Ok(true)` if declared, `Ok(false)` if it already exists with other settings (logged).
    fn tolerate_precondition(
        &self,
        result: Result<(), AmqpError>,
        queue: &str,
        what: &str,
    ) -> Result<bool, AmqpError> {
        match result {
            Ok(()) => Ok(true),
            Err(error) if error.reply_code() == Some(PRECONDITION_FAILED) => {
                warn!(
                    queue,
                    %error,
                    "the {what} exists with other settings (declared by another client?); \
                     using it as it is"
                );
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn task_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if let Some(levels) = self.config.max_priority {
            arguments.insert("x-max-priority".into(), AMQPValue::LongInt(levels.into()));
        }
        self.add_expires(&mut arguments);
        if self.config.dead_letter_rejected {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                long_string(&self.config.dead_letter_exchange),
            );
        }
        arguments
    }

    fn add_expires(&self, arguments: &mut FieldTable) {
        if let Some(expires) = self.config.queue_expires {
            let millis = i32::try_from(expires.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongInt(millis));
        }
    }

    /// Declares the dead-letter exchange and the dead-letter queue of `queue`.
    pub(crate) async fn ensure_dead_letter(&self, queue: &str) -> Result<(), AmqpError> {
        if self.declared().dead_letters.contains(queue) {
            return Ok(());
        }
        let exchange = self.config.dead_letter_exchange.clone();
        let dead = dead_letter_queue(queue);
        let mut arguments = FieldTable::default();
        self.add_expires(&mut arguments);
        let (name, routing_key) = (dead.clone(), queue.to_owned());
        self.admin(
            format!("declare dead letters of {queue}"),
            |channel| async move {
                channel
                    .exchange_declare(
                        &exchange,
                        ExchangeKind::Direct,
                        durable_exchange(),
                        FieldTable::default(),
                    )
                    .await?;
                channel
                    .queue_declare(&name, durable_queue(), arguments)
                    .await?;
                channel
                    .queue_bind(
                        &name,
                        &exchange,
                        &routing_key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            },
        )
        .await?;
        self.declared().dead_letters.insert(queue);
        Ok(())
    }

    /// Declares the delay levels (once per connection) and the binding that delivers
    /// delayed messages to `queue`.
    pub(crate) async fn ensure_delay(&self, queue: &str) -> Result<(), AmqpError> {
        if queue.contains(['*', '#']) || delay_routing_key(0, queue).len() > 255 {
            return Err(AmqpError::Config(format!(
                "queue {queue:?} cannot receive delayed messages: topic routing needs a name \
                 without `*` or `#` and at most 190 bytes"
            )));
        }
        let (levels, bound) = {
            let mut declared = self.declared();
            (
                declared.delay_levels,
                declared.delay_targets.contains(queue),
            )
        };
        if bound && levels {
            return Ok(());
        }
        if !levels {
            let prefix = self.config.delay_prefix.clone();
            self.admin("declare the delay levels".into(), |channel| async move {
                declare_delay_levels(&channel, &prefix).await
            })
            .await?;
            self.declared().delay_levels = true;
        }
        let (name, deliver) = (
            queue.to_owned(),
            deliver_exchange(&self.config.delay_prefix),
        );
        let pattern = format!("{}{queue}", "*.".repeat(DELAY_LEVELS as usize));
        self.admin(
            format!("bind {queue} for delayed delivery"),
            |channel| async move {
                channel
                    .queue_bind(
                        &name,
                        &deliver,
                        &pattern,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            },
        )
        .await?;
        self.declared().delay_targets.insert(queue);
        Ok(())
    }

    /// Ready messages in `queue`, or `None` if it does not exist.
    pub(crate) async fn queue_message_count(&self, queue: &str) -> Result<Option<u32>, AmqpError> {
        let name = queue.to_owned();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match self
            .admin(
                format!("queue.declare passive {queue}"),
                |channel| async move {
                    channel
                        .queue_declare(&name, passive, FieldTable::default())
                        .await
                },
            )
            .await
        {
            Ok(declared) => Ok(Some(declared.message_count())),
            Err(error) if error.reply_code() == Some(NOT_FOUND) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes the ready messages of `queue`; 0 if it does not exist.
    pub(crate) async fn purge(&self, queue: &str) -> Result<u64, AmqpError> {
        let name = queue.to_owned();
        match self
            .admin(format!("queue.purge {queue}"), |channel| async move {
                channel
                    .queue_purge(&name, QueuePurgeOptions::default())
                    .await
            })
            .await
        {
            Ok(count) => Ok(count.into()),
            Err(error) if error.reply_code() == Some(NOT_FOUND) => Ok(0),
            Err(error) => Err(error),
        }
    }
}

async fn declare_delay_levels(channel: &Channel, prefix: &str) -> lapin::Result<()> {
    let deliver = deliver_exchange(prefix);
    channel
        .exchange_declare(
            &deliver,
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    for level in 0..DELAY_LEVELS {
        let name = level_name(prefix, level);
        channel
            .exchange_declare(
                &name,
                ExchangeKind::Topic,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
    }
    for level in (0..DELAY_LEVELS).rev() {
        let name = level_name(prefix, level);
        let mut arguments = FieldTable::default();
        let ttl = 1i64 << level;
        // py-amqp's integer encoding, so that another client's declaration is equivalent.
        let ttl = i32::try_from(ttl).map_or(AMQPValue::LongLongInt(ttl), AMQPValue::LongInt);
        arguments.insert("x-message-ttl".into(), ttl);
        let next = if level == 0 {
            deliver.clone()
        } else {
            level_name(prefix, level - 1)
        };
        arguments.insert("x-dead-letter-exchange".into(), long_string(&next));
        channel
            .queue_declare(&name, durable_queue(), arguments)
            .await?;
        let stars = "*.".repeat((DELAY_LEVELS - 1 - level) as usize);
        channel
            .queue_bind(
                &name,
                &name,
                &format!("{stars}1.#"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_bind(
                &next,
                &name,
                &format!("{stars}0.#"),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Name of delay level `level`'s exchange and queue.
pub(crate) fn level_name(prefix: &str, level: u32) -> String {
    format!("{prefix}.{level}")
}

/// The exchange that hands delayed messages to their queues.
pub(crate) fn deliver_exchange(prefix: &str) -> String {
    format!("{prefix}.deliver")
}

/// The routing key of a message delayed `delay_ms` (cut to [`MAX_DELAY_MS`]) for `queue`.
pub(crate) fn delay_routing_key(delay_ms: u64, queue: &str) -> String {
    let delay = delay_ms.min(MAX_DELAY_MS);
    let mut key = String::with_capacity(2 * DELAY_LEVELS as usize + queue.len());
    for level in (0..DELAY_LEVELS).rev() {
        key.push(if delay >> level & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    key
}

/// The exchange a message delayed `delay_ms` (> 0) enters: its highest level, so that it
/// skips the exchange-to-exchange hops above.
pub(crate) fn delay_entry(prefix: &str, delay_ms: u64) -> String {
    let delay = delay_ms.clamp(1, MAX_DELAY_MS);
    level_name(prefix, 63 - delay.leading_zeros())
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_spell_the_delay_in_binary() {
        let key = delay_routing_key(5, "celery");
        let words: Vec<&str> = key.split('.').collect();
        assert_eq!(words.len(), DELAY_LEVELS as usize + 1);
        assert_eq!(&words[29..], ["1", "0", "1", "celery"]);
        assert!(words[..29].iter().all(|word| *word == "0"));
        let capped = delay_routing_key(u64::MAX, "q");
        assert!(capped.starts_with("1.1.1."));
        assert_eq!(delay_entry("p", 5), "p.2");
        assert_eq!(delay_entry("p", 1), "p.0");
        assert_eq!(delay_entry("p", u64::MAX), "p.31");
    }

    #[test]
    fn declared_names_stay_bounded_and_keep_the_ones_in_use() {
        let mut declared = Declared::new(1);
        declared.queues.insert("celery");
        for index in 0..10 * DECLARED_CACHE {
            let name = format!("reply.{index}");
            assert!(!declared.queues.contains(&name));
            declared.queues.insert(&name);
            declared.dead_letters.insert(&name);
            declared.delay_targets.insert(&name);
            // A queue used all along is never the one forgotten.
            assert!(declared.queues.contains("celery"), "after {index}");
            assert!(declared.queues.len() <= DECLARED_CACHE);
        }
        assert_eq!(declared.queues.len(), DECLARED_CACHE);
        assert_eq!(declared.dead_letters.len(), DECLARED_CACHE);
        assert_eq!(declared.delay_targets.len(), DECLARED_CACHE);
        // The most recent names are remembered, the oldest forgotten (declared again when
        // next used).
        assert!(
            declared
                .dead_letters
                .contains(&format!("reply.{}", 10 * DECLARED_CACHE - 1))
        );
        assert!(!declared.dead_letters.contains("reply.0"));
    }
}
