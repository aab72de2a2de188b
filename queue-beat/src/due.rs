//! Which ticks of an entry to send now: the decision, kept apart from the store and the
//! broker so that it can be read (and tested) alone.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::entry::Missed;
use crate::schedule::Schedule;

/// At most this many late ticks of one entry are sent in one pass; older ones count as
/// missed (a tiny interval with a long late window).
const MAX_LATE_TICKS: usize = 1000;

/// The ticks of one entry that are due.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Due {
    /// To send, oldest first.
    pub send: Vec<DateTime<Utc>>,
    /// Missed ticks passed over (the latest of them), to move the cursor past them.
    pub skipped_through: Option<DateTime<Utc>>,
}

/// The ticks after `cursor` (the last tick sent, or `None` for a one-off never sent) and at
/// or before `now`: those at most `late_window` old are sent, each; older ones are missed and
/// follow `missed` when no late tick is sent (a late tick already is the catch-up run).
pub(crate) fn due(
    schedule: &Schedule,
    cursor: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    late_window: Duration,
    missed: Missed,
) -> Due {
    let first = match cursor {
        Some(cursor) => schedule.next_after(cursor),
        None => schedule.latest_at_or_before(now),
    };
    let Some(first) = first.filter(|first| *first <= now) else {
        return Due::default();
    };
    let late_start =
        now - chrono::Duration::from_std(late_window).unwrap_or(chrono::Duration::MAX / 2);
    let mut send = Vec::new();
    let mut tick = if first >= late_start {
        Some(first)
    } else {
        schedule.next_after(late_start - chrono::Duration::milliseconds(1))
    };
    while let Some(at) = tick.filter(|at| *at <= now) {
        if send.len() == MAX_LATE_TICKS {
            send.remove(0);
        }
        send.push(at);
        tick = schedule.next_after(at);
    }
    if first >= late_start {
        return Due {
            send,
            skipped_through: None,
        };
    }
    let latest_missed = schedule
        .latest_at_or_before(late_start - chrono::Duration::milliseconds(1))
        .filter(|latest| *latest >= first)
        .unwrap_or(first);
    if send.is_empty() && missed == Missed::RunOnce {
        return Due {
            send: vec![latest_missed],
            skipped_through: None,
        };
    }
    Due {
        send,
        skipped_through: Some(latest_missed),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, second).unwrap()
    }

    fn every_second() -> Schedule {
        Schedule::every(Duration::from_secs(1)).unwrap()
    }

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn nothing_before_the_next_tick() {
        let due = due(
            &every_second(),
            Some(at(5)),
            at(5) + chrono::Duration::milliseconds(999),
            WINDOW,
            Missed::RunOnce,
        );
        assert_eq!(due, Due::default());
    }

    #[test]
    fn late_ticks_are_each_sent() {
        let due = due(
            &every_second(),
            Some(at(5)),
            at(8) + chrono::Duration::milliseconds(10),
            WINDOW,
            Missed::Skip,
        );
        assert_eq!(due.send, vec![at(6), at(7), at(8)]);
        assert_eq!(due.skipped_through, None);
    }

    #[test]
    fn missed_ticks_run_once() {
        let late = due(
            &every_second(),
            Some(at(0)),
            at(30),
            WINDOW,
            Missed::RunOnce,
        );
        // 20..=30 are late (sent); 1..=19 are missed, covered by the late ones.
        assert_eq!(late.send.first(), Some(&at(20)));
        assert_eq!(late.send.len(), 11);
        assert_eq!(late.skipped_through, Some(at(19)));

        let hourly = Schedule::every(Duration::from_secs(3600)).unwrap();
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 5, 30, 0).unwrap();
        let caught_up = due(&hourly, Some(start), now, WINDOW, Missed::RunOnce);
        assert_eq!(
            caught_up.send,
            vec![Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap()]
        );
    }

    #[test]
    fn missed_ticks_skipped() {
        let hourly = Schedule::every(Duration::from_secs(3600)).unwrap();
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 5, 30, 0).unwrap();
        let due = due(&hourly, Some(start), now, WINDOW, Missed::Skip);
        assert!(due.send.is_empty());
        assert_eq!(
            due.skipped_through,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap())
        );
    }

    #[test]
    fn one_off_fires_once() {
        let once = Schedule::once(at(10));
        assert!(
            due(&once, None, at(9), WINDOW, Missed::Skip)
                .send
                .is_empty()
        );
        assert_eq!(
            due(&once, None, at(11), WINDOW, Missed::Skip).send,
            vec![at(10)]
        );
        assert_eq!(
            due(&once, Some(at(10)), at(50), WINDOW, Missed::RunOnce),
            Due::default()
        );
        // Long past and never sent: missed.
        assert_eq!(
            due(&once, None, at(50), WINDOW, Missed::RunOnce).send,
            vec![at(10)]
        );
        assert!(
            due(&once, None, at(50), WINDOW, Missed::Skip)
                .send
                .is_empty()
        );
    }
}
