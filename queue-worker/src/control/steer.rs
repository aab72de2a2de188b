//! The commands that steer a worker: `revoke`, `rate_limit`, `time_limit`.

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
