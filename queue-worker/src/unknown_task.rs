//! Messages of tasks this worker does not know: dead-lettered with their FAILURE
//! (`NotRegistered`) stored, or, with `requeue_unknown_tasks`, given back with a growing
//! delay for another worker, storing nothing a client would take for the outcome.

use std::time::Duration;

use queue_core::broker::Publish;
use queue_core::protocol::time;
use queue_core::{RetryPolicy, TaskError, TaskState};
use serde_json::Value;
use tracing::warn;

use crate::execute::Execution;

/// Header counting how often a message of an unknown task was given back for another worker.
pub const UNKNOWN_TASK_REQUEUES_HEADER: &str = "x-unknown-task-requeues";

impl Execution<'_> {
    /// A task this worker does not know: dead-lettered, or (with `requeue_unknown_tasks`)
    /// given back with a growing delay for another worker, without storing anything a client
    /// would take for the task's outcome.
    pub(crate) async fn unknown_task(self) {
        let name = &self.message.headers.task;
        let reason = match self.runtime.config.unknown_task_requeues {
            Some(max) => {
                let requeues = self
                    .message
                    .headers
                    .extra
                    .get(UNKNOWN_TASK_REQUEUES_HEADER)
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if requeues < u64::from(max) {
                    return self.give_back_unknown(requeues).await;
                }
                format!("unknown task {name:?}: no worker took it after {max} requeues")
            }
            None => format!("unknown task {name:?}"),
        };
        let error = TaskError::new("NotRegistered", name.clone()).module("celery.exceptions");
        // The message survives in the dead-letter place even if this store fails.
        let _ = self.store_error(TaskState::Failure, &error).await;
        warn!(%reason, "dead-lettering message");
        self.settle.dead_letter(&reason).await;
    }

    pub(crate) async fn give_back_unknown(&self, requeues: u64) {
        let delay = unknown_task_backoff().delay_for(u32::try_from(requeues).unwrap_or(u32::MAX));
        let mut message = self.message.clone();
        message.headers.extra.insert(
            UNKNOWN_TASK_REQUEUES_HEADER.to_owned(),
            Value::from(requeues + 1),
        );
        message.headers.eta = Some(time::after(delay));
        warn!(
            ?delay,
            requeues = requeues + 1,
            "unknown task: given back for another worker"
        );
        let replacement = Publish::new(self.delivery.queue.clone(), message);
        if let Err(error) = self.settle.replace(replacement).await {
            warn!(%error, "could not give the message back with a delay; requeued as it is");
            self.settle.give_back().await;
        }
    }
}

/// Delays between the give-backs of a message of an unknown task: 1 s, doubling, up to 60 s.
fn unknown_task_backoff() -> RetryPolicy {
    RetryPolicy {
        max_retries: None,
        delay: Duration::from_secs(1),
        backoff: true,
        backoff_max: Duration::from_secs(60),
        jitter: false,
    }
}
