//! The Lamport clock Celery stamps on events and control replies (`app.clock`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A Lamport clock: [`forward`](Self::forward) before sending, [`adjust`](Self::adjust)
/// on receiving another node's clock, so that causally later events carry larger values.
///
/// ```
/// use queue_core::events::LamportClock;
///
/// let clock = LamportClock::default();
/// assert_eq!(clock.forward(), 1);
/// assert_eq!(clock.adjust(10), 11);
/// assert_eq!(clock.adjust(3), 12);
/// ```
#[derive(Debug, Default)]
pub struct LamportClock {
    value: AtomicU64,
}

impl LamportClock {
    /// The clock's current value.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Advances the clock for an event about to be sent; returns the new value.
    pub fn forward(&self) -> u64 {
        self.value.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Takes another node's clock into account: the new value is past both.
    pub fn adjust(&self, other: u64) -> u64 {
        let previous = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(current.max(other).saturating_add(1))
            })
            .unwrap_or_else(|current| current);
        previous.max(other).saturating_add(1)
    }
}
