//! Events serialised straight to their JSON: an [`EncodedEvent`] is written in one pass
//! from borrowed fields (no `serde_json::Map` of owned keys and values, no copy of the
//! message's headers), and a batch's body is its events' objects joined into an array.
//! The JSON is the same as [`Event`]'s, key for key and in the same order.

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
