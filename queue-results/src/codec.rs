//! [`TaskMeta`] and [`GroupMeta`] to and from the columns of Celery's tables, the same for
//! both databases: JSON bytes in the BLOB/bytea columns (what Celery 5.7 writes with the
//! JSON serializer), UTC timestamps with microseconds (what Python's datetime holds).

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Timelike};
use queue_core::{GroupMeta, TaskMeta, TaskState};
use serde_json::{Map, Value};

use crate::error::SqlError;

/// Width of Celery's VARCHAR(155) columns (task id, name, worker, queue, ...).
pub(crate) const ID_WIDTH: usize = 155;
/// Width of Celery's `status` column.
const STATUS_WIDTH: usize = 50;

/// The columns of one `celery_taskmeta` row (besides `id`, `stamps` and `expires_at`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskRow {
    pub task_id: String,
    pub status: Option<String>,
    pub result: Option<Vec<u8>>,
    pub date_done: Option<NaiveDateTime>,
    pub traceback: Option<String>,
    pub children: Option<Vec<u8>>,
    pub name: Option<String>,
    pub args: Option<Vec<u8>>,
    pub kwargs: Option<Vec<u8>>,
    pub worker: Option<String>,
    pub retries: Option<i32>,
    pub queue: Option<String>,
    pub group_id: Option<String>,
    pub parent_id: Option<String>,
}

impl TaskRow {
    /// The row for `meta`, or why it cannot be stored.
    pub fn encode(meta: &TaskMeta) -> Result<Self, SqlError> {
        let what = || format!("the result of task {:?}", meta.task_id);
        let invalid = |reason: String| SqlError::Invalid {
            what: what(),
            reason,
        };
        check_text("task id", &meta.task_id, ID_WIDTH).map_err(invalid)?;
        check_text("status", meta.status.as_str(), STATUS_WIDTH).map_err(invalid)?;
        for (label, value) in [
            ("name", &meta.name),
            ("worker", &meta.worker),
            ("queue", &meta.queue),
            ("group id", &meta.group_id),
            ("parent id", &meta.parent_id),
        ] {
            if let Some(value) = value {
                check_text(label, value, ID_WIDTH).map_err(invalid)?;
            }
        }
        let retries = meta
            .retries
            .map(i32::try_from)
            .transpose()
            .map_err(|_| invalid(format!("retries {:?} exceed the column", meta.retries)))?;
        Ok(Self {
            task_id: meta.task_id.clone(),
            status: Some(meta.status.as_str().to_owned()),
            result: Some(json_bytes(&meta.result)),
            date_done: meta.date_done.as_ref().map(to_naive_utc),
            // PostgreSQL text cannot hold NUL; a traceback is prose, so the character is
            // replaced rather than losing the whole result over it.
            traceback: meta
                .traceback
                .as_ref()
                .map(|text| text.replace('\0', "\u{fffd}")),
            children: meta.children.as_ref().map(json_bytes),
            name: meta.name.clone(),
            args: meta.args.as_ref().map(json_bytes),
            kwargs: meta.kwargs.as_ref().map(json_bytes),
            worker: meta.worker.clone(),
            retries,
            queue: meta.queue.clone(),
            group_id: meta.group_id.clone(),
            parent_id: meta.parent_id.clone(),
        })
    }

    /// The meta stored in this row, or why it cannot be read.
    pub fn decode(self) -> Result<TaskMeta, SqlError> {
        let what = format!("the stored result of task {:?}", self.task_id);
        let corrupt = |reason: String| SqlError::Corrupt {
            what: what.clone(),
            reason,
        };
        let result = match &self.result {
            Some(bytes) => parse_json("result", bytes).map_err(corrupt)?,
            None => Value::Null,
        };
        let children = parse_array("children", self.children.as_deref()).map_err(corrupt)?;
        let args = parse_array("args", self.args.as_deref()).map_err(corrupt)?;
        let kwargs = match self.kwargs.as_deref() {
            Some(bytes) => match parse_json("kwargs", bytes).map_err(corrupt)? {
                Value::Object(map) => Some(map),
                other => return Err(corrupt(format!("kwargs is not an object: {other}"))),
            },
            None => None,
        };
        let retries = self
            .retries
            .map(u32::try_from)
            .transpose()
            .map_err(|_| corrupt(format!("negative retries {:?}", self.retries)))?;
        // A row Celery created before storing anything has status NULL (its default is
        // PENDING).
        let status = self.status.as_deref().map_or(TaskState::Pending, |status| {
            status.parse().unwrap_or(TaskState::Pending)
        });
        Ok(TaskMeta {
            status,
            result,
            traceback: self.traceback,
            children,
            date_done: self.date_done.map(|naive| naive.and_utc().fixed_offset()),
            task_id: self.task_id,
            group_id: self.group_id,
            parent_id: self.parent_id,
            name: self.name,
            args,
            kwargs,
            worker: self.worker,
            retries,
            queue: self.queue,
        })
    }
}

