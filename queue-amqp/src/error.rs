//! Errors of this crate and how they map onto [`BrokerError`].

use std::path::PathBuf;

use lapin::ErrorKind;
use queue_core::broker::BrokerError;

/// AMQP reply code: the queue or exchange exists with other arguments or type.
pub(crate) const PRECONDITION_FAILED: u16 = 406;
/// AMQP reply code: no such queue or exchange.
pub(crate) const NOT_FOUND: u16 = 404;

/// Errors of the RabbitMQ broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The URL or an option is invalid.
    #[error("invalid AMQP configuration: {0}")]
    Config(String),
    /// The server cannot be reached, refused the login, or TLS failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Where (password hidden).
        url: String,
        /// Why.
        #[source]
        source: Box<lapin::Error>,
    },
    /// The CA file for `amqps://` cannot be read.
    #[error("cannot read the TLS CA file {path}: {source}")]
    TlsCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No tokio runtime to run the connection on.
    #[error("the AMQP broker needs a tokio runtime")]
    NoRuntime,
    /// An AMQP operation failed.
    #[error("{operation} failed: {source}")]
    Operation {
        /// What was being done, e.g. `queue.declare celery`.
        operation: String,
        /// Why.
        #[source]
        source: Box<lapin::Error>,
    },
    /// RabbitMQ returned a mandatory message: nothing is bound to take it.
    #[error(
        "message to exchange {exchange:?} with routing key {routing_key:?} is unroutable: {reply}"
    )]
    Unroutable {
        /// The exchange it was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
        /// RabbitMQ's reply text.
        reply: String,
    },
    /// RabbitMQ did not take responsibility for a message (a negative publisher confirm).
    #[error("RabbitMQ refused to store a message (negative publisher confirm)")]
    Nacked,
    /// The delivery came through a channel that has since closed; RabbitMQ delivers the
    /// message again, so nothing is lost.
    #[error("delivery {0} belongs to an earlier channel; RabbitMQ delivers the message again")]
    StaleDelivery(u64),
    /// RabbitMQ ended a broadcast subscription's consumer without being asked (its queue was
    /// deleted, or its channel closed); the subscription subscribes again.
    #[error("RabbitMQ ended the consumer of {queue}")]
    ConsumerEnded {
        /// The subscription's queue.
        queue: String,
    },
    /// A publish kept failing through reconnections for longer than the publish timeout.
    #[error("publish failed for {seconds:.1} s while reconnecting: {last}")]
    PublishTimeout {
        /// How long it tried.
        seconds: f64,
        /// The last failure.
        last: String,
    },
}

impl AmqpError {
    pub(crate) fn operation(operation: impl Into<String>, source: lapin::Error) -> Self {
        Self::Operation {
            operation: operation.into(),
            source: Box::new(source),
        }
    }

    /// The AMQP reply code of a refused operation (404, 406, ...), if it was one.
    pub(crate) fn reply_code(&self) -> Option<u16> {
        match self {
            AmqpError::Operation { source, .. } | AmqpError::Connect { source, .. } => {
                reply_code(source)
            }
            _ => None,
        }
    }

    /// Whether reconnecting may help.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            AmqpError::Operation { source, .. } | AmqpError::Connect { source, .. } => {
                is_transient(source)
            }
            AmqpError::StaleDelivery(_)
            | AmqpError::PublishTimeout { .. }
            | AmqpError::ConsumerEnded { .. } => true,
            _ => false,
        }
    }
}

/// The reply code carried by a channel or connection close, if any.
pub(crate) fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Whether `error` means the connection or channel is gone (retry on a new one) rather than
/// a refusal of the operation itself.
pub(crate) fn is_transient(error: &lapin::Error) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            // 3xx are connection-level: forced close (broker restart), frame errors.
            !matches!(amqp.get_id(), 403 | NOT_FOUND | 405 | PRECONDITION_FAILED)
        }
        ErrorKind::NoConfiguredExecutor | ErrorKind::NoConfiguredReactor => false,
        _ => true,
    }
}

impl From<AmqpError> for BrokerError {
    fn from(error: AmqpError) -> Self {
        if error.is_transient() {
            BrokerError::Unavailable(error.to_string())
        } else {
            BrokerError::Refused(error.to_string())
        }
    }
}
