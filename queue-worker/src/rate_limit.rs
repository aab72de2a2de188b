//! Per-task rate limits inside one worker (Celery's `rate_limit`), on `governor`'s GCRA.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use queue_core::RateLimit;

/// One limiter per task name, created on first use.
#[derive(Default)]
pub(crate) struct RateLimits {
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

impl RateLimits {
    /// Takes a start for `task`: `None` if it may start now, else how long until it may.
    pub(crate) fn check(&self, task: &str, limit: RateLimit) -> Option<Duration> {
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            limiters
                .entry(task.to_owned())
                .or_insert_with(|| Arc::new(RateLimiter::direct(quota(limit))))
                .clone()
        };
        match limiter.check() {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets `task`'s limiter: its next start takes the limit it has then.
    pub(crate) fn reset(&self, task: &str) {
        self.limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(task);
    }
}

fn quota(limit: RateLimit) -> Quota {
    let count = NonZeroU32::new(limit.count).unwrap_or(NonZeroU32::MIN);
    let interval = (limit.period / count.get()).max(Duration::from_nanos(1));
    Quota::with_period(interval)
        .expect("interval is positive")
        .allow_burst(NonZeroU32::MIN)
}
