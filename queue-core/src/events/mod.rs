//! Celery's events (wire spec §6): what workers and producers tell monitors such as Flower,
//! `celery events` and Celery's own `State`. Protocol only: the [`Event`] value, its JSON,
//! the routing key it travels under and the Lamport clock that orders events. Sending and
//! receiving them is a broker's job; deciding when to send them is
//! the worker's.
//!
//! An event is one flat JSON object: the standard fields (`type`, `hostname`, `timestamp`,
//! `utcoffset`, `pid`, `clock`) and the fields of its type. A body is one event or, for
//! batches (`task.multi`), an array of them. An [`EncodedEvent`] is one already written
//! as its JSON, what a busy worker makes of its task events (see [`EventSource::encode`]).
//!
//! ```
//! use queue_core::events::{Event, EventSource, TaskEvent};
//!
//! let source = EventSource::new("celery@host");
//! let event = source.task(TaskEvent::Started { uuid: "id-1".into() });
//! assert_eq!(event.kind, "task-started");
//! assert_eq!(event.routing_key(), "task.started");
//! let body = Event::encode(&[event]);
//! let decoded = Event::decode(&body).unwrap().remove(0).unwrap();
//! assert_eq!((decoded.kind.as_str(), decoded.uuid()), ("task-started", Some("id-1")));
//! ```

mod clock;
mod encode;
mod kinds;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use clock::LamportClock;
pub use encode::EncodedEvent;
pub(crate) use kinds::unix_now;
pub use kinds::{EventSource, SOFTWARE_IDENTITY, TaskEvent, WorkerEventKind, WorkerStatus};

/// The exchange events are published on (`event_exchange`): topic on AMQP, fanout on Redis.
pub const EVENT_EXCHANGE: &str = "celeryev";

/// The routing key of a batch of task events (a JSON array body).
pub const BATCH_ROUTING_KEY: &str = "task.multi";

/// The most task events in one batch (Celery flushes its buffer at 24).
pub const MAX_BATCH: usize = 24;

/// Why an event body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The body is not JSON, or neither an object nor an array.
    #[error("event body is not a JSON object or array: {0}")]
    Body(String),
    /// One event lacks a required field or has one of the wrong type.
    #[error("malformed event: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// One event as Celery sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event type, e.g. `task-succeeded` or `worker-heartbeat`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The sender: a worker's node name (`celery@host`) or a client's (`gen<pid>@host`).
    pub hostname: String,
    /// When it was sent: seconds since the epoch (`time.time()`).
    pub timestamp: f64,
    /// Hours west of UTC of the sender's clock (New York `5.0`); receivers correct by it.
    #[serde(default)]
    pub utcoffset: f64,
    /// The sender's process id.
    #[serde(default)]
    pub pid: u64,
    /// The sender's Lamport clock when it sent the event.
    #[serde(default)]
    pub clock: u64,
    /// The fields of the event's type (`uuid`, `runtime`, `freq`, …).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Event {
    /// The routing key this event is published with: its type with `-` as `.`
    /// (`task-succeeded` → `task.succeeded`).
    pub fn routing_key(&self) -> String {
        routing_key(&self.kind)
    }

    /// Whether this is a task event (those are batched; worker events are sent alone).
    pub fn is_task_event(&self) -> bool {
        self.kind.starts_with("task-")
    }

    /// The task id of a task event.
    pub fn uuid(&self) -> Option<&str> {
        self.fields.get("uuid").and_then(Value::as_str)
    }

    /// A field of the event's type.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// The body of `events`: one object for a single event, an array for a batch (which
    /// goes out under [`BATCH_ROUTING_KEY`]). A non-finite timestamp or offset is sent as
    /// 0 (JSON has no NaN or infinity).
    pub fn encode(events: &[Event]) -> Vec<u8> {
        let encoded: Vec<EncodedEvent> = events.iter().map(Event::encoded).collect();
        EncodedEvent::body(&encoded)
    }

    /// The events of a body: an object is one event, an array a batch. An element that is
    /// not a valid event is an `Err` in its place, so the others are still read.
    pub fn decode(body: &[u8]) -> Result<Vec<Result<Event, EventError>>, EventError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|error| EventError::Body(error.to_string()))?;
        let parse = |value: Value| serde_json::from_value(value).map_err(EventError::Malformed);
        match value {
            Value::Object(_) => Ok(vec![parse(value)]),
            Value::Array(items) => Ok(items.into_iter().map(parse).collect()),
            other => Err(EventError::Body(format!("found {}", kind_of(&other)))),
        }
    }
}

/// Sends `events` as one body on the event exchange (topic on AMQP, as Celery declares
/// `celeryev`; the Redis broker sends topic and fanout alike), with the `hostname` header
/// of their sender. Transient: nothing is retried.
pub async fn publish(
    broadcast: &dyn crate::broadcast::Broadcast,
    hostname: &str,
    events: &[EncodedEvent],
) -> Result<(), crate::broker::BrokerError> {
    if events.is_empty() {
        return Ok(());
    }
    publish_body(
        broadcast,
        hostname,
        EncodedEvent::body_routing_key(events),
        EncodedEvent::body(events),
    )
    .await
}

/// Sends a body made with [`EncodedEvent::write_body`] (routing key `routing_key`) as
/// [`publish`] does.
pub async fn publish_body(
    broadcast: &dyn crate::broadcast::Broadcast,
    hostname: &str,
    routing_key: String,
    body: Vec<u8>,
) -> Result<(), crate::broker::BrokerError> {
    let message =
        crate::broadcast::BroadcastMessage::new(routing_key, body).header("hostname", hostname);
    broadcast
        .send(
            EVENT_EXCHANGE,
            crate::broadcast::ExchangeKind::Topic,
            message,
        )
        .await
}

/// The routing key of an event type: `-` becomes `.`.
pub fn routing_key(kind: &str) -> String {
    kind.replace('-', ".")
}

/// The routing key of a body holding `events`: the event's own, or [`BATCH_ROUTING_KEY`].
pub fn body_routing_key(events: &[Event]) -> String {
    match events {
        [single] => single.routing_key(),
        _ => BATCH_ROUTING_KEY.to_owned(),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
