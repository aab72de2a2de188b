//! The worker's Celery events (wire spec §6): `worker-online`, `worker-heartbeat` every
//! `freq` seconds and `worker-offline` always; task events (`task-received` … `task-rejected`)
//! when task events are on.
//!
//! Events never slow the task path: the execution hands an event to a bounded buffer
//! without waiting, and one background task publishes them (task events in `task.multi`
//! batches of up to 24, as a Celery worker does). What a slow broker makes the buffer drop
//! is counted ([`WorkerStats::events_dropped`](crate::WorkerStats)) and logged, never
//! waited for. A broker without a broadcast side sends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use queue_core::TaskError;
use queue_core::broadcast::Broadcast;
use queue_core::events::{Event, EventSource, MAX_BATCH, TaskEvent, WorkerEventKind, WorkerStatus};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::held::Held;
use crate::runtime::WorkerStats;

/// How many events wait for the publisher before new ones are dropped.
const BUFFER: usize = 8192;
/// How long shutdown waits for `worker-offline` (and what is buffered) to go out.
const OFFLINE_WAIT: Duration = Duration::from_secs(2);

/// How the worker sends events.
#[derive(Clone, Debug)]
pub(crate) struct EventOptions {
    /// Whether task events are sent from the start (`enable_events` can change it).
    pub(crate) task_events: bool,
    /// Seconds between heartbeats (`freq`).
    pub(crate) heartbeat: Duration,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            // As Celery: `CELERY_WORKER_SEND_TASK_EVENTS=1` (or `true`) turns them on.
            task_events: std::env::var("CELERY_WORKER_SEND_TASK_EVENTS").is_ok_and(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            }),
            heartbeat: Duration::from_secs(2),
        }
    }
}

/// The worker's event sender, shared by every execution.
pub(crate) struct Events {
    source: EventSource,
    task_events: AtomicBool,
    buffer: Option<mpsc::Sender<Event>>,
    stats: Arc<WorkerStats>,
    held: Arc<Held>,
}

impl Events {
    /// Events for node `node_name` on `broadcast` (none without one), and the publisher
    /// to run (see [`Publisher::run`]).
    pub(crate) fn new(
        broadcast: Option<Arc<dyn Broadcast>>,
        node_name: &str,
        clock: Arc<queue_core::events::LamportClock>,
        options: &EventOptions,
        stats: Arc<WorkerStats>,
        held: Arc<Held>,
    ) -> (Arc<Self>, Option<Publisher>) {
        let (buffer, publisher) = match broadcast {
            Some(broadcast) => {
                let (sender, receiver) = mpsc::channel(BUFFER);
                (
                    Some(sender),
                    Some(Publisher {
                        broadcast,
                        receiver,
                    }),
                )
            }
            None => {
                debug!("the broker has no broadcast side: no events are sent");
                (None, None)
            }
        };
        let events = Arc::new(Self {
            source: EventSource::with_clock(node_name, clock),
            task_events: AtomicBool::new(options.task_events),
            buffer,
            stats,
            held,
        });
        (events, publisher)
    }

