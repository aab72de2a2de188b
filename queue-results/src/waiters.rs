//! Tasks waiting for a result, by task id, and the wait loop both databases share.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use queue_core::TaskMeta;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::error::SqlError;

/// Who waits for which task id. A notification for an id wakes every waiter of that id, which
/// then re-reads the row: a notification says "look again", never what was stored.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers interest in `task_id` until the returned guard is dropped.
    pub fn register(&self, task_id: &str) -> Registration<'_> {
        let mut by_id = self.lock();
        let entry = by_id
            .entry(task_id.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            waiters: self,
            task_id: task_id.to_owned(),
            notify: entry.0.clone(),
        }
    }

    /// Wakes the waiters of `task_id`, if any.
    pub fn notify(&self, task_id: &str) {
        if let Some((notify, _)) = self.lock().get(task_id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (after notifications may have been missed).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub fn notify_all(&self) {
        for (notify, _) in self.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Number of task ids waited for.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Interest in one task id; see [`Waiters::register`].
pub(crate) struct Registration<'a> {
    waiters: &'a Waiters,
    task_id: String,
    notify: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut by_id = self.waiters.lock();
        if let Some(entry) = by_id.get_mut(&self.task_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                by_id.remove(&self.task_id);
            }
        }
    }
}

/// Longest pause between reads of a wait while the database is out of reach.
const OUTAGE_PAUSE: Duration = Duration::from_secs(1);

/// How a wait learns that it should read again.
pub(crate) enum Wake {
    /// Notifications are reliable: sleep until one comes (or the deadline).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Notified,
    /// They may be missed: also read again after this pause.
    Poll(Duration),
}

/// Waits up to `timeout` for `task_id` to be READY: reads with `read`, and re-reads when the
/// registration is notified or, in polling mode, after each pause from `mode`. The
/// notification future is armed before each read, so a write between the read and the
/// sleep is never missed.
pub(crate) async fn wait_ready<R, F>(
    waiters: &Waiters,
    task_id: &str,
    timeout: Duration,
    mut mode: impl FnMut(u32) -> Wake,
    mut read: R,
) -> Result<Option<TaskMeta>, SqlError>
where
    R: FnMut() -> F,
    F: Future<Output = Result<Option<TaskMeta>, SqlError>>,
{
    let deadline = deadline_after(timeout);
    let registration = waiters.register(task_id);
    let mut reads = 0u32;
    let mut failures = 0u32;
    loop {
        let notified = registration.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let current = match read().await {
            Ok(current) => current,
            // The database is out of reach (restarting, failing over) but the caller asked
            // to wait until the deadline: keep trying until then; the last error is the
            // answer if it is still out of reach.
            Err(error) if error.is_unavailable() && Instant::now() < deadline => {
                failures += 1;
                warn!(%error, task_id, "reading a waited-for result failed; trying again");
                let pause = poll_pause(failures, OUTAGE_PAUSE);
                let _ =
                    tokio::time::timeout_at((Instant::now() + pause).min(deadline), notified).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        failures = 0;
        reads += 1;
        if current.as_ref().is_some_and(|meta| meta.status.is_ready()) {
            return Ok(current);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(current);
        }
        let wake_at = match mode(reads) {
            Wake::Notified => deadline,
            Wake::Poll(pause) => (now + pause).min(deadline),
        };
        // Woken or not, read once more: at the deadline that read is the answer.
        let _ = tokio::time::timeout_at(wake_at, notified).await;
    }
}

/// `now + timeout`, saturating: a caller may wait "forever" with `Duration::MAX`.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

/// Pause before read number `reads + 1` of a polling wait: 5 ms, doubling up to `longest`.
pub(crate) fn poll_pause(reads: u32, longest: Duration) -> Duration {
    Duration::from_millis(5u64 << reads.saturating_sub(1).min(10)).min(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_timeouts_do_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }

    #[test]
    fn registrations_are_counted_and_removed() {
        let waiters = Waiters::default();
        let first = waiters.register("a");
        let second = waiters.register("a");
        assert_eq!(waiters.len(), 1);
        drop(first);
        assert_eq!(waiters.len(), 1);
        drop(second);
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn a_notification_wakes_only_its_id() {
        use futures::FutureExt;

        let waiters = Waiters::default();
        let a = waiters.register("a");
        let b = waiters.register("b");
        let woken_a = a.notify.notified();
        let woken_b = b.notify.notified();
        tokio::pin!(woken_a, woken_b);
        woken_a.as_mut().enable();
        woken_b.as_mut().enable();
        waiters.notify("a");
        assert!(woken_a.now_or_never().is_some());
        assert!(woken_b.now_or_never().is_none());
    }
}
