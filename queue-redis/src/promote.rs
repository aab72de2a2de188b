//! The publishing side's share of promoting delayed messages: on time, while it runs.
//!
//! A delayed message never depends on this (see `crate::delay`: any visibility restore,
//! kombu's included, brings it back when due), but a Python worker restores only every so
//! often (kombu's default: every 100 s). So the process that published a delayed message
//! also promotes its queue when it is due, for as long as it runs. Per queue it remembers
//! only the next due time (the promotion tells the one after), for at most
//! [`MAX_QUEUES`] queues: beyond that, delayed messages of further queues are left to the
//! consumers and the restores. (Promoting twice is harmless: the script moves each once.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fred::types::Value;
use tokio::sync::Notify;
use tracing::debug;

use crate::broker::{BrokerInner, now_ms};
use crate::scripts;

/// Most queues whose next due time a publisher remembers.
pub(crate) const MAX_QUEUES: usize = 10_000;

/// How soon a failed promotion is tried again.
const RETRY_MS: i64 = 1_000;

/// The next due time of each queue this process published delayed messages to.
#[derive(Default)]
pub(crate) struct Promoter {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    by_queue: HashMap<String, i64>,
    by_due: BTreeSet<(i64, String)>,
}

impl Promoter {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that a delayed message of `queue` is due at `due` (ms since the epoch).
    pub(crate) fn add(&self, queue: &str, due: i64) {
        let mut state = self.lock();
        match state.by_queue.get(queue).copied() {
            Some(current) if current <= due => return,
            Some(current) => {
                state.by_due.remove(&(current, queue.to_owned()));
            }
            None if state.by_queue.len() >= MAX_QUEUES => {
                debug!(
                    queue,
                    "too many queues with delayed messages to promote from here; consumers and restores promote them"
                );
                return;
            }
            None => {}
        }
        state.by_queue.insert(queue.to_owned(), due);
        state.by_due.insert((due, queue.to_owned()));
        let earliest = state.by_due.first().is_some_and(|(first, _)| *first == due);
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// How many queues are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_queue.len()
    }

    /// Takes the queues due by `now`; returns them and the next due time after them.
    fn take_due(&self, now: i64) -> (Vec<String>, Option<i64>) {
        let mut state = self.lock();
        let mut queues = Vec::new();
        while let Some((due, _)) = state.by_due.first() {
            if *due > now {
                break;
            }
            let (_, queue) = state.by_due.pop_first().expect("checked");
            state.by_queue.remove(&queue);
            queues.push(queue);
        }
        let next = state.by_due.first().map(|(due, _)| *due);
        (queues, next)
    }
}

/// Promotes the queues when due; ends with the broker.
pub(crate) async fn run(promoter: Arc<Promoter>, broker: Weak<BrokerInner>) {
    loop {
        let (queues, next) = promoter.take_due(now_ms());
        if !queues.is_empty() {
            let Some(inner) = broker.upgrade() else {
                return;
            };
            for queue in queues {
                let mut keys = vec![inner.keys.unacked.clone(), inner.keys.unacked_index.clone()];
                keys.extend(inner.keys.lists(&queue));
                let args = vec![
                    Value::from(inner.keys.delayed(&queue)),
                    Value::from(now_ms().to_string()),
                ];
                match scripts::run(&inner.client, &inner.scripts.promote, keys, args).await {
                    Ok(next) => {
                        if let Some(due) = next.as_str().and_then(|due| due.parse::<f64>().ok()) {
                            promoter.add(&queue, due as i64);
                        }
                    }
                    Err(error) => {
                        debug!(%error, queue, "promoting delayed messages failed; trying again");
                        promoter.add(&queue, now_ms() + RETRY_MS);
                    }
                }
            }
            continue;
        }
        if broker.strong_count() == 0 {
            return;
        }
        let wait = next.map_or(Duration::from_secs(60), |next| {
            Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0))
        });
        tokio::select! {
            () = promoter.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_earliest_due_time_of_a_bounded_number_of_queues() {
        let promoter = Promoter::default();
        promoter.add("a", 300);
        promoter.add("a", 100);
        promoter.add("a", 200);
        promoter.add("b", 150);
        assert_eq!(
            promoter.len(),
            2,
            "one entry per queue, however many messages"
        );
        assert_eq!(promoter.take_due(120), (vec!["a".to_owned()], Some(150)));
        assert_eq!(promoter.take_due(1_000), (vec!["b".to_owned()], None));
        for queue in 0..MAX_QUEUES + 50 {
            promoter.add(&format!("q{queue}"), 5_000);
        }
        assert_eq!(promoter.len(), MAX_QUEUES, "bounded");
    }
}
