//! [`SqliteLease`]: the lease's statements on SQLite. Changes run in `BEGIN IMMEDIATE`
//! transactions (the database's write lock, taken before the first read). Expiry is
//! SQLite's clock, computed in SQL (`NOW_MS`); `expires_at` is Unix milliseconds.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_core::lease::{Lease, LeaseError, LeaseGrant, LeaseHolder, TickClaim, tick_millis};
use sqlx::{Row, Sqlite, SqlitePool};
use tracing::{debug, warn};

use super::{
    Acquire, LeaseRow, check_text, decode_ticks, log_acquire, remaining, stored_token,
    token_column, ttl_millis,
};
use crate::error::{SqlError, with_retries};
use crate::options::SqlOptions;
use crate::sqlite::SqliteBackend;

/// Now, in Unix milliseconds, by SQLite's clock (`'now'` is the same throughout one
/// statement).
const NOW_MS: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// Leader leases with fencing tokens, and the last tick of every periodic entry, in a
/// SQLite database (tables `queue_leases`, `queue_beat_ticks`; see the crate docs).
/// Clones share the pool.
///
/// ```no_run
/// # async fn example() -> Result<(), queue_results::SqlError> {
/// // On its own pool (running the migrations), or on a backend's:
/// let lease = queue_results::SqliteLease::connect("sqlite:///var/lib/app/beat.db").await?;
/// let backend = queue_results::SqliteBackend::connect("sqlite:///var/lib/app/r.db").await?;
/// let same_pool = backend.lease();
/// # let _ = (lease, same_pool); Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteLease {
    pool: SqlitePool,
    retries: u32,
}

impl fmt::Debug for SqliteLease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SqliteLease")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// The lease store on this backend's pool (its migrations create the lease tables).
    pub fn lease(&self) -> SqliteLease {
        SqliteLease {
            pool: self.pool().clone(),
            retries: self.options().retries,
        }
    }
}

impl SqliteLease {
    /// Connects as [`SqliteBackend::connect`] does (same URL and options, migrations
    /// included), for the lease alone.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Ok(SqliteBackend::connect(url).await?.lease())
    }

    /// Connects as [`SqliteBackend::connect_with`] does.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self, SqlError> {
        Ok(SqliteBackend::connect_with(url, options).await?.lease())
    }

    async fn retried<T, F, Fut>(
        &self,
        operation: impl Fn() -> String,
        attempt: F,
    ) -> Result<T, LeaseError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        Ok(with_retries(self.retries, operation, attempt).await?)
    }
}

/// The row of a lease, and whether it is held and unexpired.
static SELECT_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT holder, token, (holder IS NOT NULL AND expires_at > {NOW_MS}) AS live \
         FROM queue_leases WHERE name = ?1"
    )
});

/// A holding: holder, token, expiry `?4` ms from now.
static HOLD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE queue_leases SET holder = ?2, token = ?3, expires_at = {NOW_MS} + ?4 \
         WHERE name = ?1"
    )
});

/// The live holding of a lease and the milliseconds it has left.
static SELECT_HOLDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT holder, token, expires_at - {NOW_MS} AS remaining_ms FROM queue_leases \
         WHERE name = ?1 AND holder IS NOT NULL AND expires_at > {NOW_MS}"
    )
});

/// Reads the row of a lease in a `BEGIN IMMEDIATE` transaction, which holds the database's
/// write lock already (`None`: never acquired).
async fn select_row(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    name: &str,
) -> Result<Option<LeaseRow>, sqlx::Error> {
    let row = sqlx::query::<Sqlite>(&SELECT_ROW)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| {
        Ok(LeaseRow {
            holder: row.try_get("holder")?,
            token: row.try_get("token")?,
            live: row.try_get::<Option<bool>, _>("live")?.unwrap_or(false),
        })
    })
    .transpose()
}

