//! The periodic schedulers (`queue beat`), as their `beat-heartbeat` events tell them. Each
//! beat instance (the event's `hostname`: its holder id in the schedule's lease) says the
//! schedule it runs, whether it leads (holds the lease, and so sends) with which fencing
//! token, and the entries with their last and next runs. It sends one every third of its
//! lease (about 3 s) and one more, not leading, when it stops.
//!
//! The latest heartbeat of each instance is kept. An instance is online until three of its
//! intervals (as seen here; at least [`MIN_WINDOW`], [`DEFAULT_WINDOW`] until a second
//! heartbeat came) pass without one, and forgotten [`FORGET_AFTER`] later. A schedule's
//! leader is its online instance that says it leads, the highest fencing token first (a
//! leader that lost the lease to a newer one may not know it yet).

use std::collections::BTreeMap;

use queue_core::events::Event;
use serde_json::{Map, Value, json};

use super::task::{MAX_TEXT, truncate};

/// The event type.
pub const HEARTBEAT_EVENT: &str = "beat-heartbeat";
/// Seconds an instance stays online after a heartbeat while its interval is unknown.
pub const DEFAULT_WINDOW: f64 = 15.0;
/// Seconds an instance stays online after a heartbeat at least (jitter, a busy monitor).
pub const MIN_WINDOW: f64 = 5.0;
/// Intervals without a heartbeat before an instance is offline.
const MISSED_INTERVALS: f64 = 3.0;
/// A longer gap between two heartbeats is an outage or a restart, not the interval.
const MAX_INTERVAL: f64 = 120.0;
/// Gaps between heartbeats remembered per instance (the interval is the longest).
const GAPS_KEPT: usize = 4;
/// Seconds an offline instance is still shown.
pub const FORGET_AFTER: f64 = 600.0;
/// Instances remembered (the longest silent go first beyond it).
const INSTANCES_KEPT: usize = 1000;
/// Entries kept per heartbeat.
const ENTRIES_KEPT: usize = 1000;

/// One entry of a schedule, as a beat instance reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct BeatEntry {
    /// The entry's name.
    pub name: String,
    /// The task it sends.
    pub task: String,
    /// Its schedule as text (`every 1s`, `cron "0 3 * * *" Europe/Berlin`).
    pub schedule: String,
    /// The last run (seconds since the epoch), where known.
    pub last_run: Option<f64>,
    /// The next run, where there is one.
    pub next_run: Option<f64>,
}

/// The latest heartbeat of one beat instance.
#[derive(Clone, Debug, PartialEq)]
pub struct BeatInstance {
    /// Its holder id (the event's `hostname`).
    pub holder: String,
    /// The schedule's (and lease's) name.
    pub schedule: String,
    /// Whether it said it leads.
    pub leading: bool,
    /// The fencing token of its holding, when it leads.
    pub token: Option<u64>,
    /// The entries with their last and next runs.
    pub entries: Vec<BeatEntry>,
    /// When its last heartbeat was received here.
    pub last_seen: f64,
    /// When it sent it (its timestamp, corrected for its UTC offset).
    pub sent_at: f64,
    /// The last gaps between its heartbeats, as received here.
    pub gaps: Vec<f64>,
    /// Heartbeats received.
    pub heartbeats: u64,
}

impl BeatInstance {
    /// Seconds between its heartbeats, as seen here (the longest of the last few gaps).
    pub fn interval(&self) -> Option<f64> {
        self.gaps.iter().copied().reduce(f64::max)
    }

    /// When it is offline without a new heartbeat.
    pub fn expires(&self) -> f64 {
        let window = self.interval().map_or(DEFAULT_WINDOW, |interval| {
            (interval * MISSED_INTERVALS).max(MIN_WINDOW)
        });
        self.last_seen + window
    }

    /// Whether it is online at `now`.
    pub fn online(&self, now: f64) -> bool {
        now < self.expires()
    }

    fn json(&self, now: f64, leader: bool) -> Value {
        let online = self.online(now);
        json!({
            "holder": self.holder,
            "schedule": self.schedule,
            "leader": leader,
            "leading": self.leading,
            "token": self.token,
            "online": online,
            "status": if online { "online" } else { "offline" },
            "last_seen": self.last_seen,
            "sent_at": self.sent_at,
            "expires": self.expires(),
            "interval": self.interval(),
            "heartbeats": self.heartbeats,
            "entries": self.entries.len(),
        })
    }
}

