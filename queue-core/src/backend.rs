//! The [`ResultBackend`] contract and [`TaskMeta`], Celery's stored task meta (wire spec §5.2).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::TaskState;
use crate::task_error::TaskError;

/// Errors of result backend operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store cannot be reached; retrying may help.
    #[error("result backend unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be encoded or decoded.
    #[error("result backend encoding error: {0}")]
    Encoding(String),
    /// The backend does not support this operation.
    #[error("not supported by this result backend: {0}")]
    Unsupported(&'static str),
    /// Other error of the store.
    #[error("result backend error: {0}")]
    Other(String),
}

/// The stored state of one task, in Celery's meta shape so that Python reads it.
///
/// ```json
/// {"status": "SUCCESS", "result": 4, "traceback": null, "children": [],
///  "date_done": "2026-11-24T15:27:26.005122+00:00", "task_id": "..."}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// State.
    pub status: TaskState,
    /// The return value, an exception dict for FAILURE/RETRY/REVOKED, or custom meta.
    #[serde(default)]
    pub result: Value,
    /// Traceback text of a failure.
    #[serde(default)]
    pub traceback: Option<String>,
    /// Result tuples of the tasks this one started.
    #[serde(default)]
    pub children: Option<Vec<Value>>,
    /// When the task became ready (READY states only).
    #[serde(
        default,
        serialize_with = "crate::protocol::time::serialize_optional",
        deserialize_with = "crate::protocol::time::deserialize_optional"
    )]
    pub date_done: Option<DateTime<FixedOffset>>,
    /// Task id.
    pub task_id: String,
    /// Group id, when in a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Id of the task that sent this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Task name (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Positional arguments (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Value>>,
    /// Keyword arguments (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<Map<String, Value>>,
    /// Node name of the worker (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Retry count (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Queue it was delivered from (extended result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

impl TaskMeta {
    /// A meta for `task_id` in `status` with `result`; `date_done` is set for READY states.
    pub fn new(task_id: impl Into<String>, status: TaskState, result: Value) -> Self {
        let date_done = status.is_ready().then(crate::protocol::time::now);
        Self {
            children: Some(Vec::new()),
            status,
            result,
            traceback: None,
            date_done,
            task_id: task_id.into(),
            group_id: None,
            parent_id: None,
            name: None,
            args: None,
            kwargs: None,
            worker: None,
            retries: None,
            queue: None,
        }
    }

    /// SUCCESS with `result`.
    pub fn success(task_id: impl Into<String>, result: Value) -> Self {
        Self::new(task_id, TaskState::Success, result)
    }

    /// FAILURE (or RETRY/REVOKED) with the error stored as Celery's exception dict.
    pub fn error(task_id: impl Into<String>, status: TaskState, error: &TaskError) -> Self {
        let mut meta = Self::new(task_id, status, error.to_exception_value());
        meta.traceback = error.traceback_text().map(str::to_owned);
        meta
    }

    /// REVOKED with Celery's `TaskRevokedError` and `reason` (`revoked`, `expired`).
    pub fn revoked(task_id: impl Into<String>, reason: &str) -> Self {
        Self::new(
            task_id,
            TaskState::Revoked,
            json!({"exc_type": "TaskRevokedError", "exc_message": [reason],
                   "exc_module": "celery.exceptions"}),
        )
    }

    /// The stored error of an EXCEPTION state.
    pub fn error_value(&self) -> Option<TaskError> {
        self.status
            .is_exception()
            .then(|| TaskError::from_exception_value(&self.result, self.traceback.clone()))
    }
}

/// A group's stored record: its id and its members' ids, stored the Celery way
/// (`{"result": [[gid, null], [[[tid, null], null], ...]]}`).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMeta {
    /// Group id.
    pub group_id: String,
    /// Member task ids in order.
    pub task_ids: Vec<String>,
}

