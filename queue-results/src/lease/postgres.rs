//! [`PostgresLease`]: the lease's statements on PostgreSQL. Expiry is the server's
//! `clock_timestamp()` (the time of the statement, not of the transaction's start, which may
//! be earlier when the transaction waited for the row lock).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_core::lease::{Lease, LeaseError, LeaseGrant, LeaseHolder, TickClaim, tick_millis};
use sqlx::{PgPool, Postgres, Row};
use tracing::{debug, warn};

use super::{
    Acquire, LeaseRow, check_text, decode_ticks, log_acquire, remaining, stored_token,
    token_column, ttl_seconds,
};
use crate::error::{SqlError, with_retries};
use crate::options::SqlOptions;
use crate::postgres::PostgresBackend;

/// Leader leases with fencing tokens, and the last tick of every periodic entry, in a
/// PostgreSQL database (tables `queue_leases`, `queue_beat_ticks`; see the crate docs).
/// Clones share the pool.
///
/// ```no_run
/// # async fn example() -> Result<(), queue_results::SqlError> {
/// // On its own pool (running the migrations), or on a backend's:
/// let lease = queue_results::PostgresLease::connect("postgres://app@db/app").await?;
/// let backend = queue_results::PostgresBackend::connect("postgres://app@db/app").await?;
/// let same_pool = backend.lease();
/// # let _ = (lease, same_pool); Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresLease {
    pool: PgPool,
    retries: u32,
}

impl fmt::Debug for PostgresLease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PostgresLease")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// The lease store on this backend's pool (its migrations create the lease tables).
    pub fn lease(&self) -> PostgresLease {
        PostgresLease {
            pool: self.pool().clone(),
            retries: self.options().retries,
        }
    }
}

impl PostgresLease {
    /// Connects as [`PostgresBackend::connect`] does (same URL and options, migrations
    /// included), for the lease alone.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Ok(PostgresBackend::connect(url).await?.lease())
    }

    /// Connects as [`PostgresBackend::connect_with`] does.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self, SqlError> {
        Ok(PostgresBackend::connect_with(url, options).await?.lease())
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

/// Locks and reads the row of a lease (`None`: never acquired).
async fn select_locked(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    name: &str,
) -> Result<Option<LeaseRow>, sqlx::Error> {
    let row = sqlx::query::<Postgres>(
        "SELECT holder, token, \
         (holder IS NOT NULL AND expires_at > clock_timestamp()) AS live \
         FROM queue_leases WHERE name = $1 FOR UPDATE",
    )
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

/// Creates the row of a lease (free, token 0) unless it exists, then locks and reads it.
async fn lock_row(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    name: &str,
) -> Result<LeaseRow, sqlx::Error> {
    sqlx::query::<Postgres>(
        "INSERT INTO queue_leases (name, token) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut **tx)
    .await?;
    select_locked(tx, name)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

#[async_trait]
impl Lease for PostgresLease {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        check_text("lease name", name)?;
        check_text("holder", holder)?;
        let seconds = ttl_seconds(ttl);
        let outcome = self
            .retried(
                || format!("acquiring lease {name:?} for {holder:?}"),
                || async {
                    let mut tx = self.pool.begin().await?;
                    let row = lock_row(&mut tx, name).await?;
                    let outcome = match row.acquire(name, holder) {
                        Ok(outcome) => outcome,
                        Err(error) => return Ok(Err(error)),
                    };
                    let token = match outcome {
                        Acquire::Take(token) | Acquire::Renew(token) => token,
                        Acquire::Held => return Ok(Ok(outcome)),
                    };
                    sqlx::query::<Postgres>(
                        "UPDATE queue_leases SET holder = $2, token = $3, \
                         expires_at = clock_timestamp() + $4::float8 * interval '1 second' \
                         WHERE name = $1",
                    )
                    .bind(name)
                    .bind(holder)
                    .bind(token)
                    .bind(seconds)
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
                    sqlx::query::<Postgres>(
                        "UPDATE queue_leases SET holder = NULL, expires_at = NULL \
                         WHERE name = $1 AND holder = $2 AND token = $3",
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
                    sqlx::query::<Postgres>(
                        "SELECT holder, token, \
                         floor(extract(epoch FROM (expires_at - clock_timestamp())) * 1000)::int8 \
                         AS remaining_ms FROM queue_leases \
                         WHERE name = $1 AND holder IS NOT NULL \
                         AND expires_at > clock_timestamp()",
                    )
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
                    let mut tx = self.pool.begin().await?;
                    let Some(row) = select_locked(&mut tx, &grant.name).await? else {
                        return Ok(TickClaim::LeaseLost);
                    };
                    if !row.held_by(grant) {
                        return Ok(TickClaim::LeaseLost);
                    }
                    let done = sqlx::query::<Postgres>(
                        "INSERT INTO queue_beat_ticks (name, entry, tick_ms) VALUES ($1, $2, $3) \
                         ON CONFLICT (name, entry) DO UPDATE SET tick_ms = EXCLUDED.tick_ms \
                         WHERE queue_beat_ticks.tick_ms < EXCLUDED.tick_ms",
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
                    sqlx::query_as::<Postgres, (String, i64)>(
                        "SELECT entry, tick_ms FROM queue_beat_ticks WHERE name = $1",
                    )
                    .bind(name)
                    .fetch_all(&self.pool)
                },
            )
            .await?;
        decode_ticks(name, rows)
    }
}
