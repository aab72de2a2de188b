//! [`Hooks`]: code that runs around every task — the place to reset a database session,
//! set up a per-task cache, or count outcomes.

use std::time::Duration;

use async_trait::async_trait;
use queue_core::{TaskContext, TaskError};
use serde_json::Value;

/// How a task execution ended, as [`Hooks::after_task`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Returned a value.
    Success(Value),
    /// Failed for good.
    Failure(TaskError),
    /// Failed and was sent again for a later retry.
    Retry(TaskError),
}

/// Callbacks around every task the worker runs. All methods have empty defaults.
///
/// Order: `before_task`, the task, one of `on_success` / `on_failure` / `on_retry`, then
/// `after_task`. A hook runs in the worker's task for that execution; a slow hook delays that
/// task only.
///
/// ```
/// use queue_worker::{Hooks, Outcome};
/// use queue_core::TaskContext;
///
/// struct ResetSession;
///
/// #[async_trait::async_trait]
/// impl Hooks for ResetSession {
///     async fn after_task(&self, _context: &TaskContext, _outcome: &Outcome) {
///         // e.g. return the task's DB connection to the pool, roll back what is open
///     }
/// }
/// ```
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before the task runs.
    async fn before_task(&self, _context: &TaskContext) {}

    /// After a success, with the (serialized) return value.
    async fn on_success(&self, _context: &TaskContext, _result: &Value) {}

    /// After a final failure.
    async fn on_failure(&self, _context: &TaskContext, _error: &TaskError) {}

    /// After a failure that will be retried in `delay`.
    async fn on_retry(&self, _context: &TaskContext, _error: &TaskError, _delay: Duration) {}

    /// After every execution, whatever its outcome.
    async fn after_task(&self, _context: &TaskContext, _outcome: &Outcome) {}
}
