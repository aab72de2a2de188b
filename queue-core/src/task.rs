//! The [`Task`] trait that `#[task]` implements, the options a task declares, and the
//! [`TaskContext`] a running task can reach.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::protocol::kombu;
use crate::task_error::TaskError;

/// A task the worker can run. Produced by `#[task]`; rarely written by hand.
pub trait Task: Send + Sync + 'static {
    /// The registered name, e.g. `tasks.add`.
    fn name(&self) -> &'static str;

    /// Declared defaults: queue, retries, time limits, ...
    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs the task with the arguments of a message. Arguments are matched positionally,
    /// then by name; a mismatch is [`TaskError::invalid_arguments`].
    fn run(
        &self,
        context: TaskContext,
        arguments: Arguments,
    ) -> BoxFuture<'static, Result<Value, TaskError>>;
}

/// A task's arguments, as received: positional and by name.
#[derive(Clone, Debug, Default)]
pub struct Arguments {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl Arguments {
    /// Takes parameter number `index` named `name`: positional if present, else by name,
    /// else JSON `null` (so that `Option` parameters may be left out).
    pub fn take<T: DeserializeOwned>(&mut self, index: usize, name: &str) -> Result<T, TaskError> {
        let value = match self.args.get_mut(index) {
            Some(value) => {
                if self.kwargs.contains_key(name) {
                    return Err(TaskError::invalid_arguments(format!(
                        "got multiple values for argument '{name}'"
                    )));
                }
                std::mem::take(value)
            }
            None => self.kwargs.remove(name).unwrap_or(Value::Null),
        };
        decode_argument(value, name)
    }

    /// Fails if arguments are left that no parameter took.
    pub fn finish(self, parameter_count: usize) -> Result<(), TaskError> {
        if self.args.len() > parameter_count {
            return Err(TaskError::invalid_arguments(format!(
                "takes {parameter_count} positional arguments but {} were given",
                self.args.len()
            )));
        }
        if let Some(name) = self.kwargs.keys().next() {
            return Err(TaskError::invalid_arguments(format!(
                "got an unexpected keyword argument '{name}'"
            )));
        }
        Ok(())
    }
}

fn decode_argument<T: DeserializeOwned>(value: Value, name: &str) -> Result<T, TaskError> {
    match serde_json::from_value::<T>(value.clone()) {
        Ok(decoded) => Ok(decoded),
        Err(first_error) => {
            let untagged = kombu::untag(value).map_err(|error| {
                TaskError::invalid_arguments(format!("argument '{name}': {error}"))
            })?;
            serde_json::from_value(untagged).map_err(|_| {
                TaskError::invalid_arguments(format!("argument '{name}': {first_error}"))
            })
        }
    }
}

/// Serializes a task's return value.
pub fn encode_output<T: serde::Serialize>(output: &T) -> Result<Value, TaskError> {
    serde_json::to_value(output).map_err(|error| {
        TaskError::new("EncodeError", format!("result does not serialize: {error}"))
    })
}

/// How a task retries: delay, exponential backoff, cap, jitter, and how many times.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Most retries; `None` retries without end. Celery's default is 3.
    pub max_retries: Option<u32>,
    /// Delay before a retry (the base of the backoff when `backoff` is on).
    pub delay: Duration,
    /// Exponential backoff: delay × 2^retries.
    pub backoff: bool,
    /// Cap of the backoff.
    pub backoff_max: Duration,
    /// Full jitter: a random delay between 0 and the computed one (avoids thundering herds).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: Some(3),
            delay: Duration::from_secs(180),
            backoff: false,
            backoff_max: Duration::from_secs(600),
            jitter: false,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retries + 1` (`retries` done so far). Saturates for
    /// any count and any durations (`retries` comes from the message): never overflows.
    pub fn delay_for(&self, retries: u32) -> Duration {
        let delay = if self.backoff {
            let factor = 2u32.saturating_pow(retries.min(31));
            self.delay.saturating_mul(factor).min(self.backoff_max)
        } else {
            self.delay
        };
        if self.jitter && !delay.is_zero() {
            use rand::Rng;
            return scale(delay, rand::rng().random_range(0.0..=1.0));
        }
        delay
    }
}

/// `delay × factor` for a factor in [0, 1], never more than `delay`. Not `Duration::mul_f64`:
/// that panics when the product rounds past `Duration::MAX` (as `Duration::MAX × 1.0` does).
fn scale(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor)
        .map_or(delay, |scaled| scaled.min(delay))
}

/// A rate limit: at most `count` task starts per `period`, e.g. `"10/s"`, `"100/m"`, `"5/h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate limit {text:?}: expected e.g. \"10/s\""))?;
        let period = match unit.trim() {
            "s" | "sec" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("invalid rate limit unit {other:?}: use s, m or h")),
        };
        if count == 0 {
            return Err(format!(
                "invalid rate limit {text:?}: count must be positive"
            ));
        }
        Ok(Self { count, period })
    }
}

