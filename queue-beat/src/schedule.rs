//! When an entry fires: a fixed interval, a cron expression in a time zone, or one time.
//!
//! A schedule is a set of instants (its *ticks*); the beat asks for the next tick after a
//! time and for the latest tick at or before one. Ticks are deterministic, the same on every
//! node, so that each has an id:
//!
//! - [`Schedule::every`]: multiples of the interval since the Unix epoch (a 1 s entry ticks
//!   on every whole second, a 1 h entry on the hour, UTC);
//! - [`Schedule::cron`]: the expression's times in its time zone, with the daylight-saving
//!   rules of Vixie cron (croner's): a fixed time that the clock skips fires at the first
//!   instant after the gap, a fixed time that the clock repeats fires once; wildcard and
//!   stepped fields fire in both passes of a repeated hour, as the wall clock shows them;
//! - [`Schedule::once`]: one instant.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use queue_beat::Schedule;
//! let nightly = Schedule::cron("0 3 * * *", chrono_tz::Europe::Berlin).unwrap();
//! let after = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
//! // 03:00 in Berlin on 29 March 2026 is summer time already: 01:00 UTC.
//! assert_eq!(nightly.next_after(after), Some(Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()));
//! ```

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Why a schedule cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    /// An interval of zero, or one too large to compute with.
    #[error("invalid interval {0:?}: it must be at least 1 ms and at most 100 years")]
    Interval(Duration),
}

/// When an entry fires.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Every(i64),
    Cron {
        cron: Box<Cron>,
        expression: String,
        zone: Tz,
    },
    Once(DateTime<Utc>),
}

const MAX_INTERVAL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

impl Schedule {
    /// Every `interval`, on multiples of it since the Unix epoch.
    pub fn every(interval: Duration) -> Result<Self, ScheduleError> {
        let millis = interval.as_millis();
        if millis == 0 || millis > MAX_INTERVAL_MS {
            return Err(ScheduleError::Interval(interval));
        }
        let millis = i64::try_from(millis).map_err(|_| ScheduleError::Interval(interval))?;
        Ok(Self {
            kind: Kind::Every(millis),
        })
    }

    /// A cron expression read in `zone`: five fields (minute hour day month weekday), or six
    /// with seconds first. Names (`MON`, `JAN`), ranges, lists, steps, `L`, `W` and `#` as
    /// croner reads them.
    pub fn cron(expression: &str, zone: Tz) -> Result<Self, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| ScheduleError::Cron {
                expression: expression.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Self {
            kind: Kind::Cron {
                cron: Box::new(cron),
                expression: expression.to_owned(),
                zone,
            },
        })
    }

    /// [`Schedule::cron`] with the zone by its IANA name (`"UTC"`, `"Europe/Berlin"`).
    pub fn cron_in(expression: &str, zone: &str) -> Result<Self, ScheduleError> {
        Self::cron(expression, parse_zone(zone)?)
    }

    /// Once, at `when`.
    pub fn once<Z: TimeZone>(when: DateTime<Z>) -> Self {
        Self {
            kind: Kind::Once(when.with_timezone(&Utc)),
        }
    }

    /// Whether it fires once only.
    pub fn is_once(&self) -> bool {
        matches!(self.kind, Kind::Once(_))
    }

    /// The first tick strictly after `after`; `None` when there is none (a one-off in the
    /// past, a cron expression that never matches).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(interval) => {
                let millis = after.timestamp_millis();
                let next = millis
                    .div_euclid(*interval)
                    .checked_add(1)?
                    .checked_mul(*interval)?;
                Utc.timestamp_millis_opt(next).single()
            }
            Kind::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
            Kind::Once(when) => (*when > after).then_some(*when),
        }
    }

    /// The latest tick at or before `at`; `None` when there is none.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(interval) => {
                let millis = at.timestamp_millis();
                let latest = millis.div_euclid(*interval).checked_mul(*interval)?;
                Utc.timestamp_millis_opt(latest).single()
            }
            Kind::Cron { cron, zone, .. } => cron
                .find_previous_occurrence(&at.with_timezone(zone), true)
                .ok()
                .map(|latest| latest.with_timezone(&Utc)),
            Kind::Once(when) => (*when <= at).then_some(*when),
        }
    }

    /// The next `count` ticks after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::with_capacity(count);
        let mut cursor = after;
        while ticks.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            ticks.push(next);
            cursor = next;
        }
        ticks
    }
}

/// A time zone by its IANA name.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

impl fmt::Display for Schedule {
    /// `every 10s`, `cron "0 3 * * *" Europe/Berlin`, `once 2026-12-24T18:00:00Z`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(millis) => {
                let interval = Duration::from_millis(u64::try_from(*millis).unwrap_or(0));
                write!(formatter, "every {}", humantime::format_duration(interval))
            }
            Kind::Cron {
                expression, zone, ..
            } => write!(formatter, "cron {expression:?} {zone}"),
            Kind::Once(when) => write!(
                formatter,
                "once {}",
                when.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Schedule({self})")
    }
}
