//! SQL result backends for `queue` on `sqlx`: PostgreSQL (feature `postgres`) and SQLite
//! (feature `sqlite`). SQL stores results only; it is never a broker.
//!
//! With the facade's `postgres` / `sqlite` features, a URL is all it takes:
//!
//! ```no_run
//! # async fn example() -> Result<(), queue_core::Error> {
//! # let _ = &queue_results::SQL_CONNECTOR; // the facade links it for you
//! let app = queue_core::App::builder()
//!     .broker("redis://127.0.0.1/0")
//!     .backend("postgres://app:secret@db/app?expires=3600") // or "sqlite://results.db"
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Schema: Celery's own tables
//!
//! Results go to `celery_taskmeta` and groups to `celery_tasksetmeta`, with the names, column
//! names and column types of Celery 5.7's database backend (`celery/backends/database`),
//! so that a Python application configured with `result_backend = 'db+postgresql://…'` (or
//! `'db+sqlite:///…'`) on the same database reads what Rust workers store, and the other way
//! round:
//!
//! - `result`, `children`, `args`, `kwargs` hold JSON bytes (BLOB / bytea), what Celery 5.7
//!   stores with the JSON serializer; rows Celery <= 5.6 wrote (pickles) are reported as
//!   unreadable, not misread;
//! - `date_done` is UTC without offset, with microseconds, set for READY states only; on
//!   SQLite it is text in SQLAlchemy's format (`2026-11-24 15:28:38.218227`);
//! - `celery_tasksetmeta.result` holds the GroupResult tuple
//!   `[[group_id, null], [[[task_id, null], null], …]]`;
//! - the `id` columns draw from the sequences Celery's models name (`task_id_sequence`,
//!   `taskset_id_sequence`) on PostgreSQL.
//!
//! Three columns are ours, which Celery's models ignore: `group_id` and `parent_id` (the
//! rest of the task meta) and `expires_at`. Expiry is fixed when a row is written, from the
//! writer's [`SqlOptions::expiry`] (like Redis' `SETEX`), and [`ResultBackend::cleanup_expired`]
//! (which workers run periodically) deletes rows past it: a client with another expiry, or
//! no expiry at all, never deletes results early. Expired rows read as unknown even before
//! the cleanup. Rows Python wrote have no `expires_at` and are left to Celery's own
//! `celery.backend_cleanup`, which filters on `date_done` (indexed, as in Celery).
//!
//! # Chords: our own counter join
//!
//! Two more tables are ours alone: `queue_chords` and `queue_chord_parts` hold the chord
//! join of [`ResultBackend::chord_part`]. Celery's database backend has no counter join (its
//! chords poll with the `celery.chord_unlock` task), so Rust workers join exactly at the
//! last part, with no polling task, in one transaction that locks the chord's row; Python
//! workers on a SQL backend do not take part in that join. A claim left by a finisher that
//! died is retaken after 30 s by the next copy of a part; dispatched chords keep a small
//! `done` row (so late copies do nothing) until their expiry.
//!
//! # Leases: periodic schedulers
//!
//! [`PostgresLease`] and [`SqliteLease`] (also from a backend: `backend.lease()`, on its
//! pool) implement [`queue_core::lease::Lease`] in two more tables of ours: `queue_leases`
//! (one row per lease: holder, last fencing token, expiry by the database's clock; kept
//! when released or expired, so tokens only grow) and `queue_beat_ticks` (the last tick, in
//! Unix milliseconds, of each entry of a schedule). Each change is one transaction that
//! locks the lease's row, so a tick is claimed only while the grant holds the lease.
//!
//! Migrations are `sqlx` migrations ([`POSTGRES_MIGRATOR`], [`SQLITE_MIGRATOR`]), run on
//! connect unless `migrate=false`; they are idempotent (`IF NOT EXISTS`), and on PostgreSQL
//! they also upgrade tables Celery created first (adding the missing columns). They share
//! `_sqlx_migrations` with an application's own sqlx migrations, ignoring those.
//!
//! # Behaviour
//!
//! - Every write is an upsert guarded in SQL: a stored SUCCESS is never overwritten by a
//!   later state, whichever writer comes last; `store_many` acts like storing each meta in
//!   order, in one statement per 500 rows.
//! - Waits on PostgreSQL are pushed: a trigger notifies channel [`NOTIFY_CHANNEL`] with the
//!   task id of every write (Celery's too); the backend LISTENs on a connection of its own
//!   before it reads, and polls only while that connection is down. SQLite cannot push:
//!   waits poll, briefly at first (5 ms doubling up to `poll_interval`), and writes of the
//!   same backend wake them at once.
//! - Transient errors (connection lost, server restarting, database busy) are retried
//!   ([`SqlOptions::retries`]); every statement is idempotent, so a retry is safe. Then the
//!   error is [`BackendError::Unavailable`], naming what was being stored. Each write is one
//!   statement, so a failed write loses nothing else; pooled connections broken by a server
//!   restart are replaced, and the LISTEN connection re-subscribes by itself.
//! - A meta that cannot be stored (an id or name longer than Celery's 155 characters, a NUL
//!   character) is [`BackendError::Encoding`]; in `store_many` the rest is stored anyway.
//!
//! [`BackendError::Unavailable`]: queue_core::BackendError::Unavailable
//! [`BackendError::Encoding`]: queue_core::BackendError::Encoding

