//! The error type of client-side operations (building an app, sending, reading results).

use crate::backend::BackendError;
use crate::broker::BrokerError;
use crate::protocol::ProtocolError;

/// Errors of the application and client API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A broker operation failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A result backend operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A canvas (chain, group, chord) cannot be sent or applied.
    #[error(transparent)]
    Canvas(#[from] crate::canvas::CanvasError),
    /// The configuration is invalid (a URL, a route, an option).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A URL names a broker or backend whose crate feature is not enabled.
    #[error("URL scheme `{scheme}://` needs the `{feature}` feature of the `queue` crate")]
    FeatureDisabled {
        /// The URL scheme.
        scheme: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The application has no result backend, so results cannot be read.
    #[error("no result backend is configured (set QUEUE_RESULT_BACKEND or AppBuilder::backend)")]
    NoBackend,
}
