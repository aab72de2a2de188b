//! Redis broker and Redis result backend for `queue`, sharing a Redis with Python
//! Celery/kombu: same keys, same envelope, same commands where it matters.
//!
//! ```no_run
//! # async fn example() -> Result<(), queue_redis::RedisError> {
//! let broker = queue_redis::RedisBroker::connect("redis://127.0.0.1:6379/0").await?;
//! let backend = queue_redis::RedisBackend::connect("redis://127.0.0.1:6379/1", None).await?;
//! # let _ = (broker, backend); Ok(()) }
//! ```
//!
//! Applications normally just name a `redis://` or `rediss://` URL: linking this crate (the
//! `redis` feature of the `queue` facade) registers [`REDIS_CONNECTOR`] for both schemes,
//! broker and backend. URL options are listed in [`RedisOptions`].
//!
//! # Keys (kombu's layout; `global_keyprefix` is prepended to all)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<queue>`, `<queue>\x06\x16<step>` | list | kombu envelopes; `LPUSH` in, `RPOP`/`BRPOP` out |
//! | `unacked` | hash | delivery tag → `[envelope, "", "<queue>"]` of each fetched, unacked message |
//! | `unacked_index` | sorted set | delivery tag, scored by fetch (or renew) time in seconds |
//! | `unacked_mutex` | string | kombu's lock around the visibility-timeout restore |
//! | `_kombu.binding.<queue>`, `_kombu.binding_permanent.<queue>` | set | the queue's binding, as Celery declares it |
//! | `_queue.delayed.<queue>` | sorted set | ours: messages waiting for their eta, scored by due time (ms), member `<list number>\|<envelope>` |
//! | `<queue>.dead_letter` | list | ours: dead letters, newest at the head (see below) |
//! | `celery-task-meta-<id>` | string | Celery's task meta JSON, `SET … PX` with the result expiry, `PUBLISH`ed on its own name |
//! | `celery-taskset-meta-<gid>` | string | Celery's group record `{"result": [[gid, null], [[[tid, null], null], …]]}` |
//!
//! # Priorities
//!
//! Our API: 0–9, **higher first**, as on RabbitMQ. kombu on Redis: a list per priority step
//! (`priority_steps`, default `0,3,6,9`), served **lowest first**, so that Python users on
//! Redis know 0 as the most urgent (and it is Python's default priority).
//!
//! Decision: on the wire, `properties.priority` carries **kombu's number, `9 - ours`**, and
//! the message goes into the list kombu derives from that number. So "urgent" means the same
//! to everyone sharing the queue: our priority 9 is kombu's 0, in the plain `<queue>` list
//! that Python and Rust workers both serve first; a Python `apply_async(priority=0)` (or no
//! priority at all) is read back as our 9; Python's restore of a dead Rust worker's messages
//! puts them back into the same list. A message **without** a priority is written as kombu's
//! default 0, next to Python's own unprioritised tasks (it reads back as our 9). Consequences:
//!
//! - An explicit priority 0 (ours, the lowest) is kombu's 9, the last list. The app should
//!   leave the priority unset when the caller sets none (not write 0), so that Rust and
//!   Python defaults share the plain list (and `LLEN <queue>` counts both).
//! - With the default four steps, priorities share lists (ours 9–7, 6–4, 3–1, 0) and are
//!   FIFO within a list; `queue_length` reports each list under the highest of our
//!   priorities it holds. `priority_steps=0,1,2,3,4,5,6,7,8,9` (and the same
//!   `broker_transport_options` on the Python side) gives one list per priority and exact
//!   ordering; that is how the conformance suite runs.
//!
//! # Acknowledgement, visibility timeout, restore
//!
//! A fetch takes messages and records them in `unacked`/`unacked_index` in one script (no
//! window in which a message is only in a client's memory, except for `BRPOP`'s reply when
//! idle, which kombu shares). Ack removes both entries; reject without requeue too; reject
//! with requeue pushes the message back at the tail (kombu's `LPUSH`), marked redelivered;
//! closing or dropping a consumer gives back what it holds at the head of its lists.
//! Messages whose `unacked_index` score is older than `visibility_timeout` (default 3600 s,
//! kombu's) belong to a dead consumer: any consumer, ours or Python's, restores them under
//! `unacked_mutex`. A live consumer renews the score of what it holds every quarter of the
//! visibility timeout by itself, and whenever the worker calls `renew` (every 60 s by
//! default), so a long task is never handed to a second worker while its worker lives.
//!
//! # Delayed messages
//!
//! A message published with a future eta, or deferred by a worker, waits in
//! `_queue.delayed.<queue>`, not in `unacked` (so no restore mistakes it for lost) and not in
//! a worker's memory. Consumers of the queue (and `queue_length`, `purge`) move due messages
//! to the head of their list in one script. Python workers never look at the set, so the
//! publishing process also promotes what it published when it is due, for as long as it
//! runs: a delayed message published by a Rust producer that exits before it is due, on a
//! queue that only Python workers serve, waits until a Rust consumer (or `queue_length`)
//! comes by.
//!
//! # Dead letters
//!
//! `<queue>.dead_letter` is a kombu list (a queue of that name): each entry is the original
//! envelope with the header `x-dead-letter-reason`, so it can be consumed or moved back as
//! is. Bytes that were not an envelope are kept in a wrapper
//! `{"x-dead-letter": {"reason": …, "raw": …, "raw_encoding": "utf-8" | "base64"}}`.
//!
//! # Results
//!
//! Celery's Redis backend: `SET celery-task-meta-<id> <meta> PX <expiry>` and `PUBLISH` on
//! the key (one script, which also refuses to overwrite a stored SUCCESS). `wait` subscribes
//! to that channel first, then reads the key, then waits for the publication; after a
//! reconnect of the subscriber it reads again. A Python `AsyncResult` reads the same keys.

mod backend;
mod batch;
mod broker;
mod config;
mod connection;
mod consumer;
mod error;
mod keys;
mod promote;
mod restore;
mod scripts;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use queue_core::connect::{Connector, RedactedUrl};
use queue_core::{Broker, ResultBackend};

pub use backend::RedisBackend;
pub use broker::RedisBroker;
pub use config::{
    DEFAULT_PRIORITY_STEPS, DEFAULT_RESULT_EXPIRES, DEFAULT_VISIBILITY_TIMEOUT, RedisOptions,
};
pub use error::RedisError;
pub use keys::SEP;

/// Serves `redis://` and `rediss://` URLs, broker and backend.
#[derive(Debug, Default)]
pub struct RedisConnector;

#[async_trait]
impl Connector for RedisConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss"]
    }

    async fn broker(
        &self,
        url: &RedactedUrl,
    ) -> Result<Option<Arc<dyn Broker>>, queue_core::Error> {
        let broker = RedisBroker::connect(url.expose().as_str()).await?;
        Ok(Some(Arc::new(broker)))
    }

    async fn backend(
        &self,
        url: &RedactedUrl,
    ) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
        let backend = RedisBackend::connect(url.expose().as_str(), None).await?;
        Ok(Some(Arc::new(backend)))
    }
}

/// Registers [`RedisConnector`] at link time. The facade names this symbol under its `redis`
/// feature so that the linker keeps it.
#[queue_core::connect::linkme::distributed_slice(queue_core::connect::CONNECTORS)]
#[linkme(crate = queue_core::connect::linkme)]
pub static REDIS_CONNECTOR: fn() -> Arc<dyn Connector> = || Arc::new(RedisConnector);
