//! Timestamps on the wire: ISO-8601 as Python's `datetime.isoformat()` writes them.

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Parses an ISO-8601 timestamp as Celery writes or accepts it: with an offset (`+00:00`),
/// with `Z`, or naive (read as UTC, like the Python worker does).
pub fn parse_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
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
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => parse_timestamp(&text).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid ISO-8601 timestamp {text:?}"))
        }),
    }
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
}
