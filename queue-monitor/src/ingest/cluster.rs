//! [`Cluster`]: the workers and recent tasks in memory, folded from the events as
//! Celery's `State` does; bounded (least recently updated tasks go first; the history keeps
//! them).

use std::collections::{BTreeMap, BTreeSet};

use hashlink::{LinkedHashSet, LruCache};
use queue_core::events::Event;

use super::overview::{Outcome, Overview};
use super::task::Task;
use super::worker::Worker;

/// Workers remembered (Celery's `max_workers_in_memory`); offline ones go first beyond it.
const WORKERS_KEPT: usize = 5000;
/// Changed tasks remembered between two live updates (the newest).
const DIRTY_TASKS_KEPT: usize = 200;
/// Children remembered per task.
const CHILDREN_KEPT: usize = 1000;
/// Task types remembered.
const TASK_TYPES_KEPT: usize = 10_000;

/// What one event changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// The task after the event, for a task event.
    pub task: Option<Task>,
    /// The worker it concerned, when that worker changed.
    pub worker: Option<Worker>,
}

/// Workers and recent tasks.
#[derive(Debug)]
pub struct Cluster {
    workers: BTreeMap<String, Worker>,
    tasks: LruCache<String, Task>,
    task_types: BTreeSet<String>,
    overview: Overview,
    dirty_tasks: LinkedHashSet<String>,
    dirty_tasks_missed: u64,
    dirty_workers: BTreeSet<String>,
}

impl Cluster {
    /// Empty, keeping at most `tasks_kept` tasks, with an overview of `buckets` buckets of
    /// `bucket_width` seconds.
    pub fn new(tasks_kept: usize, bucket_width: f64, buckets: usize) -> Self {
        Self {
            workers: BTreeMap::new(),
            tasks: LruCache::new(tasks_kept.max(1)),
            task_types: BTreeSet::new(),
            overview: Overview::new(bucket_width, buckets),
            dirty_tasks: LinkedHashSet::new(),
            dirty_tasks_missed: 0,
            dirty_workers: BTreeSet::new(),
        }
    }

    /// Folds `event`, received here at `received_at`, its timestamp already corrected to
    /// `timestamp`.
    pub fn apply(&mut self, event: &Event, timestamp: f64, received_at: f64) -> Applied {
        if let Some(subject) = event.kind.strip_prefix("worker-") {
            let worker = self.worker_mut(&event.hostname);
            worker.apply(
                Some(subject),
                received_at,
                event.clock,
                event.pid,
                &event.fields,
            );
            let worker = worker.clone();
            self.dirty_workers.insert(event.hostname.clone());
            return Applied {
                task: None,
                worker: Some(worker),
            };
        }
        let Some(subject) = event.kind.strip_prefix("task-") else {
            return Applied::default();
        };
        let Some(uuid) = event.uuid() else {
            return Applied::default();
        };
        let mut worker = None;
        if subject != "sent" {
            let known = self.worker_mut(&event.hostname);
            let was_alive = known.alive(received_at);
            known.apply(None, received_at, 0, 0, &event.fields);
            if !was_alive {
                worker = Some(known.clone());
                self.dirty_workers.insert(event.hostname.clone());
            }
        }
        let task = match self.tasks.get_mut(uuid) {
            Some(task) => task,
            None => {
                self.tasks.insert(uuid.to_owned(), Task::new(uuid));
                self.tasks.get_mut(uuid).expect("just inserted")
            }
        };
        task.apply(
            subject,
            &event.hostname,
            timestamp,
            event.clock,
            &event.fields,
        );
        let task = task.clone();
        self.record(subject, &task, timestamp);
        if let Some(name) = &task.name {
            if self.task_types.len() < TASK_TYPES_KEPT || self.task_types.contains(name) {
                self.task_types.insert(name.clone());
            }
        }
        if let Some(parent_id) = &task.parent_id {
            if let Some(parent) = self.tasks.peek_mut(parent_id) {
                if parent.children.len() < CHILDREN_KEPT && !parent.children.contains(&task.uuid) {
                    parent.children.push(task.uuid.clone());
                }
            }
        }
        self.mark_dirty(&task.uuid);
        Applied {
            task: Some(task),
            worker,
        }
    }

