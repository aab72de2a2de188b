//! Errors of this crate and their mapping onto the core's broker, backend and lease errors.

use queue_core::lease::LeaseError;
use queue_core::{BackendError, BrokerError};

/// What can go wrong talking to Redis.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL or an option in it is invalid. Never contains the password.
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// TLS could not be set up (certificate files, keys).
    #[error("Redis TLS setup failed: {0}")]
    Tls(String),
    /// The server could not be reached, the connection broke, or a command timed out.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// The server answered with an error.
    #[error("Redis refused the command: {0}")]
    Refused(String),
    /// A reply did not have the expected shape.
    #[error("unexpected Redis reply: {0}")]
    Reply(String),
}

impl From<fred::error::Error> for RedisError {
    fn from(error: fred::error::Error) -> Self {
        use fred::error::ErrorKind;
        // fred's messages name commands and servers, never the password.
        match error.kind() {
            ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Sentinel => RedisError::Unavailable(error.to_string()),
            ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::NotFound | ErrorKind::Unknown => {
                RedisError::Reply(error.to_string())
            }
            ErrorKind::Config | ErrorKind::Url => RedisError::Config(error.to_string()),
            ErrorKind::Tls => RedisError::Tls(error.to_string()),
            _ => RedisError::Refused(error.to_string()),
        }
    }
}

impl From<RedisError> for BrokerError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(text) => BrokerError::Unavailable(text),
            other => BrokerError::Refused(other.to_string()),
        }
    }
}

impl From<RedisError> for BackendError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(text) => BackendError::Unavailable(text),
            RedisError::Reply(text) => BackendError::Encoding(text),
            other => BackendError::Other(other.to_string()),
        }
    }
}

impl From<RedisError> for LeaseError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(text) => LeaseError::Unavailable(text),
            RedisError::Reply(text) => LeaseError::Encoding(text),
            other => LeaseError::Other(other.to_string()),
        }
    }
}

impl From<RedisError> for queue_core::Error {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Config(text) | RedisError::Tls(text) => queue_core::Error::Config(text),
            other => queue_core::Error::Broker(other.into()),
        }
    }
}

pub(crate) fn broker_error(error: fred::error::Error) -> BrokerError {
    RedisError::from(error).into()
}

pub(crate) fn backend_error(error: fred::error::Error) -> BackendError {
    RedisError::from(error).into()
}
