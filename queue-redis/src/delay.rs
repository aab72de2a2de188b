//! Delayed messages, parked where kombu's restore finds them.
//!
//! A message whose eta is in the future (published so, deferred by a worker, or a retry)
//! waits as an `unacked` entry `[envelope, "", queue]` whose `unacked_index` score is its
//! due time minus the visibility timeout. To every visibility-timeout restore, Python's
//! `restore_visible` included, it becomes overdue exactly when it is due, and goes back to
//! its queue: so it runs whoever consumes the queue and whether or not the process that
//! published it still runs. The delayed set `_queue.delayed.<queue>` indexes these entries by
//! due time (ms) so that our consumers of the queue promote them on time, in the fetch
//! script, without waiting for a restore sweep (see `scripts::promote_lua`).

use std::time::Duration;

use crate::wire;

/// A delayed message ready to be parked: what `unacked`, `unacked_index` and the delayed set
/// get.
pub(crate) struct Parked {
    /// Its delivery tag, the key in `unacked`.
    pub(crate) tag: String,
    /// kombu's `unacked` value, `[envelope, "", queue]`.
    pub(crate) value: Vec<u8>,
    /// Its `unacked_index` score: due time minus the visibility timeout (seconds).
    pub(crate) index_score: String,
    /// Its due time (ms since the epoch), its score in the delayed set.
    pub(crate) due_ms: i64,
    /// Its member in the delayed set.
    pub(crate) member: String,
}

impl Parked {
    /// `raw`, an envelope with delivery tag `tag`, bound for list `lane` (1-based, among its
    /// queue's lists) of `queue`, due at `due_ms`.
    pub(crate) fn new(
        raw: &[u8],
        tag: String,
        queue: &str,
        lane: usize,
        due_ms: i64,
        visibility: Duration,
    ) -> Self {
        let index_score = index_score(due_ms, visibility);
        Self {
            member: member(lane, &index_score, raw.len(), &tag),
            value: wire::unacked_value(raw, queue),
            tag,
            index_score,
            due_ms,
        }
    }
}

/// The `unacked_index` score at which a restore finds a message due at `due_ms` overdue: its
/// due time minus the visibility timeout, in seconds with milliseconds. A take or renew of
/// the same tag writes a later score (a restore needs now ≥ this score plus a timeout), so
/// the promotion tells a parked entry from one restored and taken again under its tag.
pub(crate) fn index_score(due_ms: i64, visibility: Duration) -> String {
    let seconds = due_ms as f64 / 1000.0 - visibility.as_secs_f64();
    format!("{seconds:.3}")
}

/// The delayed-set member of a parked entry: `<lane>|<index score>|<envelope length>|<tag>`.
pub(crate) fn member(lane: usize, index_score: &str, raw_len: usize, tag: &str) -> String {
    format!("{lane}|{index_score}|{raw_len}|{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_score_makes_a_restore_find_it_when_due() {
        // Due at 1 700 000 000.250 s with a one-hour timeout: overdue to a restore from then.
        assert_eq!(
            index_score(1_700_000_000_250, Duration::from_secs(3600)),
            "1699996400.250"
        );
        assert_eq!(
            index_score(1_700_000_000_000, Duration::from_millis(2500)),
            "1699999997.500"
        );
        let parked = Parked::new(b"{\"a\": 1}", "t-1".into(), "q", 2, 1_000, Duration::ZERO);
        assert_eq!(parked.member, "2|1.000|8|t-1");
        assert_eq!(parked.value, b"[{\"a\": 1}, \"\", \"q\"]");
        assert_eq!(parked.due_ms, 1_000);
    }
}
