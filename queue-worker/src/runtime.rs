//! What every execution of a worker shares: the app, the consumer, hooks, limits, counters,
//! and the broker/backend calls whose failures are logged rather than propagated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use queue_core::{
    App, BackendError, BrokerError, Consumer, Delivery, DeliveryTag, RetryPolicy, TaskMeta,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::hooks::Hooks;
use crate::rate_limit::RateLimits;

/// Settings fixed when the worker starts.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) node_name: String,
    /// Give messages of unknown tasks back (delayed) this many times before dead-lettering
    /// them; `None`: dead-letter at once.
    pub(crate) unknown_task_requeues: Option<u32>,
    /// How long an outcome's store (or its callbacks' publish) is retried before the message
    /// is given back instead of acked.
    pub(crate) persist_timeout: Duration,
}

pub(crate) struct Runtime {
    pub(crate) app: App,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) hooks: Vec<Arc<dyn Hooks>>,
    pub(crate) rate_limits: RateLimits,
    /// Rate and time limits changed by remote control.
    pub(crate) overrides: crate::overrides::Overrides,
    /// How many tasks run at once (resized by remote control).
    pub(crate) slots: crate::pool::Slots,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) config: Config,
    /// Cold shutdown: running tasks are interrupted and their messages requeued.
    pub(crate) cold: CancellationToken,
    /// Deliveries being handled (reserved or running), whose visibility the worker renews.
    pub(crate) held: Arc<crate::held::Held>,
    /// Revoked task ids: discarded when they arrive.
    pub(crate) revoked: crate::revoke::Revoked,
    /// Deliveries left unsettled because their code may still run (sync code at a cold
    /// shutdown): the consumer must not give them back while this process lives.
    pub(crate) abandoned: AtomicU64,
    /// Celery events (worker and task).
    pub(crate) events: Arc<crate::events::Events>,
}

impl Runtime {
    pub(crate) fn track(&self, delivery: &Delivery) {
        self.held.hold(delivery);
    }

    pub(crate) fn untrack(&self, tag: &DeliveryTag) {
        self.held.release(tag);
    }

    pub(crate) fn in_flight_tags(&self) -> Vec<DeliveryTag> {
        self.held.tags()
    }

    pub(crate) async fn ack(&self, delivery: &Delivery) {
        if let Err(error) = self.consumer.ack(delivery).await {
            warn!(%error, tag = %delivery.tag, "ack failed; the message may be delivered again");
        }
    }

    pub(crate) async fn reject(&self, delivery: &Delivery, requeue: bool) {
        if let Err(error) = self.consumer.reject(delivery, requeue).await {
            warn!(%error, tag = %delivery.tag, "reject failed");
        }
    }

    pub(crate) async fn dead_letter(&self, delivery: &Delivery, reason: &str) {
        self.stats.dead_lettered.increment();
        if let Err(error) = self.consumer.dead_letter(delivery, reason).await {
            warn!(%error, tag = %delivery.tag, %reason, "dead-lettering failed");
        }
    }

    /// Stores a state once; a failure is logged. For states that only inform (STARTED,
    /// RETRY): the outcome that follows is stored durably.
    pub(crate) async fn store_once(&self, meta: TaskMeta) {
        let Some(backend) = self.app.backend() else {
            return;
        };
        let status = meta.status.clone();
        if let Err(error) = backend.store(meta).await {
            warn!(%error, %status, "could not store the task state");
        } else {
            debug!(%status, "task state stored");
        }
    }

    /// Stores an outcome, retrying with backoff while the backend fails, for up to the
    /// persist timeout (or until a cold shutdown). `Err` means the outcome is not stored and
    /// the message must not be acked.
    pub(crate) async fn store_outcome(&self, meta: TaskMeta) -> Result<(), Unpersisted> {
        let Some(backend) = self.app.backend() else {
            return Ok(());
        };
        let status = meta.status.clone();
        self.persist("store the task state", || backend.store(meta.clone()))
            .await?;
        debug!(%status, "task state stored");
        Ok(())
    }

