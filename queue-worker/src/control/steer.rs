//! The commands that steer a worker: `revoke`, `rate_limit`, `time_limit`,
//! `add_consumer`, `cancel_consumer`, and what a pool resize tells the broker.

use std::time::Duration;

use queue_core::control::{error, ok};
use queue_core::{RateLimit, TaskMeta, TaskState};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::{ControlContext, truthy};

impl ControlContext {
    /// `revoke`: the ids are discarded when they arrive; with `terminate`, stopped if they
    /// run here. As Celery 5.7, REVOKED is stored at once for ids whose stored state says
    /// they have not run yet (none, RECEIVED, RETRY, REJECTED), so that a client waiting on a
    /// delayed task learns it.
    pub(super) fn revoke(&self, arguments: &Map<String, Value>) -> Value {
        let ids: Vec<String> = match arguments.get("task_id") {
            Some(Value::String(id)) => vec![id.clone()],
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => return error("revoke needs a task_id"),
        };
        let terminate = arguments.get("terminate").is_some_and(truthy);
        for id in &ids {
            self.runtime.revoked.insert(id);
        }
        self.runtime.revoked.save();
        info!(ids = ?ids, terminate, "tasks revoked");
        if let Some(backend) = self.runtime.app.backend().cloned() {
            let pending = ids.clone();
            tokio::spawn(async move {
                for id in pending {
                    let not_run = match backend.get(&id).await {
                        Ok(None) => true,
                        Ok(Some(meta)) => matches!(
                            meta.status,
                            TaskState::Received | TaskState::Retry | TaskState::Rejected
                        ),
                        Err(_) => false,
                    };
                    if not_run {
                        if let Err(store_error) =
                            backend.store(TaskMeta::revoked(&id, "revoked")).await
                        {
                            warn!(%store_error, id, "could not store REVOKED");
                        }
                    }
                }
            });
        }
        let joined = ids.join(", ");
        if !terminate {
            return ok(format!("tasks {joined} flagged as revoked"));
        }
        let terminated: Vec<&str> = ids
            .iter()
            .filter(|id| self.runtime.held.terminate(id))
            .map(String::as_str)
            .collect();
        if terminated.is_empty() {
            ok("terminate: tasks unknown")
        } else {
            ok(format!("terminate: {}", terminated.join(", ")))
        }
    }

