//! Tick ids: one per (schedule, entry, scheduled time), the same on every node.
//!
//! The id is the task id of the message the tick sends, so a tick that were ever sent twice
//! would show as one task id twice, and a reader can tell which tick a task came from.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The namespace of tick ids (a fixed random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_9d4a_4e55_b0c7_2a81_f3d9_e640);

/// The id of the tick of `entry` scheduled at `scheduled` in the schedule `schedule`:
/// a name-based (v5) UUID.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let at = Utc.with_ymd_and_hms(2026, 12, 2, 3, 0, 0).unwrap();
/// let id = queue_beat::tick_id("celery.beat", "nightly", at);
/// assert_eq!(id, queue_beat::tick_id("celery.beat", "nightly", at));
/// assert_ne!(id, queue_beat::tick_id("celery.beat", "hourly", at));
/// ```
pub fn tick_id(schedule: &str, entry: &str, scheduled: DateTime<Utc>) -> String {
    let name = format!(
        "{schedule}\n{entry}\n{}",
        queue_core::lease::tick_millis(scheduled)
    );
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}