/// Rows for a batch, as if each meta were stored in order: per task id, the last state wins
/// unless a SUCCESS came first (a SUCCESS is never overwritten). Metas that cannot be stored
/// are returned apart, so that they do not cost the rest of the batch.
pub(crate) fn encode_batch(metas: &[TaskMeta]) -> (Vec<TaskRow>, Vec<SqlError>) {
    let mut rows: Vec<TaskRow> = Vec::with_capacity(metas.len());
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for meta in metas {
        let row = match TaskRow::encode(meta) {
            Ok(row) => row,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        match position.get(&row.task_id) {
            Some(&index) if rows[index].status.as_deref() == Some("SUCCESS") => {}
            Some(&index) => rows[index] = row,
            None => {
                position.insert(row.task_id.clone(), rows.len());
                rows.push(row);
            }
        }
    }
    (rows, errors)
}

/// Checks a group can be stored; returns the bytes of its `result` column.
pub(crate) fn encode_group(group: &GroupMeta) -> Result<Vec<u8>, SqlError> {
    let invalid = |reason: String| SqlError::Invalid {
        what: format!("group {:?}", group.group_id),
        reason,
    };
    check_text("group id", &group.group_id, ID_WIDTH).map_err(invalid)?;
    // Celery stores the GroupResult tuple itself; the `{"result": ...}` wrapper is Redis'.
    let value = group.to_value();
    Ok(json_bytes(&value["result"]))
}

/// The group stored as `bytes` under `group_id`.
pub(crate) fn decode_group(group_id: &str, bytes: Option<&[u8]>) -> Result<GroupMeta, SqlError> {
    let corrupt = |reason: String| SqlError::Corrupt {
        what: format!("the stored group {group_id:?}"),
        reason,
    };
    let tuple = parse_json("result", bytes.unwrap_or(b"null")).map_err(corrupt)?;
    let wrapped = Value::Object(Map::from_iter([("result".to_owned(), tuple)]));
    GroupMeta::from_value(&wrapped).ok_or_else(|| corrupt("not a GroupResult tuple".to_owned()))
}

/// UTC without offset, truncated to microseconds (the precision of both databases' columns
/// and of Python's datetime).
pub(crate) fn to_naive_utc(time: &DateTime<FixedOffset>) -> NaiveDateTime {
    let naive = time.naive_utc();
    naive
        .with_nanosecond(naive.nanosecond() / 1_000 * 1_000)
        .unwrap_or(naive)
}

fn check_text(label: &str, value: &str, width: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("the {label} contains a NUL character"));
    }
    let length = value.chars().count();
    if length > width {
        return Err(format!(
            "the {label} is {length} characters long; the column holds {width}"
        ));
    }
    Ok(())
}

fn json_bytes(value: &(impl serde::Serialize + ?Sized)) -> Vec<u8> {
    // Values are serde_json's own types (no maps with non-string keys, no NaN), whose
    // serialization cannot fail; should it ever, storing `null` beats panicking.
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

fn parse_json(column: &str, bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|error| {
        // 0x80 starts a pickle: Celery <= 5.6 stored results with SQLAlchemy's PickleType.
        let hint = if bytes.first() == Some(&0x80) {
            " (it looks like a pickle, as Celery <= 5.6 wrote; only JSON is read)"
        } else {
            ""
        };
        format!("column {column} is not JSON: {error}{hint}")
    })
}

/// A list column: SQL NULL or JSON `null` read as `None`.
fn parse_array(column: &str, bytes: Option<&[u8]>) -> Result<Option<Vec<Value>>, String> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    match parse_json(column, bytes)? {
        Value::Array(items) => Ok(Some(items)),
        Value::Null => Ok(None),
        other => Err(format!("column {column} is not a list: {other}")),
    }
}

/// Writing rows, the one thing the two backends do differently when storing results; the
/// store logic on top of it ([`store_one`], [`store_batch`]) is written once.
pub(crate) trait RowWriter: Sync {
    /// Upserts `rows` in one statement; `what` describes the write for errors.
    fn upsert_rows(
        &self,
        rows: &[TaskRow],
        what: &(dyn Fn() -> String + Sync),
    ) -> impl std::future::Future<Output = Result<(), SqlError>> + Send;
}

/// `ResultBackend::store` of both backends.
pub(crate) async fn store_one(
    writer: &impl RowWriter,
    meta: &TaskMeta,
) -> Result<(), queue_core::BackendError> {
    let row = TaskRow::encode(meta)?;
    let what = || format!("storing {} of task {:?}", meta.status, meta.task_id);
    writer
        .upsert_rows(std::slice::from_ref(&row), &what)
        .await?;
    Ok(())
}

