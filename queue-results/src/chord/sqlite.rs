//! The chord join's statements on SQLite: recording a part runs in a `BEGIN IMMEDIATE`
//! transaction, which takes the database's write lock before its first read, so that two
//! finishers never both count the parts before either inserted its own (a plain `BEGIN`
//! would let both read, then fail or serialize only at their first write). Times are Unix
//! microseconds, bound by the caller, as in the result tables.

use chrono::Utc;
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use sqlx::{Row, Sqlite, SqlitePool};
use tracing::{debug, warn};

use super::{
    CLAIM_LEASE, CLAIMED, ChordRow, DONE, EncodedPart, ORDER_PARTS, Outcome, PartRow, answer,
    encode_part, new_token, size_column,
};
use crate::error::{SqlError, with_retries};
use crate::options::SqlOptions;

/// (expiry instant or none, now), in Unix microseconds.
fn clock(options: &SqlOptions) -> (Option<i64>, i64) {
    let now = Utc::now();
    let expires_at = options.expiry.map(|expiry| {
        chrono::Duration::from_std(expiry)
            .ok()
            .and_then(|expiry| now.checked_add_signed(expiry))
            .map_or(i64::MAX, |at| at.timestamp_micros())
    });
    (expires_at, now.timestamp_micros())
}

/// Sets the size and opens the chord (a new run of a done or claimed one too); parts
/// recorded before stay.
pub(crate) async fn start(
    pool: &SqlitePool,
    options: &SqlOptions,
    group_id: &str,
    size: u64,
) -> Result<(), SqlError> {
    let size = size_column(group_id, size)?;
    with_retries(
        options.retries,
        || format!("starting chord {group_id:?}"),
        || {
            let (expires_at, now) = clock(options);
            sqlx::query::<Sqlite>(
                "INSERT INTO queue_chords (group_id, size, status, token, updated, expires_at) \
                 VALUES (?1, ?2, 'open', NULL, ?3, ?4) \
                 ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, status = 'open', \
                 token = NULL, updated = excluded.updated, expires_at = excluded.expires_at",
            )
            .bind(group_id)
            .bind(size)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
        },
    )
    .await?;
    debug!(group_id, size, "chord started");
    Ok(())
}

/// Records a part; see [`super`] for the transaction.
pub(crate) async fn part(
    pool: &SqlitePool,
    options: &SqlOptions,
    group_id: &str,
    part: ChordPart,
) -> Result<ChordJoin, SqlError> {
    let encoded = encode_part(group_id, &part)?;
    let token = new_token();
    let outcome = with_retries(
        options.retries,
        || format!("recording part {:?} of chord {group_id:?}", part.task_id),
        || part_transaction(pool, options, group_id, &encoded, &token),
    )
    .await?;
    answer(group_id, outcome, token)
}

