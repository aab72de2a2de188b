//! The schedule file of `queue beat --schedule FILE`, in TOML, so that teams without Rust
//! code (Python-only ones) declare their periodic tasks as Celery's `beat_schedule` does.
//!
//! ```toml
//! [beat]                       # all optional
//! name = "celery.beat"         # beats of one name share one lease and state
//! lease_ttl = "10s"
//! timezone = "Europe/Berlin"   # of cron entries and local `at` times; default UTC
//!
//! [entries.add-every-minute]
//! task = "tasks.add"
//! every = "1m"                 # or seconds: every = 60
//! args = [1, 2]
//! queue = "math"
//! priority = 5
//! expires = "30s"
//!
//! [entries.nightly-report]
//! task = "reports.nightly"
//! cron = "0 3 * * *"
//! timezone = "America/New_York"
//! kwargs = { format = "pdf" }
//! missed = "skip"              # or "run-once" (default)
//!
//! [entries.launch]
//! task = "shop.open"
//! at = 2026-12-24T18:00:00Z
//! ```
//!
//! An error names the line it is on: `schedule.toml:12: invalid cron expression ...`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use queue_core::Signature;
use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::beat::Beat;
use crate::entry::{Entry, Missed};
use crate::schedule::{Schedule, parse_zone};

/// A schedule file that cannot be read, with the line at fault.
#[derive(Debug)]
pub struct FileError {
    /// The file, when read from one.
    pub path: Option<PathBuf>,
    /// The line at fault, from 1 (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    /// `schedule.toml:12: what is wrong` (the path and line when known).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place: Vec<String> = self
            .path
            .iter()
            .map(|path| path.display().to_string())
            .chain((self.line > 0).then(|| self.line.to_string()))
            .collect();
        if place.is_empty() {
            formatter.write_str(&self.message)
        } else {
            write!(formatter, "{}: {}", place.join(":"), self.message)
        }
    }
}

impl std::error::Error for FileError {}

/// A parsed schedule file: the beat's options and its entries.
#[derive(Clone, Debug, Default)]
pub struct ScheduleFile {
    /// `[beat] name`.
    pub name: Option<String>,
    /// `[beat] lease_ttl`.
    pub lease_ttl: Option<Duration>,
    /// `[beat] late_window`.
    pub late_window: Option<Duration>,
    /// `[beat] events`: send `beat-heartbeat` events.
    pub events: Option<bool>,
    /// The entries, by name.
    pub entries: Vec<Entry>,
}

impl ScheduleFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| FileError {
            path: Some(path.to_owned()),
            line: 0,
            message: format!("cannot read the schedule file: {error}"),
        })?;
        Self::parse(&text).map_err(|error| FileError {
            path: Some(path.to_owned()),
            ..error
        })
    }

    /// Parses and checks a schedule file's text.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let at = |span: Range<usize>, message: String| FileError {
            path: None,
            line: line_of(text, span.start),
            message,
        };
        let spec: FileSpec = toml::from_str(text).map_err(|error| {
            at(
                error.span().unwrap_or(0..0),
                error.message().trim().to_owned(),
            )
        })?;
        let beat = spec.beat.unwrap_or_default();
        let zone = match &beat.timezone {
            Some(name) => {
                parse_zone(name.get_ref()).map_err(|error| at(name.span(), error.to_string()))?
            }
            None => Tz::UTC,
        };
        let mut entries = Vec::with_capacity(spec.entries.len());
        for (name, entry) in spec.entries {
            let span = entry.span();
            let entry = entry.into_inner();
            entries.push(entry.build(name, zone, span, &at)?);
        }
        Ok(Self {
            name: beat.name,
            lease_ttl: beat.lease_ttl.map(|ttl| ttl.into_inner().0),
            late_window: beat.late_window.map(|window| window.into_inner().0),
            events: beat.events,
            entries,
        })
    }

    /// A beat with this file's options and entries.
    pub fn apply(self, mut beat: Beat) -> Beat {
        if let Some(name) = self.name {
            beat = beat.name(name);
        }
        if let Some(ttl) = self.lease_ttl {
            beat = beat.lease_ttl(ttl);
        }
        if let Some(window) = self.late_window {
            beat = beat.late_window(window);
        }
        if let Some(events) = self.events {
            beat = beat.send_events(events);
        }
        self.entries.into_iter().fold(beat, Beat::entry)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    beat: Option<BeatSpec>,
    #[serde(default)]
    entries: BTreeMap<String, Spanned<EntrySpec>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BeatSpec {
    name: Option<String>,
    lease_ttl: Option<Spanned<DurationSpec>>,
    late_window: Option<Spanned<DurationSpec>>,
    timezone: Option<Spanned<String>>,
    events: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    task: String,
    every: Option<Spanned<DurationSpec>>,
    cron: Option<Spanned<String>>,
    at: Option<Spanned<toml::Value>>,
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    queue: Option<String>,
    priority: Option<Spanned<u8>>,
    expires: Option<Spanned<DurationSpec>>,
    #[serde(default)]
    missed: MissedSpec,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum MissedSpec {
    #[default]
    RunOnce,
    Skip,
}

/// A duration as seconds (`90`, `0.5`) or as text (`"1m30s"`, `"2h"`).
struct DurationSpec(Duration);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => Duration::try_from_secs_f64(seconds)
                .map(DurationSpec)
                .map_err(|_| serde::de::Error::custom(format!("invalid duration {seconds} s"))),
            Raw::Text(text) => {
                humantime::parse_duration(&text)
                    .map(DurationSpec)
                    .map_err(|error| {
                        serde::de::Error::custom(format!("invalid duration {text:?}: {error}"))
                    })
            }
        }
    }
}

