//! [`Signature`]: a task call to send — name, arguments and options — in Celery's signature
//! dict format (wire spec §8.1), and [`TypedSignature`], its typed form that `#[task]` builds.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::app::App;
use crate::error::Error;
use crate::result::AsyncResult;

/// A task call: name, arguments and options. Serializes as Celery's signature dict
/// `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}`.
///
/// ```
/// use queue_core::Signature;
/// use std::time::Duration;
/// let call = Signature::new("tasks.add")
///     .arg(2).arg(3)
///     .queue("math")
///     .priority(9)
///     .countdown(Duration::from_secs(5));
/// assert_eq!(call.args, vec![serde_json::json!(2), serde_json::json!(3)]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Task name.
    #[serde(rename = "task")]
    pub name: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// How to send it.
    #[serde(default)]
    pub options: SignatureOptions,
    /// `null` for a plain task; `chain`, `group`, `chord` for canvas types.
    #[serde(default)]
    pub subtask_type: Option<String>,
    /// Whether a parent's result is *not* prepended to the args.
    #[serde(default)]
    pub immutable: bool,
}

/// Options of a [`Signature`]: Celery's `apply_async` options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignatureOptions {
    /// Id to use instead of a new UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Queue to send to; overrides routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Routing key (AMQP); the queue name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Exchange (AMQP); the default exchange by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Priority 0 (lowest) to 9 (highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Seconds from sending before the task may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown: Option<f64>,
    /// Time before which the task must not run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::protocol::time::serialize_optional",
        deserialize_with = "eta_option"
    )]
    pub eta: Option<DateTime<FixedOffset>>,
    /// When the task expires (is REVOKED instead of run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expires>,
    /// Retry count to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Do not store the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// Hard time limit, seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "time_limit_option"
    )]
    pub time_limit: Option<f64>,
    /// Soft time limit, seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "soft_time_limit_option"
    )]
    pub soft_time_limit: Option<f64>,
    /// Tasks to apply with the result on success.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub link: Vec<Signature>,
    /// Tasks to apply with the task id on failure.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub link_error: Vec<Signature>,
    /// Extra message headers.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// Display name for logs and monitors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Id of the task that sends this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Id of the first task of the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// Group this task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Position in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_index: Option<u64>,
    /// The chord body this task is a header part of (Celery's frozen `chord` option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord: Option<Box<Signature>>,
    /// Options this library does not interpret, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn eta_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    crate::protocol::time::deserialize_field(deserializer, "eta")
}

fn time_limit_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    limit_seconds(deserializer, "time_limit")
}

fn soft_time_limit_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<f64>, D::Error> {
    limit_seconds(deserializer, "soft_time_limit")
}

/// A time limit option: `null` or a non-negative number of seconds; anything else makes the
/// signature (and so the message body carrying it) undecodable, with the option named.
fn limit_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
    option: &str,
) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(deserializer)? {
        Some(seconds) if crate::protocol::time::seconds_duration(seconds).is_none() => {
            Err(serde::de::Error::custom(format!(
                "`{option}`: {seconds} is not a non-negative number of seconds"
            )))
        }
        limit => Ok(limit),
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Signature>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Signature>),
        One(Box<Signature>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(many) => many,
        OneOrMany::One(one) => vec![*one],
        OneOrMany::Null(()) => Vec::new(),
    })
}

/// Expiry of a task: an absolute time, or seconds after sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expires {
    /// Expires at this time.
    At(DateTime<FixedOffset>),
    /// Expires this long after it is sent.
    After(Duration),
}

impl Expires {
    /// The absolute expiry time for a message sent at `now`; a far-future expiry saturates at
    /// [`far_future`](crate::protocol::time::far_future).
    pub fn resolve(&self, now: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        match self {
            Expires::At(at) => *at,
            Expires::After(after) => crate::protocol::time::add(now, *after),
        }
    }
}

impl Serialize for Expires {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Expires::At(at) => {
                serializer.serialize_str(&crate::protocol::time::format_timestamp(at))
            }
            Expires::After(after) => serializer.serialize_f64(after.as_secs_f64()),
        }
    }
}