/// Creates the row of a lease (free, token 0) unless it exists, then reads it.
async fn lock_row(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    name: &str,
) -> Result<LeaseRow, sqlx::Error> {
    sqlx::query::<Sqlite>(
        "INSERT INTO queue_leases (name, token) VALUES (?1, 0) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut **tx)
    .await?;
    select_row(tx, name).await?.ok_or(sqlx::Error::RowNotFound)
}

#[async_trait]
impl Lease for SqliteLease {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        check_text("lease name", name)?;
        check_text("holder", holder)?;
        let millis = ttl_millis(ttl);
        let outcome = self
            .retried(
                || format!("acquiring lease {name:?} for {holder:?}"),
                || async {
                    let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                    let row = lock_row(&mut tx, name).await?;
                    let outcome = match row.acquire(name, holder) {
                        Ok(outcome) => outcome,
                        Err(error) => return Ok(Err(error)),
                    };
                    let token = match outcome {
                        Acquire::Take(token) | Acquire::Renew(token) => token,
                        Acquire::Held => return Ok(Ok(outcome)),
                    };
                    sqlx::query::<Sqlite>(&HOLD)
                        .bind(name)
                        .bind(holder)
                        .bind(token)
                        .bind(millis)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Ok(outcome))
                },
            )
            .await??;
        log_acquire(name, holder, &outcome);
        let token = match outcome {
            Acquire::Take(token) | Acquire::Renew(token) => stored_token(name, token)?,
            Acquire::Held => return Ok(None),
        };
        Ok(Some(LeaseGrant {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token,
            ttl,
        }))
    }

    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        let Some(token) = token_column(grant.token) else {
            return Ok(());
        };
        let done = self
            .retried(
                || format!("releasing lease {:?}", grant.name),
                || {
                    sqlx::query::<Sqlite>(
                        "UPDATE queue_leases SET holder = NULL, expires_at = NULL \
                         WHERE name = ?1 AND holder = ?2 AND token = ?3",
                    )
                    .bind(&grant.name)
                    .bind(&grant.holder)
                    .bind(token)
                    .execute(&self.pool)
                },
            )
            .await?;
        debug!(
            name = %grant.name,
            holder = %grant.holder,
            token = grant.token,
            released = done.rows_affected() > 0,
            "lease released"
        );
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<LeaseHolder>, LeaseError> {
        let row = self
            .retried(
                || format!("reading the holder of lease {name:?}"),
                || {
                    sqlx::query::<Sqlite>(&SELECT_HOLDER)
                        .bind(name)
                        .fetch_optional(&self.pool)
                },
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let corrupt = |error: sqlx::Error| SqlError::Corrupt {
            what: format!("lease {name:?}"),
            reason: error.to_string(),
        };
        let holder: String = row.try_get("holder").map_err(corrupt)?;
        let token: i64 = row.try_get("token").map_err(corrupt)?;
        let millis: Option<i64> = row.try_get("remaining_ms").map_err(corrupt)?;
        Ok(Some(LeaseHolder {
            holder,
            token: stored_token(name, token)?,
            expires_in: remaining(millis.unwrap_or(0)),
        }))
    }

    async fn claim_tick(
        &self,
        grant: &LeaseGrant,
        entry: &str,
        tick: DateTime<Utc>,
    ) -> Result<TickClaim, LeaseError> {
        check_text("entry", entry)?;
        let millis = tick_millis(tick);
        let claim = self
            .retried(
                || format!("claiming a tick of {entry:?} of {:?}", grant.name),
                || async {
                    let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                    let Some(row) = select_row(&mut tx, &grant.name).await? else {
                        return Ok(TickClaim::LeaseLost);
                    };
                    if !row.held_by(grant) {
                        return Ok(TickClaim::LeaseLost);
                    }
                    let done = sqlx::query::<Sqlite>(
                        "INSERT INTO queue_beat_ticks (name, entry, tick_ms) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (name, entry) DO UPDATE SET tick_ms = excluded.tick_ms \
                         WHERE queue_beat_ticks.tick_ms < excluded.tick_ms",
                    )
                    .bind(&grant.name)
                    .bind(entry)
                    .bind(millis)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(if done.rows_affected() > 0 {
                        TickClaim::Claimed
                    } else {
                        TickClaim::AlreadyClaimed
                    })
                },
            )
            .await?;
        if claim == TickClaim::LeaseLost {
            warn!(name = %grant.name, holder = %grant.holder, token = grant.token, entry, "tick not claimed: the lease was lost");
        }
        Ok(claim)
    }

    async fn last_ticks(&self, name: &str) -> Result<HashMap<String, DateTime<Utc>>, LeaseError> {
        let rows = self
            .retried(
                || format!("reading the last ticks of {name:?}"),
                || {
                    sqlx::query_as::<Sqlite, (String, i64)>(
                        "SELECT entry, tick_ms FROM queue_beat_ticks WHERE name = ?1",
                    )
                    .bind(name)
                    .fetch_all(&self.pool)
                },
            )
            .await?;
        decode_ticks(name, rows)
    }
}