    /// Whether task events are sent.
    pub(crate) fn task_events_enabled(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Turns task events on or off (`enable_events`, `disable_events`); returns whether
    /// they were on.
    pub(crate) fn set_task_events(&self, enabled: bool) -> bool {
        self.task_events.swap(enabled, Ordering::Relaxed)
    }

    /// The Lamport clock of events and control replies.
    pub(crate) fn clock(&self) -> &Arc<queue_core::events::LamportClock> {
        self.source.clock()
    }

    /// Sends a task event, built only when task events are on.
    pub(crate) fn task(&self, event: impl FnOnce() -> TaskEvent) {
        if self.buffer.is_some() && self.task_events_enabled() {
            self.push(self.source.task(event()));
        }
    }

    /// Sends a worker event with the worker's current figures.
    pub(crate) fn worker(&self, kind: WorkerEventKind, freq: Duration) {
        if self.buffer.is_some() {
            self.push(self.source.worker(kind, &self.status(freq)));
        }
    }

    fn status(&self, freq: Duration) -> WorkerStatus {
        let stats = &self.stats;
        WorkerStatus {
            freq: freq.as_secs_f64(),
            // The tasks running now, whatever ended the others (terminated, interrupted).
            active: self.held.active_count(),
            // As Celery (`all_total_count`): runs started, a retry's again; not the
            // messages that expired, were revoked or named an unknown task.
            processed: stats.started.get(),
            loadavg: load_average(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    fn push(&self, event: Event) {
        let Some(buffer) = &self.buffer else { return };
        if let Err(error) = buffer.try_send(event) {
            let dropped = self.stats.events_dropped.increment();
            // The first drop, then one line per thousand: a stalled broker must not flood
            // the log either.
            if dropped == 1 || dropped % 1000 == 0 {
                let why = match error {
                    mpsc::error::TrySendError::Full(_) => "the event buffer is full",
                    mpsc::error::TrySendError::Closed(_) => "the event publisher stopped",
                };
                warn!(dropped, "event dropped: {why}");
            }
        }
    }
}

/// Publishes buffered events: worker events alone, task events in batches.
pub(crate) struct Publisher {
    broadcast: Arc<dyn Broadcast>,
    receiver: mpsc::Receiver<Event>,
}

impl Publisher {
    /// Runs until `closing` is cancelled, then sends what is still buffered and returns.
    pub(crate) async fn run(mut self, closing: CancellationToken) {
        let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                biased;
                event = self.receiver.recv() => event,
                () = closing.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            self.fill(&mut batch);
            self.send_round(&mut batch).await;
        }
        // Closing: the rest of the buffer (`worker-offline` last), without waiting for more.
        loop {
            self.fill(&mut batch);
            if batch.is_empty() {
                return;
            }
            self.send_round(&mut batch).await;
        }
    }

    /// Adds whatever is already buffered, up to a batch.
    fn fill(&mut self, batch: &mut Vec<Event>) {
        while batch.len() < MAX_BATCH {
            match self.receiver.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
    }

    async fn send_round(&self, batch: &mut Vec<Event>) {
        let (tasks, workers): (Vec<Event>, Vec<Event>) =
            batch.drain(..).partition(Event::is_task_event);
        if !tasks.is_empty() {
            self.send(&tasks).await;
        }
        for event in workers {
            self.send(std::slice::from_ref(&event)).await;
        }
    }

    async fn send(&self, events: &[Event]) {
        if let Err(error) = queue_core::events::publish(&*self.broadcast, events).await {
            // Events are transient: a lost one is not retried (Celery does not either).
            debug!(%error, count = events.len(), "events not sent");
        }
    }
}

/// Sends `worker-online`, then a heartbeat every `freq` until the returned task is aborted.
pub(crate) fn spawn_heartbeat(events: Arc<Events>, freq: Duration) -> tokio::task::JoinHandle<()> {
    events.worker(WorkerEventKind::Online, freq);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(freq.max(Duration::from_millis(100)));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            events.worker(WorkerEventKind::Heartbeat, freq);
        }
    })
}

/// Sends `worker-offline` and waits (bounded) for the publisher to send what is buffered.
pub(crate) async fn go_offline(
    events: &Events,
    freq: Duration,
    closing: CancellationToken,
    publisher: Option<tokio::task::JoinHandle<()>>,
) {
    events.worker(WorkerEventKind::Offline, freq);
    closing.cancel();
    if let Some(publisher) = publisher {
        if tokio::time::timeout(OFFLINE_WAIT, publisher).await.is_err() {
            warn!("worker-offline not sent within {OFFLINE_WAIT:?}");
        }
    }
}

/// Python's `repr` of an exception, as Celery's events carry it: `ValueError('boom')`.
pub(crate) fn exception_repr(error: &TaskError) -> String {
    let message = queue_core::protocol::repr::value_repr(&Value::from(error.message()));
    format!("{}({message})", error.exc_type())
}

/// The 1, 5 and 15 minute load averages (`[0, 0, 0]` where the system does not say).
fn load_average() -> [f64; 3] {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else {
        return [0.0; 3];
    };
    let mut fields = text
        .split_whitespace()
        .map(|field| field.parse::<f64>().unwrap_or(0.0));
    [(); 3].map(|()| fields.next().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_counts_started_runs_not_received_messages() {
        let stats = Arc::new(WorkerStats::default());
        let (events, _) = Events::new(
            None,
            "celery@test",
            Arc::default(),
            &EventOptions::default(),
            stats.clone(),
            Arc::default(),
        );
        // Three messages: one ran and was retried, its retry ran and succeeded, one expired.
        for _ in 0..3 {
            stats.received.increment();
        }
        stats.started.increment();
        stats.retried.increment();
        stats.started.increment();
        stats.succeeded.increment();
        stats.revoked.increment();
        let status = events.status(Duration::from_secs(2));
        assert_eq!((status.processed, status.active), (2, 0));
    }
}