impl<'de> Deserialize<'de> for Expires {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            // A negative number expires at once, as in Celery (which sends `now + expires`);
            // one too large for a `Duration` saturates. JSON has no NaN or infinity.
            Value::Number(number) => number
                .as_f64()
                .map(|seconds| seconds.max(0.0))
                .and_then(crate::protocol::time::seconds_duration)
                .map(Expires::After)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("`expires`: invalid seconds {number}"))
                }),
            Value::String(text) => crate::protocol::time::parse_timestamp(&text)
                .map(Expires::At)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`expires`: {text:?} is not an ISO-8601 timestamp between years 1 and \
                         9999"
                    ))
                }),
            other => Err(serde::de::Error::custom(format!(
                "`expires`: expected seconds or an ISO-8601 timestamp, not {}",
                crate::protocol::shown(&other)
            ))),
        }
    }
}

impl Signature {
    /// A call of the task `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Appends a positional argument.
    pub fn arg(mut self, value: impl Serialize) -> Self {
        self.args.push(to_value(value));
        self
    }

    /// Replaces the positional arguments.
    pub fn args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Sets a keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        self.kwargs.insert(name.into(), to_value(value));
        self
    }

    /// Replaces the keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// Sends to this queue, whatever the routes say.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    /// Priority from 0 (lowest) to 9 (highest); larger values are clamped to 9.
    pub fn priority(mut self, priority: u8) -> Self {
        self.options.priority = Some(priority.min(crate::MAX_PRIORITY));
        self
    }

    /// Runs no earlier than `delay` after sending.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.options.countdown = Some(delay.as_secs_f64());
        self
    }

    /// Runs no earlier than `when`.
    pub fn eta<Tz: TimeZone>(mut self, when: DateTime<Tz>) -> Self {
        self.options.eta = Some(when.fixed_offset());
        self
    }

    /// Expires (is REVOKED instead of run) `after` sending.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.options.expires = Some(Expires::After(after));
        self
    }

    /// Expires at `when`.
    pub fn expires_at<Tz: TimeZone>(mut self, when: DateTime<Tz>) -> Self {
        self.options.expires = Some(Expires::At(when.fixed_offset()));
        self
    }

    /// Uses this id instead of a new UUID.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.options.task_id = Some(id.into());
        self
    }

    /// Does not store the result.
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.options.ignore_result = Some(ignore);
        self
    }

    /// Hard time limit: the task is stopped and fails after `limit`.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.options.time_limit = Some(limit.as_secs_f64());
        self
    }

    /// Soft time limit: the task's cancellation signal fires after `limit`.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.options.soft_time_limit = Some(limit.as_secs_f64());
        self
    }

    /// Applies `callback` with this task's result when it succeeds.
    pub fn link(mut self, callback: impl Into<Signature>) -> Self {
        self.options.link.push(callback.into());
        self
    }

    /// Applies `errback` with this task's id when it fails.
    pub fn link_error(mut self, errback: impl Into<Signature>) -> Self {
        self.options.link_error.push(errback.into());
        self
    }

    /// Adds a custom message header.
    pub fn header(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        self.options.headers.insert(name.into(), to_value(value));
        self
    }

    /// Marks the signature immutable: a parent's result is not prepended to its args.
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// Sends the task through `app` and returns a handle on its result.
    pub async fn send(self, app: &App) -> Result<AsyncResult, Error> {
        app.send(self).await
    }

    /// Sends with the options already set (Celery's `delay`).
    pub async fn delay(self, app: &App) -> Result<AsyncResult, Error> {
        app.send(self).await
    }
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|error| Value::String(error.to_string()))
}

/// A [`Signature`] whose result type is known: what `add::new(1, 2)` returns.
///
/// All builder methods of [`Signature`] are available; [`TypedSignature::send`] returns an
/// [`AsyncResult<T>`] whose `get` yields a `T`.
pub struct TypedSignature<T> {
    signature: Signature,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedSignature<T> {
    fn clone(&self) -> Self {
        Self::from_signature(self.signature.clone())
    }
}

impl<T> std::fmt::Debug for TypedSignature<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.signature.fmt(formatter)
    }
}

