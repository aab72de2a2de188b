//! The queues a consumer consumes, changed while it runs by `add_queue` / `remove_queue`
//! (Celery's `add_consumer` / `cancel_consumer`).
//!
//! Append-only: a queue keeps its index (into the buffers and the driver's consumers) for
//! the consumer's life, so that deliveries already buffered or handed out stay attached to
//! it. A removed queue stays as a tombstone, not consumed, and comes back in its place when
//! added again.

use queue_core::broker::{ConsumeOptions, QueueOrder};

#[derive(Clone, Debug)]
pub(crate) struct Lineup {
    names: Vec<String>,
    removed: Vec<bool>,
    pub(crate) order: QueueOrder,
    /// Counts the changes; the driver reports the version it follows.
    pub(crate) version: u64,
}

impl Lineup {
    pub(crate) fn new(options: &ConsumeOptions) -> Self {
        Self {
            names: options.queues.clone(),
            removed: vec![false; options.queues.len()],
            order: options.order.clone(),
            version: 0,
        }
    }

    /// Queues ever consumed, removed ones included (their indexes stay valid).
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("?", String::as_str)
    }

    /// Whether queue `index` is to be consumed (not removed).
    pub(crate) fn wanted(&self, index: usize) -> bool {
        index < self.names.len() && !self.removed[index]
    }

    /// The queues consumed now, for logs.
    pub(crate) fn consumed(&self) -> Vec<&str> {
        (0..self.len())
            .filter(|index| self.wanted(*index))
            .map(|index| self.name(index))
            .collect()
    }

    /// Adds `queue` (or brings a removed one back); `false` when it is consumed already.
    pub(crate) fn add(&mut self, queue: &str) -> bool {
        match self.names.iter().position(|name| name == queue) {
            Some(index) if self.removed[index] => {
                self.removed[index] = false;
                self.version += 1;
                true
            }
            Some(_) => false,
            None => {
                if let QueueOrder::Weighted(weights) = &mut self.order {
                    weights.resize(self.names.len(), 1);
                    weights.push(1);
                }
                self.names.push(queue.to_owned());
                self.removed.push(false);
                self.version += 1;
                true
            }
        }
    }

    /// Stops consuming `queue`; `false` when it was not consumed.
    pub(crate) fn remove(&mut self, queue: &str) -> bool {
        match self.names.iter().position(|name| name == queue) {
            Some(index) if !self.removed[index] => {
                self.removed[index] = true;
                self.version += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_queue_keeps_its_index_and_comes_back_in_place() {
        let mut lineup = Lineup::new(&ConsumeOptions::new(["a", "b"]));
        assert!(!lineup.add("a"));
        assert!(lineup.add("c"));
        assert!(lineup.remove("b"));
        assert!(!lineup.remove("b"));
        assert_eq!(lineup.consumed(), ["a", "c"]);
        assert!(lineup.add("b"));
        assert_eq!(lineup.names(), ["a", "b", "c"]);
        assert_eq!(lineup.consumed(), ["a", "b", "c"]);
    }
}
