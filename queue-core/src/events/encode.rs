//! Events serialised straight to their JSON: an [`EncodedEvent`] is written in one pass
//! from borrowed fields (no `serde_json::Map` of owned keys and values, no copy of the
//! message's headers), and a batch's body is its events' objects joined into an array.
//! The JSON is the same as [`Event`]'s, key for key and in the same order.
//!
//! Task events are on a busy worker's path (three per task), so theirs is written by hand:
//! the keys and the parts that are the same for every event of a source ([`Preamble`]) as
//! they are, only the values through `serde_json` (escaped strings, its number format).

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{BATCH_ROUTING_KEY, Event, TaskEvent, routing_key};
use crate::broker::Publish;
use crate::protocol::Headers;
use crate::protocol::time::format_timestamp;

/// What one event's JSON object usually takes (a `task-received` is about 350 bytes).
const TYPICAL_SIZE: usize = 384;

/// One event as JSON, ready to go into a body: made by
/// [`EventSource::encode`](super::EventSource::encode) and its siblings, or from an
/// [`Event`] with [`Event::encoded`].
///
/// ```
/// use queue_core::events::{EncodedEvent, Event, EventSource, TaskEvent};
///
/// let source = EventSource::new("celery@host");
/// let started = source.encode(&TaskEvent::Started { uuid: "id-1".into() });
/// assert_eq!(started.routing_key(), "task.started");
/// let body = EncodedEvent::body(&[started]);
/// let decoded = Event::decode(&body).unwrap().remove(0).unwrap();
/// assert_eq!((decoded.kind.as_str(), decoded.uuid()), ("task-started", Some("id-1")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    kind: Cow<'static, str>,
    json: Vec<u8>,
}

impl EncodedEvent {
    /// The event type, e.g. `task-succeeded`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Whether this is a task event (those are batched; worker events are sent alone).
    pub fn is_task_event(&self) -> bool {
        self.kind.starts_with("task-")
    }

    /// The routing key it is published with alone (`task-succeeded` → `task.succeeded`).
    pub fn routing_key(&self) -> String {
        routing_key(&self.kind)
    }

    /// The event's JSON object.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The body of `events`: the object of a single event, the array of a batch (which
    /// goes out under [`BATCH_ROUTING_KEY`]).
    pub fn body(events: &[EncodedEvent]) -> Vec<u8> {
        let mut body = Vec::new();
        Self::write_body(events, &mut body);
        body
    }

    /// Writes the body of `events` (see [`body`](Self::body)) at the end of `body`.
    pub fn write_body(events: &[EncodedEvent], body: &mut Vec<u8>) {
        if let [single] = events {
            body.extend_from_slice(&single.json);
            return;
        }
        let size: usize = events.iter().map(|event| event.json.len() + 1).sum();
        body.reserve(size + 1);
        body.push(b'[');
        for (index, event) in events.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&event.json);
        }
        body.push(b']');
    }

    /// The routing key of a body holding `events`: the event's own, or
    /// [`BATCH_ROUTING_KEY`].
    pub fn body_routing_key(events: &[EncodedEvent]) -> String {
        match events {
            [single] => single.routing_key(),
            _ => BATCH_ROUTING_KEY.to_owned(),
        }
    }
}

impl Event {
    /// This event as JSON (a decoded event forwarded, a worker event).
    pub fn encoded(&self) -> EncodedEvent {
        let stamp = Stamp {
            kind: &self.kind,
            hostname: &self.hostname,
            timestamp: self.timestamp,
            utcoffset: self.utcoffset,
            pid: self.pid,
            clock: self.clock,
        };
        encode(Cow::Owned(self.kind.clone()), &stamp, &self.fields)
    }
}

/// The standard fields every event starts with.
pub(super) struct Stamp<'a> {
    pub(super) kind: &'a str,
    pub(super) hostname: &'a str,
    pub(super) timestamp: f64,
    pub(super) utcoffset: f64,
    pub(super) pid: u64,
    pub(super) clock: u64,
}

/// An event on the wire: the standard fields, then those of its type.
#[derive(Serialize)]
struct Wire<'a, F: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    hostname: &'a str,
    #[serde(serialize_with = "finite")]
    timestamp: f64,
    #[serde(serialize_with = "finite")]
    utcoffset: f64,
    pid: u64,
    clock: u64,
    #[serde(flatten)]
    fields: F,
}

/// `stamp` and `fields` as one JSON object.
pub(super) fn encode(
    kind: Cow<'static, str>,
    stamp: &Stamp<'_>,
    fields: &impl Serialize,
) -> EncodedEvent {
    let wire = Wire {
        kind: stamp.kind,
        hostname: stamp.hostname,
        timestamp: stamp.timestamp,
        utcoffset: stamp.utcoffset,
        pid: stamp.pid,
        clock: stamp.clock,
        fields,
    };
    let mut json = Vec::with_capacity(TYPICAL_SIZE);
    // Cannot fail: string keys, numbers made finite, no map with non-string keys.
    if serde_json::to_writer(&mut json, &wire).is_err() {
        json.clear();
        json.extend_from_slice(b"{}");
    }
    EncodedEvent { kind, json }
}

