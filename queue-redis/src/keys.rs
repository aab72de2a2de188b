//! Key names (kombu's, plus the two of our own) and the priority mapping.
//!
//! Priority: our API says 0–9, higher first (as on RabbitMQ); kombu on Redis serves the
//! *lowest* number first. The number written into `properties.priority` on the wire is
//! kombu's, `9 - ours`, so that a Python worker, a Python restore and a Rust worker all put a
//! message into the same list and agree on what is urgent. See the crate docs.

use queue_core::MAX_PRIORITY;

/// kombu's separator between a queue name and its priority step.
pub const SEP: &str = "\x06\x16";

/// Key names of one Redis database, with kombu's `global_keyprefix` applied.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    steps: Vec<u8>,
    pub(crate) unacked: String,
    pub(crate) unacked_index: String,
    pub(crate) unacked_mutex: String,
    /// kombu 5.7's deadlines of binding tables (sorted set, member: exchange).
    pub(crate) binding_deadlines: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, steps: &[u8]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            steps: steps.to_vec(),
            unacked: format!("{prefix}unacked"),
            unacked_index: format!("{prefix}unacked_index"),
            unacked_mutex: format!("{prefix}unacked_mutex"),
            binding_deadlines: format!("{prefix}_kombu.binding_deadlines"),
        }
    }

    /// kombu's priority steps, ascending: the order in which lists are served.
    pub(crate) fn steps(&self) -> &[u8] {
        &self.steps
    }

    /// The list of `queue` for a kombu step: the queue name for step 0, else
    /// `queue\x06\x16<step>`.
    pub(crate) fn list(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            format!("{}{queue}", self.prefix)
        } else {
            format!("{}{queue}{SEP}{step}", self.prefix)
        }
    }

    /// Every list of `queue`, served first to last.
    pub(crate) fn lists(&self, queue: &str) -> Vec<String> {
        self.steps
            .iter()
            .map(|step| self.list(queue, *step))
            .collect()
    }

    /// The list a message of kombu priority `wire` goes to.
    pub(crate) fn list_for_wire(&self, queue: &str, wire: u8) -> String {
        self.list(queue, self.step_for_wire(wire))
    }

    /// kombu's `priority()`: the largest step not above `wire`.
    pub(crate) fn step_for_wire(&self, wire: u8) -> u8 {
        let wire = wire.min(MAX_PRIORITY);
        self.steps
            .iter()
            .copied()
            .take_while(|step| *step <= wire)
            .last()
            .unwrap_or(0)
    }

    /// The sorted set of messages of `queue` waiting for their eta (ours; kombu has none).
    pub(crate) fn delayed(&self, queue: &str) -> String {
        format!("{}_queue.delayed.{queue}", self.prefix)
    }

    /// The list of dead letters of `queue`: the plain list of queue `<queue>.dead_letter`.
    pub(crate) fn dead_letters(&self, queue: &str) -> String {
        format!(
            "{}{}",
            self.prefix,
            queue_core::broker::dead_letter_queue(queue)
        )
    }

    /// kombu's binding table of an exchange.
    pub(crate) fn binding(&self, exchange: &str) -> String {
        format!("{}_kombu.binding.{exchange}", self.prefix)
    }

    /// kombu's pub/sub channel of a fanout exchange (`_get_publish_topic`, with
    /// `fanout_prefix` and `fanout_patterns` on, as Celery runs):
    /// `<prefix>/<db>.<exchange>`, then `/<routing key>` when the key is not empty.
    pub(crate) fn fanout_channel(&self, db: u8, exchange: &str, routing_key: &str) -> String {
        if routing_key.is_empty() {
            format!("{}/{db}.{exchange}", self.prefix)
        } else {
            format!("{}/{db}.{exchange}/{routing_key}", self.prefix)
        }
    }

    /// kombu 5.7's set of bindings that never expire.
    pub(crate) fn binding_permanent(&self, exchange: &str) -> String {
        format!("{}_kombu.binding_permanent.{exchange}", self.prefix)
    }
}

/// Our priority (higher first) as kombu's number (lower first).
pub(crate) fn wire_priority(ours: u8) -> u8 {
    MAX_PRIORITY - ours.min(MAX_PRIORITY)
}

/// kombu's number as our priority. kombu clamps to 0–9, and treats a missing or
/// non-numeric priority as its default 0 (served first), which is our 9.
pub(crate) fn our_priority(wire: Option<i64>) -> u8 {
    let wire = wire.unwrap_or(0).clamp(0, i64::from(MAX_PRIORITY)) as u8;
    MAX_PRIORITY - wire
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_lists_and_steps() {
        let keys = Keys::new("", &[0, 3, 6, 9]);
        assert_eq!(
            keys.lists("celery"),
            [
                "celery",
                "celery\x06\x163",
                "celery\x06\x166",
                "celery\x06\x169"
            ]
        );
        // Captured: priority 5 in `celery\x06\x163`, 7 in `celery\x06\x166`.
        assert_eq!(keys.list_for_wire("celery", 5), "celery\x06\x163");
        assert_eq!(keys.list_for_wire("celery", 7), "celery\x06\x166");
        assert_eq!(keys.list_for_wire("celery", 2), "celery");
        assert_eq!(keys.list_for_wire("celery", 200), "celery\x06\x169");
        let prefixed = Keys::new("p:", &[0, 3, 6, 9]);
        assert_eq!(prefixed.unacked, "p:unacked");
        assert_eq!(prefixed.list("q", 3), "p:q\x06\x163");
        assert_eq!(prefixed.binding("q"), "p:_kombu.binding.q");
        assert_eq!(prefixed.binding_deadlines, "p:_kombu.binding_deadlines");
        // Captured: `/2.celeryev/worker.online`, `/2.celery.pidbox`.
        assert_eq!(
            keys.fanout_channel(2, "celeryev", "worker.online"),
            "/2.celeryev/worker.online"
        );
        assert_eq!(
            keys.fanout_channel(2, "celery.pidbox", ""),
            "/2.celery.pidbox"
        );
        assert_eq!(prefixed.fanout_channel(0, "e", "k"), "p:/0.e/k");
    }

    #[test]
    fn urgent_means_the_same_on_both_sides() {
        // Our 9 (most urgent) is kombu's 0 (served first), and back.
        assert_eq!(wire_priority(9), 0);
        assert_eq!(wire_priority(0), 9);
        for ours in 0..=9 {
            assert_eq!(our_priority(Some(i64::from(wire_priority(ours)))), ours);
        }
        // Python's default (0, or no priority at all) is served first: our 9.
        assert_eq!(our_priority(None), 9);
        assert_eq!(our_priority(Some(-4)), 9);
        assert_eq!(our_priority(Some(42)), 0);
    }
}