    /// Runs `attempt` until it succeeds, with backoff, within the persist timeout.
    pub(crate) async fn persist<F, Fut, E>(
        &self,
        what: &'static str,
        mut attempt: F,
    ) -> Result<(), Unpersisted>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: Transience,
    {
        let now = tokio::time::Instant::now();
        // A timeout too large for the clock means "retry for as long as it takes".
        let deadline = now
            .checked_add(self.config.persist_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)));
        let backoff = persist_backoff();
        let mut failures = 0;
        loop {
            let error = match attempt().await {
                Ok(()) => return Ok(()),
                Err(error) if !error.is_transient() => {
                    error!(%error, "could not {what}: the store refused it");
                    return Err(Unpersisted::Refused(format!("could not {what}: {error}")));
                }
                Err(error) => error,
            };
            let delay = backoff
                .delay_for(failures)
                .max(PERSIST_MIN_DELAY)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            failures += 1;
            if delay.is_zero() || self.cold.is_cancelled() {
                error!(%error, attempts = failures, "could not {what}; giving the message back");
                return Err(Unpersisted::Unavailable);
            }
            self.stats.persist_retries.increment();
            warn!(%error, ?delay, attempt = failures, "could not {what}; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cold.cancelled() => {}
            }
        }
    }
}

/// An outcome that could not be stored or whose follow-up could not be sent.
#[derive(Debug)]
pub(crate) enum Unpersisted {
    /// The store stayed unavailable: the message is given back and runs again.
    Unavailable,
    /// The store refused it for good (an encoding error, a callback that cannot be sent):
    /// running again would not help, so the message is dead-lettered with this reason.
    Refused(String),
}

/// Whether an error may go away by itself (an outage) or will not (a refusal).
pub(crate) trait Transience: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transience for BackendError {
    fn is_transient(&self) -> bool {
        matches!(self, BackendError::Unavailable(_) | BackendError::Other(_))
    }
}

impl Transience for BrokerError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            BrokerError::Unavailable(_) | BrokerError::Refused(_) | BrokerError::Closed
        )
    }
}

impl Transience for queue_core::Error {
    fn is_transient(&self) -> bool {
        match self {
            queue_core::Error::Broker(error) => error.is_transient(),
            queue_core::Error::Backend(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// The shortest wait between two attempts at storing an outcome (full jitter may pick ~0).
const PERSIST_MIN_DELAY: Duration = Duration::from_millis(50);

fn persist_backoff() -> RetryPolicy {
    RetryPolicy {
        max_retries: None,
        delay: Duration::from_millis(100),
        backoff: true,
        backoff_max: Duration::from_secs(5),
        jitter: true,
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one; returns the new count.
    pub(crate) fn increment(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a worker has done since it started.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Messages received from the broker.
    pub received: Counter,
    /// Tasks started.
    pub started: Counter,
    /// Task runs that succeeded (a run whose result could not be stored, given back and run
    /// again, counts each time).
    pub succeeded: Counter,
    /// Task runs that failed for good (counted like `succeeded`).
    pub failed: Counter,
    /// Tasks sent again for a retry.
    pub retried: Counter,
    /// Tasks not run because expired.
    pub revoked: Counter,
    /// Messages moved to a dead-letter place.
    pub dead_lettered: Counter,
    /// Attempts at storing an outcome (or sending its callbacks) that failed and were retried.
    pub persist_retries: Counter,
    /// Messages given back to the broker, unacked, because their outcome could not be stored
    /// or their callbacks not sent: they run again.
    pub given_back: Counter,
    /// Sync task bodies the worker stopped waiting for (hard time limit, cold shutdown) while
    /// they still ran on their threads.
    pub abandoned: Counter,
    /// Events dropped because the event buffer was full (a slow or unreachable broker):
    /// events never hold a task up.
    pub events_dropped: Counter,
}