/// JSON has no NaN or infinity: a non-finite number is sent as 0 rather than making the
/// whole body unserializable.
fn finite<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(if value.is_finite() { *value } else { 0.0 })
}

/// What every event of one source has in the same place: the JSON between the type and
/// the timestamp (the hostname) and between the timestamp and the clock (offset, pid).
#[derive(Debug)]
pub(super) struct Preamble {
    after_kind: String,
    after_timestamp: String,
}

impl Preamble {
    pub(super) fn new(hostname: &str, utcoffset: f64, pid: u64) -> Self {
        let mut after_kind = JsonWriter::default();
        after_kind.raw("\",\"hostname\":");
        after_kind.value(&hostname);
        after_kind.raw(",\"timestamp\":");
        let mut after_timestamp = JsonWriter::default();
        after_timestamp.raw(",\"utcoffset\":");
        after_timestamp.number(utcoffset);
        after_timestamp.raw(",\"pid\":");
        after_timestamp.value(&pid);
        after_timestamp.raw(",\"clock\":");
        // Only JSON text was written: valid UTF-8.
        let text = |writer: JsonWriter| String::from_utf8(writer.json).unwrap_or_default();
        Self {
            after_kind: text(after_kind),
            after_timestamp: text(after_timestamp),
        }
    }

    /// Task event `kind` stamped `timestamp` and `clock`, with `fields`.
    pub(super) fn encode_task(
        &self,
        kind: &'static str,
        timestamp: f64,
        clock: u64,
        fields: &TaskFields<'_>,
    ) -> EncodedEvent {
        let mut writer = JsonWriter {
            json: Vec::with_capacity(TYPICAL_SIZE),
        };
        // Event types are plain ASCII names: nothing to escape.
        writer.raw("{\"type\":\"");
        writer.raw(kind);
        writer.raw(&self.after_kind);
        writer.number(timestamp);
        writer.raw(&self.after_timestamp);
        writer.value(&clock);
        fields.write(&mut writer);
        writer.raw("}");
        EncodedEvent {
            kind: Cow::Borrowed(kind),
            json: writer.json,
        }
    }
}

/// JSON written piece by piece.
#[derive(Default)]
struct JsonWriter {
    json: Vec<u8>,
}

/// `,"<name>":`, made at compile time.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

impl JsonWriter {
    fn raw(&mut self, text: &str) {
        self.json.extend_from_slice(text.as_bytes());
    }

    /// A string, number or boolean as `serde_json` writes it.
    fn value(&mut self, value: &(impl Serialize + ?Sized)) {
        // Writing a scalar into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.json, value);
    }

    /// A number, non-finite ones as 0 (see [`finite`]).
    fn number(&mut self, value: f64) {
        self.value(&if value.is_finite() { value } else { 0.0 });
    }

    fn text(&mut self, key: &str, value: &str) {
        self.raw(key);
        self.value(value);
    }

    fn optional_text(&mut self, key: &str, value: Option<&str>) {
        self.raw(key);
        match value {
            Some(value) => self.value(value),
            None => self.raw("null"),
        }
    }

    fn time(&mut self, key: &str, value: Option<&DateTime<FixedOffset>>) {
        self.optional_text(key, value.map(format_timestamp).as_deref());
    }
}

