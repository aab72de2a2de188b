//! Per-task settings changed while the worker runs, by remote control (`rate_limit`,
//! `time_limit`, as Celery's commands change a task's attributes): they win over what the
//! task declares, until the worker stops.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use queue_core::RateLimit;

#[derive(Clone, Debug, Default)]
struct Override {
    /// `Some(None)`: rate limit turned off.
    rate_limit: Option<Option<RateLimit>>,
    /// `(soft, hard)`.
    time_limits: Option<(Option<Duration>, Option<Duration>)>,
}

#[derive(Debug, Default)]
pub(crate) struct Overrides {
    by_task: Mutex<HashMap<String, Override>>,
}

impl Overrides {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Override>> {
        self.by_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rate limit of `task`: the override, else what it declares.
    pub(crate) fn rate_limit(&self, task: &str, declared: Option<RateLimit>) -> Option<RateLimit> {
        self.lock()
            .get(task)
            .and_then(|settings| settings.rate_limit)
            .unwrap_or(declared)
    }

    pub(crate) fn set_rate_limit(&self, task: &str, limit: Option<RateLimit>) {
        self.lock().entry(task.to_owned()).or_default().rate_limit = Some(limit);
    }

    /// The `(soft, hard)` time limits of `task`: the override, else what it declares.
    pub(crate) fn time_limits(
        &self,
        task: &str,
        declared: (Option<Duration>, Option<Duration>),
    ) -> (Option<Duration>, Option<Duration>) {
        self.lock()
            .get(task)
            .and_then(|settings| settings.time_limits)
            .unwrap_or(declared)
    }

    pub(crate) fn set_time_limits(
        &self,
        task: &str,
        soft: Option<Duration>,
        hard: Option<Duration>,
    ) {
        self.lock().entry(task.to_owned()).or_default().time_limits = Some((soft, hard));
    }
}
