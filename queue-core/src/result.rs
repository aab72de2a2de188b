//! [`AsyncResult`]: a handle on a task's result by id — state, `get(timeout)`, typed.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TaskState;
use crate::app::App;
use crate::backend::{BackendError, TaskMeta};
use crate::task_error::TaskError;

/// Why [`AsyncResult::get`] gave no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The task was not ready within the timeout.
    #[error("task {id} not ready after {timeout:?} (state {state})")]
    Timeout {
        /// Task id.
        id: String,
        /// The timeout.
        timeout: Duration,
        /// The last state seen.
        state: TaskState,
    },
    /// The task failed; the error as stored (type, message, traceback).
    #[error("task {id} failed: {error}")]
    Failed {
        /// Task id.
        id: String,
        /// The stored error.
        error: Box<TaskError>,
    },
    /// The task was revoked or expired.
    #[error("task {id} was revoked: {reason}")]
    Revoked {
        /// Task id.
        id: String,
        /// `revoked` or `expired`.
        reason: String,
    },
    /// The result does not decode into the expected type.
    #[error("result of task {id} does not decode: {source}")]
    Decode {
        /// Task id.
        id: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The application has no result backend.
    #[error("no result backend is configured")]
    NoBackend,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A handle on the result of a task, by id. `T` is the result type (`Value` when untyped).
///
/// ```
/// # async fn example(app: queue_core::App) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let result = app.result::<i64>("4f4a7266-46bd-49af-8210-9535e0850262");
/// println!("{}", result.state().await?);
/// let sum: i64 = result.get(Duration::from_secs(10)).await?;
/// # let _ = sum; Ok(()) }
/// ```
pub struct AsyncResult<T = Value> {
    app: App,
    id: String,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            id: self.id.clone(),
            output: PhantomData,
        }
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AsyncResult")
            .field("id", &self.id)
            .finish()
    }
}

impl<T> AsyncResult<T> {
    /// A handle on task `id` of `app`.
    pub fn new(app: App, id: String) -> Self {
        Self {
            app,
            id,
            output: PhantomData,
        }
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same handle with another result type.
    pub fn typed<U>(self) -> AsyncResult<U> {
        AsyncResult {
            app: self.app,
            id: self.id,
            output: PhantomData,
        }
    }

    /// The same handle, untyped.
    pub fn untyped(self) -> AsyncResult<Value> {
        self.typed()
    }

    fn backend(&self) -> Result<&std::sync::Arc<dyn crate::ResultBackend>, ResultError> {
        self.app.backend().ok_or(ResultError::NoBackend)
    }

    /// The stored meta (state, result, traceback, ...), `None` while PENDING.
    pub async fn meta(&self) -> Result<Option<TaskMeta>, ResultError> {
        Ok(self.backend()?.get(&self.id).await?)
    }

    /// The current state (PENDING when nothing is stored).
    pub async fn state(&self) -> Result<TaskState, ResultError> {
        Ok(self
            .meta()
            .await?
            .map_or(TaskState::Pending, |meta| meta.status))
    }

    /// Whether the task is finished (SUCCESS, FAILURE or REVOKED).
    pub async fn ready(&self) -> Result<bool, ResultError> {
        Ok(self.state().await?.is_ready())
    }

    /// Deletes the stored result.
    pub async fn forget(&self) -> Result<(), ResultError> {
        Ok(self.backend()?.forget(&self.id).await?)
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// Waits up to `timeout` for the task to finish and returns its value; a failure or a
    /// revocation is an error carrying what was stored.
    pub async fn get(&self, timeout: Duration) -> Result<T, ResultError> {
        let meta = self.backend()?.wait(&self.id, timeout).await?;
        let meta = match meta {
            Some(meta) if meta.status.is_ready() => meta,
            other => {
                return Err(ResultError::Timeout {
                    id: self.id.clone(),
                    timeout,
                    state: other.map_or(TaskState::Pending, |meta| meta.status),
                });
            }
        };
        self.outcome(meta)
    }

    /// Reads the result now when it is ready, else waits up to `timeout` as
    /// [`AsyncResult::get`] does (one read instead of a wait for what is already done).
    pub async fn get_ready_or_wait(&self, timeout: Duration) -> Result<T, ResultError> {
        match self.backend()?.get(&self.id).await? {
            Some(meta) if meta.status.is_ready() => self.outcome(meta),
            _ => self.get(timeout).await,
        }
    }

    /// The value of a READY meta, or the error it stores.
    fn outcome(&self, meta: TaskMeta) -> Result<T, ResultError> {
        match meta.status {
            TaskState::Success => {
                serde_json::from_value(meta.result).map_err(|source| ResultError::Decode {
                    id: self.id.clone(),
                    source,
                })
            }
            TaskState::Revoked => Err(ResultError::Revoked {
                id: self.id.clone(),
                reason: meta
                    .error_value()
                    .map(|error| error.message().to_owned())
                    .unwrap_or_else(|| "revoked".to_owned()),
            }),
            _ => Err(ResultError::Failed {
                id: self.id.clone(),
                error: Box::new(
                    meta.error_value()
                        .unwrap_or_else(|| TaskError::msg("failed")),
                ),
            }),
        }
    }
}