impl BeatEntry {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "task": self.task,
            "schedule": self.schedule,
            "last_run": self.last_run,
            "next_run": self.next_run,
        })
    }
}

/// An RFC 3339 time (or epoch seconds) as seconds since the epoch.
fn epoch(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.timestamp_micros() as f64 / 1e6),
        Value::Number(number) => number.as_f64(),
        _ => None,
    }
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(|text| truncate(text, MAX_TEXT))
}

fn entry(value: &Value) -> Option<BeatEntry> {
    let fields = value.as_object()?;
    Some(BeatEntry {
        name: text(fields, "name")?,
        task: text(fields, "task").unwrap_or_default(),
        schedule: text(fields, "schedule").unwrap_or_default(),
        last_run: epoch(fields.get("last_run")),
        next_run: epoch(fields.get("next_run")),
    })
}

/// Every beat instance seen lately, by schedule and holder.
#[derive(Debug, Default)]
pub struct BeatBoard {
    instances: BTreeMap<(String, String), BeatInstance>,
    dirty: bool,
}

/// A schedule's gauges: each instance and whether it leads, each entry's next and last run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeatGauges {
    /// `(schedule, holder, leads)`.
    pub leaders: Vec<(String, String, bool)>,
    /// `(schedule, entry, next run)`.
    pub next_runs: Vec<(String, String, f64)>,
    /// `(schedule, entry, last run)`.
    pub last_runs: Vec<(String, String, f64)>,
}

