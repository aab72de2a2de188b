//! Timestamps on the wire: ISO-8601 as Python's `datetime.isoformat()` writes them.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, SubsecRound, Utc,
};
use serde::{Deserialize, Deserializer, Serializer};

/// The latest time a deadline is set to: Python's `datetime.max` (9999-12-31 23:59:59.999999
/// UTC), so that a saturated deadline still reads back in a Python worker or monitor.
pub fn far_future() -> DateTime<FixedOffset> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|time| time.and_utc().fixed_offset())
        .unwrap_or(DateTime::<Utc>::MAX_UTC.fixed_offset())
}

/// `now + duration`, saturating at [`far_future`]: never panics, whatever the duration.
pub fn after(duration: Duration) -> DateTime<FixedOffset> {
    add(now(), duration)
}

/// `when + duration`, saturating at [`far_future`] (or at `when` when that is later still).
pub fn add(when: DateTime<FixedOffset>, duration: Duration) -> DateTime<FixedOffset> {
    let bound = far_future().max(when);
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|delta| when.checked_add_signed(delta))
        .map_or(bound, |later| later.min(bound))
}

/// `now + seconds` for a number of seconds from a message or an option (`countdown`, relative
/// `expires`): `None` when the number is NaN, infinite or negative; huge values saturate at
/// [`far_future`].
pub fn after_seconds(seconds: f64) -> Option<DateTime<FixedOffset>> {
    seconds_duration(seconds).map(after)
}

/// The time from now until `when`; zero when `when` is past. Never panics.
pub fn until(when: DateTime<FixedOffset>) -> Duration {
    between(now(), when)
}

/// The time from `from` until `to`; zero when `to` is not later. Never panics.
pub fn between(from: DateTime<FixedOffset>, to: DateTime<FixedOffset>) -> Duration {
    // Both ends lie within chrono's range (about ±262,000 years), so the difference fits a
    // `chrono::Duration`; `to_std` fails only for a negative one.
    to.signed_duration_since(from)
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// A number of seconds as a [`Duration`]: `None` for NaN, infinite or negative values; values
/// past what a `Duration` holds saturate at [`Duration::MAX`]. Never panics (unlike
/// `Duration::from_secs_f64`).
pub fn seconds_duration(seconds: f64) -> Option<Duration> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// Parses an ISO-8601 timestamp as Celery writes or accepts it: with an offset (`+00:00`),
/// with `Z`, or naive (read as UTC, like the Python worker does). Years outside Python's
/// `datetime` range (1 to 9999) are refused: no Celery producer can write them, and a Python
/// worker could not read them back.
pub fn parse_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    parse_any_year(text).filter(|parsed| (1..=9999).contains(&parsed.year()))
}

fn parse_any_year(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed);
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc().fixed_offset());
        }
    }
    None
}

/// Reads an optional timestamp field: `null` or `""` is unset, an ISO-8601 string is parsed,
/// anything else is an error that names `field` and the value received.
pub(crate) fn deserialize_field<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) if text.is_empty() => Ok(None),
        Some(serde_json::Value::String(text)) => {
            parse_timestamp(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{field}`: {text:?} is not an ISO-8601 timestamp between years 1 and 9999"
                ))
            })
        }
        Some(other) => Err(serde::de::Error::custom(format!(
            "`{field}`: expected an ISO-8601 timestamp, not {}",
            super::shown(&other)
        ))),
    }
}

/// Clamps a timestamp into the range every reader of the wire accepts (Python's `datetime`):
/// a later one becomes [`far_future`], an earlier one 0001-01-01 UTC.
pub fn clamp(when: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    let earliest = NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc().fixed_offset());
    match earliest {
        Some(earliest) if when < earliest => earliest,
        _ if when > far_future() => far_future(),
        _ => when,
    }
}

/// Formats like Python's `isoformat()`: microseconds only when non-zero, offset as `+HH:MM`.
pub fn format_timestamp(value: &DateTime<FixedOffset>) -> String {
    let format = if value.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    value.to_rfc3339_opts(format, false)
}

/// The current time as a UTC timestamp with a fixed offset, to the microsecond: the precision
/// of the wire format (and of Python's `datetime`), so that a timestamp made here reads back
/// equal once it went through a broker or a result store.
pub fn now() -> DateTime<FixedOffset> {
    Utc::now().trunc_subsecs(6).fixed_offset()
}

pub(crate) fn serialize_optional<S: Serializer>(
    value: &Option<DateTime<FixedOffset>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(time) => serializer.serialize_str(&format_timestamp(time)),
        None => serializer.serialize_none(),
    }
}

pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    deserialize_field(deserializer, "timestamp")
}

/// The monotonic instant `wait` from now, for deadlines of waits a caller passes in:
/// a wait too long for the clock (`Duration::MAX`) means about a century, never a panic.
pub fn deadline_in(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_python_isoformat() {
        for text in [
            "2026-11-24T15:25:28.564043+00:00",
            "2026-11-24T10:33:11.772779-05:00",
            "2026-11-24T15:25:28+01:00",
        ] {
            assert_eq!(format_timestamp(&parse_timestamp(text).unwrap()), text);
        }
    }

    #[test]
    fn now_survives_the_wire() {
        let now = now();
        assert_eq!(parse_timestamp(&format_timestamp(&now)), Some(now));
    }

    #[test]
    fn naive_and_zulu_are_utc() {
        let naive = parse_timestamp("2000-01-01T00:00:00").unwrap();
        let zulu = parse_timestamp("2000-01-01T00:00:00Z").unwrap();
        assert_eq!(naive, zulu);
        assert_eq!(naive.offset().local_minus_utc(), 0);
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn only_python_years_parse() {
        assert!(parse_timestamp("0001-01-01T00:00:00").is_some());
        assert!(parse_timestamp("9999-12-31T23:59:59.999999+00:00").is_some());
        for text in [
            "+99999-01-01T00:00:00",
            "+10000-01-01T00:00:00",
            "0000-01-01T00:00:00",
            "-0001-01-01T00:00:00",
        ] {
            assert!(parse_timestamp(text).is_none(), "{text}");
        }
    }

    #[test]
    fn saturated_deadlines_survive_the_wire() {
        let far = after(Duration::MAX);
        assert_eq!(far, far_future());
        assert_eq!(parse_timestamp(&format_timestamp(&far)), Some(far));
        assert_eq!(between(far, now()), Duration::ZERO);
    }
}