/// `ResultBackend::store_many` of both backends: rows that encode are stored in chunks of
/// [`MAX_BATCH`](crate::sql::MAX_BATCH), each one statement, so a failure loses no other
/// chunk; the first row that did not encode is reported after the others are stored.
pub(crate) async fn store_batch(
    writer: &impl RowWriter,
    metas: &[TaskMeta],
) -> Result<(), queue_core::BackendError> {
    let (rows, invalid) = encode_batch(metas);
    for chunk in rows.chunks(crate::sql::MAX_BATCH) {
        let what = || format!("storing {} results", chunk.len());
        writer.upsert_rows(chunk, &what).await?;
    }
    match invalid.into_iter().next() {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_hold_celery_bytes_and_round_trip() {
        let mut meta = TaskMeta::success("t1", json!({"sum": 4}));
        meta.args = Some(vec![json!(2), json!(2)]);
        meta.kwargs = Some(Map::new());
        meta.retries = Some(0);
        meta.children = None;
        let row = TaskRow::encode(&meta).unwrap();
        assert_eq!(row.result.as_deref(), Some(&br#"{"sum":4}"#[..]));
        assert_eq!(row.args.as_deref(), Some(&b"[2,2]"[..]));
        assert_eq!(row.kwargs.as_deref(), Some(&b"{}"[..]));
        assert_eq!(row.children, None);
        let mut expected = meta.clone();
        expected.date_done = meta
            .date_done
            .as_ref()
            .map(|time| to_naive_utc(time).and_utc().fixed_offset());
        assert_eq!(row.decode().unwrap(), expected);
    }

    #[test]
    fn rows_celery_wrote_are_read() {
        let row = TaskRow {
            task_id: "dddd".into(),
            status: Some("FAILURE".into()),
            result: Some(
                br#"{"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}"#
                    .to_vec(),
            ),
            date_done: None,
            traceback: None,
            children: None,
            name: Some("tasks.add".into()),
            args: Some(b"[2, 2]".to_vec()),
            kwargs: Some(b"{}".to_vec()),
            worker: Some("celery@h".into()),
            retries: Some(0),
            queue: Some("celery".into()),
            group_id: None,
            parent_id: None,
        };
        let meta = row.decode().unwrap();
        assert_eq!(meta.error_value().unwrap().exc_type(), "ValueError");
        assert_eq!(meta.args, Some(vec![json!(2), json!(2)]));
    }

    #[test]
    fn unreadable_rows_say_why() {
        let mut row = TaskRow::encode(&TaskMeta::success("p", json!(1))).unwrap();
        row.result = Some(vec![0x80, 0x04, 0x95]);
        let error = row.decode().unwrap_err().to_string();
        assert!(
            error.contains("\"p\"") && error.contains("pickle"),
            "{error}"
        );
    }

    #[test]
    fn oversized_or_nul_fields_are_refused_but_tracebacks_kept() {
        let long = TaskMeta::success("x".repeat(156), json!(1));
        let error = TaskRow::encode(&long).unwrap_err().to_string();
        assert!(error.contains("156 characters"), "{error}");
        let mut named = TaskMeta::success("ok", json!(1));
        named.name = Some("a\0b".into());
        assert!(TaskRow::encode(&named).is_err());
        let mut traced = TaskMeta::success("ok", json!(1));
        traced.traceback = Some("line\0".into());
        assert_eq!(
            TaskRow::encode(&traced).unwrap().traceback.as_deref(),
            Some("line\u{fffd}")
        );
    }

    #[test]
    fn batches_act_like_stores_in_order() {
        let started = TaskMeta::new("a", TaskState::Started, json!(null));
        let success = TaskMeta::success("a", json!(1));
        let failure = TaskMeta::new("a", TaskState::Failure, json!(null));
        let other = TaskMeta::success("b", json!(2));
        let invalid = TaskMeta::success("c".repeat(200), json!(3));
        let (rows, errors) = encode_batch(&[started, success, failure, invalid, other]);
        assert_eq!(errors.len(), 1);
        let states: Vec<_> = rows
            .iter()
            .map(|row| (row.task_id.as_str(), row.status.as_deref()))
            .collect();
        assert_eq!(states, [("a", Some("SUCCESS")), ("b", Some("SUCCESS"))]);
    }

    #[test]
    fn groups_are_stored_as_the_celery_tuple() {
        let group = GroupMeta {
            group_id: "g".into(),
            task_ids: vec!["a".into()],
        };
        let bytes = encode_group(&group).unwrap();
        assert_eq!(bytes, br#"[["g",null],[[["a",null],null]]]"#);
        assert_eq!(decode_group("g", Some(&bytes)).unwrap(), group);
        assert!(decode_group("g", Some(b"{}")).is_err());
    }
}
