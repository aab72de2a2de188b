//! One worker as its events and inspect answers tell it. Online or offline the way
//! Celery's `State` decides (`celery.events.state.Worker.alive`): alive while the last
//! heartbeat, as received here, is younger than twice its `freq`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Heartbeats remembered per worker (Celery's `heartbeat_max`).
const HEARTBEATS_KEPT: usize = 4;
/// Celery's `HEARTBEAT_EXPIRE_WINDOW` (percent of `freq`): a worker is gone after
/// `2 × freq` without a heartbeat.
const EXPIRE_WINDOW: f64 = 2.0;

/// How long an inspect answer counts as a sign of life, in seconds.
const INSPECT_ALIVE: f64 = 15.0;

/// The inspect methods polled, as Flower's `Inspector.methods`.
pub const INSPECT_METHODS: [&str; 8] = [
    "stats",
    "active_queues",
    "registered",
    "scheduled",
    "active",
    "reserved",
    "revoked",
    "conf",
];

/// What the monitor knows of one worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// The node name (`celery@host`).
    pub hostname: String,
    /// Its process id.
    pub pid: Option<u64>,
    /// Seconds between its heartbeats (Celery's default 60 until one says otherwise).
    pub freq: f64,
    /// When its last heartbeats (or task events) were received here, oldest first.
    pub heartbeats: Vec<f64>,
    /// Its Lamport clock at its last event.
    pub clock: u64,
    /// Tasks executing at the last heartbeat.
    pub active: Option<u64>,
    /// Tasks processed at the last heartbeat.
    pub processed: Option<u64>,
    /// Load averages at the last heartbeat.
    pub loadavg: Option<Value>,
    /// `py-celery` or `rs-queue`.
    pub sw_ident: Option<String>,
    /// Its version.
    pub sw_ver: Option<String>,
    /// Its operating system.
    pub sw_sys: Option<String>,
    /// The last answer to each inspect method (`stats`, `active`, …).
    pub inspect: BTreeMap<String, Value>,
    /// When it last answered an inspect method.
    pub inspected_at: Option<f64>,
}

