//! [`MonitorState`]: what the monitor knows, shared by ingestion, the API and the pages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use queue_core::App;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::auth::Auth;
use crate::ingest::beat::BeatBoard;
use crate::ingest::cluster::Cluster;
use crate::ingest::queues::QueueBoard;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::Store;

/// Live messages buffered per SSE client before it counts as lagging.
const LIVE_BUFFER: usize = 256;

/// One live update: an SSE event name and its JSON data, serialized once for all clients.
#[derive(Clone, Debug)]
pub struct LiveMessage {
    /// The SSE event name (`tasks`, `workers`, `queues`, `stats`).
    pub event: &'static str,
    /// The JSON data.
    pub data: Arc<str>,
}

/// The monitor's shared state (cheap to clone: one `Arc`).
#[derive(Clone)]
pub struct MonitorState {
    inner: Arc<Inner>,
}

struct Inner {
    app: App,
    settings: Settings,
    auth: Auth,
    broker_url: String,
    backend_url: Option<String>,
    started_at: f64,
    extra_queues: Vec<String>,
    cluster: Mutex<Cluster>,
    queues: Mutex<QueueBoard>,
    beat: Mutex<BeatBoard>,
    store: Store,
    metrics: Metrics,
    live: broadcast::Sender<LiveMessage>,
    events_received: AtomicU64,
    events_dropped: AtomicU64,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for MonitorState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MonitorState")
            .field("broker", &self.inner.broker_url)
            .field("history", &self.inner.store.label())
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

impl MonitorState {
    pub(crate) fn new(
        app: App,
        settings: Settings,
        auth: Auth,
        store: Store,
        extra_queues: Vec<String>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let broker_url = app
            .broker_url()
            .map(ToString::to_string)
            .unwrap_or_else(|| "memory://".to_owned());
        // The app does not say its backend's URL; saying that there is one gives nothing away.
        let backend_url = app.backend().map(|_| "configured".to_owned());
        let cluster = Cluster::new(
            settings.tasks_in_memory,
            settings.overview_bucket.as_secs_f64(),
            settings.overview_buckets,
        );
        let queues = QueueBoard::new(settings.queue_series_points);
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Self {
            inner: Arc::new(Inner {
                app,
                settings,
                auth,
                broker_url,
                backend_url,
                started_at: now(),
                extra_queues,
                cluster: Mutex::new(cluster),
                queues: Mutex::new(queues),
                beat: Mutex::new(BeatBoard::new()),
                store,
                metrics: Metrics::new(),
                live,
                events_received: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
                stop,
            }),
        }
    }

    /// The app whose broker is watched.
    pub fn app(&self) -> &App {
        &self.inner.app
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The broker URL with its password redacted (safe to show).
    pub fn broker_url(&self) -> &str {
        &self.inner.broker_url
    }

    /// `configured` when the app has a result backend.
    pub fn backend_url(&self) -> Option<&str> {
        self.inner.backend_url.as_deref()
    }

    /// When the monitor started (seconds since the epoch).
    pub fn started_at(&self) -> f64 {
        self.inner.started_at
    }

    /// Receives the live updates from now on (what `/api/live` streams).
    pub fn subscribe_live(&self) -> broadcast::Receiver<LiveMessage> {
        self.inner.live.subscribe()
    }

    /// Sends a live update to every subscriber (none: nothing happens).
    pub(crate) fn publish_live(&self, event: &'static str, data: &Value) {
        if self.inner.live.receiver_count() == 0 {
            return;
        }
        let _ = self.inner.live.send(LiveMessage {
            event,
            data: Arc::from(data.to_string()),
        });
    }

    /// The history.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Queues given on the command line (watched whether or not a worker consumes them).
    pub fn extra_queues(&self) -> &[String] {
        &self.inner.extra_queues
    }

    /// Turns true when the monitor stops (long-lived answers such as `/api/live` end then).
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stop.clone()
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// The workers and recent tasks (hold the lock briefly: ingestion waits on it).
    pub(crate) fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.inner
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queues' backlog (hold the lock briefly).
    pub(crate) fn queues(&self) -> MutexGuard<'_, QueueBoard> {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The beat instances (hold the lock briefly).
    pub(crate) fn beat(&self) -> MutexGuard<'_, BeatBoard> {
        self.inner
            .beat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `/api/beat` answer: every schedule, its leader, instances and entries.
    pub fn beat_json(&self) -> Value {
        self.beat().json(now())
    }

    /// Brings the beat gauges up to what the heartbeats say now.
    pub(crate) fn sync_beat_metrics(&self) {
        let gauges = self.beat().gauges(now());
        self.inner.metrics.beat(&gauges);
    }

    pub(crate) fn count_events(&self, received: u64, dropped_total: u64) {
        self.inner
            .events_received
            .fetch_add(received, Ordering::Relaxed);
        self.inner
            .events_dropped
            .fetch_max(dropped_total, Ordering::Relaxed);
        self.inner.metrics.events_received(received);
    }

    /// Events received since start.
    pub fn events_received(&self) -> u64 {
        self.inner.events_received.load(Ordering::Relaxed)
    }

    /// Events lost because the monitor fell behind the broker.
    pub fn events_dropped(&self) -> u64 {
        self.inner.events_dropped.load(Ordering::Relaxed)
    }

    /// The `/api/dashboard/workers` summaries, by name.
    pub fn workers_json(&self) -> Vec<Value> {
        let now = now();
        self.cluster()
            .workers()
            .values()
            .map(|worker| worker.summary_json(now))
            .collect()
    }
}
