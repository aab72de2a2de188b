//! Running a task under its time limits: the soft limit signals cancellation, the hard limit
//! and a cold shutdown stop waiting for it. Whether its code may still run afterwards is
//! reported, because a message whose code still runs must never be given to another worker.

use std::time::Duration;

use futures::future::BoxFuture;
use queue_core::{TaskContext, TaskError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// How long an aborted task future gets to be dropped (it is dropped at its next poll; a
/// future blocked inside a poll never is).
const ABORT_GRACE: Duration = Duration::from_secs(1);

pub(crate) enum RunResult {
    /// The task ended (a panic counts as a failure).
    Done(Result<Value, TaskError>),
    /// The hard time limit passed.
    TimedOut {
        limit: Duration,
        /// Its code still runs (a sync body on its thread, or a future blocked in a poll).
        still_running: bool,
    },
    /// Cold shutdown.
    Interrupted { still_running: bool },
    /// Revoked with `terminate` while it ran.
    Terminated { still_running: bool },
}

/// Runs the task future on its own tokio task (a panic fails that task only), fires the
/// cancellation signal at the soft limit, stops the task at the hard limit, and gives up on
/// it at a cold shutdown.
pub(crate) async fn run_limited(
    future: BoxFuture<'static, Result<Value, TaskError>>,
    context: &TaskContext,
    cancellation: &CancellationToken,
    soft_limit: Option<Duration>,
    hard_limit: Option<Duration>,
    cold: &CancellationToken,
    terminate: &CancellationToken,
) -> RunResult {
    let mut join = tokio::spawn(future);
    let soft_timer = soft_limit.map(|limit| {
        let cancellation = cancellation.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            warn!(?limit, "soft time limit exceeded: cancellation signalled");
            cancellation.cancel();
        })
    });
    let hard_deadline = async {
        match hard_limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => futures::future::pending().await,
        }
    };
    enum Stop {
        Limit,
        Cold,
        Terminate,
    }
    let stop = tokio::select! {
        joined = &mut join => {
            if let Some(timer) = soft_timer {
                timer.abort();
            }
            return RunResult::Done(match joined {
                Ok(result) => result,
                Err(join_error) => Err(panic_error(join_error)),
            });
        }
        () = hard_deadline => Stop::Limit,
        () = cold.cancelled() => Stop::Cold,
        () = terminate.cancelled() => Stop::Terminate,
    };
    if let Some(timer) = soft_timer {
        timer.abort();
    }
    cancellation.cancel();
    join.abort();
    let dropped = tokio::time::timeout(ABORT_GRACE, &mut join).await.is_ok();
    let still_running = !dropped || context.sync_code_running();
    match stop {
        Stop::Limit => {
            let limit = hard_limit.unwrap_or_default();
            if still_running {
                error!(
                    ?limit,
                    "hard time limit exceeded: the task's code cannot be stopped and goes on running on its thread"
                );
            } else {
                error!(?limit, "hard time limit exceeded: task stopped");
            }
            RunResult::TimedOut {
                limit,
                still_running,
            }
        }
        Stop::Cold => RunResult::Interrupted { still_running },
        Stop::Terminate => {
            if still_running {
                warn!(
                    "revoked with terminate: the task's sync code cannot be stopped and runs on to its end on its thread; its result is discarded"
                );
            } else {
                warn!("revoked with terminate: task stopped");
            }
            RunResult::Terminated { still_running }
        }
    }
}

fn panic_error(join_error: tokio::task::JoinError) -> TaskError {
    match join_error.try_into_panic() {
        Ok(payload) => TaskError::panicked(panic_message(payload.as_ref())),
        Err(other) => TaskError::panicked(other.to_string()),
    }
}

/// Runs a hook; a panicking hook is logged and does not take the execution down with it.
pub(crate) async fn guarded(hook: impl std::future::Future<Output = ()>, name: &'static str) {
    use futures::FutureExt;
    if let Err(payload) = std::panic::AssertUnwindSafe(hook).catch_unwind().await {
        error!(hook = name, panic = %panic_message(payload.as_ref()), "a hook panicked");
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}