impl BeatBoard {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a `beat-heartbeat` event received at `received_at`, its timestamp corrected to
    /// `timestamp`; false when it is not one (or has no schedule name).
    pub fn apply(&mut self, event: &Event, timestamp: f64, received_at: f64) -> bool {
        if event.kind != HEARTBEAT_EVENT {
            return false;
        }
        let fields = &event.fields;
        let Some(schedule) = text(fields, "schedule") else {
            return false;
        };
        let entries = fields
            .get("entries")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(entry)
                    .take(ENTRIES_KEPT)
                    .collect()
            })
            .unwrap_or_default();
        let holder = truncate(&event.hostname, MAX_TEXT);
        let key = (schedule.clone(), holder.clone());
        let mut gaps = Vec::new();
        let mut heartbeats = 0;
        if let Some(known) = self.instances.get(&key) {
            if timestamp < known.sent_at {
                // An older heartbeat overtaken by a newer one: nothing new.
                return true;
            }
            gaps.clone_from(&known.gaps);
            heartbeats = known.heartbeats;
            let gap = received_at - known.last_seen;
            if gap > 0.0 && gap <= MAX_INTERVAL {
                if gaps.len() >= GAPS_KEPT {
                    gaps.remove(0);
                }
                gaps.push(gap);
            }
        }
        let instance = BeatInstance {
            holder,
            schedule,
            leading: fields
                .get("leading")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            token: fields.get("token").and_then(Value::as_u64),
            entries,
            last_seen: received_at,
            sent_at: timestamp,
            gaps,
            heartbeats: heartbeats + 1,
        };
        self.instances.insert(key, instance);
        if self.instances.len() > INSTANCES_KEPT {
            let stalest = self
                .instances
                .iter()
                .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen))
                .map(|(key, _)| key.clone());
            if let Some(stalest) = stalest {
                self.instances.remove(&stalest);
            }
        }
        self.dirty = true;
        true
    }

    /// The instances, by schedule and holder.
    pub fn instances(&self) -> impl Iterator<Item = &BeatInstance> {
        self.instances.values()
    }

    /// Forgets instances offline for [`FORGET_AFTER`]; says whether anything changed since
    /// the last call (a heartbeat, an instance gone offline in `(since, now]`, one forgotten).
    pub fn take_changed(&mut self, since: f64, now: f64) -> bool {
        let before = self.instances.len();
        self.instances
            .retain(|_, instance| now < instance.expires() + FORGET_AFTER);
        let expired = self.instances.values().any(|instance| {
            let expires = instance.expires();
            since < expires && expires <= now
        });
        let changed = self.dirty || expired || self.instances.len() != before;
        self.dirty = false;
        changed
    }

    /// The schedules' names.
    fn schedules(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .instances
            .keys()
            .map(|(schedule, _)| schedule.as_str())
            .collect();
        names.dedup();
        names
    }

    /// The instances of `schedule`.
    fn of(&self, schedule: &str) -> impl Iterator<Item = &BeatInstance> + '_ {
        let schedule = schedule.to_owned();
        self.instances
            .range((schedule.clone(), String::new())..)
            .take_while(move |((name, _), _)| *name == schedule)
            .map(|(_, instance)| instance)
    }

    /// The leader of `schedule` at `now`: the online instance that says it leads with the
    /// highest fencing token (then the latest heartbeat).
    pub fn leader(&self, schedule: &str, now: f64) -> Option<&BeatInstance> {
        self.of(schedule)
            .filter(|instance| instance.leading && instance.online(now))
            .max_by(|a, b| {
                a.token
                    .cmp(&b.token)
                    .then(a.last_seen.total_cmp(&b.last_seen))
            })
    }

    /// Whose entries a schedule shows: its leader's (who sends them, so knows the last runs
    /// best), else the online instance seen last, else the instance seen last.
    fn source(&self, schedule: &str, now: f64) -> Option<&BeatInstance> {
        let latest = |a: &&BeatInstance, b: &&BeatInstance| {
            a.online(now)
                .cmp(&b.online(now))
                .then(a.last_seen.total_cmp(&b.last_seen))
        };
        self.leader(schedule, now)
            .or_else(|| self.of(schedule).max_by(latest))
    }

    /// `/api/beat`: every schedule with its leader, instances (leader first, then online
    /// ones) and entries.
    pub fn json(&self, now: f64) -> Value {
        let schedules: Vec<Value> = self
            .schedules()
            .into_iter()
            .map(|schedule| {
                let leader = self.leader(schedule, now);
                let is_leader = |instance: &BeatInstance| {
                    leader.is_some_and(|leader| leader.holder == instance.holder)
                };
                let mut instances: Vec<&BeatInstance> = self.of(schedule).collect();
                instances.sort_by(|a, b| {
                    is_leader(b)
                        .cmp(&is_leader(a))
                        .then(b.online(now).cmp(&a.online(now)))
                        .then(a.holder.cmp(&b.holder))
                });
                let source = self.source(schedule, now);
                json!({
                    "name": schedule,
                    "leader": leader.map(|leader| json!({
                        "holder": leader.holder,
                        "token": leader.token,
                        "last_seen": leader.last_seen,
                    })),
                    "instances": instances
                        .iter()
                        .map(|instance| instance.json(now, is_leader(instance)))
                        .collect::<Vec<_>>(),
                    "online": instances.iter().filter(|instance| instance.online(now)).count(),
                    "entries_from": source.map(|source| source.holder.clone()),
                    "entries": source
                        .map(|source| source.entries.iter().map(BeatEntry::json).collect::<Vec<_>>())
                        .unwrap_or_default(),
                })
            })
            .collect();
        json!({ "now": now, "schedules": schedules })
    }

    /// The values of the beat gauges at `now`.
    pub fn gauges(&self, now: f64) -> BeatGauges {
        let mut gauges = BeatGauges::default();
        for schedule in self.schedules() {
            let leader = self.leader(schedule, now).map(|leader| &leader.holder);
            for instance in self.of(schedule) {
                gauges.leaders.push((
                    schedule.to_owned(),
                    instance.holder.clone(),
                    leader == Some(&instance.holder),
                ));
            }
            for entry in self
                .source(schedule, now)
                .map(|source| source.entries.as_slice())
                .unwrap_or_default()
            {
                let labels = (schedule.to_owned(), entry.name.clone());
                if let Some(next) = entry.next_run {
                    gauges
                        .next_runs
                        .push((labels.0.clone(), labels.1.clone(), next));
                }
                if let Some(last) = entry.last_run {
                    gauges.last_runs.push((labels.0, labels.1, last));
                }
            }
        }
        gauges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(holder: &str, leading: bool, token: Option<u64>, next_run: &str) -> Event {
        let mut fields = Map::new();
        fields.insert("schedule".into(), json!("nightly"));
        fields.insert("leading".into(), json!(leading));
        fields.insert("token".into(), json!(token));
        fields.insert(
            "entries".into(),
            json!([{
                "name": "cleanup",
                "task": "tasks.cleanup",
                "schedule": "cron \"0 3 * * *\" Europe/Berlin",
                "last_run": null,
                "next_run": next_run,
            }, {"task": "no name: skipped"}]),
        );
        queue_core::events::EventSource::new(holder).event(HEARTBEAT_EVENT, fields)
    }

    const NEXT: &str = "2026-01-02T02:00:00+00:00";
    const NEXT_EPOCH: f64 = 1_767_319_200.0;

    #[test]
    fn the_leader_is_the_online_instance_with_the_highest_token() {
        let mut board = BeatBoard::new();
        assert!(board.apply(&heartbeat("beat-1@a", true, Some(3), NEXT), 100.0, 100.0));
        assert!(board.apply(&heartbeat("beat-2@b", false, None, NEXT), 100.0, 100.5));
        let leader = board.leader("nightly", 101.0).expect("a leader");
        assert_eq!(
            (leader.holder.as_str(), leader.token),
            ("beat-1@a", Some(3))
        );
        assert_eq!(leader.entries.len(), 1);
        assert_eq!(leader.entries[0].next_run, Some(NEXT_EPOCH));
        // Another took the lease over (a newer token) before the first one noticed.
        board.apply(&heartbeat("beat-2@b", true, Some(4), NEXT), 103.0, 103.0);
        assert_eq!(board.leader("nightly", 103.5).unwrap().holder, "beat-2@b");
        // The first stops: its last heartbeat does not lead.
        board.apply(&heartbeat("beat-1@a", false, None, NEXT), 103.1, 103.1);
        let answer = board.json(104.0);
        let schedule = &answer["schedules"][0];
        assert_eq!(schedule["leader"]["holder"], "beat-2@b", "{answer}");
        assert_eq!(schedule["instances"][0]["holder"], "beat-2@b");
        assert_eq!(schedule["instances"][1]["leader"], false);
        assert_eq!(schedule["entries"][0]["next_run"], json!(NEXT_EPOCH));
        assert_eq!(schedule["entries_from"], "beat-2@b");
        let gauges = board.gauges(104.0);
        assert!(
            gauges
                .leaders
                .contains(&("nightly".into(), "beat-2@b".into(), true))
        );
        assert!(
            gauges
                .leaders
                .contains(&("nightly".into(), "beat-1@a".into(), false))
        );
        assert_eq!(
            gauges.next_runs,
            vec![("nightly".into(), "cleanup".into(), NEXT_EPOCH)]
        );
    }

    #[test]
    fn offline_after_three_intervals_forgotten_later() {
        let mut board = BeatBoard::new();
        board.apply(&heartbeat("beat-1@a", true, Some(1), NEXT), 100.0, 100.0);
        let instance = board.instances().next().unwrap();
        assert_eq!(instance.expires(), 100.0 + DEFAULT_WINDOW);
        board.apply(&heartbeat("beat-1@a", true, Some(1), NEXT), 103.0, 103.0);
        board.apply(&heartbeat("beat-1@a", true, Some(1), NEXT), 106.0, 106.0);
        let instance = board.instances().next().unwrap();
        assert_eq!(instance.interval(), Some(3.0));
        assert!(instance.online(114.9));
        assert!(!instance.online(115.0));
        assert!(board.take_changed(0.0, 106.0), "a heartbeat came");
        assert!(!board.take_changed(106.0, 110.0));
        assert!(board.take_changed(110.0, 116.0), "it went offline");
        assert!(board.leader("nightly", 116.0).is_none());
        // Offline, its entries are still shown.
        assert_eq!(
            board.json(116.0)["schedules"][0]["entries"][0]["name"],
            "cleanup"
        );
        assert!(!board.take_changed(116.0, 115.0 + FORGET_AFTER - 1.0));
        assert!(board.take_changed(116.0, 115.0 + FORGET_AFTER));
        assert_eq!(board.instances().count(), 0);
        assert_eq!(board.json(116.0)["schedules"], json!([]));
    }

    #[test]
    fn a_short_interval_still_gives_the_minimum_window_and_old_heartbeats_are_ignored() {
        let mut board = BeatBoard::new();
        board.apply(&heartbeat("beat-1@a", true, Some(1), NEXT), 100.0, 100.0);
        board.apply(&heartbeat("beat-1@a", true, Some(1), NEXT), 100.1, 100.1);
        assert_eq!(
            board.instances().next().unwrap().expires(),
            100.1 + MIN_WINDOW
        );
        // A heartbeat sent before the last one changes nothing.
        board.apply(&heartbeat("beat-1@a", false, None, NEXT), 99.0, 100.2);
        assert!(board.instances().next().unwrap().leading);
        // Not a beat heartbeat, or no schedule: not taken.
        let other = queue_core::events::EventSource::new("x").event("worker-heartbeat", Map::new());
        assert!(!board.apply(&other, 1.0, 1.0));
        let unnamed = queue_core::events::EventSource::new("x").event(HEARTBEAT_EVENT, Map::new());
        assert!(!board.apply(&unnamed, 1.0, 1.0));
    }
}
