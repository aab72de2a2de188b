//! The worker of the `queue` task system.
//!
//! A [`Worker`] consumes several queues in an order (strict or weighted), runs up to
//! `concurrency` tasks at once, fetches only what it can start soon, acks after the task
//! (or before, per task), retries with backoff, enforces time and rate limits, runs
//! [`Hooks`] around every task, dead-letters what cannot run, and shuts down warm on
//! SIGTERM/SIGINT (cold on a second signal or after the shutdown timeout).
//!
//! It knows brokers and backends only through the traits of `queue-core`.

mod consume;
mod control;
mod events;
mod execute;
mod held;
mod hooks;
mod limits;
mod overrides;
mod pool;
mod rate_limit;
mod revoke;
mod runtime;
mod settle;
mod unknown_task;
mod workflow;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{App, QueueOrder, RetryPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

pub use execute::UNKNOWN_TASK_REQUEUES_HEADER;
pub use hooks::{Hooks, Outcome};
pub use runtime::{Counter, WorkerStats};

use events::{EventOptions, Events};
use runtime::{Config, Runtime};

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker was configured with nothing to consume.
    #[error("the worker has no queue to consume")]
    NoQueues,
    /// Signal handlers could not be installed.
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The worker task itself failed (a bug).
    #[error("worker task failed: {0}")]
    Join(String),
}

/// A worker: consumes queues and runs tasks. Configure with the builder methods, then
/// [`Worker::run`] (until SIGTERM/SIGINT), [`Worker::run_until`] or [`Worker::spawn`].
///
/// ```no_run
/// # async fn example(app: queue_core::App) -> Result<(), queue_worker::WorkerError> {
/// use std::time::Duration;
/// use queue_worker::Worker;
/// Worker::new(app)
///     .queues(["orders", "celery"])      // "orders" first (strict order)
///     .concurrency(32)
///     .shutdown_timeout(Duration::from_secs(30))
///     .run()
///     .await
/// # }
/// ```
pub struct Worker {
    app: App,
    queues: Vec<String>,
    order: QueueOrder,
    concurrency: usize,
    prefetch: usize,
    fetch_wait: Duration,
    shutdown_timeout: Duration,
    renew_interval: Duration,
    cleanup_interval: Duration,
    hooks: Vec<Arc<dyn Hooks>>,
    node_name: String,
    unknown_task_requeues: Option<u32>,
    persist_timeout: Duration,
    events: EventOptions,
    state_file: Option<std::path::PathBuf>,
}

/// A worker running in the background, from [`Worker::spawn`].
pub struct WorkerHandle {
    warm: CancellationToken,
    cold: CancellationToken,
    stats: Arc<WorkerStats>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl WorkerHandle {
    /// Counters of what the worker has done.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Warm shutdown: stop taking messages, let running tasks finish (within the shutdown
    /// timeout), then return.
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        self.warm.cancel();
        self.join().await
    }

    /// Cold shutdown: interrupt running tasks and give their messages back to the broker.
    pub async fn shutdown_now(self) -> Result<(), WorkerError> {
        self.warm.cancel();
        self.cold.cancel();
        self.join().await
    }

    /// Waits until the worker stops by itself (a remote `shutdown` command), without asking
    /// it to.
    pub async fn wait(self) -> Result<(), WorkerError> {
        self.join().await
    }

    async fn join(self) -> Result<(), WorkerError> {
        self.task
            .await
            .map_err(|error| WorkerError::Join(error.to_string()))?
    }
}

impl Worker {
    /// A worker for `app`, consuming the app's default queue, with concurrency equal to the
    /// number of CPUs (at least 4, since most tasks wait on I/O).
    pub fn new(app: App) -> Self {
        let concurrency = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(4)
            .max(4);
        Self {
            queues: vec![app.router().default_queue().to_owned()],
            order: QueueOrder::Strict,
            concurrency,
            prefetch: 0,
            fetch_wait: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            renew_interval: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(3600),
            hooks: Vec::new(),
            node_name: format!("celery@{}", queue_core::app::hostname()),
            unknown_task_requeues: None,
            persist_timeout: Duration::from_secs(30),
            events: EventOptions::default(),
            state_file: None,
            app,
        }
    }

