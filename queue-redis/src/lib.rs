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
//! and for `sentinel://`: broker, backend and lease store ([`RedisLease`], for periodic
//! schedulers). URL options are listed in [`RedisOptions`].
//!
//! # Redis Sentinel
//!
//! `sentinel://` URLs are kombu's and Celery's: one per sentinel, joined by `;`, with the
//! master's name as the option `master_name` (in Python, the transport option of that name):
//! `sentinel://:password@10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379/0?master_name=mymaster`.
//! Every connection (commands, list watchers, subscribers) asks the sentinels for the master,
//! checks its `ROLE`, and after a failover reconnects (backoff at most 1 s) to the promoted
//! replica. Replication is asynchronous: writes the old master acknowledged but had not yet
//! sent to the replica are lost with it, as for Python's clients.
//!
//! # Keys (kombu's layout; `global_keyprefix` is prepended to all)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<queue>`, `<queue>\x06\x16<step>` | list | kombu envelopes; `LPUSH` in, `RPOP`/`BRPOP` out |
//! | `unacked` | hash | delivery tag → `[envelope, "", "<queue>"]` of each fetched, unacked message, and of each delayed one |
//! | `unacked_index` | sorted set | delivery tag, scored by fetch (or renew) time in seconds; a delayed message by its due time minus the visibility timeout |
//! | `unacked_mutex` | string | kombu's lock around the visibility-timeout restore |
//! | `_kombu.binding.<queue>`, `_kombu.binding_permanent.<queue>` | set | the queue's binding, as Celery declares it |
//! | `_kombu.binding.<exchange>`, `_kombu.binding_deadlines` | set, sorted set | broadcast direct exchanges (`reply.celery.pidbox`): member `<routing key>\x06\x16\x06\x16<queue>` per subscription; the exchange's deadline (ms), kombu 5.7's sweep deletes the table once past |
//! | `/<db>.<exchange>`, `/<db>.<exchange>/<routing key>` | pub/sub channel | broadcast fanout and topic messages (`celeryev`, `celery.pidbox`): kombu envelopes, `PUBLISH`/`PSUBSCRIBE` (see [`Broadcast`](queue_core::broadcast::Broadcast) below) |
//! | `_queue.delayed.<queue>` | sorted set | ours: an index of the delayed messages of the queue, scored by due time (ms), member `<list number>\|<index score>\|<envelope length>\|<tag>` |
//! | `<queue>.dead_letter` | list | ours: dead letters, newest at the head (see below) |
//! | `celery-task-meta-<id>` | string | Celery's task meta JSON, `SET … PX` with the result expiry, `PUBLISH`ed on its own name |
//! | `celery-taskset-meta-<gid>` | string | Celery's group record `{"result": [[gid, null], [[[tid, null], null], …]]}` |
//! | `celery-taskset-meta-<gid>.s` / `.t` / `.j` / `.d` / `.c` | string / string / sorted set / set / string | Celery 5.7's chord join: header size, extra count, parts `[1, tid, state, result]` scored by group index, dedupe `<tid>:<index>`, dispatch claim (then `"done"` for 300 s) |
//! | `queue.lease.<name>`, `queue.lease_token.<name>`, `queue.beat.<name>.ticks` | hash / string / hash | ours: a scheduler's leader lease (`holder`, `token`; `PEXPIRE` ttl), its last fencing token (never expires), the last tick (ms) of each periodic entry (see below) |
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
//! A fetch takes messages and records them in `unacked`/`unacked_index` in one script: no
//! message is ever only in a client's memory, so a consumer killed at any point loses
//! nothing (what it took comes back after the visibility timeout). An idle consumer does not
//! wait in `BRPOP`, whose reply would be the only copy of the message it pops (kombu's
//! window): a watcher per list blocks in `BLMOVE <list> <list> RIGHT RIGHT`, which returns
//! when the list holds something and leaves it as it was, and the consumer then takes with
//! the script. A Python worker's `BRPOP` on the same list is served as before. Each watched
//! list costs a connection per process (shared by the consumers of a broker), blocked only
//! while a consumer waits.
//!
//! Ack removes both entries; reject without requeue too; reject with requeue pushes the
//! message back at the tail (kombu's `LPUSH`), marked redelivered; closing or dropping a
//! consumer gives back what it holds at the head of its lists. Acks are not waited for (as
//! AMQP's): they go out in batches through a bounded queue (a full one makes `ack` wait),
//! and `close` returns once those sent before it are written. A process killed meanwhile
//! loses at most the acks not yet written: at most 4096 queued plus a batch of 512 in
//! flight, in practice those of the last round trip. Those messages run again after the
//! visibility timeout: duplicates after a crash are bounded by the tasks in flight plus
//! those unwritten acks.
//!
//! `republish_and_ack` (a retry) is one script: the original leaves `unacked` and its
//! replacement goes to its list or, with an eta, is delayed as below; if the original is no
//! longer unacked (a restore gave it back meanwhile, so it runs again), no retry is added.
//! Messages whose `unacked_index` score is older than `visibility_timeout` (default 3600 s,
//! kombu's) belong to a dead consumer: any consumer, ours or Python's, restores them under
//! `unacked_mutex`. A live consumer renews the score of what it holds every quarter of the
//! visibility timeout by itself, and whenever the worker calls `renew` (every 60 s by
//! default), so a long task is never handed to a second worker while its worker lives.
//!
//! # Delayed messages
//!
//! A message published with a future eta, deferred by a worker, or retried with a
//! countdown is **parked in kombu's own bookkeeping**: an `unacked` entry
//! `[envelope, "", "<queue>"]` whose `unacked_index` score is its due time minus the
//! visibility timeout. Every visibility-timeout restore therefore finds it overdue exactly
//! when it is due and puts it back into its list, whoever runs the restore: our consumers
//! (of any queue) and Python Celery workers, whose kombu runs `restore_visible`
//! periodically. So a delayed task runs when due whoever consumes its queue, and whether
//! or not the process that published it still runs; it is never in a worker's memory, and
//! a worker killed while it waits changes nothing. `_queue.delayed.<queue>` indexes these
//! entries by due time so that our consumers of the queue (and `queue_length`, `purge`)
//! promote them to the head of their list on time, in the fetch script; a promotion checks
//! that the entry is still the parked one, so a message that a restore already gave back is
//! never pushed twice.
//!
//! How late a due message can be:
//!
//! - a consumer of ours on the queue, or the process that published it while it runs: on
//!   time (a consumer wakes for the earliest due time and takes at least every second; a
//!   publisher promotes what it published when due, remembering one due time per queue
//!   for up to 10 000 queues);
//! - only other consumers of ours on the Redis database: within their restore interval
//!   (half the visibility timeout, at most 10 s);
//! - only Python workers: within kombu's restore interval, `unacked_restore_interval` ×
//!   `unacked_restore_throttle` seconds (10 × 10 by default in kombu 5.7; set
//!   `broker_transport_options = {"unacked_restore_throttle": 1}` for 10 s). Python then
//!   marks it redelivered (kombu's restore does).
//!
//! This relies on both sides using the same `visibility_timeout` (already needed for the
//! restore of lost messages): with a shorter one on the Python side the message goes back
//! to its list early and a Python worker holds it in memory until its eta (Celery's own
//! behaviour for an eta); with a longer one it is late by the difference. `HLEN unacked`
//! counts delayed messages. Members of the older layout (`<list number>|<envelope>`) are
//! still promoted.
//!
//! # Dead letters
//!
//! `<queue>.dead_letter` is a kombu list (a queue of that name): each entry is the original
//! envelope with the header `x-dead-letter-reason`, so it can be consumed or moved back as
//! is. Bytes that were not an envelope are kept in a wrapper
//! `{"x-dead-letter": {"reason": …, "raw": …, "raw_encoding": "utf-8" | "base64"}}`.
//!
//! # Backlog (for a monitor)
//!
//! [`Broker::queue_stats`](queue_core::Broker::queue_stats) and the other backlog methods
//! read and move what the layout above holds: the lists, the delayed set and the parked
//! `unacked` entries it indexes, the dead-letter list, each move one script. Publishes
//! write a `timestamp` (seconds) into the envelope's properties, which gives the age of
//! the oldest ready message; Python's messages have none (then only its task id is
//! known). Known queues are those in kombu's binding tables, plus those with delayed
//! messages or dead letters. Details in `backlog`.
//!
//! # Broadcast (events, remote control)
//!
//! [`RedisBroker`] implements [`queue_core::broadcast::Broadcast`] as kombu does on Redis:
//! fanout and topic exchanges over pub/sub on kombu's channels, direct exchanges (control
//! replies) through kombu's binding table and queue lists. Each subscription has a
//! connection of its own, resubscribed or re-declared after a reconnect; dropping it
//! unsubscribes, or removes its binding and lists. Layout and exactness in `broadcast.rs`.
//!
//! # Leases (periodic schedulers)
//!
//! [`RedisLease`] implements [`queue_core::lease::Lease`]: acquiring, renewing, releasing
//! and reading a lease, and claiming a tick (checked against the holding and the entry's
//! last tick, then recorded), are each one Lua script; expiry is the server's clock.
//!
//! # Results
//!
//! Celery's Redis backend: `SET celery-task-meta-<id> <meta> PX <expiry>` and `PUBLISH` on
//! the key (one script, which also refuses to overwrite a stored SUCCESS). `wait` subscribes
//! to that channel first, then reads the key, then waits for the publication; after a
//! reconnect of the subscriber it reads again. A Python `AsyncResult` reads the same keys.
//!
//! Chords join exactly as Celery 5.7's Redis backend does (its three Lua scripts, byte for
//! byte, on the same keys), so that Python and Rust header tasks of one chord count
//! together and exactly one worker of either kind dispatches the body.