async fn part_transaction(
    pool: &SqlitePool,
    options: &SqlOptions,
    group_id: &str,
    part: &EncodedPart,
    token: &str,
) -> Result<Outcome, sqlx::Error> {
    let (expires_at, now) = clock(options);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The row, should this part come before the start.
    sqlx::query::<Sqlite>(
        "INSERT INTO queue_chords (group_id, updated, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (group_id) DO NOTHING",
    )
    .bind(group_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query::<Sqlite>(
        "SELECT size, status, token, updated, expires_at FROM queue_chords WHERE group_id = ?1",
    )
    .bind(group_id)
    .fetch_one(&mut *tx)
    .await?;
    let lease = i64::try_from(CLAIM_LEASE.as_micros()).unwrap_or(i64::MAX);
    let updated: i64 = row.try_get("updated")?;
    let mut chord = ChordRow {
        size: row.try_get("size")?,
        status: row.try_get("status")?,
        token: row.try_get("token")?,
        stale: updated < now.saturating_sub(lease),
    };
    let expired = row
        .try_get::<Option<i64>, _>("expires_at")?
        .is_some_and(|at| at <= now);
    if expired {
        // Expired but not cleaned up yet: as gone.
        sqlx::query::<Sqlite>("DELETE FROM queue_chord_parts WHERE group_id = ?1")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query::<Sqlite>(
            "UPDATE queue_chords SET size = NULL, status = 'open', token = NULL, updated = ?2 \
             WHERE group_id = ?1",
        )
        .bind(group_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        chord = ChordRow::fresh();
    }
    if chord.status == DONE {
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    sqlx::query::<Sqlite>(
        "INSERT INTO queue_chord_parts (group_id, task_id, group_index, state, result) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(&part.task_id)
    .bind(part.group_index)
    .bind(&part.state)
    .bind(&part.result)
    .execute(&mut *tx)
    .await?;
    sqlx::query::<Sqlite>("UPDATE queue_chords SET expires_at = ?2 WHERE group_id = ?1")
        .bind(group_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    let ready: i64 = sqlx::query_scalar::<Sqlite, i64>(
        "SELECT count(*) FROM queue_chord_parts WHERE group_id = ?1",
    )
    .bind(group_id)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if chord.claims(ready, token) {
        sqlx::query::<Sqlite>(&format!(
            "UPDATE queue_chords SET status = '{CLAIMED}', token = ?2, updated = ?3 \
             WHERE group_id = ?1"
        ))
        .bind(group_id)
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query::<Sqlite>(&format!(
            "SELECT task_id, group_index, state, result FROM queue_chord_parts \
             WHERE group_id = ?1 {ORDER_PARTS}"
        ))
        .bind(group_id)
        .fetch_all(&mut *tx)
        .await?;
        let parts = rows
            .iter()
            .map(|row| {
                Ok(PartRow {
                    task_id: row.try_get("task_id")?,
                    group_index: row.try_get("group_index")?,
                    state: row.try_get("state")?,
                    result: row.try_get("result")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Outcome::Complete(parts)
    } else {
        Outcome::Pending {
            ready,
            size: chord.size,
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Drops the parts and marks the chord done, if the claim is still this one.
pub(crate) async fn dispatched(
    pool: &SqlitePool,
    options: &SqlOptions,
    claim: &ChordClaim,
) -> Result<(), SqlError> {
    let group_id = claim.group_id.as_str();
    let cleaned = with_retries(
        options.retries,
        || format!("marking chord {group_id:?} dispatched"),
        || async {
            let (expires_at, now) = clock(options);
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let done = sqlx::query::<Sqlite>(&format!(
                "UPDATE queue_chords SET status = '{DONE}', token = NULL, size = NULL, \
                 updated = ?2, expires_at = ?3 \
                 WHERE group_id = ?1 AND status = '{CLAIMED}' AND token = ?4"
            ))
            .bind(group_id)
            .bind(now)
            .bind(expires_at)
            .bind(&claim.token)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                sqlx::query::<Sqlite>("DELETE FROM queue_chord_parts WHERE group_id = ?1")
                    .bind(group_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        },
    )
    .await?;
    if !cleaned {
        warn!(
            group_id,
            "chord claim lost before cleanup; chord data left for expiry"
        );
    }
    Ok(())
}

/// Deletes chords (and their parts) past their expiry; returns how many chords.
pub(crate) async fn cleanup_expired(
    pool: &SqlitePool,
    options: &SqlOptions,
) -> Result<u64, SqlError> {
    with_retries(
        options.retries,
        || "deleting expired chords".to_owned(),
        || async {
            let (_, now) = clock(options);
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query::<Sqlite>(
                "DELETE FROM queue_chord_parts WHERE group_id IN \
                 (SELECT group_id FROM queue_chords WHERE expires_at <= ?1)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let chords = sqlx::query::<Sqlite>("DELETE FROM queue_chords WHERE expires_at <= ?1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(chords.rows_affected())
        },
    )
    .await
}