// Without a driver feature the crate only reports which feature to enable; its shared
// machinery is then unused.
#![cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod chord;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod codec;
mod error;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod lease;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod waiters;

use std::sync::Arc;

use async_trait::async_trait;
use queue_core::connect::{Connector, RedactedUrl};
use queue_core::lease::Lease;
use queue_core::{Broker, ResultBackend};

pub use error::SqlError;
#[cfg(feature = "postgres")]
pub use lease::postgres::PostgresLease;
#[cfg(feature = "sqlite")]
pub use lease::sqlite::SqliteLease;
pub use options::{DEFAULT_EXPIRY, SqlOptions};
#[cfg(feature = "postgres")]
pub use postgres::{NOTIFY_CHANNEL, POSTGRES_MIGRATOR, PostgresBackend};
#[cfg(feature = "sqlite")]
pub use sqlite::{SQLITE_MIGRATOR, SqliteBackend};

/// Connects `postgres://`, `postgresql://` and `sqlite://` URLs to result backends and lease
/// stores; added to [`queue_core::connect::CONNECTORS`] by [`SQL_CONNECTOR`].
///
/// A scheme whose feature is off is an error naming the feature. These schemes are never
/// brokers.
#[derive(Debug, Default)]
pub struct SqlConnector;

/// Registers [`SqlConnector`] at link time. The facade refers to it so that the crate is
/// linked whenever its `postgres` or `sqlite` feature is on.
#[linkme::distributed_slice(queue_core::connect::CONNECTORS)]
#[linkme(crate = queue_core::connect::linkme)]
pub static SQL_CONNECTOR: fn() -> Arc<dyn Connector> = || Arc::new(SqlConnector);

#[async_trait]
impl Connector for SqlConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["postgres", "postgresql", "sqlite"]
    }

    async fn broker(
        &self,
        url: &RedactedUrl,
    ) -> Result<Option<Arc<dyn Broker>>, queue_core::Error> {
        Err(queue_core::Error::Config(format!(
            "`{}://` is a result backend, not a broker: SQL databases store results only \
             (use redis://, amqp:// or memory:// as the broker)",
            url.scheme()
        )))
    }

    async fn backend(
        &self,
        url: &RedactedUrl,
    ) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
        match url.scheme() {
            "postgres" | "postgresql" => connect_postgres(url).await,
            "sqlite" => connect_sqlite(url).await,
            _ => Ok(None),
        }
    }

    async fn lease(&self, url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
        match url.scheme() {
            "postgres" | "postgresql" => lease_postgres(url).await,
            "sqlite" => lease_sqlite(url).await,
            _ => Ok(None),
        }
    }
}

#[cfg(feature = "postgres")]
async fn lease_postgres(url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
    let backend = PostgresBackend::connect_url(url, SqlOptions::default()).await?;
    Ok(Some(Arc::new(backend.lease())))
}

#[cfg(not(feature = "postgres"))]
async fn lease_postgres(url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
    Err(SqlError::FeatureDisabled {
        scheme: url.scheme().to_owned(),
        feature: "postgres",
    }
    .into())
}

#[cfg(feature = "sqlite")]
async fn lease_sqlite(url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
    let backend = SqliteBackend::connect_url(url, SqlOptions::default()).await?;
    Ok(Some(Arc::new(backend.lease())))
}

#[cfg(not(feature = "sqlite"))]
async fn lease_sqlite(url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, queue_core::Error> {
    Err(SqlError::FeatureDisabled {
        scheme: url.scheme().to_owned(),
        feature: "sqlite",
    }
    .into())
}

#[cfg(feature = "postgres")]
async fn connect_postgres(
    url: &RedactedUrl,
) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
    let backend = PostgresBackend::connect_url(url, SqlOptions::default()).await?;
    Ok(Some(Arc::new(backend)))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(
    url: &RedactedUrl,
) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
    Err(SqlError::FeatureDisabled {
        scheme: url.scheme().to_owned(),
        feature: "postgres",
    }
    .into())
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(
    url: &RedactedUrl,
) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
    let backend = SqliteBackend::connect_url(url, SqlOptions::default()).await?;
    Ok(Some(Arc::new(backend)))
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(
    url: &RedactedUrl,
) -> Result<Option<Arc<dyn ResultBackend>>, queue_core::Error> {
    Err(SqlError::FeatureDisabled {
        scheme: url.scheme().to_owned(),
        feature: "sqlite",
    }
    .into())
}
