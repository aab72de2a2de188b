//! The chord join's statements on PostgreSQL: the chord's row is locked with
//! `SELECT … FOR UPDATE` for the whole of recording a part.

use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use sqlx::{PgPool, Postgres, Row};
use tracing::{debug, warn};

use super::{
    CLAIM_LEASE, CLAIMED, ChordRow, DONE, EncodedPart, ORDER_PARTS, Outcome, PartRow, answer,
    encode_part, new_token, size_column,
};
use crate::error::{SqlError, with_retries};
use crate::options::SqlOptions;

const EXPIRES_AT: &str = "now() + $2::float8 * interval '1 second'";

fn expiry_seconds(options: &SqlOptions) -> Option<f64> {
    options.expiry.map(|expiry| expiry.as_secs_f64())
}

/// Sets the size and opens the chord (a new run of a done or claimed one too); parts
/// recorded before stay.
pub(crate) async fn start(
    pool: &PgPool,
    options: &SqlOptions,
    group_id: &str,
    size: u64,
) -> Result<(), SqlError> {
    let size = size_column(group_id, size)?;
    let sql = format!(
        "INSERT INTO queue_chords (group_id, size, status, token, updated, expires_at) \
         VALUES ($1, $3, 'open', NULL, now(), {EXPIRES_AT}) \
         ON CONFLICT (group_id) DO UPDATE SET size = EXCLUDED.size, status = 'open', \
         token = NULL, updated = EXCLUDED.updated, expires_at = EXCLUDED.expires_at"
    );
    with_retries(
        options.retries,
        || format!("starting chord {group_id:?}"),
        || {
            sqlx::query::<Postgres>(&sql)
                .bind(group_id)
                .bind(expiry_seconds(options))
                .bind(size)
                .execute(pool)
        },
    )
    .await?;
    debug!(group_id, size, "chord started");
    Ok(())
}

/// Records a part; see [`super`] for the transaction.
pub(crate) async fn part(
    pool: &PgPool,
    options: &SqlOptions,
    group_id: &str,
    part: ChordPart,
) -> Result<ChordJoin, SqlError> {
    let encoded = encode_part(group_id, &part)?;
    let token = new_token();
    let expiry = expiry_seconds(options);
    let outcome = with_retries(
        options.retries,
        || format!("recording part {:?} of chord {group_id:?}", part.task_id),
        || part_transaction(pool, expiry, group_id, &encoded, &token),
    )
    .await?;
    answer(group_id, outcome, token)
}

async fn part_transaction(
    pool: &PgPool,
    expiry: Option<f64>,
    group_id: &str,
    part: &EncodedPart,
    token: &str,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The row to lock, should this part come before the start.
    sqlx::query::<Postgres>(&format!(
        "INSERT INTO queue_chords (group_id, expires_at) VALUES ($1, {EXPIRES_AT}) \
         ON CONFLICT (group_id) DO NOTHING"
    ))
    .bind(group_id)
    .bind(expiry)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query::<Postgres>(
        "SELECT size, status, token, \
         (expires_at IS NOT NULL AND expires_at <= now()) AS expired, \
         (updated < now() - $2::float8 * interval '1 second') AS stale \
         FROM queue_chords WHERE group_id = $1 FOR UPDATE",
    )
    .bind(group_id)
    .bind(CLAIM_LEASE.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let mut chord = ChordRow {
        size: row.try_get("size")?,
        status: row.try_get("status")?,
        token: row.try_get("token")?,
        stale: row.try_get("stale")?,
    };
    if row.try_get::<bool, _>("expired")? {
        // Expired but not cleaned up yet: as gone.
        sqlx::query::<Postgres>("DELETE FROM queue_chord_parts WHERE group_id = $1")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query::<Postgres>(
            "UPDATE queue_chords SET size = NULL, status = 'open', token = NULL, \
             updated = now() WHERE group_id = $1",
        )
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
        chord = ChordRow::fresh();
    }
    if chord.status == DONE {
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    sqlx::query::<Postgres>(
        "INSERT INTO queue_chord_parts (group_id, task_id, group_index, state, result) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(&part.task_id)
    .bind(part.group_index)
    .bind(&part.state)
    .bind(&part.result)
    .execute(&mut *tx)
    .await?;
    sqlx::query::<Postgres>(&format!(
        "UPDATE queue_chords SET expires_at = {EXPIRES_AT} WHERE group_id = $1"
    ))
    .bind(group_id)
    .bind(expiry)
    .execute(&mut *tx)
    .await?;
    let ready: i64 = sqlx::query_scalar::<Postgres, i64>(
        "SELECT count(*) FROM queue_chord_parts WHERE group_id = $1",
    )
    .bind(group_id)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if chord.claims(ready, token) {
        sqlx::query::<Postgres>(&format!(
            "UPDATE queue_chords SET status = '{CLAIMED}', token = $2, updated = now() \
             WHERE group_id = $1"
        ))
        .bind(group_id)
        .bind(token)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query::<Postgres>(&format!(
            "SELECT task_id, group_index, state, result FROM queue_chord_parts \
             WHERE group_id = $1 {ORDER_PARTS}"
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
    pool: &PgPool,
    options: &SqlOptions,
    claim: &ChordClaim,
) -> Result<(), SqlError> {
    let group_id = claim.group_id.as_str();
    let expiry = expiry_seconds(options);
    let cleaned = with_retries(
        options.retries,
        || format!("marking chord {group_id:?} dispatched"),
        || async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query::<Postgres>(&format!(
                "UPDATE queue_chords SET status = '{DONE}', token = NULL, size = NULL, \
                 updated = now(), expires_at = {EXPIRES_AT} \
                 WHERE group_id = $1 AND status = '{CLAIMED}' AND token = $3"
            ))
            .bind(group_id)
            .bind(expiry)
            .bind(&claim.token)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                sqlx::query::<Postgres>("DELETE FROM queue_chord_parts WHERE group_id = $1")
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
pub(crate) async fn cleanup_expired(pool: &PgPool, options: &SqlOptions) -> Result<u64, SqlError> {
    with_retries(
        options.retries,
        || "deleting expired chords".to_owned(),
        || async {
            let mut tx = pool.begin().await?;
            sqlx::query::<Postgres>(
                "DELETE FROM queue_chord_parts WHERE group_id IN \
                 (SELECT group_id FROM queue_chords WHERE expires_at <= now())",
            )
            .execute(&mut *tx)
            .await?;
            let chords =
                sqlx::query::<Postgres>("DELETE FROM queue_chords WHERE expires_at <= now()")
                    .execute(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(chords.rows_affected())
        },
    )
    .await
}
