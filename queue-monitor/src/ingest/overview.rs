//! The overview's time series: tasks per second, failures, and runtime and wait-time
//! percentiles per task type, in fixed buckets. Bounded: a fixed number of buckets, task
//! types per bucket and samples per type (reservoir sampling beyond).

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

/// Samples kept per bucket and task type; percentiles are exact below this.
pub const SAMPLES_KEPT: usize = 512;
/// Task types tracked per bucket (the totals still count the others).
const TYPES_PER_BUCKET: usize = 500;

/// A bounded sample of durations (Algorithm R beyond [`SAMPLES_KEPT`]).
#[derive(Clone, Debug, Default)]
struct Sample {
    values: Vec<f64>,
    seen: u64,
}

impl Sample {
    fn add(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < SAMPLES_KEPT {
            self.values.push(value);
        } else {
            let slot = rand::random_range(0..self.seen);
            if let Some(kept) = self.values.get_mut(slot as usize) {
                *kept = value;
            }
        }
    }

    /// The `quantile`s (0..1), nearest rank; `None` without samples.
    fn quantiles(&self, quantiles: &[f64]) -> Vec<Option<f64>> {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        quantiles
            .iter()
            .map(|quantile| {
                if sorted.is_empty() {
                    return None;
                }
                let rank = (quantile * sorted.len() as f64).ceil() as usize;
                sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default)]
struct TypeBucket {
    succeeded: u64,
    failed: u64,
    runtime: Sample,
    wait: Sample,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    index: i64,
    succeeded: u64,
    failed: u64,
    retried: u64,
    revoked: u64,
    received: u64,
    types: BTreeMap<String, TypeBucket>,
}

/// What one finished (or progressing) task adds to the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `task-received`.
    Received,
    /// `task-started` (gives the wait time).
    Started,
    /// `task-succeeded`.
    Succeeded,
    /// `task-failed`.
    Failed,
    /// `task-retried`.
    Retried,
    /// `task-revoked`.
    Revoked,
}

/// The series, newest bucket last.
#[derive(Clone, Debug)]
pub struct Overview {
    width: f64,
    kept: usize,
    buckets: VecDeque<Bucket>,
    totals: Totals,
}

/// Counts since the monitor started (not bounded by the window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tasks received.
    pub received: u64,
    /// Tasks succeeded.
    pub succeeded: u64,
    /// Tasks failed.
    pub failed: u64,
    /// Retries.
    pub retried: u64,
    /// Tasks revoked.
    pub revoked: u64,
}

