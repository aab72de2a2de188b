//! What a beat reports: who leads, each entry's last and next tick, the ticks it sent.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::beat::Beat;

/// A beat instance's view of its schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BeatStatus {
    /// The schedule's (and lease's) name.
    pub name: String,
    /// This instance's id in the lease.
    pub holder: String,
    /// Whether this instance holds the lease (and so sends).
    pub leading: bool,
    /// The fencing token of its holding, when it leads.
    pub token: Option<u64>,
    /// The entries.
    pub entries: Vec<EntryStatus>,
}

/// One entry as a beat sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntryStatus {
    /// The entry's name.
    pub name: String,
    /// The task it sends.
    pub task: String,
    /// Its schedule, as text (`every 1s`, `cron "0 3 * * *" Europe/Berlin`).
    pub schedule: String,
    /// The last tick sent (by any instance), as far as this one knows.
    pub last_tick: Option<DateTime<Utc>>,
    /// The next tick.
    pub next_tick: Option<DateTime<Utc>>,
}

impl BeatStatus {
    pub(crate) fn new(beat: &Beat, holder: &str) -> Self {
        let now = Utc::now();
        Self {
            name: beat.name.clone(),
            holder: holder.to_owned(),
            leading: false,
            token: None,
            entries: beat
                .entries
                .iter()
                .map(|entry| EntryStatus {
                    name: entry.name().to_owned(),
                    task: entry.signature().name.clone(),
                    schedule: entry.schedule().to_string(),
                    last_tick: None,
                    next_tick: entry.schedule().next_after(now),
                })
                .collect(),
        }
    }
}

/// A tick this instance sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentTick {
    /// The entry.
    pub entry: String,
    /// The time it was scheduled for.
    pub scheduled: DateTime<Utc>,
    /// The tick's id, also the sent task's id.
    pub tick_id: String,
    /// The fencing token it was sent under.
    pub token: u64,
}
