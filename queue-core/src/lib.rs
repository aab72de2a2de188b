//! Protocol and contracts of the `queue` task system, and its in-memory parts.
//!
//! - [`protocol`]: Celery protocol v2 messages, kombu envelopes and typed JSON values;
//! - [`Signature`], [`TaskState`], [`TaskError`], the [`Task`] trait and [`TaskContext`];
//! - the [`Broker`] and [`ResultBackend`] traits that broker and backend crates implement;
//! - [`App`] (configuration, registry, routing, sending) and [`AsyncResult`];
//! - [`events`]: Celery's worker and task events (protocol only), and [`broadcast`]: the
//!   fanout side of a broker they travel on; [`control`]: remote control (pidbox);
//! - [`backlog`]: what a broker holds per queue for a monitor (stats, delayed messages,
//!   dead letters, known queues);
//! - [`lease`]: the leader lease and fenced tick state of periodic schedulers;
//! - [`MemoryBroker`] and [`MemoryBackend`];
//! - `conformance` (feature `conformance`): the suites every broker and backend must pass.
//!
//! Applications use the `queue` facade crate, which re-exports what is here.

pub mod app;
pub mod backend;
pub mod backlog;
pub mod blocking;
pub mod broadcast;
pub mod broker;
pub mod canvas;
pub mod chord;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod connect;
pub mod control;
pub mod error;
pub mod events;
pub mod lease;
pub mod memory;
pub mod protocol;
pub mod result;
pub mod routing;
pub mod signal;
pub mod signature;
pub mod state;
pub mod task;
pub mod task_error;

pub use app::{App, AppBuilder};
pub use backend::{BackendError, GroupMeta, ResultBackend, TaskMeta};
pub use backlog::{DelayedMessage, KnownQueues, OldestMessage, QueueStats};
pub use broker::{
    Broker, BrokerError, ConsumeOptions, Consumer, DeadLetter, Delivery, DeliveryTag, Publish,
    QueueLength, QueueOrder,
};
pub use chord::{ChordClaim, ChordJoin, ChordPart};
pub use error::Error;
pub use memory::{MemoryBackend, MemoryBroker};
pub use protocol::{Message, TaskBody};
pub use result::{AsyncResult, ResultError};
pub use signature::{Signature, TypedSignature};
pub use state::TaskState;
pub use task::{Arguments, RateLimit, RetryPolicy, Task, TaskContext, TaskOptions};
pub use task_error::{TaskError, TaskErrorKind};

/// The highest message priority; priorities run from 0 (lowest) to 9 (highest).
pub const MAX_PRIORITY: u8 = 9;
