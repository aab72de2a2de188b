//! The chord join on SQL: our own tables `queue_chords` (one row per chord: size, status
//! `open` / `claimed` / `done`, claim token) and `queue_chord_parts` (one row per recorded
//! header part), the same for both databases.
//!
//! Recording a part is one transaction that first locks the chord's row (PostgreSQL:
//! `SELECT … FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`, the database's write lock), inserts the
//! part unless recorded (`ON CONFLICT DO NOTHING`), counts, and when the count reaches the
//! size while the chord is open, flips it to `claimed` with a fresh token: of concurrent
//! finishers exactly one sees the full count on an open chord. A claim older than
//! [`CLAIM_LEASE`] may be retaken by the next copy of a part, so that a finisher that died
//! holding it does not leave the chord stuck (Celery's Redis claim expires likewise).

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_core::TaskState;
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use serde_json::Value;
use tracing::debug;

use crate::codec::ID_WIDTH;
use crate::error::SqlError;

/// How long a claim holds before another finisher may take it over: the join's read and
/// the body's publish (with its retries) fit well within it.
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(30);

pub(crate) const OPEN: &str = "open";
pub(crate) const CLAIMED: &str = "claimed";
pub(crate) const DONE: &str = "done";

/// The parts in join order: by index, `NULL` last, as Celery's `+inf` score.
pub(crate) const ORDER_PARTS: &str = "ORDER BY group_index IS NULL, group_index, task_id";

/// A part as bound to `queue_chord_parts`.
pub(crate) struct EncodedPart {
    pub task_id: String,
    pub group_index: Option<i64>,
    pub state: String,
    pub result: Vec<u8>,
}

/// A `queue_chord_parts` row as read.
pub(crate) struct PartRow {
    pub task_id: String,
    pub group_index: Option<i64>,
    pub state: String,
    pub result: Option<Vec<u8>>,
}

/// The locked chord row.
pub(crate) struct ChordRow {
    pub size: Option<i64>,
    pub status: String,
    pub token: Option<String>,
    /// The claim is older than [`CLAIM_LEASE`].
    pub stale: bool,
}

impl ChordRow {
    /// A chord nothing is known of yet (or whose row expired).
    pub(crate) fn fresh() -> Self {
        Self {
            size: None,
            status: OPEN.to_owned(),
            token: None,
            stale: false,
        }
    }

    /// Whether recording a part that makes the count `ready` claims the chord for `token`:
    /// the count is the size, and the chord is open, or claimed by this very call (a retry
    /// after a commit whose answer was lost), or claimed by someone whose lease ran out.
    pub(crate) fn claims(&self, ready: i64, token: &str) -> bool {
        self.size == Some(ready)
            && (self.status == OPEN
                || (self.status == CLAIMED && (self.stale || self.token.as_deref() == Some(token))))
    }
}

/// What the part transaction found.
pub(crate) enum Outcome {
    Done,
    Pending { ready: i64, size: Option<i64> },
    Complete(Vec<PartRow>),
}

/// A token no other claim has: 128 bits from the standard library's randomly keyed hasher,
/// the time and a counter (no random number crate needed for a claim token).
pub(crate) fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut halves = [0u64; 2];
    for (salt, half) in halves.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_usize(salt);
        hasher.write_u32(std::process::id());
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// A size for a BIGINT column.
pub(crate) fn size_column(group_id: &str, size: u64) -> Result<i64, SqlError> {
    check_group(group_id)?;
    i64::try_from(size).map_err(|_| SqlError::Invalid {
        what: format!("the size of chord {group_id:?}"),
        reason: format!("{size} does not fit a BIGINT"),
    })
}

fn check_group(group_id: &str) -> Result<(), SqlError> {
    check_id(group_id).map_err(|reason| SqlError::Invalid {
        what: format!("chord {group_id:?}"),
        reason,
    })
}