/// What a task declares about itself (`#[task(...)]` options).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOptions {
    /// Default queue of the task (routes and explicit options can override).
    pub queue: Option<String>,
    /// Default priority 0–9.
    pub priority: Option<u8>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Ack after the task finished (default), not before it starts.
    pub acks_late: bool,
    /// Do not store results of this task.
    pub ignore_result: bool,
    /// Hard time limit: the task is stopped and fails.
    pub time_limit: Option<Duration>,
    /// Soft time limit: the task's cancellation signal fires.
    pub soft_time_limit: Option<Duration>,
    /// Most starts per period in one worker.
    pub rate_limit: Option<RateLimit>,
    /// Store STARTED when the task starts.
    pub track_started: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            queue: None,
            priority: None,
            retry: RetryPolicy::default(),
            acks_late: true,
            ignore_result: false,
            time_limit: None,
            soft_time_limit: None,
            rate_limit: None,
            track_started: false,
        }
    }
}

/// What a running task can reach: its id, retry count, a cancellation signal, and the
/// application's shared state (a DB pool, a client).
///
/// ```
/// # use queue_core::TaskContext;
/// async fn work(context: &TaskContext) {
///     if context.is_cancelled() {
///         return; // the soft time limit fired, or the worker is shutting down
///     }
///     let _pool: Option<&String> = context.state::<String>();
/// }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    id: String,
    name: String,
    retries: u32,
    queue: String,
    headers: crate::protocol::Headers,
    app: App,
    cancellation: CancellationToken,
    /// Sync bodies of this execution still running on their threads.
    sync_code: Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TaskContext")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("retries", &self.inner.retries)
            .field("queue", &self.inner.queue)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// The context of one execution.
    pub fn new(
        app: App,
        headers: crate::protocol::Headers,
        queue: impl Into<String>,
        cancellation: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                id: headers.id.clone(),
                name: headers.task.clone(),
                retries: headers.retries,
                queue: queue.into(),
                headers,
                app,
                cancellation,
                sync_code: Default::default(),
            }),
        }
    }

    /// Whether sync code of this execution still runs on its thread (after the worker
    /// stopped waiting for it at a hard time limit or a cold shutdown): its message must not
    /// be handed to another worker meanwhile.
    pub fn sync_code_running(&self) -> bool {
        self.inner
            .sync_code
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
    }

    /// Counts a sync body as running; used by the code `#[task]` generates with
    /// [`run_blocking`](crate::blocking::run_blocking).
    pub fn enter_sync_code(&self) -> crate::blocking::SyncCodeGuard {
        crate::blocking::SyncCodeGuard::enter(&self.inner.sync_code)
    }

    /// Task id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Task name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many times this task was retried before this run.
    pub fn retries(&self) -> u32 {
        self.inner.retries
    }

    /// The queue the message came from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// All message headers (root id, parent id, group, custom headers, ...).
    pub fn headers(&self) -> &crate::protocol::Headers {
        &self.inner.headers
    }

    /// The application (to send further tasks, read results).
    pub fn app(&self) -> &App {
        &self.inner.app
    }

    /// Shared state registered with [`crate::AppBuilder::state`], by type.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.app.state::<T>()
    }

    /// Fires when the task should stop: soft time limit, or the worker shutting down.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancellation
    }

    /// Whether the task was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancellation.is_cancelled()
    }

    /// Completes when the task is asked to stop.
    pub async fn cancelled(&self) {
        self.inner.cancellation.cancelled().await
    }

    /// A retry request (return it as the task's error): Celery's `self.retry()`.
    pub fn retry(&self) -> TaskError {
        TaskError::retry()
    }
}

