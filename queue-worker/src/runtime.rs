//! What every execution of a worker shares: the app, the consumer, hooks, limits, counters,
//! and the broker/backend calls whose failures are logged rather than propagated.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use queue_core::{App, Consumer, Delivery, DeliveryTag, TaskMeta};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::hooks::Hooks;
use crate::rate_limit::RateLimits;

/// Settings fixed when the worker starts.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) node_name: String,
    pub(crate) requeue_unknown_tasks: bool,
}

pub(crate) struct Runtime {
    pub(crate) app: App,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) hooks: Vec<Arc<dyn Hooks>>,
    pub(crate) rate_limits: RateLimits,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) config: Config,
    /// Cold shutdown: running tasks are interrupted and their messages requeued.
    pub(crate) cold: CancellationToken,
    /// Deliveries being handled, whose visibility the worker renews.
    pub(crate) in_flight: Mutex<HashSet<DeliveryTag>>,
}

impl Runtime {
    pub(crate) fn track(&self, tag: &DeliveryTag) {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(tag.clone());
    }

    pub(crate) fn untrack(&self, tag: &DeliveryTag) {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(tag);
    }

    pub(crate) fn in_flight_tags(&self) -> Vec<DeliveryTag> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
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

    pub(crate) async fn store(&self, meta: TaskMeta) {
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
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
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
    /// Tasks that succeeded.
    pub succeeded: Counter,
    /// Tasks that failed for good.
    pub failed: Counter,
    /// Tasks sent again for a retry.
    pub retried: Counter,
    /// Tasks not run because expired.
    pub revoked: Counter,
    /// Messages moved to a dead-letter place.
    pub dead_lettered: Counter,
}