    fn record(&mut self, subject: &str, task: &Task, timestamp: f64) {
        let (outcome, seconds) = match subject {
            "received" => (Outcome::Received, None),
            "started" => (Outcome::Started, task.wait()),
            "succeeded" => (Outcome::Succeeded, task.runtime),
            "failed" => (Outcome::Failed, task.runtime),
            "retried" => (Outcome::Retried, None),
            "revoked" => (Outcome::Revoked, None),
            _ => return,
        };
        self.overview.count(outcome);
        self.overview
            .record(timestamp, outcome, task.name.as_deref(), seconds);
    }

    /// Adds a task read back from the history (on start) to the overview, as its events
    /// would have.
    pub fn replay(&mut self, task: &Task) {
        let name = task.name.as_deref();
        if let Some(started) = task.started {
            self.overview
                .record(started, Outcome::Started, name, task.wait());
        }
        if let Some(received) = task.received {
            self.overview
                .record(received, Outcome::Received, name, None);
        }
        if let Some(succeeded) = task.succeeded {
            self.overview
                .record(succeeded, Outcome::Succeeded, name, task.runtime);
        }
        if let Some(failed) = task.failed {
            self.overview
                .record(failed, Outcome::Failed, name, task.runtime);
        }
        if let Some(name) = name {
            self.task_types.insert(name.to_owned());
        }
    }

    /// Puts a task read back from the history (or looked up on a miss) into memory.
    pub fn restore_task(&mut self, task: Task) {
        if let Some(name) = &task.name {
            if self.task_types.len() < TASK_TYPES_KEPT {
                self.task_types.insert(name.clone());
            }
        }
        self.tasks.insert(task.uuid.clone(), task);
    }

    /// Puts a worker read back from the history (offline until it beats again).
    pub fn restore_worker(&mut self, mut worker: Worker) {
        worker.heartbeats.clear();
        self.workers
            .entry(worker.hostname.clone())
            .or_insert(worker);
    }

    /// Remembers a task type read back from the history.
    pub fn restore_task_type(&mut self, name: String) {
        if self.task_types.len() < TASK_TYPES_KEPT {
            self.task_types.insert(name);
        }
    }

    fn mark_dirty(&mut self, uuid: &str) {
        self.dirty_tasks.remove(uuid);
        self.dirty_tasks.insert(uuid.to_owned());
        if self.dirty_tasks.len() > DIRTY_TASKS_KEPT {
            self.dirty_tasks.pop_front();
            self.dirty_tasks_missed += 1;
        }
    }

    fn worker_mut(&mut self, hostname: &str) -> &mut Worker {
        if !self.workers.contains_key(hostname) && self.workers.len() >= WORKERS_KEPT {
            // Forget the offline worker seen least recently.
            let oldest = self
                .workers
                .values()
                .min_by(|a, b| {
                    let last = |worker: &Worker| worker.heartbeats.last().copied().unwrap_or(0.0);
                    last(a).total_cmp(&last(b))
                })
                .map(|worker| worker.hostname.clone());
            if let Some(oldest) = oldest {
                self.workers.remove(&oldest);
            }
        }
        self.workers
            .entry(hostname.to_owned())
            .or_insert_with(|| Worker::new(hostname))
    }

    /// Records an inspect answer of `hostname` (a worker that sends no events still shows).
    pub fn inspected(
        &mut self,
        hostname: &str,
        method: &str,
        answer: serde_json::Value,
        now: f64,
    ) -> Worker {
        if matches!(method, "active" | "reserved" | "scheduled") {
            self.learn_queues(&answer);
        }
        let worker = self.worker_mut(hostname);
        worker.inspected(method, answer, now);
        let worker = worker.clone();
        self.dirty_workers.insert(hostname.to_owned());
        worker
    }

    /// Records the queue of tasks a worker holds, from their `delivery_info` (Celery's
    /// task events carry none): what "send again" sends to.
    fn learn_queues(&mut self, answer: &serde_json::Value) {
        let Some(entries) = answer.as_array() else {
            return;
        };
        for entry in entries {
            // `scheduled` wraps the request: {"eta", "priority", "request": {…}}.
            let request = entry.get("request").unwrap_or(entry);
            let (Some(id), Some(routing_key)) = (
                request.get("id").and_then(|id| id.as_str()),
                request
                    .pointer("/delivery_info/routing_key")
                    .and_then(|key| key.as_str()),
            ) else {
                continue;
            };
            if let Some(task) = self.tasks.get_mut(id) {
                if task.queue.is_none() && !routing_key.is_empty() {
                    task.queue = Some(routing_key.to_owned());
                    self.mark_dirty(id);
                }
            }
        }
    }

