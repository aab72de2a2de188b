//! `queue`: a distributed task queue for Rust, wire-compatible with Python Celery.
//!
//! Declare tasks with [`task`], send them through an [`App`], run them with a [`Worker`],
//! read results with [`AsyncResult`]. Brokers and result backends are picked by URL and
//! enabled by crate features (`redis`, `amqp`, `postgres`, `sqlite`); `memory://` is
//! always there.
//!
//! ```no_run
//! use std::time::Duration;
//! use queue::{App, Worker, task};
//!
//! #[task(name = "tasks.add")]
//! fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder().broker("memory://").backend("memory://").task(add).build().await?;
//! let result = add::new(1, 2).priority(9).send(&app).await?;
//! let worker = Worker::new(app.clone()).queues(["celery"]).spawn();
//! assert_eq!(result.get(Duration::from_secs(10)).await?, 3);
//! worker.shutdown().await?;
//! # Ok(()) }
//! ```

pub use queue_core::{
    App, AppBuilder, Arguments, AsyncResult, BackendError, Broker, BrokerError, ConsumeOptions,
    Consumer, DeadLetter, Delivery, DeliveryTag, Error, GroupMeta, MAX_PRIORITY, MemoryBackend,
    MemoryBroker, Message, Publish, QueueLength, QueueOrder, RateLimit, ResultBackend, ResultError,
    RetryPolicy, Signature, Task, TaskBody, TaskContext, TaskError, TaskErrorKind, TaskMeta,
    TaskOptions, TaskState, TypedSignature,
};
pub use queue_core::{
    app, backend, broadcast, broker, canvas, chord, connect, control, events, lease, protocol,
    routing,
};

#[cfg(feature = "macros")]
pub use queue_macros::task;

#[cfg(feature = "worker")]
pub use queue_worker::{Hooks, Outcome, Worker, WorkerError, WorkerHandle, WorkerStats};

/// The worker crate: [`Worker`], [`Hooks`] and what they use.
#[cfg(feature = "worker")]
pub use queue_worker as worker;

/// Periodic tasks: a beat that runs on every node and fires each tick once (feature `beat`).
#[cfg(feature = "beat")]
pub use queue_beat as beat;

// Broker and backend crates register their URL schemes at link time; naming their
// connectors here makes sure a crate enabled by a feature is linked into every program.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[used]
static LINK_SQL_CONNECTOR: &fn() -> std::sync::Arc<dyn connect::Connector> =
    &queue_results::SQL_CONNECTOR;

#[cfg(feature = "redis")]
#[used]
static LINK_REDIS_CONNECTOR: &fn() -> std::sync::Arc<dyn connect::Connector> =
    &queue_redis::REDIS_CONNECTOR;

#[cfg(feature = "amqp")]
#[used]
static LINK_AMQP_CONNECTOR: &fn() -> std::sync::Arc<dyn connect::Connector> =
    &queue_amqp::AMQP_CONNECTOR;

/// What most programs need: `use queue::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "worker")]
    pub use crate::Worker;
    #[cfg(feature = "macros")]
    pub use crate::task;
    pub use crate::{App, AsyncResult, Signature, TaskContext, TaskError, TaskState};
}

/// Used by the code `#[task]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use futures::FutureExt;
    pub use futures::future::BoxFuture;
    pub use queue_core::blocking::run_blocking;
    pub use queue_core::task::encode_output;
    pub use serde_json::Value;
    pub use std::sync::Arc;
    pub use std::time::Duration;
}
