//! Why a beat cannot start.

use queue_core::lease::LeaseError;

use crate::schedule::ScheduleError;

/// Why a beat cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// An entry's schedule is invalid.
    #[error("entry {entry:?}: {source}")]
    Schedule {
        /// The entry.
        entry: String,
        /// What is wrong.
        #[source]
        source: ScheduleError,
    },
    /// Two entries have one name.
    #[error("two entries are named {0:?}; entry names key their stored state and must be unique")]
    DuplicateEntry(String),
    /// Neither the backend nor the broker can hold the lease.
    #[error(
        "no lease store: the beat keeps its lease in Redis, PostgreSQL or SQLite; give a \
         result backend or a broker of those (or a lease store) to the beat"
    )]
    NoLeaseStore,
    /// The lease store failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Connecting the store failed.
    #[error(transparent)]
    Connect(#[from] queue_core::Error),
}
