//! Revoked task ids (wire spec §7.5): a revoked task that arrives is discarded (REVOKED
//! stored, `task-revoked` sent, message acked); a running one is stopped when revoked with
//! `terminate`. The set is bounded like Celery's `LimitedSet`: at most `max` ids, each kept
//! for `expires` (50 000 and 3 h by default, or `CELERY_WORKER_REVOKES_MAX` and
//! `CELERY_WORKER_REVOKE_EXPIRES` as in Celery).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;

/// Celery's defaults.
const DEFAULT_MAX: usize = 50_000;
const DEFAULT_EXPIRES: Duration = Duration::from_secs(10_800);

#[derive(Debug)]
pub(crate) struct Revoked {
    /// Id → when it was revoked, oldest first.
    ids: Mutex<LinkedHashMap<String, Instant>>,
    max: usize,
    expires: Duration,
}

impl Default for Revoked {
    fn default() -> Self {
        let max = std::env::var("CELERY_WORKER_REVOKES_MAX")
            .ok()
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX);
        let expires = std::env::var("CELERY_WORKER_REVOKE_EXPIRES")
            .ok()
            .and_then(|value| value.trim().parse::<f64>().ok())
            .and_then(queue_core::protocol::time::seconds_duration)
            .unwrap_or(DEFAULT_EXPIRES);
        Self::new(max, expires)
    }
}

impl Revoked {
    pub(crate) fn new(max: usize, expires: Duration) -> Self {
        Self {
            ids: Mutex::new(LinkedHashMap::new()),
            max: max.max(1),
            expires,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkedHashMap<String, Instant>> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Revokes `id` (again: its time is renewed).
    pub(crate) fn insert(&self, id: &str) {
        let now = Instant::now();
        let mut ids = self.lock();
        ids.remove(id);
        ids.insert(id.to_owned(), now);
        self.purge(&mut ids, now);
    }

    /// Whether `id` is revoked (and not expired).
    pub(crate) fn contains(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut ids = self.lock();
        self.purge(&mut ids, now);
        ids.contains_key(id)
    }

    /// The revoked ids, oldest first.
    pub(crate) fn ids(&self) -> Vec<String> {
        let now = Instant::now();
        let mut ids = self.lock();
        self.purge(&mut ids, now);
        ids.keys().cloned().collect()
    }

    /// Drops expired ids and, past `max`, the oldest.
    fn purge(&self, ids: &mut LinkedHashMap<String, Instant>, now: Instant) {
        while let Some((_, at)) = ids.front() {
            if ids.len() > self.max || now.duration_since(*at) >= self.expires {
                ids.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_oldest_first() {
        let revoked = Revoked::new(3, Duration::from_secs(60));
        for id in ["a", "b", "c", "d"] {
            revoked.insert(id);
        }
        assert_eq!(revoked.ids(), ["b", "c", "d"]);
        assert!(!revoked.contains("a") && revoked.contains("d"));
        // Revoking again renews: "b" is now the newest.
        revoked.insert("b");
        revoked.insert("e");
        assert_eq!(revoked.ids(), ["d", "b", "e"]);
    }

    #[test]
    fn ids_expire() {
        let revoked = Revoked::new(10, Duration::ZERO);
        revoked.insert("a");
        assert!(!revoked.contains("a"));
        assert!(revoked.ids().is_empty());
    }
}
