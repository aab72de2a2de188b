//! The durable, bounded history: task rows, their events (the timelines), workers and queue
//! samples, in SQLite (a file; in memory without one) or PostgreSQL.
//!
//! Writes go through a bounded channel to one writer that batches them into transactions;
//! when the database falls behind, new writes are dropped and counted rather than held
//! ([`Store::dropped`]), so memory stays bounded whatever the event rate. A pruner deletes
//! the oldest rows beyond the configured age and counts.

pub mod query;
mod read;
pub mod schema;
mod search;
mod sql;
#[cfg(test)]
mod sqlite_tests;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

pub use read::{QueueSample, TimelineEntry};
pub use search::{SearchPage, Sort, TaskSearch};
pub use writer::{Bounds, Writer};

use crate::ingest::task::Task;
use crate::ingest::worker::Worker;

/// Why the history store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A search query does not parse.
    #[error(transparent)]
    Query(#[from] query::QuerySyntaxError),
    /// A stored record does not decode.
    #[error("stored record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// The URL is not one of `sqlite://…`, `postgres://…` or a path.
    #[error("unsupported history URL {0} (use sqlite://PATH or postgres://…)")]
    Url(String),
}

/// One write waiting for the writer.
#[derive(Debug)]
pub enum Write {
    /// A task's current record (replaces the stored one).
    Task(Box<Task>),
    /// An event of a task's timeline.
    Event(TimelineEntry),
    /// A worker's current record.
    Worker(Box<Worker>),
    /// A queue's backlog at one moment.
    QueueSample(QueueSample),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The database behind the store.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool and `$db` to its sqlx database type, for
/// either backend (the same SQL serves both where the dialects agree).
macro_rules! on_pool {
    ($backend:expr, |$pool:ident, $db:ident| $body:expr) => {
        match $backend {
            $crate::store::Backend::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            $crate::store::Backend::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// The history: a handle to read it and to queue writes (cheap to clone).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    sender: mpsc::Sender<Write>,
    dropped: AtomicU64,
    label: String,
}

impl Store {
    /// Opens (and creates where missing) the history at `url`: `sqlite://PATH`, a bare
    /// path, `sqlite::memory:` or `None` (in memory), `postgres://…`. Returns the store and
    /// the writer to run; at most `capacity` writes wait for it.
    pub async fn open(url: Option<&str>, capacity: usize) -> Result<(Self, Writer), StoreError> {
        let (backend, label) = match url {
            None => (
                Backend::Sqlite(sqlite_pool(None).await?),
                "memory".to_owned(),
            ),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
                let label = url
                    .parse::<queue_core::connect::RedactedUrl>()
                    .map(|redacted| redacted.to_string())
                    .unwrap_or_else(|_| "postgres://…".to_owned());
                (Backend::Postgres(pool), label)
            }
            Some(url) => {
                let path = sqlite_path(url)?;
                let label = match &path {
                    Some(path) => format!("sqlite://{path}"),
                    None => "memory".to_owned(),
                };
                (Backend::Sqlite(sqlite_pool(path.as_deref()).await?), label)
            }
        };
        create_schema(&backend).await?;
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let store = Self {
            inner: Arc::new(Inner {
                backend: backend.clone(),
                sender,
                dropped: AtomicU64::new(0),
                label,
            }),
        };
        Ok((store, Writer::new(backend, receiver)))
    }

    /// Queues `write`; drops (and counts) it when the writer is that far behind.
    pub fn write(&self, write: Write) {
        if self.inner.sender.try_send(write).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every write queued before this call is committed (waits for room in the
    /// queue rather than dropping; returns at once if the writer stopped).
    pub async fn flush(&self) {
        let (done, committed) = tokio::sync::oneshot::channel();
        if self.inner.sender.send(Write::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }

    /// Writes dropped because the database fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes waiting for the writer.
    pub fn pending(&self) -> usize {
        self.inner.sender.max_capacity() - self.inner.sender.capacity()
    }

    /// What the store is, safe to show (`sqlite://path`, a redacted PostgreSQL URL).
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Deletes what is beyond `bounds` at `now` (seconds since the epoch); returns the task
    /// and event rows deleted.
    pub async fn prune(&self, bounds: Bounds, now: f64) -> Result<(u64, u64), StoreError> {
        writer::prune(&self.inner.backend, bounds, now).await
    }
}

/// The file of a `sqlite:` URL or bare path; `None` for an in-memory database.
fn sqlite_path(url: &str) -> Result<Option<String>, StoreError> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" || url == ":memory:" {
        return Ok(None);
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::Url(url.to_owned()));
        }
        return Ok(Some(path.to_owned()));
    }
    if url.contains("://") {
        return Err(StoreError::Url(
            url.parse::<queue_core::connect::RedactedUrl>()
                .map(|redacted| redacted.to_string())
                .unwrap_or_else(|_| "<unparsable URL>".to_owned()),
        ));
    }
    Ok(Some(url.to_owned()))
}

async fn sqlite_pool(path: Option<&str>) -> Result<SqlitePool, StoreError> {
    let Some(path) = path else {
        // An in-memory database lives as long as its one connection.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        return Ok(SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?);
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // The history may lose its last batch in a power cut, never its consistency.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?)
}

async fn create_schema(backend: &Backend) -> Result<(), StoreError> {
    match backend {
        Backend::Sqlite(pool) => {
            for statement in schema::SQLITE {
                sqlx::query(statement).execute(pool).await?;
            }
        }
        Backend::Postgres(pool) => {
            // Two monitors starting at once would race on CREATE … IF NOT EXISTS.
            let mut transaction = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7150001)")
                .execute(&mut *transaction)
                .await?;
            for statement in schema::POSTGRES {
                sqlx::query(statement).execute(&mut *transaction).await?;
            }
            transaction.commit().await?;
            for statement in schema::POSTGRES_TRIGRAM {
                if let Err(error) = sqlx::query(statement).execute(pool).await {
                    tracing::warn!(%error, "no pg_trgm text index: text search will scan");
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_urls() {
        assert_eq!(
            sqlite_path("sqlite://a/b.sqlite").unwrap().as_deref(),
            Some("a/b.sqlite")
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db").unwrap().as_deref(),
            Some("/tmp/x.db")
        );
        assert_eq!(sqlite_path("x.db").unwrap().as_deref(), Some("x.db"));
        assert_eq!(sqlite_path("sqlite::memory:").unwrap(), None);
        let error = sqlite_path("mysql://user:secret@host/db")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }
}
