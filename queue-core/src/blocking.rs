//! Where a sync task's body runs: on threads of their own, outside the async runtime.
//!
//! Tokio's blocking pool would do, but a runtime waits for its blocking threads when it is
//! dropped, so one runaway sync body (past its hard time limit, or running at a cold
//! shutdown) keeps the whole process from exiting. The threads of the `blocking` crate are
//! detached: the process ends when `main` returns, whatever they do. And since such code
//! cannot be stopped, the execution counts the bodies still running
//! ([`TaskContext::sync_code_running`](crate::TaskContext::sync_code_running)), so that the
//! worker never gives a message back to the broker while its code may still run.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts one sync body of an execution as running until dropped, on the body's thread.
///
/// Made by [`TaskContext::enter_sync_code`](crate::TaskContext::enter_sync_code); taken by
/// [`run_blocking`].
#[derive(Debug)]
pub struct SyncCodeGuard(Arc<AtomicUsize>);

impl SyncCodeGuard {
    pub(crate) fn enter(running: &Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::AcqRel);
        Self(running.clone())
    }
}

impl Drop for SyncCodeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A panic payload caught on the body's thread.
pub type PanicPayload = Box<dyn Any + Send + 'static>;

/// Runs `body` on a detached thread and waits for it; a panic comes back as `Err`.
///
/// Dropping the future before the body started drops the body unrun; once started, the
/// body runs to its end on its thread, and `guard` says so until then.
///
/// ```
/// # async fn example(context: queue_core::TaskContext) {
/// let guard = context.enter_sync_code();
/// let sum = queue_core::blocking::run_blocking(guard, || 1 + 2).await;
/// assert_eq!(sum.ok(), Some(3));
/// # }
/// ```
pub async fn run_blocking<T, F>(guard: SyncCodeGuard, body: F) -> Result<T, PanicPayload>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    blocking::unblock(move || {
        let _running = guard;
        std::panic::catch_unwind(AssertUnwindSafe(body))
    })
    .await
}
