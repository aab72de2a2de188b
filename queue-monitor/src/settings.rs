//! What the monitor keeps and how often it looks: intervals, bounds and thresholds.

use std::time::Duration;

/// The monitor's tunables; [`Settings::default`] is what `queue monitor` uses.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the workers are asked `stats`, `active`, `reserved`, `registered`,
    /// `active_queues` and `conf` (Flower: on start and on demand; here periodically).
    pub inspect_interval: Duration,
    /// How long an inspect call waits for the next reply.
    pub inspect_timeout: Duration,
    /// Whether to send `enable_events` with each inspect round, as Flower does (workers
    /// started without task events start sending them).
    pub enable_events: bool,
    /// How often queue lengths (and backlog stats) are read from the broker.
    pub queue_interval: Duration,
    /// Points kept per queue series (at `queue_interval`; 720 × 5 s = one hour).
    pub queue_series_points: usize,
    /// A queue whose ready messages reach this many is flagged.
    pub backlog_threshold: u64,
    /// A queue whose oldest message is older than this is flagged (needs the broker's
    /// backlog stats).
    pub oldest_age_threshold: Duration,
    /// Tasks kept in memory for the live views (the history holds the rest).
    pub tasks_in_memory: usize,
    /// Task rows kept in the history; the oldest are pruned beyond this.
    pub history_max_tasks: u64,
    /// Events kept in the history (the task timelines); the oldest are pruned beyond this.
    pub history_max_events: u64,
    /// Rows older than this are pruned from the history.
    pub history_max_age: Duration,
    /// How often the history is pruned.
    pub prune_interval: Duration,
    /// Writes waiting for the store; beyond this, new ones are dropped and counted.
    pub write_queue: usize,
    /// Width of one bucket of the overview's time series.
    pub overview_bucket: Duration,
    /// Buckets kept in the overview's time series.
    pub overview_buckets: usize,
    /// How often live updates go out to the SSE clients (changes are coalesced in between).
    pub live_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            inspect_interval: Duration::from_secs(5),
            inspect_timeout: Duration::from_secs(1),
            enable_events: true,
            queue_interval: Duration::from_secs(5),
            queue_series_points: 720,
            backlog_threshold: 1000,
            oldest_age_threshold: Duration::from_secs(300),
            tasks_in_memory: 10_000,
            history_max_tasks: 1_000_000,
            history_max_events: 5_000_000,
            history_max_age: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
            write_queue: 50_000,
            overview_bucket: Duration::from_secs(60),
            overview_buckets: 60,
            live_interval: Duration::from_secs(1),
        }
    }
}