fn check_id(id: &str) -> Result<(), String> {
    if id.contains('\0') {
        return Err("the id contains a NUL character".into());
    }
    let length = id.chars().count();
    if length > ID_WIDTH {
        return Err(format!(
            "the id is {length} characters long; the column holds {ID_WIDTH}"
        ));
    }
    Ok(())
}

/// The columns of a part, or why it cannot be stored.
pub(crate) fn encode_part(group_id: &str, part: &ChordPart) -> Result<EncodedPart, SqlError> {
    check_group(group_id)?;
    let invalid = |reason: String| SqlError::Invalid {
        what: format!("part {:?} of chord {group_id:?}", part.task_id),
        reason,
    };
    check_id(&part.task_id).map_err(invalid)?;
    let group_index = part
        .group_index
        .map(|index| {
            i64::try_from(index).map_err(|_| invalid(format!("index {index} exceeds a BIGINT")))
        })
        .transpose()?;
    let result = serde_json::to_vec(&part.result)
        .map_err(|error| invalid(format!("result not JSON: {error}")))?;
    Ok(EncodedPart {
        task_id: part.task_id.clone(),
        group_index,
        state: part.state.as_str().to_owned(),
        result,
    })
}

/// The join's answer from the transaction's outcome.
pub(crate) fn answer(
    group_id: &str,
    outcome: Outcome,
    token: String,
) -> Result<ChordJoin, SqlError> {
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    match outcome {
        Outcome::Done => {
            debug!(group_id, "chord part after dispatch: ignored");
            Ok(ChordJoin::Done)
        }
        Outcome::Pending { ready, size } => Ok(ChordJoin::Pending {
            ready: count(ready),
            size: size.map(count),
        }),
        Outcome::Complete(rows) => {
            let parts = rows
                .into_iter()
                .map(|row| decode_part(group_id, row))
                .collect::<Result<Vec<_>, _>>()?;
            debug!(group_id, parts = parts.len(), "chord complete and claimed");
            Ok(ChordJoin::Complete {
                parts,
                claim: ChordClaim {
                    group_id: group_id.to_owned(),
                    token,
                },
            })
        }
    }
}

fn decode_part(group_id: &str, row: PartRow) -> Result<ChordPart, SqlError> {
    let corrupt = |reason: String| SqlError::Corrupt {
        what: format!("part {:?} of chord {group_id:?}", row.task_id),
        reason,
    };
    let group_index = row
        .group_index
        .map(|index| u64::try_from(index).map_err(|_| corrupt(format!("index {index}"))))
        .transpose()?;
    let result = match &row.result {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|error| corrupt(format!("result is not JSON: {error}")))?,
        None => Value::Null,
    };
    Ok(ChordPart {
        group_index,
        state: row
            .state
            .parse::<TaskState>()
            .unwrap_or_else(|never| match never {}),
        result,
        task_id: row.task_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_a_full_open_chord_or_its_own_or_a_stale_claim() {
        let mut row = ChordRow::fresh();
        assert!(!row.claims(2, "t"), "size unknown");
        row.size = Some(2);
        assert!(!row.claims(1, "t"));
        assert!(row.claims(2, "t"));
        row.status = CLAIMED.into();
        row.token = Some("other".into());
        assert!(!row.claims(2, "t"), "claimed by another");
        assert!(row.claims(2, "other"), "a retry of the claiming call");
        row.stale = true;
        assert!(row.claims(2, "t"), "a claim past its lease");
        row.status = DONE.into();
        assert!(!row.claims(2, "t"));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }

    #[test]
    fn parts_that_cannot_be_stored_are_refused() {
        let part = ChordPart {
            task_id: "t".into(),
            group_index: Some(u64::MAX),
            state: TaskState::Success,
            result: Value::Null,
        };
        assert!(matches!(
            encode_part("g", &part),
            Err(SqlError::Invalid { .. })
        ));
        assert!(size_column(&"g".repeat(200), 2).is_err());
    }
}
