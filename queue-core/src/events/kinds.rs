//! The events a worker and a producer send (wire spec §6.3, §6.4) and the source that
//! stamps them with the standard fields.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::Local;
use serde_json::{Map, Value};

use super::encode::{EncodedEvent, Preamble, TaskFields};
use super::{Event, LamportClock};
use crate::broker::Publish;
use crate::protocol::Headers;

/// What our events give as `sw_ident` (Celery's workers say `py-celery`).
pub const SOFTWARE_IDENTITY: &str = "rs-queue";

/// Who sends events: the node name, process id and Lamport clock stamped on each.
#[derive(Clone, Debug)]
pub struct EventSource {
    hostname: String,
    pid: u64,
    utcoffset: f64,
    clock: Arc<LamportClock>,
    /// The JSON of the standard fields that do not change, for encoded task events.
    preamble: Arc<Preamble>,
}

impl EventSource {
    /// A source for node `hostname` (`celery@host` for a worker), with its own clock.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self::with_clock(hostname, Arc::new(LamportClock::default()))
    }

    /// A source sharing `clock` (a worker's events and control replies share one).
    pub fn with_clock(hostname: impl Into<String>, clock: Arc<LamportClock>) -> Self {
        let hostname = hostname.into();
        let pid = u64::from(std::process::id());
        let utcoffset = utcoffset();
        Self {
            preamble: Arc::new(Preamble::new(&hostname, utcoffset, pid)),
            hostname,
            pid,
            utcoffset,
            clock,
        }
    }

    /// The node name events are sent as.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The clock stamped on events.
    pub fn clock(&self) -> &Arc<LamportClock> {
        &self.clock
    }

    /// An event of type `kind` with `fields`, stamped now.
    pub fn event(&self, kind: &str, fields: Map<String, Value>) -> Event {
        Event {
            kind: kind.to_owned(),
            hostname: self.hostname.clone(),
            timestamp: unix_now(),
            utcoffset: self.utcoffset,
            pid: self.pid,
            clock: self.clock.forward(),
            fields,
        }
    }

    /// A task event.
    pub fn task(&self, event: TaskEvent) -> Event {
        let (kind, fields) = event.into_fields();
        self.event(kind, fields)
    }

    /// `worker-online`, `worker-heartbeat` or `worker-offline` (`kind`) with `status`.
    pub fn worker(&self, kind: WorkerEventKind, status: &WorkerStatus) -> Event {
        self.event(kind.as_str(), status.fields())
    }

    /// A task event stamped now, as JSON: what [`task`](Self::task) makes, without the
    /// [`Event`] in between.
    pub fn encode(&self, event: &TaskEvent) -> EncodedEvent {
        let (kind, fields) = TaskFields::of(event);
        self.encode_fields(kind, &fields)
    }

    /// `task-received` for a message with `headers`, as JSON, read from the headers in
    /// place (no copy of them).
    pub fn encode_received(&self, headers: &Headers) -> EncodedEvent {
        self.encode_fields("task-received", &TaskFields::received(headers))
    }

    /// `task-sent` for `publish`, as JSON, read from the message in place.
    pub fn encode_sent(&self, publish: &Publish) -> EncodedEvent {
        self.encode_fields("task-sent", &TaskFields::sent(publish))
    }

    fn encode_fields(&self, kind: &'static str, fields: &TaskFields<'_>) -> EncodedEvent {
        self.preamble
            .encode_task(kind, unix_now(), self.clock.forward(), fields)
    }
}

/// The three worker events every worker sends, task events on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEventKind {
    /// On start.
    Online,
    /// Every `freq` seconds.
    Heartbeat,
    /// On shutdown.
    Offline,
}

impl WorkerEventKind {
    /// The event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "worker-online",
            Self::Heartbeat => "worker-heartbeat",
            Self::Offline => "worker-offline",
        }
    }
}

/// What a worker event tells about the worker (§6.3).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStatus {
    /// Seconds between heartbeats; a monitor deems the worker gone after twice this.
    pub freq: f64,
    /// Tasks executing now.
    pub active: u64,
    /// Tasks accepted since the worker started.
    pub processed: u64,
    /// The 1, 5 and 15 minute load averages.
    pub loadavg: [f64; 3],
    /// The software version (`sw_ver`).
    pub version: String,
}

