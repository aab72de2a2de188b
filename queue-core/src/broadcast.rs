//! The [`Broadcast`] contract: the fanout side of a broker, which events (`celeryev`) and
//! remote control (`celery.pidbox` requests, `reply.celery.pidbox` replies) travel on.
//!
//! Unlike tasks, these messages are transient: a message nobody is subscribed to is gone, a
//! slow subscriber loses what it cannot take (its [`Subscription`] is bounded and counts
//! what it dropped), and nothing is acknowledged. Each broker maps the three exchange kinds
//! to what its server has, as kombu does:
//!
//! | kind | RabbitMQ | Redis | memory |
//! | --- | --- | --- | --- |
//! | [`ExchangeKind::Fanout`], [`ExchangeKind::Topic`] | exchange of that type, a private queue bound to it | `PUBLISH /<db>.<exchange>/<routing key>`, `PSUBSCRIBE` | in process |
//! | [`ExchangeKind::Direct`] | direct exchange, a named queue bound by routing key | the queue list that `_kombu.binding.<exchange>` names, `LPUSH`/`BRPOP` | in process |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::broker::BrokerError;

/// How many messages a subscription holds before it drops new ones.
pub const SUBSCRIPTION_CAPACITY: usize = 4096;

/// How an exchange routes (AMQP's exchange types; kombu emulates them on Redis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// To every subscriber (`celery.pidbox`; `celeryev` on Redis).
    Fanout,
    /// To subscribers whose binding pattern matches the routing key (`celeryev` on AMQP).
    Topic,
    /// To the one queue bound with exactly the routing key (`reply.celery.pidbox`).
    Direct,
}

/// One message on a broadcast exchange: a JSON body, its routing key and headers.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastMessage {
    /// The routing key (`task.succeeded`, a reply's client id, `''` for pidbox requests).
    pub routing_key: String,
    /// Message headers (`hostname` on events; `clock`, `ticket`, `expires` on control).
    pub headers: Map<String, Value>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl BroadcastMessage {
    /// A message with `body` under `routing_key`, without headers.
    pub fn new(routing_key: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            routing_key: routing_key.into(),
            headers: Map::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// What a subscription listens to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The exchange (`celeryev`, `celery.pidbox`, `reply.celery.pidbox`).
    pub exchange: String,
    /// Its kind; declared with this kind where the broker declares exchanges.
    pub kind: ExchangeKind,
    /// The routing key (direct) or pattern (topic: `*` one word, `#` any, as `worker.#`);
    /// ignored by fanout exchanges.
    pub routing_key: String,
    /// The name of the subscriber's queue where the broker needs one
    /// (`<node>.celery.pidbox`, `<client id>.reply.celery.pidbox`, `celeryev.<uuid>`).
    pub queue: String,
}

/// Received broadcast messages, in order; ends when the broker's side closes. Dropping it
/// ends the subscription on the server too.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<BroadcastMessage>,
    dropped: Arc<AtomicU64>,
}

/// The broker's end of a [`Subscription`]: never waits for a slow subscriber.
#[derive(Clone, Debug)]
pub struct SubscriptionSender {
    sender: mpsc::Sender<BroadcastMessage>,
    dropped: Arc<AtomicU64>,
}

/// A subscription and the sender a broker feeds it with.
pub fn subscription() -> (SubscriptionSender, Subscription) {
    let (sender, receiver) = mpsc::channel(SUBSCRIPTION_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        SubscriptionSender {
            sender,
            dropped: dropped.clone(),
        },
        Subscription { receiver, dropped },
    )
}

impl Subscription {
    /// The next message, or `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<BroadcastMessage> {
        self.receiver.recv().await
    }

    /// Messages dropped because this subscription was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl SubscriptionSender {
    /// Hands `message` over without waiting. `false` when the subscription was dropped
    /// (the broker then unsubscribes); a full subscription drops the message and counts it.
    pub fn deliver(&self, message: BroadcastMessage) -> bool {
        match self.sender.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the subscriber dropped its [`Subscription`].
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The fanout side of a broker.
#[async_trait]
pub trait Broadcast: Send + Sync {
    /// Sends `message` on `exchange` (declared as `kind` where the broker declares). Returns
    /// once the server has it; delivered to whoever is subscribed at that moment.
    async fn send(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        message: BroadcastMessage,
    ) -> Result<(), BrokerError>;

    /// Subscribes; messages sent after this returns are received.
    async fn subscribe(&self, binding: Binding) -> Result<Subscription, BrokerError>;
}

/// Whether `routing_key` matches the topic `pattern` (AMQP: words split on `.`, `*` is
/// exactly one word, `#` zero or more).
///
/// ```
/// use queue_core::broadcast::topic_matches;
///
/// assert!(topic_matches("worker.#", "worker.heartbeat"));
/// assert!(topic_matches("#", "task.multi"));
/// assert!(topic_matches("task.*", "task.succeeded"));
/// assert!(!topic_matches("task.*", "worker.online"));
/// ```
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    // Bounded: routing keys are short (255 bytes on AMQP); longer ones never match.
    if pattern.len() > 255 || routing_key.len() > 255 {
        return false;
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = if routing_key.is_empty() {
        Vec::new()
    } else {
        routing_key.split('.').collect()
    };
    // matched[j]: the pattern words seen so far match the first j key words. One row per
    // pattern word, so a pattern of many `#` costs its length times the key's, no more.
    let mut matched = vec![false; key.len() + 1];
    matched[0] = true;
    for word in &pattern {
        let mut next = vec![false; key.len() + 1];
        for j in 0..=key.len() {
            next[j] = match *word {
                // Zero words, or one more word after a match.
                "#" => matched[j] || (j > 0 && next[j - 1]),
                "*" => j > 0 && matched[j - 1],
                literal => j > 0 && matched[j - 1] && key[j - 1] == literal,
            };
        }
        matched = next;
    }
    matched[key.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        for (pattern, key, expected) in [
            ("#", "", true),
            ("#", "a.b.c", true),
            ("worker.#", "worker", true),
            ("worker.#", "worker.online", true),
            ("worker.#", "task.sent", false),
            ("*.sent", "task.sent", true),
            ("*", "a.b", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("a.#.c", "a.x.y", false),
            ("task.multi", "task.multi", true),
        ] {
            assert_eq!(topic_matches(pattern, key), expected, "{pattern} {key}");
        }
        // Patterns of many `#` stay cheap (no backtracking).
        let hostile = "#.".repeat(20) + "x";
        assert!(!topic_matches(&hostile, &"a.".repeat(20)));
    }

    #[tokio::test]
    async fn a_full_subscription_drops_and_counts_never_waits() {
        let (sender, mut subscription) = subscription();
        for index in 0..SUBSCRIPTION_CAPACITY + 10 {
            assert!(sender.deliver(BroadcastMessage::new(index.to_string(), Vec::new())));
        }
        assert_eq!(subscription.dropped(), 10);
        assert_eq!(subscription.next().await.unwrap().routing_key, "0");
        drop(subscription);
        assert!(!sender.deliver(BroadcastMessage::new("late", Vec::new())));
        assert!(sender.is_closed());
    }
}
