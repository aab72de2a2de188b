use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::TaskState;
use crate::backend::{BackendError, GroupMeta, ResultBackend, TaskMeta};
use crate::chord::{ChordClaim, ChordJoin, ChordPart};

/// Celery's default result expiry: one day.
pub const DEFAULT_RESULT_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// The in-memory result backend. Clones share the same store.
///
/// Results expire after a day by default ([`MemoryBackend::with_expiry`]); an expired result
/// reads as unknown and is dropped by [`ResultBackend::cleanup_expired`].
///
/// Chords join in the map too, with the Redis backend's semantics: a part counts once per
/// task id and index, exactly one finisher completes the chord, and a dispatched chord
/// answers [`ChordJoin::Done`] until it expires like a result.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Notify,
    expiry: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<String, (TaskMeta, Instant)>,
    groups: HashMap<String, (GroupMeta, Instant)>,
    chords: HashMap<String, Chord>,
}

/// One chord's join. `at` is refreshed by every start and part, as Redis' `EXPIRE`s are.
#[derive(Debug)]
struct Chord {
    size: Option<u64>,
    parts: Vec<ChordPart>,
    status: ChordStatus,
    at: Instant,
}

#[derive(Debug, PartialEq)]
enum ChordStatus {
    Open,
    /// Completed; the finisher holding this token dispatches the body.
    Claimed(String),
    /// The body went out: late parts are ignored.
    Done,
}

impl Chord {
    fn new(at: Instant) -> Self {
        Self {
            size: None,
            parts: Vec::new(),
            status: ChordStatus::Open,
            at,
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store with the default expiry (one day).
    pub fn new() -> Self {
        Self::with_expiry(Some(DEFAULT_RESULT_EXPIRY))
    }

    /// An empty store whose results expire after `expiry` (`None`: never).
    pub fn with_expiry(expiry: Option<Duration>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                expiry,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_live(&self, stored_at: Instant, now: Instant) -> bool {
        self.shared
            .expiry
            .is_none_or(|expiry| now.duration_since(stored_at) < expiry)
    }

    /// Number of stored task results (expired ones included until cleaned up).
    pub fn len(&self) -> usize {
        self.lock().tasks.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ResultBackend for MemoryBackend {
    async fn store(&self, meta: TaskMeta) -> Result<(), BackendError> {
        {
            let mut state = self.lock();
            let now = Instant::now();
            let keep_existing = state.tasks.get(&meta.task_id).is_some_and(|(old, at)| {
                old.status == TaskState::Success && self.is_live(*at, now)
            });
            if !keep_existing {
                state.tasks.insert(meta.task_id.clone(), (meta, now));
            }
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn store_many(&self, metas: Vec<TaskMeta>) -> Result<(), BackendError> {
        {
            let mut state = self.lock();
            let now = Instant::now();
            for meta in metas {
                let keep_existing = state.tasks.get(&meta.task_id).is_some_and(|(old, at)| {
                    old.status == TaskState::Success && self.is_live(*at, now)
                });
                if !keep_existing {
                    state.tasks.insert(meta.task_id.clone(), (meta, now));
                }
            }
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskMeta>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .tasks
            .get(task_id)
            .filter(|(_, at)| self.is_live(*at, now))
            .map(|(meta, _)| meta.clone()))
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError> {
        let deadline = crate::protocol::time::deadline_in(timeout);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let current = self.get(task_id).await?;
            if current.as_ref().is_some_and(|meta| meta.status.is_ready())
                || Instant::now() >= deadline
            {
                return Ok(current);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.get(task_id).await;
            }
        }
    }

    async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        self.lock().tasks.remove(task_id);
        Ok(())
    }

    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError> {
        self.lock()
            .groups
            .insert(group.group_id.clone(), (group.clone(), Instant::now()));
        Ok(())
    }

    async fn get_group(&self, group_id: &str) -> Result<Option<GroupMeta>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .groups
            .get(group_id)
            .filter(|(_, at)| self.is_live(*at, now))
            .map(|(group, _)| group.clone()))
    }

    async fn chord_start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        let chord = state
            .chords
            .entry(group_id.to_owned())
            .or_insert_with(|| Chord::new(now));
        if !self.is_live(chord.at, now) {
            *chord = Chord::new(now);
        }
        // As Celery 5.7's `set_chord_size`: a new run of the group (a frozen chord applied
        // again) drops the done marker or a claim; parts recorded early stay and count.
        chord.size = Some(size);
        chord.status = ChordStatus::Open;
        chord.at = now;
        debug!(group_id, size, "chord started");
        Ok(())
    }

    async fn chord_part(&self, group_id: &str, part: ChordPart) -> Result<ChordJoin, BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        let chord = state
            .chords
            .entry(group_id.to_owned())
            .or_insert_with(|| Chord::new(now));
        if !self.is_live(chord.at, now) {
            *chord = Chord::new(now);
        }
        if chord.status == ChordStatus::Done {
            return Ok(ChordJoin::Done);
        }
        let known = chord.parts.iter().any(|recorded| {
            recorded.task_id == part.task_id && recorded.group_index == part.group_index
        });
        if !known {
            chord.parts.push(part);
        }
        chord.at = now;
        let ready = chord.parts.len() as u64;
        if chord.size != Some(ready) || chord.status != ChordStatus::Open {
            return Ok(ChordJoin::Pending {
                ready,
                size: chord.size,
            });
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        chord.status = ChordStatus::Claimed(token.clone());
        let mut parts = chord.parts.clone();
        // Celery's score order: by index, `None` (`+inf`) last.
        parts.sort_by_key(|part| (part.group_index.is_none(), part.group_index));
        debug!(group_id, ready, "chord complete and claimed");
        Ok(ChordJoin::Complete {
            parts,
            claim: ChordClaim {
                group_id: group_id.to_owned(),
                token,
            },
        })
    }

    async fn chord_dispatched(&self, claim: &ChordClaim) -> Result<(), BackendError> {
        let mut state = self.lock();
        let Some(chord) = state.chords.get_mut(&claim.group_id) else {
            warn!(group_id = %claim.group_id, "chord dispatched, but its join is gone");
            return Ok(());
        };
        if chord.status != ChordStatus::Claimed(claim.token.clone()) {
            // As Celery's cleanup script: only the claim's holder drops the data.
            warn!(group_id = %claim.group_id, "chord dispatched without holding its claim");
            return Ok(());
        }
        chord.parts = Vec::new();
        chord.size = None;
        chord.status = ChordStatus::Done;
        chord.at = Instant::now();
        Ok(())
    }

    async fn cleanup_expired(&self) -> Result<u64, BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        let before = state.tasks.len() + state.groups.len() + state.chords.len();
        state.tasks.retain(|_, (_, at)| self.is_live(*at, now));
        state.groups.retain(|_, (_, at)| self.is_live(*at, now));
        state.chords.retain(|_, chord| self.is_live(chord.at, now));
        let after = state.tasks.len() + state.groups.len() + state.chords.len();
        Ok((before - after) as u64)
    }
}