impl Overview {
    /// Buckets of `width` seconds, `kept` of them.
    pub fn new(width: f64, kept: usize) -> Self {
        Self {
            width: width.max(1.0),
            kept: kept.max(1),
            buckets: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    /// Bucket width in seconds.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Records `outcome` of a task named `name` at `time`; `seconds` is the runtime
    /// (succeeded, failed) or the wait (started).
    pub fn record(
        &mut self,
        time: f64,
        outcome: Outcome,
        name: Option<&str>,
        seconds: Option<f64>,
    ) {
        let index = (time / self.width).floor() as i64;
        let Some(bucket) = self.bucket(index) else {
            return;
        };
        match outcome {
            Outcome::Received => bucket.received += 1,
            Outcome::Succeeded => bucket.succeeded += 1,
            Outcome::Failed => bucket.failed += 1,
            Outcome::Retried => bucket.retried += 1,
            Outcome::Revoked => bucket.revoked += 1,
            Outcome::Started => {}
        }
        let Some(name) = name else {
            return;
        };
        if !bucket.types.contains_key(name) && bucket.types.len() >= TYPES_PER_BUCKET {
            return;
        }
        let entry = bucket.types.entry(name.to_owned()).or_default();
        match (outcome, seconds) {
            (Outcome::Succeeded, runtime) => {
                entry.succeeded += 1;
                if let Some(runtime) = runtime {
                    entry.runtime.add(runtime);
                }
            }
            (Outcome::Failed, runtime) => {
                entry.failed += 1;
                if let Some(runtime) = runtime {
                    entry.runtime.add(runtime);
                }
            }
            (Outcome::Started, Some(wait)) => entry.wait.add(wait),
            _ => {}
        }
    }

    /// Counts since the monitor started (not bounded by the window): received, succeeded,
    /// failed, retried, revoked.
    pub fn count(&mut self, outcome: Outcome) {
        let totals = &mut self.totals;
        let slot = match outcome {
            Outcome::Received => &mut totals.received,
            Outcome::Succeeded => &mut totals.succeeded,
            Outcome::Failed => &mut totals.failed,
            Outcome::Retried => &mut totals.retried,
            Outcome::Revoked => &mut totals.revoked,
            Outcome::Started => return,
        };
        *slot += 1;
    }

    /// The counts since start.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    fn bucket(&mut self, index: i64) -> Option<&mut Bucket> {
        let newest = self
            .buckets
            .back()
            .map_or(index, |bucket| bucket.index.max(index));
        if index <= newest - self.kept as i64 {
            return None;
        }
        let position = self.buckets.partition_point(|bucket| bucket.index < index);
        if self
            .buckets
            .get(position)
            .is_none_or(|bucket| bucket.index != index)
        {
            self.buckets.insert(
                position,
                Bucket {
                    index,
                    ..Bucket::default()
                },
            );
        }
        while self
            .buckets
            .front()
            .is_some_and(|oldest| oldest.index <= newest - self.kept as i64)
        {
            self.buckets.pop_front();
        }
        let position = self.buckets.partition_point(|bucket| bucket.index < index);
        self.buckets.get_mut(position)
    }

    /// Finished tasks per second and failures per second over the last full bucket before
    /// `now` (the current one is still filling).
    pub fn rates(&self, now: f64) -> (f64, f64) {
        let last_full = (now / self.width).floor() as i64 - 1;
        self.buckets
            .iter()
            .find(|bucket| bucket.index == last_full)
            .map_or((0.0, 0.0), |bucket| {
                (
                    (bucket.succeeded + bucket.failed) as f64 / self.width,
                    bucket.failed as f64 / self.width,
                )
            })
    }

    /// The `/api/dashboard/overview` series over the last `window` seconds before `now`.
    pub fn json(&self, now: f64, window: Option<f64>) -> Value {
        let current = (now / self.width).floor() as i64;
        let span = window.map_or(self.kept as i64, |seconds| {
            ((seconds / self.width).ceil() as i64).clamp(1, self.kept as i64)
        });
        let first = current - span + 1;
        let indexes: Vec<i64> = (first..=current).collect();
        let find = |index: i64| self.buckets.iter().find(|bucket| bucket.index == index);
        let time: Vec<f64> = indexes
            .iter()
            .map(|index| *index as f64 * self.width)
            .collect();
        let mut tasks_per_second = Vec::new();
        let mut failures_per_second = Vec::new();
        let mut failure_rate = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for index in &indexes {
            let bucket = find(*index);
            let finished = bucket.map_or(0, |b| b.succeeded + b.failed);
            let failed = bucket.map_or(0, |b| b.failed);
            tasks_per_second.push(json!(finished as f64 / self.width));
            failures_per_second.push(json!(failed as f64 / self.width));
            failure_rate.push(if finished == 0 {
                Value::Null
            } else {
                json!(failed as f64 / finished as f64)
            });
            for name in bucket.iter().flat_map(|b| b.types.keys()) {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names.sort_unstable();
        let mut types = Map::new();
        for name in names {
            let mut columns: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for index in &indexes {
                let entry = find(*index).and_then(|bucket| bucket.types.get(name));
                let runtime =
                    entry.map_or(vec![None; 3], |e| e.runtime.quantiles(&[0.5, 0.95, 0.99]));
                let wait = entry.map_or(vec![None; 3], |e| e.wait.quantiles(&[0.5, 0.95, 0.99]));
                columns
                    .entry("succeeded")
                    .or_default()
                    .push(json!(entry.map_or(0, |e| e.succeeded)));
                columns
                    .entry("failed")
                    .or_default()
                    .push(json!(entry.map_or(0, |e| e.failed)));
                for (label, values) in [("runtime", runtime), ("wait", wait)] {
                    for (suffix, value) in ["p50", "p95", "p99"].iter().zip(values) {
                        let key: &str = match (label, *suffix) {
                            ("runtime", "p50") => "runtime_p50",
                            ("runtime", "p95") => "runtime_p95",
                            ("runtime", _) => "runtime_p99",
                            (_, "p50") => "wait_p50",
                            (_, "p95") => "wait_p95",
                            _ => "wait_p99",
                        };
                        columns.entry(key).or_default().push(json!(value));
                    }
                }
            }
            let mut object = Map::new();
            object.insert("time".into(), json!(time));
            for (key, values) in columns {
                object.insert(key.into(), Value::Array(values));
            }
            types.insert(name.to_owned(), Value::Object(object));
        }
        let (rate, failures) = self.rates(now);
        json!({
            "bucket_seconds": self.width,
            "tasks_per_second": rate,
            "failure_rate": if rate > 0.0 { json!(failures / rate) } else { json!(0.0) },
            "totals": {
                "received": self.totals.received, "succeeded": self.totals.succeeded,
                "failed": self.totals.failed, "retried": self.totals.retried,
                "revoked": self.totals.revoked,
            },
            "series": {
                "time": time,
                "tasks_per_second": tasks_per_second,
                "failures_per_second": failures_per_second,
                "failure_rate": failure_rate,
            },
            "task_types": types,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_per_type_and_rates_per_bucket() {
        let mut overview = Overview::new(60.0, 10);
        for index in 1..=100 {
            let runtime = f64::from(index) / 100.0;
            overview.record(
                600.0 + f64::from(index) * 0.1,
                Outcome::Succeeded,
                Some("tasks.add"),
                Some(runtime),
            );
        }
        overview.record(610.0, Outcome::Failed, Some("tasks.add"), Some(2.0));
        overview.record(610.0, Outcome::Started, Some("tasks.add"), Some(0.25));
        let json = overview.json(665.0, None);
        let add = &json["task_types"]["tasks.add"];
        let last = |key: &str| add[key].as_array().unwrap()[8].clone();
        assert_eq!(last("runtime_p50"), json!(0.51));
        assert_eq!(last("runtime_p99"), json!(1.0));
        assert_eq!(last("wait_p50"), json!(0.25));
        assert_eq!(last("failed"), json!(1));
        assert_eq!(json["series"]["time"].as_array().unwrap().len(), 10);
        let (rate, failures) = overview.rates(665.0);
        assert!((rate - 101.0 / 60.0).abs() < 1e-9 && (failures - 1.0 / 60.0).abs() < 1e-9);
        // Beyond the window: dropped, and old buckets go as new ones come.
        overview.record(0.0, Outcome::Succeeded, Some("tasks.add"), Some(1.0));
        overview.record(6000.0, Outcome::Succeeded, Some("tasks.add"), Some(1.0));
        assert_eq!(overview.buckets.len(), 1);
    }

    #[test]
    fn samples_stay_bounded() {
        let mut sample = Sample::default();
        for value in 0..10_000 {
            sample.add(f64::from(value));
        }
        assert_eq!(sample.values.len(), SAMPLES_KEPT);
        let median = sample.quantiles(&[0.5])[0].unwrap();
        assert!((2_000.0..8_000.0).contains(&median), "{median}");
    }
}
