//! Revoked task ids (wire spec §7.5): a revoked task that arrives is discarded (REVOKED
//! stored, `task-revoked` sent, message acked); a running one is stopped when revoked with
//! `terminate`. The set is bounded like Celery's `LimitedSet`: at most `max` ids, each kept
//! for `expires` (50 000 and 3 h by default, or `CELERY_WORKER_REVOKES_MAX` and
//! `CELERY_WORKER_REVOKE_EXPIRES` as in Celery). With a state file (`Worker::state_file`,
//! Celery's `--statedb`) the ids outlive a restart; at start a worker also takes the ids of
//! the workers that answer its `hello` (mingle), Python ones included.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use hashlink::LinkedHashMap;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct StateFile {
    revoked: Vec<String>,
}

/// Celery's defaults.
const DEFAULT_MAX: usize = 50_000;
const DEFAULT_EXPIRES: Duration = Duration::from_secs(10_800);

#[derive(Debug)]
pub(crate) struct Revoked {
    /// Id → when it was revoked, oldest first.
    ids: Mutex<LinkedHashMap<String, Instant>>,
    max: usize,
    expires: Duration,
    /// Where the ids are kept across restarts.
    file: Option<PathBuf>,
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
            file: None,
        }
    }

    /// Keeps the ids in `file`, taking those it holds now (a missing file is an empty set;
    /// one that does not read is logged and replaced).
    pub(crate) fn with_file(mut self, file: PathBuf) -> Self {
        match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(state) => {
                    self.merge(state.revoked);
                    info!(path = %file.display(), revoked = self.ids().len(), "revoked ids read from the state file");
                }
                Err(read_error) => {
                    warn!(path = %file.display(), %read_error, "the state file does not read; starting without it")
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(read_error) => {
                warn!(path = %file.display(), %read_error, "cannot read the state file")
            }
        }
        self.file = Some(file);
        self
    }

    /// Writes the ids to the state file, if there is one (whole or not at all: a new file
    /// renamed over the old).
    pub(crate) fn save(&self) {
        let Some(file) = &self.file else { return };
        let state = StateFile {
            revoked: self.ids(),
        };
        let temporary = file.with_extension("tmp");
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, file));
        if let Err(write_error) = written {
            warn!(path = %file.display(), %write_error, "cannot write the state file");
        }
    }

    /// Adds ids revoked elsewhere (another worker, a previous run), oldest first, stamped
    /// now: as Celery, their own stamps are not comparable with this host's clock.
    pub(crate) fn merge(&self, ids: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut held = self.lock();
        for id in ids {
            if !held.contains_key(&id) {
                held.insert(id, now);
            }
        }
        self.purge(&mut held, now);
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
    fn the_state_file_keeps_ids_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("revoked-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.state");
        let first = Revoked::new(10, Duration::from_secs(60)).with_file(file.clone());
        first.insert("a");
        first.insert("b");
        first.save();
        let second = Revoked::new(10, Duration::from_secs(60)).with_file(file.clone());
        assert_eq!(second.ids(), ["a", "b"]);
        // A file that does not read is an empty start, not a failure.
        std::fs::write(&file, b"{not json").unwrap();
        let third = Revoked::new(10, Duration::from_secs(60)).with_file(file);
        assert!(third.ids().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merged_ids_keep_their_order_and_the_bound() {
        let revoked = Revoked::new(3, Duration::from_secs(60));
        revoked.insert("mine");
        revoked.merge([
            "x".to_owned(),
            "y".to_owned(),
            "mine".to_owned(),
            "z".to_owned(),
        ]);
        assert_eq!(revoked.ids(), ["x", "y", "z"]);
    }

    #[test]
    fn ids_expire() {
        let revoked = Revoked::new(10, Duration::ZERO);
        revoked.insert("a");
        assert!(!revoked.contains("a"));
        assert!(revoked.ids().is_empty());
    }
}
