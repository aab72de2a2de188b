//! One task as the events tell it, folded the way Celery's `State` folds them
//! (`celery.events.state.Task.event`): a state machine by event type with Celery's
//! precedence, so that events arriving out of order never move a task backwards.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the monitor knows of one task: Celery's `Task.as_dict()` fields (the worker as its
/// hostname), plus `queue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task id.
    pub uuid: String,
    /// The task name (`tasks.add`).
    pub name: Option<String>,
    /// `PENDING`, `RECEIVED`, `STARTED`, `SUCCESS`, `FAILURE`, `RETRY`, `REVOKED`,
    /// `REJECTED` (or a custom state).
    pub state: String,
    /// When `task-received` was sent.
    pub received: Option<f64>,
    /// When `task-sent` was sent.
    pub sent: Option<f64>,
    /// When `task-started` was sent.
    pub started: Option<f64>,
    /// When `task-rejected` was sent.
    pub rejected: Option<f64>,
    /// When `task-succeeded` was sent.
    pub succeeded: Option<f64>,
    /// When `task-failed` was sent.
    pub failed: Option<f64>,
    /// When `task-retried` was sent.
    pub retried: Option<f64>,
    /// When `task-revoked` was sent.
    pub revoked: Option<f64>,
    /// Positional arguments as the sender rendered them (a repr).
    pub args: Option<String>,
    /// Keyword arguments as the sender rendered them (a repr).
    pub kwargs: Option<String>,
    /// The eta, as sent.
    pub eta: Option<String>,
    /// The expiry, as sent.
    pub expires: Option<String>,
    /// How many times it was retried.
    pub retries: Option<i64>,
    /// The worker's node name.
    pub worker: Option<String>,
    /// The result (a repr).
    pub result: Option<String>,
    /// The exception (a repr).
    pub exception: Option<String>,
    /// When the state last changed.
    pub timestamp: Option<f64>,
    /// Seconds the task ran.
    pub runtime: Option<f64>,
    /// The traceback of a failure or retry.
    pub traceback: Option<String>,
    /// The exchange it was sent to.
    pub exchange: Option<String>,
    /// The routing key it was sent with.
    pub routing_key: Option<String>,
    /// The queue it was sent to (from `task-sent`).
    pub queue: Option<String>,
    /// The Lamport clock of the last event.
    pub clock: u64,
    /// The producer's node name (from `task-sent`).
    pub client: Option<String>,
    /// The id of the first task of its workflow.
    pub root_id: Option<String>,
    /// The id of the task that sent it.
    pub parent_id: Option<String>,
    /// The ids of the tasks it sent (those seen).
    pub children: Vec<String>,
}

/// Celery's `states.PRECEDENCE`: the lower the index, the later the state in a task's life.
const PRECEDENCE: [&str; 8] = [
    "SUCCESS", "FAILURE", "", "REVOKED", "STARTED", "RECEIVED", "REJECTED", "RETRY",
];
/// The index of an unknown (custom) state: where `None` sits in Celery's list.
const UNKNOWN_PRECEDENCE: usize = 2;
/// The index of `PENDING`, the last of Celery's list.
const PENDING_PRECEDENCE: usize = 8;

/// The precedence of `state` as Celery computes it (a lower number wins).
pub fn precedence(state: &str) -> usize {
    if state == "PENDING" {
        return PENDING_PRECEDENCE;
    }
    PRECEDENCE
        .iter()
        .position(|known| *known == state)
        .unwrap_or(UNKNOWN_PRECEDENCE)
}

/// The state a task event type leads to (`sent` → `PENDING`, custom ones upper-cased).
pub fn state_of(subject: &str) -> String {
    match subject {
        "sent" => "PENDING".to_owned(),
        "received" => "RECEIVED".to_owned(),
        "started" => "STARTED".to_owned(),
        "failed" => "FAILURE".to_owned(),
        "retried" => "RETRY".to_owned(),
        "succeeded" => "SUCCESS".to_owned(),
        "revoked" => "REVOKED".to_owned(),
        "rejected" => "REJECTED".to_owned(),
        other => other.to_uppercase(),
    }
}

/// The states in which a task has finished.
pub fn is_ready(state: &str) -> bool {
    matches!(state, "SUCCESS" | "FAILURE" | "REVOKED")
}

/// The fields that an event arriving after a later state may still set: only those of
/// `task-received` (Celery's `merge_rules`).
const RECEIVED_MERGE: [&str; 8] = [
    "name",
    "args",
    "kwargs",
    "parent_id",
    "root_id",
    "retries",
    "eta",
    "expires",
];

impl Task {
    /// A task known only by id.
    pub fn new(uuid: impl Into<String>) -> Self {
        Self {
            uuid: uuid.into(),
            state: "PENDING".to_owned(),
            ..Self::default()
        }
    }

    /// Folds one task event (`subject` is its type without `task-`: `received`, …) sent by
    /// `hostname` at `timestamp` (already corrected for the sender's offset).
    pub fn apply(
        &mut self,
        subject: &str,
        hostname: &str,
        timestamp: f64,
        clock: u64,
        fields: &Map<String, Value>,
    ) {
        if subject == "sent" {
            self.client = Some(hostname.to_owned());
        } else {
            self.worker = Some(hostname.to_owned());
        }
        let state = state_of(subject);
        match subject {
            "sent" => self.sent = Some(timestamp),
            "received" => self.received = Some(timestamp),
            "started" => self.started = Some(timestamp),
            "failed" => self.failed = Some(timestamp),
            "retried" => self.retried = Some(timestamp),
            "succeeded" => self.succeeded = Some(timestamp),
            "revoked" => self.revoked = Some(timestamp),
            "rejected" => self.rejected = Some(timestamp),
            _ => {}
        }
        // Celery: an event whose state logically comes before the current one only merges
        // (RECEIVED: its listed fields; others: all fields but state and timestamp).
        let merging = state != "RETRY"
            && self.state != "RETRY"
            && precedence(&state) > precedence(&self.state);
        let keep = |field: &str| !merging || state != "RECEIVED" || RECEIVED_MERGE.contains(&field);
        for (field, value) in fields {
            if keep(field) {
                self.set(field, value);
            }
        }
        if !merging {
            self.state = state;
            self.timestamp = Some(timestamp);
            self.clock = clock;
        }
    }

