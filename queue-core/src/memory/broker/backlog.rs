//! The memory broker's backlog for a monitor: stats, delayed messages, dead letters and the
//! queues it holds. Everything happens under the broker's one lock, so every move is one
//! step.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use super::{Delayed, QueueState, State, Stored};
use crate::backlog::{DelayedMessage, KnownQueues, OldestMessage, QueueStats};
use crate::broker::{DEAD_LETTER_REASON_HEADER, QueueLength, dead_letter_queue};
use crate::protocol::time;

impl QueueState {
    fn length(&self) -> QueueLength {
        let mut length = QueueLength::default();
        for (priority, lane) in self.by_priority.iter().enumerate() {
            if !lane.is_empty() {
                length.by_priority.insert(priority as u8, lane.len() as u64);
            }
        }
        length.total = self.len() as u64;
        length
    }

    /// Of the messages first in line at each priority, the one that entered first (the
    /// highest priority among equals: the one a consumer gets next).
    fn oldest(&self) -> Option<&Stored> {
        self.by_priority
            .iter()
            .rev()
            .filter_map(|lane| lane.front())
            .min_by_key(|stored| stored.enqueued_at)
    }
}

impl Stored {
    fn task_id(&self) -> Option<&str> {
        self.content.as_ref().ok().map(|message| message.id())
    }
}

impl State {
    /// The stats of `queue`; the caller has promoted due messages.
    pub(super) fn stats(&self, queue: &str) -> QueueStats {
        let ready = self.queues.get(queue);
        QueueStats {
            queue: queue.to_owned(),
            ready: ready.map(QueueState::length).unwrap_or_default(),
            oldest_ready: ready
                .and_then(QueueState::oldest)
                .map(|stored| OldestMessage {
                    task_id: stored.task_id().map(str::to_owned),
                    enqueued_at: Some(stored.enqueued_at),
                }),
            delayed: self
                .delayed
                .iter()
                .filter(|Reverse(delayed)| delayed.queue == queue)
                .count() as u64,
            dead_letters: self
                .queues
                .get(&dead_letter_queue(queue))
                .map_or(0, |dead| dead.len() as u64),
        }
    }

    /// Up to `limit` delayed messages of `queue`, the soonest due first.
    pub(super) fn delayed_of(&self, queue: &str, limit: usize) -> Vec<DelayedMessage> {
        let mut delayed: Vec<&Delayed> = self
            .delayed
            .iter()
            .map(|Reverse(delayed)| delayed)
            .filter(|delayed| delayed.queue == queue)
            .collect();
        delayed.sort_unstable();
        delayed
            .into_iter()
            .take(limit)
            .map(|delayed| DelayedMessage {
                queue: delayed.queue.clone(),
                eta: delayed.eta,
                content: delayed.stored.content.clone(),
            })
            .collect()
    }

    /// Moves the soonest delayed message of `queue` with `task_id` to the end of `queue`,
    /// without its eta.
    pub(super) fn run_delayed_now(&mut self, queue: &str, task_id: &str) -> bool {
        let mut delayed = std::mem::take(&mut self.delayed).into_sorted_vec();
        // Sorted by `Reverse`: the soonest due is last.
        let found = delayed.iter().rposition(|Reverse(delayed)| {
            delayed.queue == queue && delayed.stored.task_id() == Some(task_id)
        });
        let taken = found.map(|position| delayed.remove(position).0);
        self.delayed = BinaryHeap::from(delayed);
        let Some(Delayed { mut stored, .. }) = taken else {
            return false;
        };
        if let Ok(message) = &mut stored.content {
            message.headers.eta = None;
        }
        stored.enqueued_at = time::now();
        let priority = stored.priority();
        self.queues.entry(queue.to_owned()).or_default().by_priority[priority].push_back(stored);
        true
    }

    /// Moves dead letters of `queue` (all, or those of `task_ids`) back to the end of
    /// `queue`, oldest dead letter first, without their reason.
    pub(super) fn requeue_dead_letters(&mut self, queue: &str, task_ids: Option<&[String]>) -> u64 {
        let Some(dead) = self.queues.get_mut(&dead_letter_queue(queue)) else {
            return 0;
        };
        let wanted = |stored: &Stored| match task_ids {
            None => true,
            Some(ids) => stored
                .task_id()
                .is_some_and(|id| ids.iter().any(|wanted| wanted == id)),
        };
        let mut moved = Vec::new();
        for lane in &mut dead.by_priority {
            let (going, staying): (VecDeque<Stored>, VecDeque<Stored>) =
                std::mem::take(lane).into_iter().partition(wanted);
            *lane = staying;
            moved.extend(going);
        }
        if dead.len() == 0 {
            self.queues.remove(&dead_letter_queue(queue));
        }
        moved.sort_by_key(|stored| stored.dead_letter.as_ref().map_or(0, |(_, at)| *at));
        let count = moved.len() as u64;
        let now = time::now();
        let target = self.queues.entry(queue.to_owned()).or_default();
        for mut stored in moved {
            if let Ok(message) = &mut stored.content {
                message.headers.extra.remove(DEAD_LETTER_REASON_HEADER);
            }
            stored.dead_letter = None;
            stored.redelivered = false;
            stored.enqueued_at = now;
            let priority = stored.priority();
            target.by_priority[priority].push_back(stored);
        }
        count
    }

    /// Every queue that holds, held or waits for messages, and every queue with dead
    /// letters (by its own name).
    pub(super) fn known_queues(&self) -> KnownQueues {
        let mut names = BTreeSet::new();
        for name in self.queues.keys() {
            let queue = name.strip_suffix(".dead_letter").unwrap_or(name);
            names.insert(queue.to_owned());
        }
        for Reverse(delayed) in &self.delayed {
            names.insert(delayed.queue.clone());
        }
        KnownQueues {
            names: names.into_iter().collect(),
            complete: true,
        }
    }
}