mod backend;
mod backlog;
mod batch;
mod broadcast;
mod broker;
mod chord;
mod config;
mod connection;
mod consumer;
mod delay;
mod error;
mod keys;
mod lease;
mod promote;
mod restore;
mod scripts;
mod sentinel;
mod wake;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use queue_core::connect::{Connector, RedactedUrl};
use queue_core::lease::Lease;
use queue_core::{Broker, ResultBackend};

pub use backend::RedisBackend;
pub use broker::RedisBroker;
pub use config::{
    DEFAULT_PRIORITY_STEPS, DEFAULT_RESULT_EXPIRES, DEFAULT_VISIBILITY_TIMEOUT, RedisOptions,
};
pub use error::RedisError;
pub use keys::SEP;
pub use lease::RedisLease;

/// Serves `redis://`, `rediss://` and `sentinel://` URLs: broker, backend and lease store.
#[derive(Debug, Default)]
pub struct RedisConnector;

#[async_trait]
impl Connector for RedisConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss", "sentinel"]
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

    async fn lease(&self, url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
        let lease = RedisLease::connect(url.expose().as_str()).await?;
        Ok(Some(Arc::new(lease)))
    }
}

/// Registers [`RedisConnector`] at link time. The facade names this symbol under its `redis`
/// feature so that the linker keeps it.
#[queue_core::connect::linkme::distributed_slice(queue_core::connect::CONNECTORS)]
#[linkme(crate = queue_core::connect::linkme)]
pub static REDIS_CONNECTOR: fn() -> Arc<dyn Connector> = || Arc::new(RedisConnector);