/// The tasks an application knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: HashMap<String, RegisteredTask>,
}

/// A task in the registry, with its options read once.
#[derive(Clone)]
pub struct RegisteredTask {
    /// The task.
    pub task: Arc<dyn Task>,
    /// Its declared options.
    pub options: Arc<TaskOptions>,
}

impl Registry {
    /// Adds a task (a later task of the same name replaces an earlier one).
    pub fn insert(&mut self, task: Arc<dyn Task>) {
        let options = Arc::new(task.options());
        self.tasks
            .insert(task.name().to_owned(), RegisteredTask { task, options });
    }

    /// The task named `name`.
    pub fn get(&self, name: &str) -> Option<&RegisteredTask> {
        self.tasks.get(name)
    }

    /// Names of all tasks, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_match_by_position_then_name() {
        let mut arguments = Arguments {
            args: vec![json!(1)],
            kwargs: json!({"y": 2}).as_object().unwrap().clone(),
        };
        assert_eq!(arguments.take::<i64>(0, "x").unwrap(), 1);
        assert_eq!(arguments.take::<i64>(1, "y").unwrap(), 2);
        assert_eq!(arguments.take::<Option<i64>>(2, "z").unwrap(), None);
        arguments.finish(3).unwrap();
    }

    #[test]
    fn argument_errors_are_clear() {
        let mut arguments = Arguments {
            args: vec![json!("x")],
            kwargs: Map::new(),
        };
        let error = arguments.take::<i64>(0, "x").unwrap_err();
        assert!(error.message().contains("argument 'x'"), "{error}");
        let extra = Arguments {
            args: vec![json!(1), json!(2)],
            kwargs: Map::new(),
        };
        assert!(
            extra
                .finish(1)
                .unwrap_err()
                .message()
                .contains("positional")
        );
    }

    #[test]
    fn kombu_envelopes_decode_into_typed_parameters() {
        let mut arguments = Arguments {
            args: vec![
                json!({"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}),
            ],
            kwargs: Map::new(),
        };
        let id: uuid::Uuid = arguments.take(0, "id").unwrap();
        assert_eq!(id.to_string(), "12345678-1234-5678-1234-567812345678");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            delay: Duration::from_secs(1),
            backoff: true,
            backoff_max: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay_for(0), Duration::from_secs(1));
        assert_eq!(policy.delay_for(3), Duration::from_secs(8));
        assert_eq!(policy.delay_for(10), Duration::from_secs(10));
        let jittered = RetryPolicy {
            jitter: true,
            ..policy
        };
        for _ in 0..100 {
            assert!(jittered.delay_for(3) <= Duration::from_secs(8));
        }
    }

    #[test]
    fn huge_counts_and_durations_saturate() {
        let policy = RetryPolicy {
            delay: Duration::MAX,
            backoff: true,
            backoff_max: Duration::MAX,
            jitter: true,
            ..RetryPolicy::default()
        };
        for retries in [0, 31, 32, 1_000, u32::MAX] {
            assert!(policy.delay_for(retries) <= Duration::MAX);
        }
        let capped = RetryPolicy {
            delay: Duration::from_secs(u64::MAX / 2),
            backoff_max: Duration::from_secs(600),
            jitter: false,
            ..policy
        };
        assert_eq!(capped.delay_for(u32::MAX), Duration::from_secs(600));
        // The jitter's extremes: the full delay (the random factor may be exactly 1.0) and 0.
        assert_eq!(scale(Duration::MAX, 1.0), Duration::MAX);
        assert_eq!(scale(Duration::MAX, 0.0), Duration::ZERO);
        assert_eq!(scale(Duration::from_secs(8), 0.5), Duration::from_secs(4));
    }

    #[test]
    fn rate_limits_parse() {
        assert_eq!(
            "10/m".parse::<RateLimit>().unwrap(),
            RateLimit {
                count: 10,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            "5".parse::<RateLimit>().unwrap().period,
            Duration::from_secs(1)
        );
        assert!("0/s".parse::<RateLimit>().is_err());
        assert!("x/s".parse::<RateLimit>().is_err());
    }
}
