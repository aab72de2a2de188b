//! A leader lease with a fencing token, and the fenced state of a periodic scheduler.
//!
//! Any number of beat instances (`queue-beat`) run; the one holding the lease sends. The
//! lease lives in a shared store (Redis, PostgreSQL, SQLite, or memory within one process),
//! which implements [`Lease`]. Two rules make a tick fire once:
//!
//! - every acquisition by a new holder (or after an expiry) gets a larger **fencing token**;
//! - a tick is sent only after [`Lease::claim_tick`] recorded it, in one atomic step of the
//!   store that checks the token still holds the lease and that the entry's last tick is
//!   older. A beat whose lease was taken over cannot record (nor so send) anything, even if
//!   it has not noticed yet.
//!
//! Expiry is measured by the store's clock, so the instances' clocks need not agree on it.
//!
//! ```
//! # async fn example() -> Result<(), queue_core::lease::LeaseError> {
//! use std::time::Duration;
//! use queue_core::lease::{Lease, MemoryLease, TickClaim};
//! let store = MemoryLease::new();
//! let grant = store.acquire("beat", "node-a", Duration::from_secs(5)).await?.unwrap();
//! assert!(store.acquire("beat", "node-b", Duration::from_secs(5)).await?.is_none());
//! let tick = chrono::Utc::now();
//! assert_eq!(store.claim_tick(&grant, "report", tick).await?, TickClaim::Claimed);
//! assert_eq!(store.claim_tick(&grant, "report", tick).await?, TickClaim::AlreadyClaimed);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The store cannot be reached; retrying may help.
    #[error("lease store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read.
    #[error("lease store holds an unreadable value: {0}")]
    Encoding(String),
    /// Other error of the store.
    #[error("lease store error: {0}")]
    Other(String),
}

/// A held lease: who holds it, and the fencing token of this holding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's name (one per beat schedule).
    pub name: String,
    /// The holder's id (unique per beat instance).
    pub holder: String,
    /// Larger for every new holding of this lease; never reused.
    pub token: u64,
    /// How long the holding lasts from the moment the store granted it.
    pub ttl: Duration,
}

/// Who holds a lease now, as the store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's id.
    pub holder: String,
    /// Its fencing token.
    pub token: u64,
    /// Time left before the holding expires.
    pub expires_in: Duration,
}

/// The outcome of [`Lease::claim_tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickClaim {
    /// Recorded: the caller sends the tick.
    Claimed,
    /// The entry already ran this tick or a later one: nothing to send.
    AlreadyClaimed,
    /// The grant no longer holds the lease: the caller stops sending.
    LeaseLost,
}

/// A store that holds leader leases and the last tick of every periodic entry.
///
/// Implemented by `MemoryLease` (here), the Redis crate and the SQL crate; they all pass
/// the conformance suite `lease_conformance_tests!` (feature `conformance`).
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Takes the lease `name` for `holder` for `ttl` when it is free or expired (with a new,
    /// larger token), or renews it when `holder` holds it (same token). `None` when another
    /// holder has it.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError>;

    /// Gives the lease up, if `grant` still holds it, so another instance takes over at once.
    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError>;

    /// Who holds `name` now; `None` when free or expired.
    async fn holder(&self, name: &str) -> Result<Option<LeaseHolder>, LeaseError>;

    /// Records `tick` as the last tick of `entry` (of the lease's schedule), atomically with
    /// checking that `grant` still holds the lease and that the entry's last tick is older.
    async fn claim_tick(
        &self,
        grant: &LeaseGrant,
        entry: &str,
        tick: DateTime<Utc>,
    ) -> Result<TickClaim, LeaseError>;

    /// The last tick of every entry of the schedule `name`.
    async fn last_ticks(&self, name: &str) -> Result<HashMap<String, DateTime<Utc>>, LeaseError>;
}

/// A time as stored: milliseconds since the Unix epoch.
pub fn tick_millis(tick: DateTime<Utc>) -> i64 {
    tick.timestamp_millis()
}

/// A stored time back; a value out of range is an [`LeaseError::Encoding`].
pub fn tick_from_millis(millis: i64) -> Result<DateTime<Utc>, LeaseError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| LeaseError::Encoding(format!("tick {millis} ms is out of range")))
}

/// The lease in memory: for several beat instances in one process (and the tests).
/// Clones share one store.
#[derive(Clone, Debug, Default)]
pub struct MemoryLease {
    inner: Arc<Mutex<HashMap<String, MemoryRecord>>>,
}

#[derive(Debug, Default)]
struct MemoryRecord {
    holding: Option<(String, u64, Instant)>,
    last_token: u64,
    ticks: HashMap<String, DateTime<Utc>>,
}

impl MemoryRecord {
    fn live_holding(&self, now: Instant) -> Option<&(String, u64, Instant)> {
        self.holding
            .as_ref()
            .filter(|(_, _, expires)| *expires > now)
    }
}

impl MemoryLease {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, name: &str, action: impl FnOnce(&mut MemoryRecord) -> T) -> T {
        let mut records = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        action(records.entry(name.to_owned()).or_default())
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let now = Instant::now();
        Ok(self.with(name, |record| {
            let token = match record.live_holding(now) {
                Some((current, token, _)) if current == holder => *token,
                Some(_) => return None,
                None => {
                    record.last_token += 1;
                    record.last_token
                }
            };
            record.holding = Some((holder.to_owned(), token, now + ttl));
            Some(LeaseGrant {
                name: name.to_owned(),
                holder: holder.to_owned(),
                token,
                ttl,
            })
        }))
    }

    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.with(&grant.name, |record| {
            if matches!(&record.holding, Some((holder, token, _)) if *holder == grant.holder && *token == grant.token)
            {
                record.holding = None;
            }
        });
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<LeaseHolder>, LeaseError> {
        let now = Instant::now();
        Ok(self.with(name, |record| {
            record
                .live_holding(now)
                .map(|(holder, token, expires)| LeaseHolder {
                    holder: holder.clone(),
                    token: *token,
                    expires_in: expires.saturating_duration_since(now),
                })
        }))
    }

    async fn claim_tick(
        &self,
        grant: &LeaseGrant,
        entry: &str,
        tick: DateTime<Utc>,
    ) -> Result<TickClaim, LeaseError> {
        let now = Instant::now();
        Ok(self.with(&grant.name, |record| {
            match record.live_holding(now) {
                Some((holder, token, _)) if *holder == grant.holder && *token == grant.token => {}
                _ => return TickClaim::LeaseLost,
            }
            // Stored at millisecond precision, as the other stores keep it.
            let tick = tick_from_millis(tick_millis(tick)).unwrap_or(tick);
            match record.ticks.get(entry) {
                Some(last) if *last >= tick => TickClaim::AlreadyClaimed,
                _ => {
                    record.ticks.insert(entry.to_owned(), tick);
                    TickClaim::Claimed
                }
            }
        }))
    }

    async fn last_ticks(&self, name: &str) -> Result<HashMap<String, DateTime<Utc>>, LeaseError> {
        Ok(self.with(name, |record| record.ticks.clone()))
    }
}