/// The fields of a task event, borrowed from what it tells of (§6.4), in Celery's order.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum TaskFields<'a> {
    /// `task-sent`.
    Sent {
        #[serde(flatten)]
        message: MessageFields<'a>,
        queue: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
    },
    /// `task-received`.
    Received(MessageFields<'a>),
    /// `task-started`.
    Started { uuid: &'a str },
    /// `task-succeeded`.
    Succeeded {
        uuid: &'a str,
        result: &'a str,
        #[serde(serialize_with = "finite")]
        runtime: f64,
    },
    /// `task-failed` and `task-retried`.
    Failed {
        uuid: &'a str,
        exception: &'a str,
        traceback: &'a str,
    },
    /// `task-revoked`.
    Revoked {
        uuid: &'a str,
        terminated: bool,
        signum: Option<i32>,
        expired: bool,
    },
    /// `task-rejected`.
    Rejected { uuid: &'a str, requeue: bool },
}

impl<'a> TaskFields<'a> {
    /// The event type and fields of `event`.
    pub(super) fn of(event: &'a TaskEvent) -> (&'static str, Self) {
        match event {
            TaskEvent::Sent {
                headers,
                queue,
                exchange,
                routing_key,
            } => (
                "task-sent",
                Self::Sent {
                    message: MessageFields::of(headers),
                    queue,
                    exchange,
                    routing_key,
                },
            ),
            TaskEvent::Received(headers) => ("task-received", Self::received(headers)),
            TaskEvent::Started { uuid } => ("task-started", Self::Started { uuid }),
            TaskEvent::Succeeded {
                uuid,
                result,
                runtime,
            } => (
                "task-succeeded",
                Self::Succeeded {
                    uuid,
                    result,
                    runtime: *runtime,
                },
            ),
            TaskEvent::Failed {
                uuid,
                exception,
                traceback,
            } => (
                "task-failed",
                Self::Failed {
                    uuid,
                    exception,
                    traceback,
                },
            ),
            TaskEvent::Retried {
                uuid,
                exception,
                traceback,
            } => (
                "task-retried",
                Self::Failed {
                    uuid,
                    exception,
                    traceback,
                },
            ),
            TaskEvent::Revoked {
                uuid,
                terminated,
                signum,
                expired,
            } => (
                "task-revoked",
                Self::Revoked {
                    uuid,
                    terminated: *terminated,
                    signum: *signum,
                    expired: *expired,
                },
            ),
            TaskEvent::Rejected { uuid, requeue } => (
                "task-rejected",
                Self::Rejected {
                    uuid,
                    requeue: *requeue,
                },
            ),
        }
    }

    /// `task-received` for a message with `headers`.
    pub(super) fn received(headers: &'a Headers) -> Self {
        Self::Received(MessageFields::of(headers))
    }

    /// `task-sent` for `publish`.
    pub(super) fn sent(publish: &'a Publish) -> Self {
        Self::Sent {
            message: MessageFields::of(&publish.message.headers),
            queue: &publish.queue,
            exchange: publish.exchange.as_deref().unwrap_or_default(),
            routing_key: publish.routing_key.as_deref().unwrap_or(&publish.queue),
        }
    }

    /// Writes the fields as `Serialize` would, after the standard ones.
    fn write(&self, writer: &mut JsonWriter) {
        match self {
            Self::Sent {
                message,
                queue,
                exchange,
                routing_key,
            } => {
                message.write(writer);
                writer.text(key!("queue"), queue);
                writer.text(key!("exchange"), exchange);
                writer.text(key!("routing_key"), routing_key);
            }
            Self::Received(message) => message.write(writer),
            Self::Started { uuid } => writer.text(key!("uuid"), uuid),
            Self::Succeeded {
                uuid,
                result,
                runtime,
            } => {
                writer.text(key!("uuid"), uuid);
                writer.text(key!("result"), result);
                writer.raw(key!("runtime"));
                writer.number(*runtime);
            }
            Self::Failed {
                uuid,
                exception,
                traceback,
            } => {
                writer.text(key!("uuid"), uuid);
                writer.text(key!("exception"), exception);
                writer.text(key!("traceback"), traceback);
            }
            Self::Revoked {
                uuid,
                terminated,
                signum,
                expired,
            } => {
                writer.text(key!("uuid"), uuid);
                writer.raw(key!("terminated"));
                writer.value(terminated);
                writer.raw(key!("signum"));
                writer.value(signum);
                writer.raw(key!("expired"));
                writer.value(expired);
            }
            Self::Rejected { uuid, requeue } => {
                writer.text(key!("uuid"), uuid);
                writer.raw(key!("requeue"));
                writer.value(requeue);
            }
        }
    }

    /// The fields as a JSON map (for an [`Event`]).
    pub(super) fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        }
    }
}

/// The message fields `task-sent` and `task-received` share.
#[derive(Serialize)]
pub(super) struct MessageFields<'a> {
    uuid: &'a str,
    name: &'a str,
    args: Option<&'a str>,
    kwargs: Option<&'a str>,
    root_id: Option<&'a str>,
    parent_id: Option<&'a str>,
    retries: u32,
    #[serde(serialize_with = "timestamp")]
    eta: Option<&'a DateTime<FixedOffset>>,
    #[serde(serialize_with = "timestamp")]
    expires: Option<&'a DateTime<FixedOffset>>,
}

impl<'a> MessageFields<'a> {
    fn of(headers: &'a Headers) -> Self {
        Self {
            uuid: &headers.id,
            name: &headers.task,
            args: headers.argsrepr.as_deref(),
            kwargs: headers.kwargsrepr.as_deref(),
            root_id: headers.root_id.as_deref(),
            parent_id: headers.parent_id.as_deref(),
            retries: headers.retries,
            eta: headers.eta.as_ref(),
            expires: headers.expires.as_ref(),
        }
    }
}

impl MessageFields<'_> {
    fn write(&self, writer: &mut JsonWriter) {
        writer.text(key!("uuid"), self.uuid);
        writer.text(key!("name"), self.name);
        writer.optional_text(key!("args"), self.args);
        writer.optional_text(key!("kwargs"), self.kwargs);
        writer.optional_text(key!("root_id"), self.root_id);
        writer.optional_text(key!("parent_id"), self.parent_id);
        writer.raw(key!("retries"));
        writer.value(&self.retries);
        writer.time(key!("eta"), self.eta);
        writer.time(key!("expires"), self.expires);
    }
}

/// An ISO 8601 time as Celery's events give `eta` and `expires`, or `null`.
fn timestamp<S: Serializer>(
    value: &Option<&DateTime<FixedOffset>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(at) => serializer.serialize_str(&format_timestamp(at)),
        None => serializer.serialize_none(),
    }
}
