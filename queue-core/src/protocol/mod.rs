//! Celery task message protocol v2: headers, properties and the `[args, kwargs, embed]` body.
//!
//! A [`Message`] is what travels through a broker. The body stays as the exact bytes that were
//! received, so re-publishing a message (a retry, a dead letter, a restore) never re-encodes
//! what another producer wrote. [`TaskBody`] is the decoded body.

pub mod envelope;
pub mod kombu;
pub mod repr;
pub mod time;

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::signature::Signature;

/// The content type of JSON bodies, Celery's default serializer.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Why a message or a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not valid JSON, or not of the expected shape.
    #[error("invalid {what}: {source}")]
    Json {
        /// What was being decoded.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The message uses a content type this build cannot decode.
    #[error("unsupported content type {0:?} (this build accepts application/json)")]
    UnsupportedContentType(String),
    /// The message uses a compression this build cannot undo.
    #[error("unsupported compression {0:?}")]
    UnsupportedCompression(String),
    /// A base64 body did not decode.
    #[error("invalid base64 body: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Something required is missing or malformed.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// One task message in Celery protocol v2.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Protocol v2 headers: task name, id, eta, retries, ...
    pub headers: Headers,
    /// Transport properties: correlation id, priority, delivery mode, ...
    pub properties: Properties,
    /// MIME type of `body`, `application/json` by default.
    pub content_type: String,
    /// Character encoding of `body`, `utf-8`.
    pub content_encoding: String,
    /// The serialized body, exactly as produced by the sender.
    pub body: Vec<u8>,
}

impl Message {
    /// A message for `body` with the given headers, JSON-encoded.
    pub fn new(headers: Headers, properties: Properties, body: &TaskBody) -> Self {
        Self {
            headers,
            properties,
            content_type: JSON_CONTENT_TYPE.to_owned(),
            content_encoding: "utf-8".to_owned(),
            body: body.to_json(),
        }
    }

    /// The task id (header `id`).
    pub fn id(&self) -> &str {
        &self.headers.id
    }

    /// The task name (header `task`).
    pub fn task_name(&self) -> &str {
        &self.headers.task
    }

    /// The priority property (0–9 in this library; RabbitMQ: higher first).
    pub fn priority(&self) -> u8 {
        self.properties.priority.unwrap_or(0)
    }

    /// Decodes the body according to the content type.
    pub fn decode_body(&self) -> Result<TaskBody, ProtocolError> {
        if let Some(compression) = self.headers.extra.get("compression") {
            return Err(ProtocolError::UnsupportedCompression(
                compression.as_str().unwrap_or("?").to_owned(),
            ));
        }
        if self.content_type != JSON_CONTENT_TYPE {
            return Err(ProtocolError::UnsupportedContentType(
                self.content_type.clone(),
            ));
        }
        TaskBody::from_json(&self.body)
    }
}

/// Protocol v2 headers (wire spec §2.2). Every known key is written, `null` when unset, as
/// Python does; unknown keys (custom headers, trace context) are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Headers {
    /// Language of the producer; informational.
    #[serde(default)]
    pub lang: Option<String>,
    /// Task name, the dispatch key.
    pub task: String,
    /// Task id.
    pub id: String,
    /// Alternative name for logs and events.
    #[serde(default)]
    pub shadow: Option<String>,
    /// Do not run before this time.
    #[serde(
        default,
        serialize_with = "time::serialize_optional",
        deserialize_with = "deserialize_eta"
    )]
    pub eta: Option<DateTime<FixedOffset>>,
    /// Do not run after this time: the task is REVOKED instead.
    #[serde(
        default,
        serialize_with = "time::serialize_optional",
        deserialize_with = "deserialize_expires"
    )]
    pub expires: Option<DateTime<FixedOffset>>,
    /// Group id when part of a group.
    #[serde(default)]
    pub group: Option<String>,
    /// Position inside the group.
    #[serde(default)]
    pub group_index: Option<u64>,
    /// How many times this task was retried.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub retries: u32,
    /// `[hard, soft]` time limits in seconds.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timelimit: TimeLimit,
    /// Id of the first task of the workflow.
    #[serde(default)]
    pub root_id: Option<String>,
    /// Id of the task that sent this one.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Python-style repr of the args, for logs and monitors.
    #[serde(default)]
    pub argsrepr: Option<String>,
    /// Python-style repr of the kwargs.
    #[serde(default)]
    pub kwargsrepr: Option<String>,
    /// Node name of the producer.
    #[serde(default)]
    pub origin: Option<String>,
    /// Whether the result is stored; `None` means the task's own setting.
    #[serde(default)]
    pub ignore_result: Option<bool>,
    /// How often the task was replaced.
    #[serde(default)]
    pub replaced_task_nesting: Option<u64>,
    /// Names of stamps (stamping API).
    #[serde(default)]
    pub stamped_headers: Option<Vec<String>>,
    /// Stamps.
    #[serde(default)]
    pub stamps: Option<Map<String, Value>>,
    /// Any other header, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn deserialize_eta<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    time::deserialize_field(deserializer, "eta")
}

fn deserialize_expires<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    time::deserialize_field(deserializer, "expires")
}

/// `retries`: a count, `null` read as 0 (as Python's worker does).
fn null_as_zero<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value
            .as_u64()
            .and_then(|count| u32::try_from(count).ok())
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`retries`: expected a count from 0 to {}, not {}",
                    u32::MAX,
                    shown(&value)
                ))
            }),
    }
}

