//! What a broker holds for a queue beyond its ready messages: the numbers and listings a
//! monitor shows ([`Broker::queue_stats`], [`Broker::delayed`], [`Broker::known_queues`]).
//!
//! How old the oldest ready message is: Celery's protocol v2 carries no sent time, so each
//! broker says what it can know ([`OldestMessage::enqueued_at`]):
//! - memory: the time it was put in the queue (for a delayed message: when it came due);
//! - RabbitMQ: when it left our delay levels (RabbitMQ's `x-death` time), else the AMQP
//!   `timestamp` property, which our brokers set when publishing (Python Celery does not),
//!   or the message's eta when later; to the second. `None` for a Python message that
//!   never waited for an eta;
//! - Redis: the `timestamp` our broker writes into the kombu envelope's properties (kombu
//!   keeps it and ignores it), or the message's eta when later; `None` for a Python
//!   message without an eta.
//!
//! When nothing is known, the oldest message's task id is still given, so that a monitor can
//! tell "the same message has been first in line since I first saw it".
//!
//! What the brokers can list as queues ([`KnownQueues`]): memory, all of its queues;
//! Redis, the queues in kombu's binding tables (`_kombu.binding.*`, written by Celery and
//! by us when a queue is declared or published to) and those with delayed messages or
//! dead letters; RabbitMQ without its management API, only the queues this process
//! declared, published to, consumed or asked about (AMQP 0-9-1 cannot list queues).
//!
//! [`Broker::queue_stats`]: crate::Broker::queue_stats
//! [`Broker::delayed`]: crate::Broker::delayed
//! [`Broker::known_queues`]: crate::Broker::known_queues

use chrono::{DateTime, FixedOffset};

use crate::broker::{QueueLength, Undecodable};
use crate::protocol::Message;

/// The numbers a monitor shows for one queue, read from the broker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Ready messages, per priority (what [`Broker::queue_length`] answers).
    ///
    /// [`Broker::queue_length`]: crate::Broker::queue_length
    pub ready: QueueLength,
    /// The ready message that has waited longest: of the messages first in line at each
    /// priority, the one that entered first where the broker knows when they entered, else
    /// the one a consumer gets next. `None` when no message is ready.
    pub oldest_ready: Option<OldestMessage>,
    /// Messages whose eta is in the future, held by the broker for this queue.
    pub delayed: u64,
    /// Messages in this queue's dead-letter place.
    pub dead_letters: u64,
}

/// The ready message of a queue that has waited longest (see [`QueueStats::oldest_ready`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OldestMessage {
    /// Its task id; `None` when the message does not decode.
    pub task_id: Option<String>,
    /// When it entered the queue, where the broker can know it (see the module's doc).
    pub enqueued_at: Option<DateTime<FixedOffset>>,
}

impl OldestMessage {
    /// How long it has waited at `now`, when its enqueue time is known (zero for a time
    /// ahead of `now`, a clock skew between hosts).
    pub fn age(&self, now: DateTime<FixedOffset>) -> Option<std::time::Duration> {
        self.enqueued_at
            .map(|enqueued_at| (now - enqueued_at).to_std().unwrap_or_default())
    }
}

/// A message held by the broker until its eta, as [`Broker::delayed`] lists it.
///
/// [`Broker::delayed`]: crate::Broker::delayed
#[derive(Clone, Debug)]
pub struct DelayedMessage {
    /// The queue it goes to when due.
    pub queue: String,
    /// When it is due.
    pub eta: DateTime<FixedOffset>,
    /// The message, or its raw bytes.
    pub content: Result<Message, Undecodable>,
}

/// The queues a broker can name, as [`Broker::known_queues`] answers.
///
/// [`Broker::known_queues`]: crate::Broker::known_queues
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownQueues {
    /// Queue names, sorted, without the dead-letter queues (`<queue>.dead_letter`) or the
    /// broker's own queues (remote control replies, event receivers).
    pub names: Vec<String>,
    /// Whether these are all the queues the broker has (`true`), or only those this process
    /// has seen or was told of (`false`: RabbitMQ without its management API).
    pub complete: bool,
}
