//! An entry of a schedule: what to send (a signature), when (a [`Schedule`]) and what to do
//! with ticks missed while no beat was leading ([`Missed`]).

use queue_core::Signature;

use crate::schedule::Schedule;

/// What happens to ticks that passed while no beat could send them (all beats down, or a
/// store outage), beyond the late window (see [`Beat::late_window`](crate::Beat::late_window)).
/// Ticks inside the window, such as those of a leader failover, are always sent, each once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missed {
    /// Send the latest missed tick once, as Celery beat does when it comes back.
    #[default]
    RunOnce,
    /// Send nothing for them; go on with the next tick.
    Skip,
}

/// One periodic entry: a name (unique in the schedule, it keys the entry's stored state), a
/// schedule and the signature sent at every tick.
///
/// ```
/// use std::time::Duration;
/// use queue_beat::{Entry, Missed, Schedule};
/// use queue_core::Signature;
/// let entry = Entry::new(
///     "cleanup",
///     Schedule::every(Duration::from_secs(600)).unwrap(),
///     Signature::new("tasks.cleanup").queue("maintenance").expires_in(Duration::from_secs(300)),
/// )
/// .missed(Missed::Skip);
/// assert_eq!(entry.name(), "cleanup");
/// ```
#[derive(Clone, Debug)]
pub struct Entry {
    name: String,
    schedule: Schedule,
    signature: Signature,
    missed: Missed,
}

impl Entry {
    /// An entry sending `signature` on `schedule`.
    pub fn new(
        name: impl Into<String>,
        schedule: Schedule,
        signature: impl Into<Signature>,
    ) -> Self {
        Self {
            name: name.into(),
            schedule,
            signature: signature.into(),
            missed: Missed::default(),
        }
    }

    /// What to do with missed ticks.
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it fires.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// What it sends.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Its missed-tick policy.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }
}
