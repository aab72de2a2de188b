//! [`TaskState`]: the states of a task, with Celery's names on the wire (wire spec §5.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The state of a task as stored in a result backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Unknown: not (yet) stored, or forgotten.
    Pending,
    /// Received by a worker (event-derived; not stored).
    Received,
    /// Started by a worker (stored when tracking is on).
    Started,
    /// Finished with a result.
    Success,
    /// Finished with an error.
    Failure,
    /// Failed, will be retried.
    Retry,
    /// Revoked or expired: not run.
    Revoked,
    /// Rejected by a worker (event-derived).
    Rejected,
    /// A custom state set by the task, e.g. `PROGRESS`.
    Custom(String),
}

impl TaskState {
    /// Celery's name for the state.
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
            TaskState::Custom(name) => name,
        }
    }

    /// SUCCESS, FAILURE or REVOKED: the task will not change any more.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// RETRY, FAILURE or REVOKED: the stored result is an exception.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            TaskState::Retry | TaskState::Failure | TaskState::Revoked
        )
    }
}

impl FromStr for TaskState {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            other => TaskState::Custom(other.to_owned()),
        })
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text.parse().unwrap_or(TaskState::Pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "PROGRESS",
        ] {
            let state: TaskState = name.parse().unwrap();
            assert_eq!(state.as_str(), name);
        }
        assert!(TaskState::Success.is_ready());
        assert!(!TaskState::Retry.is_ready());
        assert!(TaskState::Retry.is_exception());
    }
}