    /// Queues to consume, in strict order: an earlier queue is always served first.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self.order = QueueOrder::Strict;
        self
    }

    /// Queues with weights: each fetch orders the queues at random, a queue of weight 3
    /// first three times as often as one of weight 1 (none starves).
    pub fn weighted_queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let (names, weights): (Vec<String>, Vec<u32>) = queues
            .into_iter()
            .map(|(name, weight)| (name.into(), weight))
            .unzip();
        self.queues = names;
        self.order = QueueOrder::Weighted(weights);
        self
    }

    /// Most tasks running at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Messages the worker may hold beyond its free slots (default 0: it fetches only what it
    /// can start now, so short tasks never wait behind long ones in this worker).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How long one fetch waits for messages before checking for shutdown (default 1 s).
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait.max(Duration::from_millis(1));
        self
    }

    /// How long a warm shutdown waits for running tasks before going cold (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How often the worker tells the broker it still works on what it holds (default 60 s).
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How often the worker removes expired results from the backend (default 1 h).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Adds hooks that run around every task.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks.push(Arc::new(hooks));
        self
    }

    /// This worker's node name, as in events and stored results (default `celery@<host>`).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// Give messages of unknown tasks back to the broker for another worker instead of
    /// dead-lettering them at once: each time after a delay (1 s, doubling, up to 60 s), at
    /// most 10 times (see [`Worker::unknown_task_requeues`]), then dead-lettered with their
    /// FAILURE (`NotRegistered`) stored. Nothing is stored while they are given back, so a
    /// client never sees a failure for a task another worker may still run.
    pub fn requeue_unknown_tasks(mut self, requeue: bool) -> Self {
        self.unknown_task_requeues = requeue.then_some(DEFAULT_UNKNOWN_TASK_REQUEUES);
        self
    }

    /// How many times a message of an unknown task is given back before it is dead-lettered
    /// (implies [`Worker::requeue_unknown_tasks`]; 0 dead-letters at once).
    pub fn unknown_task_requeues(mut self, max: u32) -> Self {
        self.unknown_task_requeues = Some(max);
        self
    }

    /// How long the worker retries storing a task's outcome (and sending its callbacks)
    /// while the result backend or broker fails, before giving the message back to the
    /// broker unacked so that it runs again (default 30 s). The message is acked only after
    /// its outcome is stored.
    pub fn persist_timeout(mut self, timeout: Duration) -> Self {
        self.persist_timeout = timeout;
        self
    }

    /// Sends Celery task events (`task-received`, `task-started`, `task-succeeded`, …) for
    /// monitors such as Flower, like `celery worker -E` (default: off, or on when
    /// `CELERY_WORKER_SEND_TASK_EVENTS` is `1`/`true`). Worker events (`worker-online`,
    /// heartbeats, `worker-offline`) are always sent. Events never hold a task up: what a
    /// slow broker cannot take is dropped and counted in [`WorkerStats::events_dropped`].
    pub fn task_events(mut self, enabled: bool) -> Self {
        self.events.task_events = enabled;
        self
    }

    /// Seconds between `worker-heartbeat` events (default 2 s, as Celery); monitors deem
    /// the worker offline after twice this without an event.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.events.heartbeat = interval;
        self
    }

    /// Keeps the worker's revoked task ids in `path` across restarts, as Celery's
    /// `--statedb` does: read at start, written on each revoke and at shutdown.
    pub fn state_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Runs until SIGTERM or SIGINT (warm shutdown); a second signal shuts down cold.
    pub async fn run(self) -> Result<(), WorkerError> {
        let warm = CancellationToken::new();
        let cold = CancellationToken::new();
        // Installed before anything runs, so that no signal meets the default handler.
        let listener = SignalListener::install().map_err(WorkerError::Signals)?;
        let signals = tokio::spawn(listener.watch(warm.clone(), cold.clone()));
        let result = self.run_with(warm, cold).await;
        signals.abort();
        result
    }

    /// Runs until `shutdown` completes, then shuts down warm.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let warm = CancellationToken::new();
        let cold = CancellationToken::new();
        let trigger = warm.clone();
        let run = self.run_with(warm, cold);
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => return result,
            () = shutdown => trigger.cancel(),
        }
        run.await
    }

    /// Runs in the background; the handle shuts it down.
    pub fn spawn(self) -> WorkerHandle {
        let warm = CancellationToken::new();
        let cold = CancellationToken::new();
        let stats = Arc::new(WorkerStats::default());
        let task = tokio::spawn(self.run_inner(warm.clone(), cold.clone(), stats.clone()));
        WorkerHandle {
            warm,
            cold,
            stats,
            task,
        }
    }

    async fn run_with(
        self,
        warm: CancellationToken,
        cold: CancellationToken,
    ) -> Result<(), WorkerError> {
        self.run_inner(warm, cold, Arc::new(WorkerStats::default()))
            .await
    }

    async fn run_inner(
        self,
        warm: CancellationToken,
        cold: CancellationToken,
        stats: Arc<WorkerStats>,
    ) -> Result<(), WorkerError> {
        if self.queues.is_empty() {
            return Err(WorkerError::NoQueues);
        }
        let span = tracing::info_span!("worker", node = %self.node_name);
        async move {
            info!(queues = ?self.queues, concurrency = self.concurrency, "worker starting");
            let Some(consumer) = self.connect(&warm).await else {
                info!("worker stopped before it could consume");
                return Ok(());
            };
            let broadcast = self.app.broker().clone().broadcast();
            let held = Arc::new(held::Held::default());
            let (events, publisher) = Events::new(
                broadcast.clone(),
                &self.node_name,
                // One clock for the app's requests, the worker's events and its replies.
                self.app.clock().clone(),
                &self.events,
                stats.clone(),
                held.clone(),
            );
            let closing = CancellationToken::new();
            let publisher =
                publisher.map(|publisher| tokio::spawn(publisher.run(closing.clone())));
            let heartbeat = events::spawn_heartbeat(events.clone(), self.events.heartbeat);
            let runtime = Arc::new(Runtime {
                app: self.app.clone(),
                consumer,
                hooks: self.hooks.clone(),
                rate_limits: Default::default(),
                overrides: Default::default(),
                slots: pool::Slots::new(self.concurrency),
                stats,
                config: Config {
                    node_name: self.node_name.clone(),
                    unknown_task_requeues: self.unknown_task_requeues,
                    persist_timeout: self.persist_timeout,
                },
                cold: cold.clone(),
                held,
                revoked: match &self.state_file {
                    Some(path) => revoke::Revoked::default().with_file(path.clone()),
                    None => revoke::Revoked::default(),
                },
                abandoned: Default::default(),
                events: events.clone(),
            });
            let mut background = self.spawn_background(&runtime);
            if let Some(broadcast) = broadcast {
                let context = control::ControlContext {
                    runtime: runtime.clone(),
                    queues: std::sync::Mutex::new(self.queues.clone()),
                    prefetch: self.prefetch,
                    heartbeat: self.events.heartbeat,
                    started: std::time::Instant::now(),
                    warm: warm.clone(),
                };
                background.push(control::spawn(broadcast, context));
            }
            self.consume_loop(&runtime, &warm).await;
            for task in background {
                task.abort();
            }
            heartbeat.abort();
            runtime.revoked.save();
            events::go_offline(&events, self.events.heartbeat, closing, publisher).await;
            let abandoned = runtime.abandoned.load(std::sync::atomic::Ordering::Acquire);
            if abandoned > 0 {
                // Closing (or dropping) the consumer would give their messages back while
                // their code still runs; the broker redelivers them once this process is gone.
                warn!(
                    abandoned,
                    "sync tasks still run: their messages stay with the broker until this process exits"
                );
                std::mem::forget(runtime.consumer.clone());
            } else if let Err(error) = runtime.consumer.close().await {
                warn!(%error, "closing the consumer failed");
            }
            info!(
                succeeded = runtime.stats.succeeded.get(),
                failed = runtime.stats.failed.get(),
                "worker stopped"
            );
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// How often a message of an unknown task is given back by default before it is dead-lettered.
const DEFAULT_UNKNOWN_TASK_REQUEUES: u32 = 10;

fn reconnect_backoff() -> RetryPolicy {
    RetryPolicy {
        max_retries: None,
        delay: Duration::from_millis(100),
        backoff: true,
        backoff_max: Duration::from_secs(30),
        jitter: true,
    }
}

/// The worker's reading of the stop signals.
struct SignalListener(queue_core::signal::SignalListener);

impl SignalListener {
    fn install() -> std::io::Result<Self> {
        queue_core::signal::SignalListener::install().map(Self)
    }

    async fn next(&mut self) {
        self.0.next().await;
    }

    /// First signal: warm shutdown; second: cold.
    async fn watch(mut self, warm: CancellationToken, cold: CancellationToken) {
        self.next().await;
        info!("signal received: warm shutdown (send again for cold shutdown)");
        warm.cancel();
        self.next().await;
        info!("second signal: cold shutdown");
        cold.cancel();
    }
}
