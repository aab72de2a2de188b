//! RabbitMQ broker for `queue`, on [lapin], sharing a RabbitMQ with Python Celery: the same
//! exchanges, queues, arguments and message properties (wire spec §3).
//!
//! ```no_run
//! # async fn example() -> Result<(), queue_core::Error> {
//! // With the facade's `amqp` feature, a URL is all it takes:
//! let app = queue_core::App::builder()
//!     .broker("amqp://guest:guest@127.0.0.1:5672/%2f?max_priority=10")
//!     .build()
//!     .await?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! # What goes where
//!
//! - **Task queues** as Celery declares them: durable queue `q`, direct exchange `q`, bound
//!   with routing key `q`; messages published to the default exchange with routing key `q`,
//!   persistent (`delivery_mode` 2), with protocol v2 headers in `application_headers`
//!   (nulls as void, nested arrays and tables, `timelimit` as `[hard, soft]`).
//! - **Priorities** (0–9, higher first) need queues declared with `x-max-priority`: set
//!   `max_priority` in the URL (Celery's `task_queue_max_priority`; Python and Rust must
//!   agree, RabbitMQ refuses a redeclaration with other arguments). Without it, Celery's
//!   default, queues have no arguments and priorities are ignored.
//! - **Expiry**: `expires` travels as the per-message TTL (`expiration`, milliseconds) too.
//! - **Publishing** uses publisher confirms: [`Broker::publish`]
//!   returns once RabbitMQ has every message (see [`publisher`] for batching and retries).
//! - **Delays** (eta, countdown, deferred messages) wait in RabbitMQ, in TTL +
//!   dead-letter delay queues, never in the worker: see [`topology`].
//! - **Dead letters** go through the direct exchange `dead_letter` to `q.dead_letter`;
//!   [`Broker::dead_letters`] reads them with `basic.get`
//!   and puts them back. With `dead_letter_rejected=true`, task queues are also declared
//!   with `x-dead-letter-exchange`, so that messages any client rejects, and expired ones,
//!   land there too (this changes the queue's arguments, see above).
//! - **Events and remote control** (`celeryev`, `celery.pidbox`, `reply.celery.pidbox`):
//!   [`Broker::broadcast`] is the broker itself; exchanges and queues are declared
//!   with kombu's flags and arguments, see [`broadcast`].
//! - **Backlog** (for a monitor): queue stats, delayed messages (browsed in the delay
//!   levels), running one now and requeueing dead letters (published with a confirm before
//!   the original is acked), known queues (those this process used: AMQP cannot list
//!   queues); see [`backlog`]. Publishes set the AMQP `timestamp`, from which the age of
//!   the oldest message is read.
//! - **Consuming**: see [`consumer`] and the driver's documentation on how prefetch and
//!   the order between queues work together.
//! - **Recovery**: connections and channels that break are opened again with backoff;
//!   queues are declared again and consumers started again; RabbitMQ delivers unacked
//!   messages again (`redelivered`). Heartbeats default to 30 s.
//! - **TLS**: `amqps://` with the system's roots, or `tls_ca_file=PATH`.
//! - **Retries are two steps, with one bounded duplicate.** RabbitMQ cannot publish a
//!   task's retry and ack the original as one step while publishes are confirmed: a
//!   channel is in confirm mode or in transaction mode (`tx.select`), never both, and an
//!   ack must go on the channel that received the delivery, not on a publisher channel.
//!   So the consumer keeps [`Consumer::republish_and_ack`](queue_core::Consumer::republish_and_ack)'s
//!   default (unsupported) and the worker publishes the retry, waits for its confirm, then
//!   acks the original. A crash or a lost connection between the confirm and the ack
//!   makes RabbitMQ deliver the original again: **at most one duplicate per task in
//!   flight at that moment** (the retry and the redelivered original both run), never a
//!   loss. `cargo xtask chaos` counts these duplicates.
//! - **Bounded memory**: settles wait for room in a queue of
//!   [`consumer::SETTLE_QUEUE`] operations (back-pressure; none is dropped), and
//!   the queues remembered as declared are the last [`topology::DECLARED_CACHE`] used.
//! - **Hostile messages**: a header RabbitMQ delivers that has no faithful meaning (NaN or
//!   infinite numbers, bytes that are not UTF-8, nesting deeper than 32, a protocol field
//!   of the wrong type or out of range) makes the message undecodable, with the reason;
//!   the worker dead-letters it and goes on.
//!
//! URL options: [`AmqpConfig`].

pub mod backlog;
pub mod broadcast;
mod broker;
mod config;
pub mod consumer;
mod error;
mod link;
pub mod publisher;
pub mod topology;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use queue_core::broker::Broker;
use queue_core::connect::{Connector, RedactedUrl};

pub use broker::AmqpBroker;
pub use config::{AmqpBrokerBuilder, AmqpConfig, DEFAULT_HEARTBEAT_SECONDS};
pub use error::AmqpError;

/// Turns `amqp://` and `amqps://` URLs into [`AmqpBroker`]s (no result backend).
#[derive(Debug, Default)]
pub struct AmqpConnector;

#[async_trait]
impl Connector for AmqpConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["amqp", "amqps"]
    }

    async fn broker(
        &self,
        url: &RedactedUrl,
    ) -> Result<Option<Arc<dyn Broker>>, queue_core::Error> {
        let config = AmqpConfig::from_url(url)
            .map_err(|error| queue_core::Error::Config(error.to_string()))?;
        let broker = AmqpBroker::with_config(config)
            .await
            .map_err(queue_core::broker::BrokerError::from)?;
        Ok(Some(Arc::new(broker)))
    }
}

/// Registers [`AmqpConnector`] at link time; the `queue` facade refers to it under its
/// `amqp` feature so that the linker keeps it.
#[queue_core::connect::linkme::distributed_slice(queue_core::connect::CONNECTORS)]
#[linkme(crate = queue_core::connect::linkme)]
pub static AMQP_CONNECTOR: fn() -> Arc<dyn Connector> = || Arc::new(AmqpConnector);