    /// The workers, by name.
    pub fn workers(&self) -> &BTreeMap<String, Worker> {
        &self.workers
    }

    /// A task in memory.
    pub fn task(&self, uuid: &str) -> Option<&Task> {
        self.tasks.peek(uuid)
    }

    /// Tasks in memory, least recently updated first.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().map(|(_, task)| task)
    }

    /// Task names seen.
    pub fn task_types(&self) -> &BTreeSet<String> {
        &self.task_types
    }

    /// The overview's series.
    pub fn overview(&self) -> &Overview {
        &self.overview
    }

    /// Takes the tasks changed since the last call (newest last) and how many more changed.
    pub fn take_dirty_tasks(&mut self) -> (Vec<Task>, u64) {
        let ids: Vec<String> = self.dirty_tasks.drain().collect();
        let missed = std::mem::take(&mut self.dirty_tasks_missed);
        let tasks = ids
            .iter()
            .filter_map(|uuid| self.tasks.peek(uuid).cloned())
            .collect();
        (tasks, missed)
    }

    /// Takes the workers changed since the last call, and those whose heartbeat expired
    /// since `last_tick` (they just went offline).
    pub fn take_dirty_workers(&mut self, last_tick: f64, now: f64) -> Vec<Worker> {
        for worker in self.workers.values() {
            if let Some(expires) = worker.heartbeat_expires() {
                if expires > last_tick && expires <= now {
                    self.dirty_workers.insert(worker.hostname.clone());
                }
            }
        }
        let names = std::mem::take(&mut self.dirty_workers);
        names
            .iter()
            .filter_map(|name| self.workers.get(name).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> Event {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn tasks_and_workers_fold_and_stay_bounded() {
        let mut cluster = Cluster::new(2, 60.0, 10);
        let beat = event(
            serde_json::json!({"type": "worker-online", "hostname": "celery@w", "timestamp": 10.0, "freq": 2.0}),
        );
        assert!(cluster.apply(&beat, 10.0, 10.0).worker.is_some());
        for (index, uuid) in ["a", "b", "c"].iter().enumerate() {
            let received = event(
                serde_json::json!({"type": "task-received", "hostname": "celery@w",
                "timestamp": 11.0, "uuid": uuid, "name": "tasks.add", "parent_id": if index > 0 { "a" } else { "" }}),
            );
            cluster.apply(&received, 11.0, 11.0);
        }
        assert!(cluster.task("a").is_none(), "evicted");
        assert_eq!(cluster.tasks().count(), 2);
        let (dirty, missed) = cluster.take_dirty_tasks();
        assert_eq!((dirty.len(), missed), (2, 0));
        assert!(cluster.workers()["celery@w"].alive(13.0));
        assert_eq!(cluster.take_dirty_workers(10.0, 11.0).len(), 1);
        // Expiry shows as a change once.
        assert_eq!(cluster.take_dirty_workers(14.0, 16.0).len(), 1);
        assert_eq!(cluster.take_dirty_workers(16.0, 18.0).len(), 0);
        assert!(cluster.task_types().contains("tasks.add"));
    }

    #[test]
    fn a_held_tasks_queue_is_learnt_from_the_workers_answer() {
        let mut cluster = Cluster::new(10, 60.0, 10);
        for uuid in ["a", "b"] {
            let received = event(serde_json::json!({"type": "task-received",
                "hostname": "celery@w", "timestamp": 11.0, "uuid": uuid, "name": "tasks.add"}));
            cluster.apply(&received, 11.0, 11.0);
        }
        cluster.take_dirty_tasks();
        let active = serde_json::json!([{"id": "a", "name": "tasks.add",
            "delivery_info": {"exchange": "", "routing_key": "reports", "priority": 0}}]);
        cluster.inspected("celery@w", "active", active, 12.0);
        let scheduled = serde_json::json!([{"eta": "2026-01-01T00:00:00", "priority": 6,
            "request": {"id": "b", "delivery_info": {"routing_key": "mail"}}}]);
        cluster.inspected("celery@w", "scheduled", scheduled, 12.0);
        assert_eq!(cluster.task("a").unwrap().queue.as_deref(), Some("reports"));
        assert_eq!(cluster.task("b").unwrap().queue.as_deref(), Some("mail"));
        // The history gets them too.
        assert_eq!(cluster.take_dirty_tasks().0.len(), 2);
    }
}
