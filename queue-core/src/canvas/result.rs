//! [`GroupResult`]: the results of a group's members, read together (Celery's
//! `GroupResult`): how many completed, all of them in order, saved and restored by id.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::App;
use crate::backend::GroupMeta;
use crate::result::{AsyncResult, ResultError};

/// Members read at once by [`GroupResult::get`].
const READ_AHEAD: usize = 64;

/// The results of a group: one [`AsyncResult`] per member, in order. `T` is the members'
/// result type (`Value` when untyped).
///
/// ```no_run
/// # async fn example(app: queue_core::App) -> Result<(), Box<dyn std::error::Error>> {
/// use queue_core::Signature;
/// use queue_core::canvas::group;
/// use std::time::Duration;
/// let sums = app
///     .send_group(group((0..10).map(|i| Signature::new("tasks.add").arg(i).arg(i))))
///     .await?
///     .typed::<i64>();
/// let all: Vec<i64> = sums.get(Duration::from_secs(10)).await?;
/// println!("{} of {} done", sums.completed_count().await?, sums.len());
/// # let _ = all; Ok(()) }
/// ```
pub struct GroupResult<T = Value> {
    app: App,
    id: String,
    ids: Vec<String>,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for GroupResult<T> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            id: self.id.clone(),
            ids: self.ids.clone(),
            output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for GroupResult<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupResult")
            .field("id", &self.id)
            .field("members", &self.ids.len())
            .finish()
    }
}

impl<T> GroupResult<T> {
    /// The group `id` of `app` whose members are the tasks `ids`, in order.
    pub fn new(app: App, id: String, ids: Vec<String>) -> Self {
        Self {
            app,
            id,
            ids,
            output: PhantomData,
        }
    }

    /// Reads a group saved with [`GroupResult::save`] (by this library or by Python's
    /// `GroupResult.save()`); `None` if there is no such record.
    pub async fn restore(app: &App, id: &str) -> Result<Option<Self>, ResultError> {
        let backend = app.backend().ok_or(ResultError::NoBackend)?;
        Ok(backend
            .get_group(id)
            .await?
            .map(|group| Self::new(app.clone(), group.group_id, group.task_ids)))
    }

    /// Stores the group's record, so that [`GroupResult::restore`] (here or in Python)
    /// finds it by id.
    pub async fn save(&self) -> Result<(), ResultError> {
        let backend = self.app.backend().ok_or(ResultError::NoBackend)?;
        let record = GroupMeta {
            group_id: self.id.clone(),
            task_ids: self.ids.clone(),
        };
        Ok(backend.save_group(&record).await?)
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The members' ids, in order.
    pub fn task_ids(&self) -> &[String] {
        &self.ids
    }

    /// The members' results, in order.
    pub fn results(&self) -> Vec<AsyncResult<T>> {
        self.ids
            .iter()
            .map(|id| AsyncResult::new(self.app.clone(), id.clone()))
            .collect()
    }

    /// The same group with another result type.
    pub fn typed<U>(self) -> GroupResult<U> {
        GroupResult {
            app: self.app,
            id: self.id,
            ids: self.ids,
            output: PhantomData,
        }
    }

    /// Revokes every member (Celery's `GroupResult.revoke`): workers discard those that
    /// have not run, and with `terminate` stop those running.
    pub async fn revoke(&self, terminate: bool) -> Result<(), crate::control::ControlError> {
        self.app.control().revoke_many(&self.ids, terminate).await
    }

    /// How many members succeeded.
    pub async fn completed_count(&self) -> Result<usize, ResultError> {
        let backend = self.app.backend().ok_or(ResultError::NoBackend)?;
        let mut completed = 0;
        for id in &self.ids {
            if backend
                .get(id)
                .await?
                .is_some_and(|meta| meta.status == crate::TaskState::Success)
            {
                completed += 1;
            }
        }
        Ok(completed)
    }

    /// Whether every member finished (succeeded, failed or was revoked).
    pub async fn ready(&self) -> Result<bool, ResultError> {
        let backend = self.app.backend().ok_or(ResultError::NoBackend)?;
        for id in &self.ids {
            if !backend
                .get(id)
                .await?
                .is_some_and(|meta| meta.status.is_ready())
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<T: DeserializeOwned> GroupResult<T> {
    /// Waits up to `timeout` (for all of them together) and returns every member's value in
    /// order; the first failure or revocation met is the error.
    pub async fn get(&self, timeout: Duration) -> Result<Vec<T>, ResultError> {
        use futures::{StreamExt, TryStreamExt};
        let deadline = Instant::now() + timeout;
        // Several members read at once (in order): a large group is read in round trips
        // of many, not one after the other.
        futures::stream::iter(self.results())
            .map(|result| async move {
                let left = deadline.saturating_duration_since(Instant::now());
                result.get_ready_or_wait(left).await
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await
    }
}