impl GroupMeta {
    /// The Celery value of the group record.
    pub fn to_value(&self) -> Value {
        let children: Vec<Value> = self
            .task_ids
            .iter()
            .map(|id| json!([[id, null], null]))
            .collect();
        json!({"result": [[self.group_id, null], children]})
    }

    /// Reads the Celery value of a group record.
    pub fn from_value(value: &Value) -> Option<Self> {
        let result = value.get("result")?;
        let group_id = result.get(0)?.get(0)?.as_str()?.to_owned();
        let task_ids = result
            .get(1)?
            .as_array()?
            .iter()
            .filter_map(|child| child.get(0)?.get(0)?.as_str().map(str::to_owned))
            .collect();
        Some(Self { group_id, task_ids })
    }
}

/// A result store: Redis, PostgreSQL, SQLite, memory.
#[async_trait]
pub trait ResultBackend: Send + Sync + fmt::Debug + 'static {
    /// Stores a task's state. A SUCCESS already stored is never overwritten.
    async fn store(&self, meta: TaskMeta) -> Result<(), BackendError>;

    /// Stores several states (one round trip where the store can batch).
    async fn store_many(&self, metas: Vec<TaskMeta>) -> Result<(), BackendError> {
        for meta in metas {
            self.store(meta).await?;
        }
        Ok(())
    }

    /// The stored state of a task, `None` if unknown (PENDING).
    async fn get(&self, task_id: &str) -> Result<Option<TaskMeta>, BackendError>;

    /// Waits up to `timeout` for the task to be READY and returns its latest stored state
    /// (which may not be READY when the time ran out). Push-based where the store can be.
    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError>;

    /// Deletes the stored state of a task.
    async fn forget(&self, task_id: &str) -> Result<(), BackendError>;

    /// Stores a group record.
    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError>;

    /// Reads a group record.
    async fn get_group(&self, group_id: &str) -> Result<Option<GroupMeta>, BackendError>;

    /// Starts the join of a chord whose header has `size` tasks (before any of them is
    /// published). See [`crate::chord`].
    async fn chord_start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        let _ = (group_id, size);
        Err(BackendError::Unsupported("chords"))
    }

    /// Records a header task's outcome; says whether this completed the chord (and then
    /// hands over the claim to dispatch its body). Idempotent per task id and index.
    async fn chord_part(
        &self,
        group_id: &str,
        part: crate::chord::ChordPart,
    ) -> Result<crate::chord::ChordJoin, BackendError> {
        let _ = (group_id, part);
        Err(BackendError::Unsupported("chords"))
    }

    /// The body of the chord `claim` names was sent (or marked failed): drops the join's
    /// data and remembers the chord as done, so that a late copy of a part does nothing.
    async fn chord_dispatched(&self, claim: &crate::chord::ChordClaim) -> Result<(), BackendError> {
        let _ = claim;
        Err(BackendError::Unsupported("chords"))
    }

    /// Deletes results older than the expiry; returns how many. Workers call it
    /// periodically; stores that expire by themselves (Redis TTL) return 0.
    async fn cleanup_expired(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_matches_celery_shape() {
        let captured = json!({"status": "SUCCESS", "result": 4, "traceback": null, "children": [],
            "date_done": "2026-11-24T15:27:26.005122+00:00",
            "task_id": "aaaaaaaa-0000-4000-8000-000000000001"});
        let meta: TaskMeta = serde_json::from_value(captured.clone()).unwrap();
        assert_eq!(meta.status, TaskState::Success);
        assert_eq!(serde_json::to_value(&meta).unwrap(), captured);
    }

    #[test]
    fn group_record_round_trips() {
        let group = GroupMeta {
            group_id: "g".into(),
            task_ids: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            group.to_value(),
            json!({"result": [["g", null], [[["a", null], null], [["b", null], null]]]})
        );
        assert_eq!(GroupMeta::from_value(&group.to_value()), Some(group));
    }
}
