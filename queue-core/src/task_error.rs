//! [`TaskError`]: how a task fails, retries or is stopped, and how that is stored so that
//! Python's `AsyncResult.get()` raises an exception of the right type (wire spec §5.2).

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// What kind of outcome a [`TaskError`] is.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The task failed; it is retried only if its `retry_on` says so.
    Failed,
    /// The task asks to be retried, optionally after `countdown` (else its retry policy).
    Retry {
        /// Delay before the retry; `None` uses the task's backoff policy.
        countdown: Option<Duration>,
    },
    /// The arguments did not match the task's parameters; never retried.
    InvalidArguments,
    /// The hard time limit was reached and the task was stopped.
    TimeLimitExceeded,
    /// The task panicked.
    Panicked,
}

/// The error a task returns: a kind, a Python-compatible exception type and message, and an
/// optional traceback.
///
/// Any `std::error::Error` converts into it, so `?` works inside tasks; the exception type
/// stored is the error's type name. For a specific Python exception type (interop), use
/// [`TaskError::new`]:
///
/// ```
/// use queue_core::TaskError;
/// let error = TaskError::new("ValueError", "bad amount");
/// assert_eq!(error.exc_type(), "ValueError");
/// let retry = TaskError::retry().countdown(std::time::Duration::from_secs(5));
/// assert!(retry.is_retry());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TaskError {
    kind: TaskErrorKind,
    exc_type: String,
    exc_module: String,
    message: String,
    traceback: Option<String>,
}

impl TaskError {
    /// A failure with the given exception type name (e.g. `ValueError`) and message.
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: TaskErrorKind::Failed,
            exc_type: exc_type.into(),
            exc_module: "builtins".to_owned(),
            message: message.into(),
            traceback: None,
        }
    }

    /// A failure of type `Exception` with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new("Exception", message)
    }

    /// A request to retry the task (Celery's `self.retry()`).
    pub fn retry() -> Self {
        Self {
            kind: TaskErrorKind::Retry { countdown: None },
            exc_type: "Retry".to_owned(),
            exc_module: "celery.exceptions".to_owned(),
            message: "Retry in policy delay".to_owned(),
            traceback: None,
        }
    }

    /// Arguments that do not match the task's parameters.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self {
            kind: TaskErrorKind::InvalidArguments,
            ..Self::new("TypeError", message)
        }
    }

    /// The hard time limit was exceeded.
    pub fn time_limit_exceeded(limit: Duration) -> Self {
        Self {
            kind: TaskErrorKind::TimeLimitExceeded,
            exc_module: "celery.exceptions".to_owned(),
            ..Self::new(
                "TimeLimitExceeded",
                format!("hard time limit ({:.3}s) exceeded", limit.as_secs_f64()),
            )
        }
    }

    /// The task panicked with this message.
    pub fn panicked(message: impl Into<String>) -> Self {
        Self {
            kind: TaskErrorKind::Panicked,
            exc_module: "rust".to_owned(),
            ..Self::new("Panic", message)
        }
    }

    /// Sets the delay before a retry (turns the error into a retry request).
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.kind = TaskErrorKind::Retry {
            countdown: Some(countdown),
        };
        self
    }

    /// Turns this error into a retry request with the task's backoff policy, keeping the
    /// error as the cause that is stored with the RETRY state.
    pub fn into_retry(mut self) -> Self {
        if !self.is_retry() {
            self.kind = TaskErrorKind::Retry { countdown: None };
        }
        self
    }

    /// Sets the Python module of the exception type (default `builtins`).
    pub fn module(mut self, module: impl Into<String>) -> Self {
        self.exc_module = module.into();
        self
    }

    /// Attaches a traceback (or backtrace) text.
    pub fn traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }

    /// The kind of outcome.
    pub fn kind(&self) -> &TaskErrorKind {
        &self.kind
    }

    /// Whether this is a retry request.
    pub fn is_retry(&self) -> bool {
        matches!(self.kind, TaskErrorKind::Retry { .. })
    }

    /// The exception type name.
    pub fn exc_type(&self) -> &str {
        &self.exc_type
    }

    /// The Python module of the exception type.
    pub fn exc_module(&self) -> &str {
        &self.exc_module
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The traceback text, if any.
    pub fn traceback_text(&self) -> Option<&str> {
        self.traceback.as_deref()
    }

    /// Celery's exception dict: `{"exc_type", "exc_message": [message], "exc_module"}`.
    pub fn to_exception_value(&self) -> Value {
        json!({
            "exc_type": self.exc_type,
            "exc_message": [self.message],
            "exc_module": self.exc_module,
        })
    }

    /// Reads Celery's exception dict (as stored by Python or by us).
    pub fn from_exception_value(value: &Value, traceback: Option<String>) -> Self {
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let exc_type = map
            .get("exc_type")
            .and_then(Value::as_str)
            .unwrap_or("Exception");
        let message = match map.get("exc_message") {
            Some(Value::Array(parts)) if parts.len() == 1 => text_of(&parts[0]),
            Some(Value::Array(parts)) => parts.iter().map(text_of).collect::<Vec<_>>().join(", "),
            Some(other) => text_of(other),
            None if map.is_empty() => text_of(value),
            None => String::new(),
        };
        Self {
            kind: TaskErrorKind::Failed,
            exc_type: exc_type.to_owned(),
            exc_module: map
                .get("exc_module")
                .and_then(Value::as_str)
                .unwrap_or("builtins")
                .to_owned(),
            message,
            traceback,
        }
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.exc_type, self.message)
    }
}

/// Any error converts, anyhow-style: the exception type is the error's type name and the
/// traceback lists its chain of sources.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        let full_name = std::any::type_name::<E>();
        let short_name = full_name
            .split('<')
            .next()
            .unwrap_or(full_name)
            .rsplit("::")
            .next()
            .unwrap_or(full_name);
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(format!("caused by: {cause}"));
            source = cause.source();
        }
        let mut task_error = TaskError::new(short_name, error.to_string());
        if !chain.is_empty() {
            task_error.traceback = Some(chain.join("\n"));
        }
        task_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_dict_round_trips() {
        let error = TaskError::new("ValueError", "boom");
        let value = error.to_exception_value();
        assert_eq!(
            value,
            json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"})
        );
        assert_eq!(TaskError::from_exception_value(&value, None), error);
    }

    #[test]
    fn reads_python_exception_dicts() {
        let python = json!({"exc_type": "ValueError", "exc_message": ["boom", 42], "exc_module": "builtins"});
        let error = TaskError::from_exception_value(&python, Some("Traceback ...".into()));
        assert_eq!(error.message(), "boom, 42");
        assert_eq!(error.traceback_text(), Some("Traceback ..."));
    }

    #[test]
    fn std_errors_convert_with_their_type_name() {
        let error: TaskError = "x".parse::<i32>().unwrap_err().into();
        assert_eq!(error.exc_type(), "ParseIntError");
        assert_eq!(error.kind(), &TaskErrorKind::Failed);
    }
}