impl fmt::Debug for DurationSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl EntrySpec {
    fn build(
        self,
        name: String,
        default_zone: Tz,
        span: Range<usize>,
        at: &impl Fn(Range<usize>, String) -> FileError,
    ) -> Result<Entry, FileError> {
        let zone = match &self.timezone {
            Some(zone) => {
                parse_zone(zone.get_ref()).map_err(|error| at(zone.span(), error.to_string()))?
            }
            None => default_zone,
        };
        let schedule = match (&self.every, &self.cron, &self.at) {
            (Some(every), None, None) => {
                if let Some(zone) = &self.timezone {
                    return Err(at(
                        zone.span(),
                        format!("entry {name:?}: timezone applies to cron and at, not every"),
                    ));
                }
                Schedule::every(every.get_ref().0)
                    .map_err(|error| at(every.span(), format!("entry {name:?}: {error}")))?
            }
            (None, Some(cron), None) => Schedule::cron(cron.get_ref(), zone)
                .map_err(|error| at(cron.span(), format!("entry {name:?}: {error}")))?,
            (None, None, Some(when)) => Schedule::once(
                parse_time(when.get_ref(), zone)
                    .map_err(|message| at(when.span(), format!("entry {name:?}: {message}")))?,
            ),
            _ => {
                return Err(at(
                    span,
                    format!("entry {name:?}: give exactly one of every, cron or at"),
                ));
            }
        };
        let mut signature = Signature::new(self.task)
            .args(self.args)
            .kwargs(self.kwargs);
        if let Some(queue) = self.queue {
            signature = signature.queue(queue);
        }
        if let Some(priority) = self.priority {
            if *priority.get_ref() > queue_core::MAX_PRIORITY {
                return Err(at(
                    priority.span(),
                    format!(
                        "entry {name:?}: priority {} is above {}",
                        priority.get_ref(),
                        queue_core::MAX_PRIORITY
                    ),
                ));
            }
            signature = signature.priority(*priority.get_ref());
        }
        if let Some(expires) = self.expires {
            signature = signature.expires_in(expires.get_ref().0);
        }
        let missed = match self.missed {
            MissedSpec::RunOnce => Missed::RunOnce,
            MissedSpec::Skip => Missed::Skip,
        };
        Ok(Entry::new(name, schedule, signature).missed(missed))
    }
}

/// An `at` value: a TOML date-time or a string, with an offset, or local to `zone`.
fn parse_time(value: &toml::Value, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = match value {
        toml::Value::Datetime(datetime) => datetime.to_string(),
        toml::Value::String(text) => text.clone(),
        other => {
            return Err(format!(
                "at must be a date-time, found {}",
                other.type_str()
            ));
        }
    };
    if let Ok(when) = DateTime::parse_from_rfc3339(&text) {
        return Ok(when.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
    .ok_or_else(|| {
        format!("invalid date-time {text:?} (expected RFC 3339, e.g. 2026-12-24T18:00:00Z)")
    })?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|when| when.with_timezone(&Utc))
        .ok_or_else(|| format!("{text} does not exist in {zone} (a daylight-saving gap)"))
}