/// A received value for an error message, cut short: a hostile message may be megabytes.
pub(crate) fn shown(value: &Value) -> String {
    const LONGEST: usize = 64;
    let mut text = value.to_string();
    if text.len() > LONGEST {
        let mut cut = LONGEST;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// `null` reads as the default (Python's worker takes a `null` header as unset).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Headers {
    /// Headers for a new task with the given name and id, other fields at Python's defaults.
    pub fn new(task: impl Into<String>, id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            lang: Some("rs".to_owned()),
            task: task.into(),
            root_id: Some(id.clone()),
            id,
            shadow: None,
            eta: None,
            expires: None,
            group: None,
            group_index: None,
            retries: 0,
            timelimit: TimeLimit::default(),
            parent_id: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: None,
            replaced_task_nesting: Some(0),
            stamped_headers: None,
            stamps: Some(Map::new()),
            extra: Map::new(),
        }
    }
}

/// The `timelimit` header: `[hard, soft]` in seconds, either possibly `null`.
///
/// Kept as JSON numbers so that `30` stays `30` on re-encode. Decoding refuses a limit that is
/// not a non-negative number of seconds (a message with one is undecodable, not a task that
/// runs with no limit or panics); `0`, like `null`, means no limit, as for Python's worker
/// (`time_limit or task.time_limit`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeLimit(pub Option<Number>, pub Option<Number>);

impl TimeLimit {
    /// From durations (hard, soft).
    pub fn new(hard: Option<Duration>, soft: Option<Duration>) -> Self {
        Self(hard.and_then(seconds_number), soft.and_then(seconds_number))
    }

    /// The hard limit: the task is stopped and fails. `None` when unset, zero or not a
    /// non-negative number; very large limits saturate at [`Duration::MAX`].
    pub fn hard(&self) -> Option<Duration> {
        self.0.as_ref().and_then(number_duration)
    }

    /// The soft limit: the task is asked to stop. Read as [`TimeLimit::hard`].
    pub fn soft(&self) -> Option<Duration> {
        self.1.as_ref().and_then(number_duration)
    }
}

impl<'de> Deserialize<'de> for TimeLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let limit = |item: &Value| match item {
            Value::Null => Some(None),
            Value::Number(number) => number
                .as_f64()
                .and_then(time::seconds_duration)
                .map(|_| Some(number.clone())),
            _ => None,
        };
        match value.as_array().map(Vec::as_slice) {
            Some([hard, soft]) => match (limit(hard), limit(soft)) {
                (Some(hard), Some(soft)) => Ok(Self(hard, soft)),
                _ => Err(serde::de::Error::custom(format!(
                    "`timelimit`: {} is not [hard, soft] with each null or a non-negative \
                     number of seconds",
                    shown(&value)
                ))),
            },
            _ => Err(serde::de::Error::custom(format!(
                "`timelimit`: expected [hard, soft], not {}",
                shown(&value)
            ))),
        }
    }
}

fn seconds_number(duration: Duration) -> Option<Number> {
    if duration.subsec_nanos() == 0 {
        Some(Number::from(duration.as_secs()))
    } else {
        Number::from_f64(duration.as_secs_f64())
    }
}

fn number_duration(number: &Number) -> Option<Duration> {
    time::seconds_duration(number.as_f64()?).filter(|limit| !limit.is_zero())
}

/// Message properties (wire spec §2.3). Transport-specific properties (kombu's
/// `body_encoding`, `delivery_tag`, `delivery_info` on Redis) live in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// The task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Reply queue of the producer (used by the `rpc://` backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// 2 = persistent, 1 = transient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_mode: Option<u8>,
    /// Priority 0–9 (higher first, as on RabbitMQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Per-message TTL in milliseconds, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Other properties, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The decoded body: `[args, kwargs, embed]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskBody {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain and chord; `None` when the sender wrote `null`.
    pub embed: Option<Embed>,
}

impl TaskBody {
    /// A body with these arguments and an empty embed.
    pub fn new(args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Self {
            args,
            kwargs,
            embed: Some(Embed::default()),
        }
    }

    /// JSON bytes of `[args, kwargs, embed]`.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = (&self.args, &self.kwargs, &self.embed);
        serde_json::to_vec(&wire).expect("JSON values always serialize")
    }

    /// Decodes `[args, kwargs, embed]`; a body of another shape is an error, never a panic.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (args, kwargs, embed): (Vec<Value>, Option<Map<String, Value>>, Option<Embed>) =
            serde_json::from_slice(bytes).map_err(|source| ProtocolError::Json {
                what: "task body (expected [args, kwargs, embed])",
                source,
            })?;
        Ok(Self {
            args,
            kwargs: kwargs.unwrap_or_default(),
            embed,
        })
    }
}

/// Canvas carried in the body: what to run after this task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// Applied with the result on success (`link`).
    #[serde(default)]
    pub callbacks: Option<Vec<Signature>>,
    /// Applied with the task id on failure (`link_error`).
    #[serde(default)]
    pub errbacks: Option<Vec<Signature>>,
    /// The rest of a chain, next task last.
    #[serde(default)]
    pub chain: Option<Vec<Signature>>,
    /// The chord body this task is a header part of.
    #[serde(default)]
    pub chord: Option<Signature>,
}