    /// `rate_limit {task_name, rate_limit}`: `"10/m"`, a number per second, or 0/null to
    /// turn the limit off, as Celery's command takes it.
    pub(super) fn rate_limit(&self, arguments: &Map<String, Value>) -> Value {
        let Some(task) = self.known_task(arguments) else {
            return error("unknown task");
        };
        let limit = match arguments.get("rate_limit") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) if number.as_f64() == Some(0.0) => None,
            Some(Value::Number(number)) => {
                match number.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(count) => Some(RateLimit {
                        count,
                        period: Duration::from_secs(1),
                    }),
                    None => return error(format!("Invalid rate limit string: {number}")),
                }
            }
            Some(Value::String(text)) if text.trim() == "0" || text.trim().is_empty() => None,
            Some(Value::String(text)) => match text.parse::<RateLimit>() {
                Ok(limit) => Some(limit),
                Err(reason) => return error(format!("Invalid rate limit string: {reason}")),
            },
            Some(other) => return error(format!("Invalid rate limit string: {other}")),
        };
        let runtime = &self.runtime;
        runtime.overrides.set_rate_limit(&task, limit);
        runtime.rate_limits.reset(&task);
        info!(task, ?limit, "rate limit changed by remote control");
        ok(if limit.is_some() {
            "new rate limit set successfully"
        } else {
            "rate limit disabled successfully"
        })
    }

    /// `time_limit {task_name, soft, hard}` (seconds, null for none).
    pub(super) fn time_limit(&self, arguments: &Map<String, Value>) -> Value {
        let Some(task) = self.known_task(arguments) else {
            return error("unknown task");
        };
        let seconds = |name: &str| -> Result<Option<Duration>, Value> {
            match arguments.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_f64()
                    .and_then(queue_core::protocol::time::seconds_duration)
                    .map(Some)
                    .ok_or_else(|| error(format!("invalid {name} time limit: {value}"))),
            }
        };
        let (soft, hard) = match (seconds("soft"), seconds("hard")) {
            (Ok(soft), Ok(hard)) => (soft, hard),
            (Err(reply), _) | (_, Err(reply)) => return reply,
        };
        self.runtime.overrides.set_time_limits(&task, soft, hard);
        info!(task, ?soft, ?hard, "time limits changed by remote control");
        ok("time limits set successfully")
    }

    /// `add_consumer {queue}`: declares the queue and consumes it too, after the others.
    /// Celery's `exchange`, `exchange_type` and `routing_key` are not used: our queues are
    /// bound by name (the exchange and routing key of the default direct exchange).
    pub(super) async fn add_consumer(&self, arguments: &Map<String, Value>) -> Value {
        let Some(queue) = queue_argument(arguments) else {
            return error("add_consumer needs a queue");
        };
        let runtime = &self.runtime;
        if let Err(declare_error) = runtime.app.broker().declare_queue(&queue).await {
            warn!(%declare_error, queue, "add_consumer: declaring the queue failed");
            return error(format!("cannot declare {queue}: {declare_error}"));
        }
        match runtime.consumer.add_queue(&queue).await {
            Ok(added) => {
                let mut queues = self
                    .queues
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if !queues.contains(&queue) {
                    queues.push(queue.clone());
                }
                if added {
                    info!(queue, "consuming a queue more (remote control)");
                    ok(format!("add consumer {queue}"))
                } else {
                    ok(format!("already consuming from {queue}"))
                }
            }
            Err(broker_error) => {
                warn!(%broker_error, queue, "add_consumer failed");
                error(format!("cannot consume {queue}: {broker_error}"))
            }
        }
    }

    /// `cancel_consumer {queue}`: no new message comes from the queue; tasks of it already
    /// fetched run to their end.
    pub(super) async fn cancel_consumer(&self, arguments: &Map<String, Value>) -> Value {
        let Some(queue) = queue_argument(arguments) else {
            return error("cancel_consumer needs a queue");
        };
        match self.runtime.consumer.remove_queue(&queue).await {
            Ok(removed) => {
                self.queues
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .retain(|known| *known != queue);
                if removed {
                    info!(queue, "no longer consuming a queue (remote control)");
                }
                ok(format!("no longer consuming from {queue}"))
            }
            Err(broker_error) => {
                warn!(%broker_error, queue, "cancel_consumer failed");
                error(format!("cannot stop consuming {queue}: {broker_error}"))
            }
        }
    }

    /// After the pool changed size: the broker may push ahead what the new size takes
    /// (AMQP `basic.qos`), as the worker's fetches ask for it.
    pub(super) async fn resized(&self) {
        let prefetch = self.runtime.slots.size().saturating_add(self.prefetch);
        if let Err(broker_error) = self.runtime.consumer.set_prefetch(prefetch).await {
            warn!(%broker_error, prefetch, "the broker's prefetch did not follow the pool");
        }
    }

    /// The `task_name` argument, when this worker has that task.
    pub(super) fn known_task(&self, arguments: &Map<String, Value>) -> Option<String> {
        let name = arguments.get("task_name").and_then(Value::as_str)?;
        self.runtime
            .app
            .registry()
            .get(name)
            .map(|_| name.to_owned())
    }
}

/// The `queue` argument of `add_consumer` / `cancel_consumer`, not empty.
fn queue_argument(arguments: &Map<String, Value>) -> Option<String> {
    arguments
        .get("queue")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|queue| !queue.is_empty())
        .map(str::to_owned)
}