impl WorkerStatus {
    fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("freq".into(), Value::from(self.freq));
        fields.insert("active".into(), Value::from(self.active));
        fields.insert("processed".into(), Value::from(self.processed));
        let loadavg: Vec<Value> = self
            .loadavg
            .iter()
            .map(|load| Value::from((load * 100.0).ceil() / 100.0))
            .collect();
        fields.insert("loadavg".into(), Value::Array(loadavg));
        fields.insert("sw_ident".into(), Value::from(SOFTWARE_IDENTITY));
        fields.insert("sw_ver".into(), Value::from(self.version.as_str()));
        fields.insert("sw_sys".into(), Value::from(system_name()));
        fields
    }
}

/// A task event and its fields (§6.4). Reprs are Python-style strings, as Flower shows them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TaskEvent {
    /// Published by a producer (when `task_send_sent_event` is on).
    Sent {
        /// The message's headers.
        headers: Box<Headers>,
        /// The queue it was sent to.
        queue: String,
        /// The exchange (empty for the default exchange).
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// Received by a worker.
    Received(Box<Headers>),
    /// Started executing.
    Started {
        /// The task id.
        uuid: String,
    },
    /// Returned a value.
    Succeeded {
        /// The task id.
        uuid: String,
        /// `repr` of the return value.
        result: String,
        /// Seconds it ran.
        runtime: f64,
    },
    /// Failed for good.
    Failed {
        /// The task id.
        uuid: String,
        /// `repr` of the error, e.g. `ValueError('boom')`.
        exception: String,
        /// The traceback text (may be empty).
        traceback: String,
    },
    /// Failed and will run again.
    Retried {
        /// The task id.
        uuid: String,
        /// `repr` of the error.
        exception: String,
        /// The traceback text (may be empty).
        traceback: String,
    },
    /// Revoked, expired or terminated.
    Revoked {
        /// The task id.
        uuid: String,
        /// Whether it was stopped while running.
        terminated: bool,
        /// The signal it was stopped with, if any.
        signum: Option<i32>,
        /// Whether it was discarded because it expired.
        expired: bool,
    },
    /// Rejected by the worker (dead-lettered or given back).
    Rejected {
        /// The task id.
        uuid: String,
        /// Whether the message went back to its queue.
        requeue: bool,
    },
}

impl TaskEvent {
    /// `task-sent` for `publish`.
    pub fn sent(publish: &Publish) -> Self {
        Self::Sent {
            headers: Box::new(publish.message.headers.clone()),
            queue: publish.queue.clone(),
            exchange: publish.exchange.clone().unwrap_or_default(),
            routing_key: publish
                .routing_key
                .clone()
                .unwrap_or_else(|| publish.queue.clone()),
        }
    }

    /// `task-received` for a message with `headers`.
    pub fn received(headers: &Headers) -> Self {
        Self::Received(Box::new(headers.clone()))
    }

    /// The event type and its fields.
    pub fn into_fields(self) -> (&'static str, Map<String, Value>) {
        let (kind, fields) = TaskFields::of(&self);
        (kind, fields.to_map())
    }
}

/// Seconds since the epoch, as Python's `time.time()`.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Hours west of UTC, as Celery sends `utcoffset` (`time.timezone / 3600`): New York 5.0.
fn utcoffset() -> f64 {
    hours_west(Local::now().offset().local_minus_utc())
}

/// Hours west of UTC for a zone `local_minus_utc` seconds east of it. UTC is `0.0`, as
/// Python's `time.timezone / 3600` gives, not the `-0.0` negating zero makes.
fn hours_west(local_minus_utc: i32) -> f64 {
    let hours = -f64::from(local_minus_utc) / 3600.0;
    if hours == 0.0 { 0.0 } else { hours }
}

/// `platform.system()`: `Linux`, `Darwin`, `Windows`.
fn system_name() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::hours_west;

    #[test]
    fn utcoffset_is_hours_west_and_utc_is_positive_zero() {
        assert_eq!(hours_west(-5 * 3600), 5.0);
        assert_eq!(hours_west(5 * 3600 + 1800), -5.5);
        let utc = hours_west(0);
        assert!(utc == 0.0 && utc.is_sign_positive());
        assert_eq!(serde_json::to_string(&utc).unwrap(), "0.0");
    }
}
