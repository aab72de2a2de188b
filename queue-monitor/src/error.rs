//! The monitor's errors.

/// Why the monitor could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// Binding to an address other than loopback without authentication configured.
    #[error(
        "refusing to listen on {address} without authentication: set QUEUE_MONITOR_BASIC_AUTH=user:pass or QUEUE_MONITOR_TOKEN, or listen on 127.0.0.1"
    )]
    InsecureBind {
        /// The address asked for.
        address: std::net::SocketAddr,
    },
    /// The history URL is not `sqlite://…`, `postgres://…` or a file path.
    #[error("unsupported history URL {0} (use sqlite://PATH or postgres://…)")]
    HistoryUrl(String),
    /// The URL prefix has characters other than letters, digits, `-`, `_`, `.`, `/`.
    #[error("invalid URL prefix {0:?} (letters, digits, -, _, . and / only, e.g. /monitor)")]
    UrlPrefix(String),
    /// The history store failed.
    #[error("history store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The authentication setting is malformed.
    #[error("authentication: {0}")]
    Auth(String),
    /// Listening or serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}