impl<T> From<TypedSignature<T>> for Signature {
    fn from(typed: TypedSignature<T>) -> Signature {
        typed.signature
    }
}

macro_rules! forward {
    ($( $(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) $(<$gen:ident: $bound:path>)?; )*) => {
        $(
            $(#[$doc])*
            pub fn $name$(<$gen: $bound>)?(self, $($arg: $ty),*) -> Self {
                Self::from_signature(self.signature.$name($($arg),*))
            }
        )*
    };
}

impl<T> TypedSignature<T> {
    /// Wraps an untyped signature.
    pub fn from_signature(signature: Signature) -> Self {
        Self {
            signature,
            output: PhantomData,
        }
    }

    /// The untyped signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Mutable access to the untyped signature.
    pub fn signature_mut(&mut self) -> &mut Signature {
        &mut self.signature
    }

    forward! {
        /// Sends to this queue, whatever the routes say.
        queue(queue: impl Into<String>);
        /// Priority from 0 (lowest) to 9 (highest).
        priority(priority: u8);
        /// Runs no earlier than `delay` after sending.
        countdown(delay: Duration);
        /// Runs no earlier than `when`.
        eta(when: DateTime<Tz>) <Tz: TimeZone>;
        /// Expires `after` sending.
        expires_in(after: Duration);
        /// Expires at `when`.
        expires_at(when: DateTime<Tz>) <Tz: TimeZone>;
        /// Uses this id instead of a new UUID.
        task_id(id: impl Into<String>);
        /// Does not store the result.
        ignore_result(ignore: bool);
        /// Hard time limit.
        time_limit(limit: Duration);
        /// Soft time limit.
        soft_time_limit(limit: Duration);
        /// Applies `callback` with the result on success.
        link(callback: impl Into<Signature>);
        /// Applies `errback` with the task id on failure.
        link_error(errback: impl Into<Signature>);
        /// Adds a custom message header.
        header(name: impl Into<String>, value: impl Serialize);
        /// Marks the signature immutable.
        immutable();
    }
}

impl<T: DeserializeOwned> TypedSignature<T> {
    /// Sends the task and returns a typed handle on its result.
    pub async fn send(self, app: &App) -> Result<AsyncResult<T>, Error> {
        Ok(app.send(self.signature).await?.typed())
    }

    /// Sends with the options already set (Celery's `delay`).
    pub async fn delay(self, app: &App) -> Result<AsyncResult<T>, Error> {
        self.send(app).await
    }

    /// Celery's name for [`TypedSignature::send`].
    pub async fn apply_async(self, app: &App) -> Result<AsyncResult<T>, Error> {
        self.send(app).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_celery_signature_dicts() {
        let captured = json!({"task": "tasks.mul", "args": [10], "kwargs": {}, "options": {},
                              "subtask_type": null, "immutable": false});
        let signature: Signature = serde_json::from_value(captured.clone()).unwrap();
        assert_eq!(signature.name, "tasks.mul");
        assert_eq!(serde_json::to_value(&signature).unwrap(), captured);

        let frozen = json!({"task": "tasks.add", "args": [4], "kwargs": {},
            "options": {"task_id": "28e014b6", "reply_to": "89ff223e", "chord_size": 2},
            "subtask_type": null, "immutable": false});
        let signature: Signature = serde_json::from_value(frozen.clone()).unwrap();
        assert_eq!(signature.options.task_id.as_deref(), Some("28e014b6"));
        assert_eq!(serde_json::to_value(&signature).unwrap(), frozen);
    }

    #[test]
    fn link_may_be_one_signature_or_a_list() {
        let one = json!({"task": "a", "options": {"link": {"task": "b"}}});
        let signature: Signature = serde_json::from_value(one).unwrap();
        assert_eq!(signature.options.link[0].name, "b");
        let many = json!({"task": "a", "options": {"link": [{"task": "b"}, {"task": "c"}]}});
        let signature: Signature = serde_json::from_value(many).unwrap();
        assert_eq!(signature.options.link.len(), 2);
    }

    #[test]
    fn priority_is_clamped() {
        assert_eq!(Signature::new("a").priority(200).options.priority, Some(9));
    }
}
