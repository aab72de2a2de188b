//! Reading the history back: one task, its timeline and children, what to reload on start.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::QueryBuilder;

use super::{Store, StoreError, on_pool};
use crate::ingest::task::Task;
use crate::ingest::worker::Worker;

/// Most timeline entries returned for one task.
const TIMELINE_LIMIT: i64 = 1000;
/// Most children returned for one task.
const CHILDREN_LIMIT: i64 = 1000;

/// One event of a task's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// The task id.
    #[serde(skip)]
    pub uuid: String,
    /// The event type (`task-received`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its sender.
    pub hostname: String,
    /// When it was sent (corrected for the sender's offset).
    pub timestamp: f64,
    /// The event's own fields (without the standard ones and the uuid).
    pub fields: Map<String, Value>,
}

/// A queue's backlog at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueSample {
    /// The queue.
    #[serde(skip)]
    pub queue: String,
    /// When it was read.
    pub time: f64,
    /// Ready messages.
    pub messages: i64,
    /// Age of the oldest ready message, where known.
    #[serde(rename = "oldest_age_seconds")]
    pub oldest_age: Option<f64>,
    /// Messages waiting for their eta, where known.
    pub delayed: Option<i64>,
    /// Dead letters, where known.
    pub dead_letters: Option<i64>,
}

fn decode_tasks(rows: Vec<(String,)>) -> Vec<Task> {
    rows.into_iter()
        .filter_map(|(data,)| serde_json::from_str(&data).ok())
        .collect()
}

impl Store {
    /// The stored record of task `uuid`.
    pub async fn task(&self, uuid: &str) -> Result<Option<Task>, StoreError> {
        let row: Option<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new("SELECT data FROM monitor_tasks WHERE uuid = ")
                .push_bind(uuid.to_owned())
                .build_query_as()
                .fetch_optional(pool)
                .await?
        });
        Ok(match row {
            Some((data,)) => Some(serde_json::from_str(&data)?),
            None => None,
        })
    }

    /// The events of task `uuid`, oldest first.
    pub async fn timeline(&self, uuid: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(String, String, f64, String)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new(
                "SELECT type, hostname, timestamp, fields FROM monitor_events WHERE uuid = ",
            )
            .push_bind(uuid.to_owned())
            .push(" ORDER BY timestamp, id LIMIT ")
            .push_bind(TIMELINE_LIMIT)
            .build_query_as()
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(kind, hostname, timestamp, fields)| TimelineEntry {
                uuid: uuid.to_owned(),
                kind,
                hostname,
                timestamp,
                fields: serde_json::from_str(&fields).unwrap_or_default(),
            })
            .collect())
    }

    /// The ids of the tasks whose parent is `uuid`.
    pub async fn children(&self, uuid: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new("SELECT uuid FROM monitor_tasks WHERE parent_id = ")
                .push_bind(uuid.to_owned())
                .push(" ORDER BY timestamp LIMIT ")
                .push_bind(CHILDREN_LIMIT)
                .build_query_as()
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The `limit` tasks updated last, oldest first (to reload the memory on start).
    pub async fn recent_tasks(&self, limit: usize) -> Result<Vec<Task>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new(
                "SELECT data FROM (SELECT data, timestamp FROM monitor_tasks ORDER BY timestamp DESC LIMIT ",
            )
            .push_bind(limit)
            .push(") AS recent ORDER BY timestamp")
            .build_query_as()
            .fetch_all(pool)
            .await?
        });
        Ok(decode_tasks(rows))
    }

    /// Tasks updated since `since`, at most `limit` (the newest), to rebuild the overview.
    pub async fn tasks_since(&self, since: f64, limit: usize) -> Result<Vec<Task>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new("SELECT data FROM monitor_tasks WHERE timestamp >= ")
                .push_bind(since)
                .push(" ORDER BY timestamp DESC LIMIT ")
                .push_bind(limit)
                .build_query_as()
                .fetch_all(pool)
                .await?
        });
        Ok(decode_tasks(rows))
    }

    /// Every stored worker.
    pub async fn workers(&self) -> Result<Vec<Worker>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new("SELECT data FROM monitor_workers ORDER BY hostname LIMIT 5000")
                .build_query_as()
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(data,)| serde_json::from_str(&data).ok())
            .collect())
    }

    /// Every task name in the history (at most 10 000).
    pub async fn task_types(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new(
                "SELECT DISTINCT name FROM monitor_tasks WHERE name IS NOT NULL ORDER BY name LIMIT 10000",
            )
            .build_query_as()
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// The samples of every queue since `since`, oldest first, at most `limit` per call.
    pub async fn queue_samples(
        &self,
        since: f64,
        limit: usize,
    ) -> Result<Vec<QueueSample>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        type Row = (String, f64, i64, Option<f64>, Option<i64>, Option<i64>);
        let rows: Vec<Row> = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new(
                "SELECT queue, time, messages, oldest_age, delayed, dead_letters FROM monitor_queue_samples WHERE time >= ",
            )
            .push_bind(since)
            .push(" ORDER BY time LIMIT ")
            .push_bind(limit)
            .build_query_as()
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(queue, time, messages, oldest_age, delayed, dead_letters)| QueueSample {
                    queue,
                    time,
                    messages,
                    oldest_age,
                    delayed,
                    dead_letters,
                },
            )
            .collect())
    }

    /// Task rows stored.
    pub async fn task_count(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = on_pool!(self.backend(), |pool, Db| {
            QueryBuilder::<Db>::new("SELECT COUNT(*) FROM monitor_tasks")
                .build_query_as()
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }
}
