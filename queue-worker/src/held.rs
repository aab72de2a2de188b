//! What the worker holds: deliveries fetched and not yet started (Celery's "reserved") and
//! those running ("active"), for visibility renewals and for the inspect commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use queue_core::{Delivery, DeliveryTag};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One held delivery, as inspect reports it.
#[derive(Clone, Debug)]
pub(crate) struct HeldTask {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) args_repr: String,
    pub(crate) kwargs_repr: String,
    pub(crate) queue: String,
    pub(crate) priority: u8,
    pub(crate) redelivered: bool,
    /// When it started (seconds since the epoch), `None` while reserved.
    pub(crate) started_at: Option<f64>,
    /// Stops it (revoke with `terminate`), once started.
    pub(crate) terminate: Option<CancellationToken>,
}

impl HeldTask {
    /// Celery's `Request.info()`. Arguments are the message's reprs (`argsrepr`), with or
    /// without `safe`: the worker does not keep decoded arguments of tasks it holds.
    pub(crate) fn info(&self, node: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "args": self.args_repr,
            "kwargs": self.kwargs_repr,
            "type": self.name,
            "hostname": node,
            "time_start": self.started_at,
            "acknowledged": false,
            "delivery_info": {
                "exchange": "",
                "routing_key": self.queue,
                "priority": self.priority,
                "redelivered": self.redelivered,
            },
            "worker_pid": std::process::id(),
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Held {
    by_tag: Mutex<HashMap<DeliveryTag, HeldTask>>,
    /// Tasks started per task name since the worker started (`stats.total`).
    totals: Mutex<HashMap<String, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Held {
    /// A fetched delivery, reserved until it starts.
    pub(crate) fn hold(&self, delivery: &Delivery) {
        let task = match &delivery.content {
            Ok(message) => HeldTask {
                id: message.headers.id.clone(),
                name: message.headers.task.clone(),
                args_repr: message.headers.argsrepr.clone().unwrap_or_default(),
                kwargs_repr: message.headers.kwargsrepr.clone().unwrap_or_default(),
                queue: delivery.queue.clone(),
                priority: message.priority(),
                redelivered: delivery.redelivered,
                started_at: None,
                terminate: None,
            },
            Err(_) => HeldTask {
                id: String::new(),
                name: String::new(),
                args_repr: String::new(),
                kwargs_repr: String::new(),
                queue: delivery.queue.clone(),
                priority: 0,
                redelivered: delivery.redelivered,
                started_at: None,
                terminate: None,
            },
        };
        lock(&self.by_tag).insert(delivery.tag.clone(), task);
    }

    /// The delivery's task started now; `terminate` stops it.
    pub(crate) fn start(&self, tag: &DeliveryTag, name: &str, terminate: CancellationToken) {
        if let Some(task) = lock(&self.by_tag).get_mut(tag) {
            task.started_at =
                Some(queue_core::protocol::time::now().timestamp_micros() as f64 / 1e6);
            task.terminate = Some(terminate);
        }
        *lock(&self.totals).entry(name.to_owned()).or_default() += 1;
    }

    /// The delivery is settled (or given back).
    pub(crate) fn release(&self, tag: &DeliveryTag) {
        lock(&self.by_tag).remove(tag);
    }

    /// Stops the running tasks with id `id`; returns whether one ran.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        let mut found = false;
        for task in lock(&self.by_tag).values() {
            if task.id == id {
                if let Some(terminate) = &task.terminate {
                    terminate.cancel();
                    found = true;
                }
            }
        }
        found
    }

    /// How many tasks run now.
    pub(crate) fn active_count(&self) -> u64 {
        let running = lock(&self.by_tag)
            .values()
            .filter(|task| task.started_at.is_some())
            .count();
        u64::try_from(running).unwrap_or(u64::MAX)
    }

    pub(crate) fn tags(&self) -> Vec<DeliveryTag> {
        lock(&self.by_tag).keys().cloned().collect()
    }

    /// Running tasks (`active: true`) or reserved ones.
    pub(crate) fn tasks(&self, active: bool) -> Vec<HeldTask> {
        lock(&self.by_tag)
            .values()
            .filter(|task| !task.id.is_empty() && task.started_at.is_some() == active)
            .cloned()
            .collect()
    }

    pub(crate) fn totals(&self) -> BTreeMap<String, u64> {
        lock(&self.totals)
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    }
}
