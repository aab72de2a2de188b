//! The publishing side's share of promoting delayed messages.
//!
//! Consumers of a queue move its due delayed messages into the lists on every take. Python
//! workers know nothing of the delayed sets, though, so on a queue served only by Python
//! workers a delayed message would wait forever: the process that published it promotes it
//! when it is due, for as long as that process runs. (Promoting twice is harmless: the
//! script moves each member once.)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fred::types::Value;
use tokio::sync::Notify;
use tracing::debug;

use crate::broker::{BrokerInner, now_ms};
use crate::scripts;

/// Due times of the delayed messages this process published, per queue.
#[derive(Default)]
pub(crate) struct Promoter {
    due: Mutex<BTreeMap<i64, Vec<String>>>,
    changed: Notify,
}

impl Promoter {
    /// Notes delayed messages published to `queue`, due at `times` (ms since the epoch).
    pub(crate) fn add(&self, entries: HashMap<String, Vec<i64>>) {
        if entries.is_empty() {
            return;
        }
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (queue, times) in entries {
            for time in times {
                let queues = due.entry(time).or_default();
                if !queues.contains(&queue) {
                    queues.push(queue.clone());
                }
            }
        }
        drop(due);
        self.changed.notify_one();
    }

    fn take_due(&self, now: i64) -> (Vec<String>, Option<i64>) {
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let later = due.split_off(&(now + 1));
        let ready = std::mem::replace(&mut *due, later);
        let mut queues: Vec<String> = ready.into_values().flatten().collect();
        queues.sort();
        queues.dedup();
        (queues, due.keys().next().copied())
    }
}

/// Promotes the delayed messages this broker published when they are due; ends with the
/// broker.
pub(crate) async fn run(promoter: Arc<Promoter>, broker: Weak<BrokerInner>) {
    loop {
        let (queues, next) = promoter.take_due(now_ms());
        if !queues.is_empty() {
            let Some(inner) = broker.upgrade() else {
                return;
            };
            for queue in queues {
                let lists = inner.keys.lists(&queue);
                let args = vec![
                    Value::from(inner.keys.delayed(&queue)),
                    Value::from(now_ms().to_string()),
                ];
                let promoted = scripts::run(&inner.client, &inner.scripts.length, lists, args);
                if let Err(error) = promoted.await {
                    debug!(%error, queue, "promoting delayed messages failed; consumers promote them too");
                }
            }
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
