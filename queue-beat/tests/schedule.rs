//! Schedules against known dates: intervals on epoch multiples, cron expressions in time
//! zones across both daylight-saving changes of 2026 in Berlin, one-off times.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use chrono_tz::Tz;
use queue_beat::Schedule;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn berlin(times: &[DateTime<Utc>]) -> Vec<String> {
    times
        .iter()
        .map(|time| {
            time.with_timezone(&Berlin)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .collect()
}

#[test]
fn intervals_tick_on_multiples_since_the_epoch() {
    let every = Schedule::every(Duration::from_secs(15 * 60)).unwrap();
    let after = utc(2026, 12, 2, 10, 7, 13);
    assert_eq!(
        every.upcoming(after, 3),
        vec![
            utc(2026, 12, 2, 10, 15, 0),
            utc(2026, 12, 2, 10, 30, 0),
            utc(2026, 12, 2, 10, 45, 0)
        ]
    );
    assert_eq!(
        every.latest_at_or_before(after),
        Some(utc(2026, 12, 2, 10, 0, 0))
    );
    assert_eq!(
        every.latest_at_or_before(utc(2026, 12, 2, 10, 0, 0)),
        Some(utc(2026, 12, 2, 10, 0, 0))
    );
    assert!(Schedule::every(Duration::ZERO).is_err());
    assert_eq!(every.to_string(), "every 15m");
}

#[test]
fn cron_on_known_dates() {
    // 09:00 on weekdays, Berlin; 2026-12-04 is a Friday.
    let weekdays = Schedule::cron("0 9 * * MON-FRI", Berlin).unwrap();
    assert_eq!(
        berlin(&weekdays.upcoming(utc(2026, 12, 4, 12, 0, 0), 2)),
        ["2026-12-07 09:00 CET", "2026-12-08 09:00 CET"]
    );
    // The last day of February, in a leap year and not.
    let last_day = Schedule::cron_in("0 0 L 2 *", "UTC").unwrap();
    assert_eq!(
        last_day.upcoming(utc(2027, 1, 1, 0, 0, 0), 2),
        vec![utc(2027, 2, 28, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0)]
    );
    // Six fields: seconds first.
    let seconds = Schedule::cron_in("*/20 * * * * *", "UTC").unwrap();
    assert_eq!(
        seconds.next_after(utc(2026, 12, 2, 0, 0, 5)),
        Some(utc(2026, 12, 2, 0, 0, 20))
    );
    assert_eq!(
        weekdays.to_string(),
        "cron \"0 9 * * MON-FRI\" Europe/Berlin"
    );
}

#[test]
fn a_fixed_time_skipped_by_spring_forward_fires_after_the_gap() {
    // 2026-03-29: Berlin's clocks jump from 02:00 CET to 03:00 CEST.
    let at_half_past_two = Schedule::cron("30 2 * * *", Berlin).unwrap();
    assert_eq!(
        berlin(&at_half_past_two.upcoming(utc(2026, 3, 28, 12, 0, 0), 3)),
        [
            "2026-03-29 03:00 CEST",
            "2026-03-30 02:30 CEST",
            "2026-03-31 02:30 CEST"
        ]
    );
    // A time after the gap is not moved: 03:00 is 01:00 UTC that day.
    let at_three = Schedule::cron("0 3 * * *", Berlin).unwrap();
    assert_eq!(
        at_three.next_after(utc(2026, 3, 28, 12, 0, 0)),
        Some(utc(2026, 3, 29, 1, 0, 0))
    );
}

#[test]
fn a_fixed_time_repeated_by_fall_back_fires_once() {
    // 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    let at_half_past_two = Schedule::cron("30 2 * * *", Berlin).unwrap();
    assert_eq!(
        berlin(&at_half_past_two.upcoming(utc(2026, 10, 24, 12, 0, 0), 2)),
        ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]
    );
    // The day is 25 hours long: 25 h between the two 02:30 runs around it.
    let runs = at_half_past_two.upcoming(utc(2026, 10, 23, 12, 0, 0), 3);
    assert_eq!(runs[1] - runs[0], chrono::Duration::hours(24));
    assert_eq!(runs[2] - runs[1], chrono::Duration::hours(25));
}

#[test]
fn interval_fields_follow_the_wall_clock_through_both_changes() {
    let half_hourly: Schedule = Schedule::cron("*/30 * * * *", Berlin).unwrap();
    // Spring: 02:00 and 02:30 do not exist.
    assert_eq!(
        berlin(&half_hourly.upcoming(utc(2026, 3, 29, 0, 15, 0), 3)),
        [
            "2026-03-29 01:30 CET",
            "2026-03-29 03:00 CEST",
            "2026-03-29 03:30 CEST"
        ]
    );
    // Fall: both passes through 02:00–03:00 run, half an hour apart in real time.
    let runs = half_hourly.upcoming(utc(2026, 10, 24, 23, 45, 0), 4);
    assert_eq!(
        berlin(&runs),
        [
            "2026-10-25 02:00 CEST",
            "2026-10-25 02:30 CEST",
            "2026-10-25 02:00 CET",
            "2026-10-25 02:30 CET"
        ]
    );
    for pair in runs.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::minutes(30));
    }
    // Looking back from inside the second pass finds the second pass.
    assert_eq!(
        berlin(&[half_hourly
            .latest_at_or_before(utc(2026, 10, 25, 1, 45, 0))
            .unwrap()]),
        ["2026-10-25 02:30 CET"]
    );
}

#[test]
fn one_off_times() {
    let launch = Schedule::once(Berlin.with_ymd_and_hms(2026, 12, 24, 18, 0, 0).unwrap());
    assert_eq!(
        launch.next_after(utc(2026, 12, 1, 0, 0, 0)),
        Some(utc(2026, 12, 24, 17, 0, 0))
    );
    assert_eq!(launch.next_after(utc(2026, 12, 24, 17, 0, 0)), None);
    assert!(launch.is_once());
    assert_eq!(launch.to_string(), "once 2026-12-24T17:00:00Z");
}

#[test]
fn bad_expressions_and_zones_are_errors_that_say_why() {
    let error = Schedule::cron("61 * * * *", Berlin)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("invalid cron expression \"61 * * * *\""),
        "{error}"
    );
    let error = Schedule::cron_in("0 3 * * *", "Mars/Olympus")
        .unwrap_err()
        .to_string();
    assert!(error.contains("Mars/Olympus"), "{error}");
    let _: Tz = queue_beat::parse_zone("America/New_York").unwrap();
}
