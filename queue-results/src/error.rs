//! [`SqlError`], how it maps onto the core errors (backend, lease, configuration), and
//! which database errors are worth a retry.

use std::future::Future;

use queue_core::BackendError;
use queue_core::lease::LeaseError;
use tracing::warn;

use crate::options::SqlOptions;

/// Errors of the SQL result backends.
///
/// Messages never contain a connection URL's password: URLs are shown redacted and sqlx's own
/// errors do not echo them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL or one of its options is invalid.
    #[error("invalid SQL result backend configuration: {0}")]
    Config(String),
    /// The URL's scheme is served by a crate feature that is not enabled.
    #[error("URL scheme `{scheme}://` needs the `{feature}` feature of the `queue` crate")]
    FeatureDisabled {
        /// The URL scheme.
        scheme: String,
        /// The feature to enable (`postgres` or `sqlite`).
        feature: &'static str,
    },
    /// The database could not be reached when connecting.
    #[error("cannot connect to the result database {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What sqlx reported.
        source: sqlx::Error,
    },
    /// Running the schema migrations failed.
    #[error("result database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A database operation failed (after the configured retries, for transient errors).
    #[error("result database error while {operation}: {source}")]
    Database {
        /// What was being done, e.g. `storing the result of task "…"`.
        operation: String,
        /// What sqlx reported.
        source: sqlx::Error,
    },
    /// A task meta or group cannot be stored as given (e.g. an id longer than the column).
    #[error("cannot store {what}: {reason}")]
    Invalid {
        /// Which record, e.g. `the result of task "…"`.
        what: String,
        /// Why.
        reason: String,
    },
    /// A stored row cannot be read back (e.g. written by Celery <= 5.6 with pickle).
    #[error("cannot read {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}

impl SqlError {
    pub(crate) fn database(operation: impl Into<String>, source: sqlx::Error) -> Self {
        SqlError::Database {
            operation: operation.into(),
            source,
        }
    }

    /// Whether the database could not be reached (connection refused or lost, pool timed out,
    /// server shutting down): retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SqlError::Connect { .. } => true,
            SqlError::Database { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

impl From<SqlError> for BackendError {
    fn from(error: SqlError) -> Self {
        let unavailable = error.is_unavailable();
        match error {
            SqlError::Invalid { .. } | SqlError::Corrupt { .. } => {
                BackendError::Encoding(error.to_string())
            }
            _ if unavailable => BackendError::Unavailable(error.to_string()),
            _ => BackendError::Other(error.to_string()),
        }
    }
}

impl From<SqlError> for LeaseError {
    fn from(error: SqlError) -> Self {
        let unavailable = error.is_unavailable();
        match error {
            SqlError::Corrupt { .. } => LeaseError::Encoding(error.to_string()),
            _ if unavailable => LeaseError::Unavailable(error.to_string()),
            _ => LeaseError::Other(error.to_string()),
        }
    }
}

impl From<SqlError> for queue_core::Error {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::Config(message) => queue_core::Error::Config(message),
            SqlError::FeatureDisabled { scheme, feature } => {
                queue_core::Error::FeatureDisabled { scheme, feature }
            }
            other => queue_core::Error::Backend(other.into()),
        }
    }
}

/// Errors after which the same operation may succeed on another connection or a bit later:
/// the connection broke, the server is restarting, the pool had no connection in time, or
/// the database was busy (SQLite locks, PostgreSQL serialization failures and deadlocks).
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            // PostgreSQL SQLSTATEs: class 08 connection exceptions; 57P01-57P03 admin/crash
            // shutdown and "cannot connect now"; 53300 too many connections; 40001
            // serialization failure; 40P01 deadlock.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
                // SQLite (extended) result codes: SQLITE_BUSY (5) and SQLITE_LOCKED (6) families.
                || code.parse::<u32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails with a permanent error, or has been retried
/// `retries` times after transient errors (pausing a little longer each time). Callers only
/// retry idempotent statements: upserts guarded against overwriting a SUCCESS, reads,
/// deletes.
pub(crate) async fn with_retries<T, F, Fut>(
    retries: u32,
    operation: impl Fn() -> String,
    mut attempt: F,
) -> Result<T, SqlError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if failures < retries && is_transient(&error) => {
                failures += 1;
                let delay = SqlOptions::retry_delay(failures);
                warn!(
                    operation = %operation(),
                    %error,
                    retry = failures,
                    of = retries,
                    ?delay,
                    "result database operation failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(SqlError::database(operation(), error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_backend_errors() {
        let lost = SqlError::database(
            "storing",
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        );
        assert!(matches!(
            BackendError::from(lost),
            BackendError::Unavailable(_)
        ));
        let invalid = SqlError::Invalid {
            what: "x".into(),
            reason: "y".into(),
        };
        assert!(matches!(
            BackendError::from(invalid),
            BackendError::Encoding(_)
        ));
        let other = SqlError::database("reading", sqlx::Error::RowNotFound);
        assert!(matches!(BackendError::from(other), BackendError::Other(_)));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
