//! The worker's slots: how many tasks run at once. Remote control resizes them while the
//! worker runs (`pool_grow`, `pool_shrink`, `autoscale`); a shrink takes effect as running
//! tasks end, never by stopping one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

#[derive(Debug)]
pub(crate) struct Slots {
    semaphore: Arc<Semaphore>,
    size: AtomicUsize,
}

impl Slots {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
        }
    }

    /// The permits tasks take to run.
    pub(crate) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// How many tasks may run at once.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// `n` more slots, at once.
    pub(crate) fn grow(&self, n: usize) {
        let n = n.min(Semaphore::MAX_PERMITS.saturating_sub(self.size()));
        self.size.fetch_add(n, Ordering::AcqRel);
        self.semaphore.add_permits(n);
    }

    /// `n` fewer slots (at least one stays): taken out as they come free.
    pub(crate) fn shrink(&self, n: usize) {
        let mut taken = 0;
        let _ = self
            .size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |size| {
                taken = n.min(size.saturating_sub(1));
                Some(size - taken)
            });
        if taken == 0 {
            return;
        }
        let Ok(count) = u32::try_from(taken) else {
            return;
        };
        let semaphore = self.semaphore.clone();
        tokio::spawn(async move {
            if let Ok(permits) = semaphore.acquire_many_owned(count).await {
                permits.forget();
            }
        });
    }

    /// Exactly `size` slots.
    pub(crate) fn resize(&self, size: usize) {
        let current = self.size();
        if size > current {
            self.grow(size - current);
        } else {
            self.shrink(current - size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_grow_at_once_and_shrink_as_they_free() {
        let slots = Slots::new(2);
        slots.grow(3);
        assert_eq!(
            (slots.size(), slots.semaphore().available_permits()),
            (5, 5)
        );
        let running = slots
            .semaphore()
            .clone()
            .acquire_many_owned(4)
            .await
            .unwrap();
        slots.shrink(10);
        assert_eq!(slots.size(), 1, "one slot always stays");
        drop(running);
        // The shrink takes the freed permits: one is left.
        let left = async {
            while slots.semaphore().available_permits() != 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), left)
            .await
            .unwrap();
        slots.resize(3);
        assert_eq!(
            (slots.size(), slots.semaphore().available_permits()),
            (3, 3)
        );
    }
}