    fn set(&mut self, field: &str, value: &Value) {
        let limit = if field == "traceback" {
            MAX_TRACEBACK
        } else {
            MAX_TEXT
        };
        let text = || match value {
            Value::Null => None,
            Value::String(text) => Some(truncate(text, limit)),
            other => Some(truncate(&other.to_string(), limit)),
        };
        match field {
            "name" => self.name = text(),
            "args" => self.args = text(),
            "kwargs" => self.kwargs = text(),
            "eta" => self.eta = text(),
            "expires" => self.expires = text(),
            "retries" => self.retries = value.as_i64().or(self.retries),
            "result" => self.result = text(),
            "exception" => self.exception = text(),
            "traceback" => self.traceback = text(),
            "runtime" => self.runtime = value.as_f64().or(self.runtime),
            "exchange" => self.exchange = text(),
            "routing_key" => self.routing_key = text(),
            "queue" => self.queue = text(),
            "root_id" => self.root_id = text(),
            "parent_id" => self.parent_id = text(),
            _ => {}
        }
    }

    /// Seconds between being sent (else received) and starting.
    pub fn wait(&self) -> Option<f64> {
        let started = self.started?;
        let since = self.sent.or(self.received)?;
        Some((started - since).max(0.0))
    }

    /// Flower's answer for this task (`Task.as_dict()`: every field, `root` and `parent` as
    /// ids).
    pub fn flower_json(&self) -> Value {
        let mut object = match serde_json::to_value(self) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        object.remove("queue");
        object.insert("root".into(), json_or_null(&self.root_id));
        object.insert("parent".into(), json_or_null(&self.parent_id));
        Value::Object(object)
    }

    /// The short form of the task lists and live updates.
    pub fn summary_json(&self) -> Value {
        serde_json::json!({
            "uuid": self.uuid,
            "name": self.name,
            "state": self.state,
            "worker": self.worker,
            "received": self.received,
            "sent": self.sent,
            "started": self.started,
            "timestamp": self.timestamp,
            "runtime": self.runtime,
            "wait": self.wait(),
            "args": self.args,
            "kwargs": self.kwargs,
            "result": self.result,
            "exception": self.exception,
            "retries": self.retries,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
        })
    }
}

/// Longest text kept of args, kwargs, result, exception (memory and history stay bounded
/// whatever a task sends; Celery's own reprs stop at 1024 characters).
pub const MAX_TEXT: usize = 4 * 1024;
/// Longest traceback kept.
pub const MAX_TRACEBACK: usize = 32 * 1024;

/// `text` cut to at most `limit` bytes (on a character boundary), marked with `…` when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn json_or_null(value: &Option<String>) -> Value {
    value
        .as_ref()
        .map_or(Value::Null, |text| Value::from(text.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn events_fold_in_order_and_out_of_order_as_celery() {
        let mut task = Task::new("t1");
        task.apply(
            "received",
            "celery@w",
            1.0,
            1,
            &fields(serde_json::json!({"name": "tasks.add", "args": "(1, 2)", "kwargs": "{}", "retries": 0})),
        );
        assert_eq!(task.state, "RECEIVED");
        task.apply("started", "celery@w", 2.0, 2, &Map::new());
        task.apply(
            "succeeded",
            "celery@w",
            3.0,
            3,
            &fields(serde_json::json!({"result": "3", "runtime": 0.5})),
        );
        assert_eq!(task.state, "SUCCESS");
        assert_eq!(task.timestamp, Some(3.0));
        assert_eq!(task.wait(), Some(1.0));
        // A late started does not move it back, but records its time.
        task.apply("started", "celery@w", 2.5, 4, &Map::new());
        assert_eq!((task.state.as_str(), task.started), ("SUCCESS", Some(2.5)));

        // Success first, received after: the state stays, the name comes in.
        let mut task = Task::new("t2");
        task.apply(
            "succeeded",
            "celery@w",
            3.0,
            1,
            &fields(serde_json::json!({"result": "1"})),
        );
        task.apply(
            "received",
            "celery@w",
            1.0,
            2,
            &fields(serde_json::json!({"name": "tasks.x", "hostname": "ignored"})),
        );
        assert_eq!(task.state, "SUCCESS");
        assert_eq!(task.name.as_deref(), Some("tasks.x"));
        assert_eq!(task.flower_json()["worker"], "celery@w");

        // Retries always move: RETRY then RECEIVED again.
        let mut task = Task::new("t3");
        task.apply(
            "retried",
            "celery@w",
            1.0,
            1,
            &fields(serde_json::json!({"exception": "E()"})),
        );
        task.apply(
            "received",
            "celery@w",
            2.0,
            2,
            &fields(serde_json::json!({"retries": 1})),
        );
        assert_eq!((task.state.as_str(), task.retries), ("RECEIVED", Some(1)));
    }
}
