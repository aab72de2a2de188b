use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::TaskState;
use crate::backend::{BackendError, GroupMeta, ResultBackend, TaskMeta};

/// Celery's default result expiry: one day.
pub const DEFAULT_RESULT_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// The in-memory result backend. Clones share the same store.
///
/// Results expire after a day by default ([`MemoryBackend::with_expiry`]); an expired result
/// reads as unknown and is dropped by [`ResultBackend::cleanup_expired`].
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

    async fn cleanup_expired(&self) -> Result<u64, BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        let before = state.tasks.len() + state.groups.len();
        state.tasks.retain(|_, (_, at)| self.is_live(*at, now));
        state.groups.retain(|_, (_, at)| self.is_live(*at, now));
        Ok((before - state.tasks.len() - state.groups.len()) as u64)
    }
}
