//! Leader leases and the fenced last ticks of periodic schedulers ([`queue_core::lease`]) on
//! SQL: our own tables `queue_leases` (one row per lease, kept once created: holder, last
//! token, expiry) and `queue_beat_ticks` (one row per entry of a schedule: its last tick in
//! Unix milliseconds), the same for both databases.
//!
//! Every operation is one transaction. Those that change a lease first lock its row
//! (PostgreSQL: `SELECT … FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`, the database's write
//! lock), so that claiming a tick is atomic with the check that the grant still holds the
//! lease, and a new holder's acquisition waits for a claim in progress. A lease is free when
//! its `holder` is NULL (released) or its `expires_at` has passed, by the database's clock;
//! a new holding takes `token + 1`, so tokens only grow across releases and expiries.
//!
//! Transient errors are retried as the result writes are. A retry after a commit whose
//! answer was lost is safe: acquiring again renews the same holding; claiming again answers
//! `AlreadyClaimed` (the tick is then not sent: at most once).

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use queue_core::lease::{LeaseError, LeaseGrant, tick_from_millis};
use tracing::debug;

use crate::error::SqlError;

/// The longest holding stored (about 100 years): a longer ttl is cut to it, so that the
/// expiry never overflows the database's time arithmetic.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A ttl in seconds, for PostgreSQL's interval arithmetic.
#[cfg(feature = "postgres")]
pub(crate) fn ttl_seconds(ttl: Duration) -> f64 {
    ttl.min(MAX_TTL).as_secs_f64()
}

/// A ttl in milliseconds, for SQLite's.
#[cfg(feature = "sqlite")]
pub(crate) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.min(MAX_TTL).as_millis()).unwrap_or(i64::MAX)
}

/// The locked `queue_leases` row of a lease.
pub(crate) struct LeaseRow {
    pub holder: Option<String>,
    pub token: i64,
    /// Held and not expired.
    pub live: bool,
}

/// What acquiring does with the locked row.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Free or expired: a new holding with this (larger) token.
    Take(i64),
    /// Held by the same holder: a longer expiry, the same token.
    Renew(i64),
    /// Held by another holder.
    Held,
}

impl LeaseRow {
    pub(crate) fn acquire(&self, name: &str, holder: &str) -> Result<Acquire, SqlError> {
        if self.live {
            return Ok(if self.holder.as_deref() == Some(holder) {
                Acquire::Renew(self.token)
            } else {
                Acquire::Held
            });
        }
        let next = self.token.checked_add(1).ok_or_else(|| SqlError::Corrupt {
            what: format!("lease {name:?}"),
            reason: format!("its last token {} cannot grow", self.token),
        })?;
        Ok(Acquire::Take(next.max(1)))
    }

    /// Whether `grant` is the live holding of this row.
    pub(crate) fn held_by(&self, grant: &LeaseGrant) -> bool {
        self.live
            && self.holder.as_deref() == Some(grant.holder.as_str())
            && token_column(grant.token) == Some(self.token)
    }
}

/// A grant's token as stored; `None` when no row can hold it (so it holds nothing).
pub(crate) fn token_column(token: u64) -> Option<i64> {
    i64::try_from(token).ok()
}

/// A stored token as a grant's: above 0.
pub(crate) fn stored_token(name: &str, token: i64) -> Result<u64, SqlError> {
    u64::try_from(token)
        .ok()
        .filter(|token| *token > 0)
        .ok_or_else(|| SqlError::Corrupt {
            what: format!("lease {name:?}"),
            reason: format!("token {token} is not above 0"),
        })
}

/// Remaining time of a holding from a stored or computed count of milliseconds.
pub(crate) fn remaining(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Names, holders and entries are text columns: a NUL character cannot be stored (on
/// PostgreSQL) or would be cut (by C readers of SQLite), so it is refused up front.
pub(crate) fn check_text(what: &str, value: &str) -> Result<(), LeaseError> {
    if value.contains('\0') {
        return Err(LeaseError::Other(format!(
            "the {what} {value:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// The `queue_beat_ticks` rows of a schedule as the trait returns them.
pub(crate) fn decode_ticks(
    name: &str,
    rows: Vec<(String, i64)>,
) -> Result<std::collections::HashMap<String, DateTime<Utc>>, LeaseError> {
    rows.into_iter()
        .map(|(entry, millis)| {
            let tick = tick_from_millis(millis).map_err(|_| {
                LeaseError::Encoding(format!(
                    "the last tick of {entry:?} of schedule {name:?} is out of range: {millis} ms"
                ))
            })?;
            Ok((entry, tick))
        })
        .collect()
}

/// Logs a new holding; shared by both databases.
pub(crate) fn log_acquire(name: &str, holder: &str, outcome: &Acquire) {
    if let Acquire::Take(token) = outcome {
        debug!(name, holder, token, "lease acquired");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(holder: Option<&str>, token: i64, live: bool) -> LeaseRow {
        LeaseRow {
            holder: holder.map(str::to_owned),
            token,
            live,
        }
    }

    #[test]
    fn acquiring_takes_renews_or_refuses() {
        assert_eq!(
            row(None, 0, false).acquire("l", "a").unwrap(),
            Acquire::Take(1)
        );
        assert_eq!(
            row(Some("b"), 4, false).acquire("l", "a").unwrap(),
            Acquire::Take(5),
            "expired"
        );
        assert_eq!(
            row(Some("a"), 4, true).acquire("l", "a").unwrap(),
            Acquire::Renew(4)
        );
        assert_eq!(
            row(Some("b"), 4, true).acquire("l", "a").unwrap(),
            Acquire::Held
        );
        assert!(matches!(
            row(None, i64::MAX, false).acquire("l", "a"),
            Err(SqlError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_grant_holds_only_its_live_holding() {
        let grant = LeaseGrant {
            name: "l".into(),
            holder: "a".into(),
            token: 4,
            ttl: Duration::from_secs(1),
        };
        assert!(row(Some("a"), 4, true).held_by(&grant));
        assert!(!row(Some("a"), 4, false).held_by(&grant));
        assert!(!row(Some("a"), 5, true).held_by(&grant));
        assert!(!row(Some("b"), 4, true).held_by(&grant));
        let huge = LeaseGrant {
            token: u64::MAX,
            ..grant
        };
        assert!(!row(Some("a"), -1, true).held_by(&huge));
    }

    #[test]
    fn stored_values_are_checked() {
        assert_eq!(stored_token("l", 3).unwrap(), 3);
        assert!(stored_token("l", 0).is_err());
        assert!(stored_token("l", -2).is_err());
        assert_eq!(remaining(-5), Duration::ZERO);
        #[cfg(feature = "sqlite")]
        assert_eq!(ttl_millis(Duration::MAX), ttl_millis(MAX_TTL));
        #[cfg(feature = "postgres")]
        assert_eq!(ttl_seconds(Duration::MAX), MAX_TTL.as_secs_f64());
        assert!(check_text("holder", "a\0b").is_err());
        let ticks = decode_ticks("l", vec![("e".into(), 1_000)]).unwrap();
        assert_eq!(ticks["e"].timestamp_millis(), 1_000);
        assert!(matches!(
            decode_ticks("l", vec![("e".into(), i64::MAX)]),
            Err(LeaseError::Encoding(_))
        ));
    }
}