impl Worker {
    /// A worker known by name only.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            freq: 60.0,
            ..Self::default()
        }
    }

    /// Folds a worker event (`subject`: `online`, `heartbeat`, `offline`), or a task event
    /// of this worker (`None`: counts as a sign of life, as in Celery).
    pub fn apply(
        &mut self,
        subject: Option<&str>,
        received_at: f64,
        clock: u64,
        pid: u64,
        fields: &Map<String, Value>,
    ) {
        if subject.is_some() {
            self.clock = clock;
            if pid != 0 {
                self.pid = Some(pid);
            }
            for (field, value) in fields {
                match field.as_str() {
                    "freq" => self.freq = value.as_f64().unwrap_or(self.freq),
                    "active" => self.active = value.as_u64(),
                    "processed" => self.processed = value.as_u64(),
                    "loadavg" => self.loadavg = Some(value.clone()),
                    "sw_ident" => self.sw_ident = value.as_str().map(str::to_owned),
                    "sw_ver" => self.sw_ver = value.as_str().map(str::to_owned),
                    "sw_sys" => self.sw_sys = value.as_str().map(str::to_owned),
                    _ => {}
                }
            }
        }
        if subject == Some("offline") {
            self.heartbeats.clear();
            return;
        }
        if self.heartbeats.len() >= HEARTBEATS_KEPT {
            self.heartbeats.remove(0);
        }
        let position = self.heartbeats.partition_point(|&beat| beat <= received_at);
        self.heartbeats.insert(position, received_at);
    }

    /// Records the answer to an inspect method.
    pub fn inspected(&mut self, method: &str, mut answer: Value, now: f64) {
        if method == "stats" {
            // As Flower: kombu's `alternates` may hold URLs with passwords.
            if let Some(broker) = answer.get_mut("broker").and_then(Value::as_object_mut) {
                broker.remove("alternates");
            }
        }
        self.inspect.insert(method.to_owned(), answer);
        self.inspected_at = Some(now);
    }

    /// When it will be deemed gone without a new heartbeat.
    pub fn heartbeat_expires(&self) -> Option<f64> {
        self.heartbeats
            .last()
            .map(|last| last + self.freq * EXPIRE_WINDOW)
    }

    /// Whether it is alive at `now` (Celery's `Worker.alive`).
    pub fn alive(&self, now: f64) -> bool {
        self.heartbeat_expires()
            .is_some_and(|expires| now < expires)
    }

    /// Whether the dashboard shows it online: alive by its heartbeats, or it answered
    /// inspect lately (a worker started `--without-heartbeat` sends none).
    pub fn online(&self, now: f64) -> bool {
        self.alive(now) || self.inspected_at.is_some_and(|at| now - at < INSPECT_ALIVE)
    }

    /// The pool size from `stats` (`pool.max-concurrency`).
    pub fn concurrency(&self) -> Option<u64> {
        self.inspect
            .get("stats")?
            .get("pool")?
            .get("max-concurrency")?
            .as_u64()
    }

    /// The queues it consumes, from `active_queues`.
    pub fn queues(&self) -> Vec<String> {
        self.inspect
            .get("active_queues")
            .and_then(Value::as_array)
            .map(|queues| {
                queues
                    .iter()
                    .filter_map(|queue| queue.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count_of(&self, method: &str) -> Option<usize> {
        self.inspect
            .get(method)
            .and_then(Value::as_array)
            .map(Vec::len)
    }

    /// The short form of the workers list and live updates.
    pub fn summary_json(&self, now: f64) -> Value {
        let online = self.online(now);
        serde_json::json!({
            "hostname": self.hostname,
            "online": online,
            "status": if online { "online" } else { "offline" },
            "last_heartbeat": self.heartbeats.last(),
            "heartbeat_expires": self.heartbeat_expires(),
            "freq": self.freq,
            "active": self.active,
            "processed": self.processed,
            "loadavg": self.loadavg,
            "sw_ident": self.sw_ident,
            "sw_ver": self.sw_ver,
            "sw_sys": self.sw_sys,
            "pid": self.pid,
            "concurrency": self.concurrency(),
            "prefetch_count": self.inspect.get("stats").and_then(|stats| stats.get("prefetch_count")),
            "queues": self.queues(),
            "registered": self.inspect.get("registered"),
            "active_tasks": self.count_of("active").map(|n| n as u64).or(self.active),
            "reserved_tasks": self.count_of("reserved"),
            "inspected_at": self.inspected_at,
        })
    }

    /// The summary plus every inspect answer (`null` where none came yet).
    pub fn detail_json(&self, now: f64) -> Value {
        let mut detail = self.summary_json(now);
        if let Value::Object(object) = &mut detail {
            for method in INSPECT_METHODS {
                object.insert(
                    method.to_owned(),
                    self.inspect.get(method).cloned().unwrap_or(Value::Null),
                );
            }
        }
        detail
    }

    /// Flower's `/api/workers` entry: the inspect answers and when they came.
    pub fn flower_json(&self) -> Value {
        let mut object: Map<String, Value> = self
            .inspect
            .iter()
            .map(|(method, answer)| (method.clone(), answer.clone()))
            .collect();
        object.insert(
            "timestamp".into(),
            self.inspected_at
                .or(self.heartbeats.last().copied())
                .map_or(Value::Null, Value::from),
        );
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_until_two_heartbeat_periods_pass_offline_at_once() {
        let mut worker = Worker::new("celery@w");
        assert!(!worker.alive(0.0));
        let mut fields = Map::new();
        fields.insert("freq".into(), Value::from(2.0));
        worker.apply(Some("online"), 100.0, 1, 7, &fields);
        assert!(worker.alive(103.9));
        assert!(!worker.alive(104.1));
        worker.apply(None, 105.0, 0, 0, &Map::new());
        assert!(worker.alive(108.0));
        for beat in 0..10 {
            worker.apply(Some("heartbeat"), 110.0 + f64::from(beat), 2, 7, &fields);
        }
        assert_eq!(worker.heartbeats.len(), HEARTBEATS_KEPT);
        worker.apply(Some("offline"), 121.0, 3, 7, &fields);
        assert!(!worker.alive(121.0));
        assert_eq!(worker.pid, Some(7));
    }
}
