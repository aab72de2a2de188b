//! Prometheus metrics with Flower's names and meaning (`flower/events.py`), so dashboards
//! and alerts written for Flower keep working, plus the queues' backlog gauges and the beat
//! schedulers' leaders and next runs.
//! Exposed at `/metrics` in the OpenMetrics text format (which Prometheus scrapes).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ingest::beat::BeatGauges;
use crate::ingest::task::Task;

/// Flower's default `task_runtime_metric_buckets` (Prometheus' defaults).
const RUNTIME_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    task: String,
    r#type: String,
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    queue: String,
    priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BeatHolderLabels {
    schedule: String,
    holder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BeatEntryLabels {
    schedule: String,
    entry: String,
}

/// The beat series set last, so that those of forgotten instances and entries go.
#[derive(Debug, Default)]
struct BeatSeries {
    leaders: HashSet<BeatHolderLabels>,
    next_runs: HashSet<BeatEntryLabels>,
    last_runs: HashSet<BeatEntryLabels>,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn runtime_histogram() -> Histogram {
    Histogram::new(RUNTIME_BUCKETS)
}

/// The monitor's metrics and their registry (one per monitor, never process-global).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    runtime: Family<TaskLabels, Histogram, fn() -> Histogram>,
    prefetch_time: Family<TaskLabels, FloatGauge>,
    prefetched: Family<TaskLabels, Gauge>,
    worker_online: Family<WorkerLabels, Gauge>,
    executing: Family<WorkerLabels, Gauge>,
    queue_length: Family<PriorityLabels, Gauge>,
    queue_messages: Family<QueueLabels, Gauge>,
    oldest_age: Family<QueueLabels, FloatGauge>,
    delayed: Family<QueueLabels, Gauge>,
    dead_letters: Family<QueueLabels, Gauge>,
    flagged: Family<QueueLabels, Gauge>,
    events_received: Counter,
    events_dropped: Counter,
    store_dropped: Counter,
    beat_leader: Family<BeatHolderLabels, Gauge>,
    beat_next_run: Family<BeatEntryLabels, FloatGauge>,
    beat_last_run: Family<BeatEntryLabels, FloatGauge>,
    beat_series: std::sync::Mutex<BeatSeries>,
    priorities_seen:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<u8>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One queue's numbers for the gauges.
#[derive(Clone, Debug, Default)]
pub struct QueueGauges<'a> {
    /// The queue.
    pub queue: &'a str,
    /// Ready messages per priority.
    pub by_priority: Vec<(u8, u64)>,
    /// All ready messages.
    pub messages: u64,
    /// Age of the oldest ready message, where known.
    pub oldest_age: Option<f64>,
    /// Delayed messages, where known.
    pub delayed: Option<u64>,
    /// Dead letters, where known.
    pub dead_letters: Option<u64>,
    /// Whether over a threshold.
    pub flagged: bool,
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            events: Family::default(),
            runtime: Family::new_with_constructor(runtime_histogram),
            prefetch_time: Family::default(),
            prefetched: Family::default(),
            worker_online: Family::default(),
            executing: Family::default(),
            queue_length: Family::default(),
            queue_messages: Family::default(),
            oldest_age: Family::default(),
            delayed: Family::default(),
            dead_letters: Family::default(),
            flagged: Family::default(),
            events_received: Counter::default(),
            events_dropped: Counter::default(),
            store_dropped: Counter::default(),
            beat_leader: Family::default(),
            beat_next_run: Family::default(),
            beat_last_run: Family::default(),
            beat_series: Default::default(),
            priorities_seen: Default::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register("flower_events", "Number of events", metrics.events.clone());
        registry.register(
            "flower_task_runtime_seconds",
            "Task runtime",
            metrics.runtime.clone(),
        );
        registry.register(
            "flower_task_prefetch_time_seconds",
            "The time the task spent waiting at the celery worker to be executed",
            metrics.prefetch_time.clone(),
        );
        registry.register(
            "flower_worker_prefetched_tasks",
            "Number of tasks of given type prefetched at a worker",
            metrics.prefetched.clone(),
        );
        registry.register(
            "flower_worker_online",
            "Worker online status",
            metrics.worker_online.clone(),
        );
        registry.register(
            "flower_worker_number_of_currently_executing_tasks",
            "Number of tasks currently executing at a worker",
            metrics.executing.clone(),
        );
        registry.register(
            "queue_monitor_queue_length",
            "Ready messages in a queue, by priority",
            metrics.queue_length.clone(),
        );
        registry.register(
            "queue_monitor_queue_messages",
            "Ready messages in a queue, all priorities",
            metrics.queue_messages.clone(),
        );
        registry.register(
            "queue_monitor_queue_oldest_message_age_seconds",
            "How long the next ready message of a queue has waited, where the broker knows",
            metrics.oldest_age.clone(),
        );
        registry.register(
            "queue_monitor_queue_delayed",
            "Messages of a queue waiting for their eta",
            metrics.delayed.clone(),
        );
        registry.register(
            "queue_monitor_queue_dead_letters",
            "Messages in a queue's dead-letter place",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "queue_monitor_queue_flagged",
            "1 when a queue's backlog or oldest message passes its threshold",
            metrics.flagged.clone(),
        );
        registry.register(
            "queue_monitor_events_received",
            "Celery events received",
            metrics.events_received.clone(),
        );
        registry.register(
            "queue_monitor_events_dropped",
            "Celery events lost because the monitor fell behind the broker",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "queue_monitor_store_dropped",
            "History writes dropped because the database fell behind",
            metrics.store_dropped.clone(),
        );
        registry.register(
            "queue_monitor_beat_leader",
            "1 for the beat instance leading a schedule, 0 for its other instances",
            metrics.beat_leader.clone(),
        );
        registry.register(
            "queue_monitor_beat_entry_next_run_timestamp_seconds",
            "When a beat schedule's entry runs next (seconds since the epoch)",
            metrics.beat_next_run.clone(),
        );
        registry.register(
            "queue_monitor_beat_entry_last_run_timestamp_seconds",
            "When a beat schedule's entry last ran (seconds since the epoch)",
            metrics.beat_last_run.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a task event of `worker` and updates the task metrics as Flower does, from
    /// the task after the event.
    pub fn task_event(&self, kind: &str, worker: &str, task: &Task, runtime: Option<f64>) {
        let name = task.name.clone().unwrap_or_default();
        self.events
            .get_or_create(&EventLabels {
                task: name.clone(),
                r#type: kind.to_owned(),
                worker: worker.to_owned(),
            })
            .inc();
        let labels = TaskLabels {
            task: name,
            worker: worker.to_owned(),
        };
        if let Some(runtime) = runtime.filter(|runtime| *runtime > 0.0) {
            self.runtime.get_or_create(&labels).observe(runtime);
        }
        if task.eta.is_some() {
            return;
        }
        match kind {
            "task-received" if task.received.is_some() => {
                self.prefetched.get_or_create(&labels).inc();
            }
            "task-started" => {
                if let (Some(started), Some(received)) = (task.started, task.received) {
                    self.prefetch_time
                        .get_or_create(&labels)
                        .set(started - received);
                    self.prefetched.get_or_create(&labels).dec();
                }
            }
            "task-succeeded" | "task-failed"
                if task.started.is_some() && task.received.is_some() =>
            {
                self.prefetch_time.get_or_create(&labels).set(0.0);
            }
            _ => {}
        }
    }

    /// Counts a worker event as Flower does (online, heartbeat with `active`, offline).
    pub fn worker_event(&self, kind: &str, worker: &str, active: Option<u64>) {
        let labels = WorkerLabels {
            worker: worker.to_owned(),
        };
        match kind {
            "worker-online" => {
                self.worker_online.get_or_create(&labels).set(1);
            }
            "worker-heartbeat" => {
                self.worker_online.get_or_create(&labels).set(1);
                if let Some(active) = active {
                    self.executing
                        .get_or_create(&labels)
                        .set(gauge_value(active));
                }
            }
            "worker-offline" => {
                self.worker_online.get_or_create(&labels).set(0);
            }
            _ => {}
        }
    }

    /// Marks a worker whose heartbeat expired as offline (Flower leaves it at 1 until a
    /// `worker-offline` comes; a killed worker never sends one).
    pub fn worker_expired(&self, worker: &str) {
        self.worker_online
            .get_or_create(&WorkerLabels {
                worker: worker.to_owned(),
            })
            .set(0);
    }

    /// Sets a queue's gauges.
    pub fn queue(&self, gauges: &QueueGauges<'_>) {
        let labels = QueueLabels {
            queue: gauges.queue.to_owned(),
        };
        // A priority seen before and empty now reads 0 (not its last count), and an empty
        // queue still has a series (priority 0), so that a dashboard shows zero.
        let mut priorities = {
            let mut seen = self
                .priorities_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = seen.entry(gauges.queue.to_owned()).or_default();
            known.insert(0);
            known.extend(gauges.by_priority.iter().map(|(priority, _)| *priority));
            known
                .iter()
                .map(|priority| (*priority, 0))
                .collect::<std::collections::BTreeMap<u8, u64>>()
        };
        priorities.extend(gauges.by_priority.iter().copied());
        for (priority, count) in &priorities {
            self.queue_length
                .get_or_create(&PriorityLabels {
                    queue: gauges.queue.to_owned(),
                    priority: priority.to_string(),
                })
                .set(gauge_value(*count));
        }
        self.queue_messages
            .get_or_create(&labels)
            .set(gauge_value(gauges.messages));
        match gauges.oldest_age {
            Some(age) => {
                self.oldest_age.get_or_create(&labels).set(age);
            }
            None if gauges.messages == 0 => {
                self.oldest_age.get_or_create(&labels).set(0.0);
            }
            None => {}
        }
        if let Some(delayed) = gauges.delayed {
            self.delayed
                .get_or_create(&labels)
                .set(gauge_value(delayed));
        }
        if let Some(dead_letters) = gauges.dead_letters {
            self.dead_letters
                .get_or_create(&labels)
                .set(gauge_value(dead_letters));
        }
        self.flagged
            .get_or_create(&labels)
            .set(i64::from(gauges.flagged));
    }

    /// Sets the beat gauges to `gauges`; the series of instances and entries no longer
    /// known go.
    pub fn beat(&self, gauges: &BeatGauges) {
        let mut guard = self
            .beat_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = &mut *guard;
        let mut leaders = HashSet::new();
        for (schedule, holder, leads) in &gauges.leaders {
            let labels = BeatHolderLabels {
                schedule: schedule.clone(),
                holder: holder.clone(),
            };
            self.beat_leader
                .get_or_create(&labels)
                .set(i64::from(*leads));
            leaders.insert(labels);
        }
        for gone in series.leaders.difference(&leaders) {
            self.beat_leader.remove(gone);
        }
        series.leaders = leaders;
        for (family, runs, known) in [
            (
                &self.beat_next_run,
                &gauges.next_runs,
                &mut series.next_runs,
            ),
            (
                &self.beat_last_run,
                &gauges.last_runs,
                &mut series.last_runs,
            ),
        ] {
            let mut now_known = HashSet::new();
            for (schedule, entry, at) in runs {
                let labels = BeatEntryLabels {
                    schedule: schedule.clone(),
                    entry: entry.clone(),
                };
                family.get_or_create(&labels).set(*at);
                now_known.insert(labels);
            }
            for gone in known.difference(&now_known) {
                family.remove(gone);
            }
            *known = now_known;
        }
    }

    /// Counts received events.
    pub fn events_received(&self, count: u64) {
        self.events_received.inc_by(count);
    }

    /// Brings the drop counters up to the totals counted elsewhere.
    pub fn sync_dropped(&self, events_dropped: u64, store_dropped: u64) {
        for (counter, total) in [
            (&self.events_dropped, events_dropped),
            (&self.store_dropped, store_dropped),
        ] {
            let known = counter.get();
            if total > known {
                counter.inc_by(total - known);
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flower_names_are_exposed() {
        let metrics = Metrics::new();
        let mut task = Task::new("t1");
        task.name = Some("tasks.add".into());
        task.received = Some(1.0);
        metrics.task_event("task-received", "celery@w", &task, None);
        task.started = Some(1.5);
        metrics.task_event("task-started", "celery@w", &task, None);
        metrics.task_event("task-succeeded", "celery@w", &task, Some(0.2));
        metrics.worker_event("worker-heartbeat", "celery@w", Some(3));
        metrics.queue(&QueueGauges {
            queue: "celery",
            by_priority: vec![(0, 5)],
            messages: 5,
            oldest_age: Some(2.0),
            dead_letters: Some(1),
            ..QueueGauges::default()
        });
        let text = metrics.render();
        for expected in [
            "flower_events_total{task=\"tasks.add\",type=\"task-received\",worker=\"celery@w\"} 1",
            "flower_task_runtime_seconds_bucket{le=\"0.25\",task=\"tasks.add\",worker=\"celery@w\"} 1",
            "flower_task_prefetch_time_seconds{task=\"tasks.add\",worker=\"celery@w\"} 0.0",
            "flower_worker_prefetched_tasks{task=\"tasks.add\",worker=\"celery@w\"} 0",
            "flower_worker_online{worker=\"celery@w\"} 1",
            "flower_worker_number_of_currently_executing_tasks{worker=\"celery@w\"} 3",
            "queue_monitor_queue_length{queue=\"celery\",priority=\"0\"} 5",
            "queue_monitor_queue_oldest_message_age_seconds{queue=\"celery\"} 2.0",
            "queue_monitor_queue_dead_letters{queue=\"celery\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
    }

    #[test]
    fn beat_gauges_follow_the_leader_and_drop_what_is_gone() {
        let metrics = Metrics::new();
        metrics.beat(&BeatGauges {
            leaders: vec![
                ("nightly".into(), "beat-1@a".into(), true),
                ("nightly".into(), "beat-2@b".into(), false),
            ],
            next_runs: vec![("nightly".into(), "cleanup".into(), 1_767_319_200.0)],
            last_runs: vec![("nightly".into(), "cleanup".into(), 1_767_232_800.0)],
        });
        let text = metrics.render();
        for expected in [
            "queue_monitor_beat_leader{schedule=\"nightly\",holder=\"beat-1@a\"} 1",
            "queue_monitor_beat_leader{schedule=\"nightly\",holder=\"beat-2@b\"} 0",
            "queue_monitor_beat_entry_next_run_timestamp_seconds{schedule=\"nightly\",entry=\"cleanup\"} 1767319200.0",
            "queue_monitor_beat_entry_last_run_timestamp_seconds{schedule=\"nightly\",entry=\"cleanup\"} 1767232800.0",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        metrics.beat(&BeatGauges {
            leaders: vec![("nightly".into(), "beat-2@b".into(), true)],
            ..BeatGauges::default()
        });
        let text = metrics.render();
        assert!(
            text.contains("queue_monitor_beat_leader{schedule=\"nightly\",holder=\"beat-2@b\"} 1"),
            "{text}"
        );
        assert!(!text.contains("beat-1@a"), "{text}");
        assert!(!text.contains("entry=\"cleanup\""), "{text}");
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_we_serve() {
        let dashboard = include_str!("../grafana/queue-monitor.json");
        let served = Metrics::new().render();
        let mut checked = 0;
        for prefix in ["flower_", "queue_monitor_"] {
            for (index, _) in dashboard.match_indices(prefix) {
                let name: String = dashboard[index..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if name.ends_with('_') {
                    continue;
                }
                let base = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    served.contains(&format!("# TYPE {base} ")),
                    "{name} is not served"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }
}
