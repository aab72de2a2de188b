//! The queues a Redis database holds, as far as keys tell: Redis has no queue objects,
//! only lists. Celery and kombu declare a queue by binding it (`_kombu.binding.<exchange>`,
//! member `<routing key>\x06\x16<pattern>\x06\x16<queue>`), and so do our declares and
//! publishes; our delayed sets (`_queue.delayed.<queue>`) and dead-letter lists
//! (`<queue>.dead_letter`) name queues too. Broadcast plumbing is left out: the pidbox
//! and event exchanges (`celery.pidbox`, `reply.celery.pidbox`, `celeryev`) and queues
//! (`*.pidbox`, `celeryev.*`).

use std::collections::BTreeSet;

use fred::prelude::{Client, SetsInterface};
use fred::types::Value;
use futures::TryStreamExt;
use queue_core::backlog::KnownQueues;
use queue_core::broker::BrokerError;

use crate::broker::BrokerInner;
use crate::error::broker_error;
use crate::keys::SEP;

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: u32 = 1000;

/// The suffix of dead-letter queues (see [`queue_core::broker::dead_letter_queue`]).
const DEAD_LETTER_SUFFIX: &str = ".dead_letter";

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Whether an exchange carries broadcasts rather than tasks.
fn is_broadcast_exchange(exchange: &str) -> bool {
    exchange == "celeryev" || exchange.ends_with(".pidbox")
}

/// Whether a queue is broadcast plumbing or a dead-letter queue.
fn is_task_queue(queue: &str) -> bool {
    !(queue.is_empty()
        || queue.ends_with(".pidbox")
        || queue.starts_with("celeryev.")
        || queue.ends_with(DEAD_LETTER_SUFFIX))
}

/// The queue a binding member names (its third part).
fn bound_queue(member: &str) -> Option<&str> {
    member.splitn(3, SEP).nth(2)
}

/// The names (without `prefix`) of the keys matching `prefix` + `pattern`.
async fn scan(client: &Client, prefix: &str, pattern: &str) -> Result<Vec<String>, BrokerError> {
    let keys: Vec<fred::types::Key> = client
        .scan_buffered(
            format!("{}{pattern}", escape_glob(prefix)),
            Some(SCAN_COUNT),
            None,
        )
        .try_collect()
        .await
        .map_err(broker_error)?;
    Ok(keys
        .iter()
        .filter_map(|key| {
            let name = String::from_utf8_lossy(key.as_bytes());
            name.strip_prefix(prefix).map(str::to_owned)
        })
        .collect())
}

impl BrokerInner {
    pub(crate) async fn known_queues(&self) -> Result<KnownQueues, BrokerError> {
        let prefix = self.keys.binding("");
        let mut names = BTreeSet::new();
        for exchange in scan(&self.client, &prefix, "*").await? {
            if is_broadcast_exchange(&exchange) {
                continue;
            }
            let members: Vec<Value> = self
                .client
                .smembers(self.keys.binding(&exchange))
                .await
                .map_err(broker_error)?;
            for member in &members {
                let member = String::from_utf8_lossy(member.as_bytes().unwrap_or_default());
                if let Some(queue) = bound_queue(&member).filter(|queue| is_task_queue(queue)) {
                    names.insert(queue.to_owned());
                }
            }
        }
        names.extend(scan(&self.client, &self.keys.delayed(""), "*").await?);
        let global = self.keys.list("", 0);
        for dead in scan(&self.client, &global, &format!("*{DEAD_LETTER_SUFFIX}")).await? {
            if let Some(queue) = dead.strip_suffix(DEAD_LETTER_SUFFIX) {
                names.insert(queue.to_owned());
            }
        }
        names.retain(|queue| is_task_queue(queue));
        Ok(KnownQueues {
            names: names.into_iter().collect(),
            complete: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_members_name_task_queues_and_leave_plumbing_out() {
        assert_eq!(bound_queue("celery\x06\x16\x06\x16celery"), Some("celery"));
        assert_eq!(
            bound_queue("worker.#\x06\x16\x06\x16celeryev.5f1e"),
            Some("celeryev.5f1e")
        );
        assert!(!is_task_queue("celeryev.5f1e"));
        assert!(!is_task_queue("celery@host.celery.pidbox"));
        assert!(!is_task_queue("q.dead_letter"));
        assert!(is_task_queue("emails"));
        assert!(is_broadcast_exchange("reply.celery.pidbox"));
        assert!(!is_broadcast_exchange("celery"));
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
