//! The worker's Celery events (wire spec §6): `worker-online`, `worker-heartbeat` every
//! `freq` seconds and `worker-offline` always; task events (`task-received` … `task-rejected`)
//! when task events are on.
//!
//! Events never slow the task path: the execution serialises an event (a few hundred
//! bytes, read from the message in place) and hands it to a bounded buffer without
//! waiting; one background task publishes them, task events in `task.multi` batches of
//! what a few milliseconds gather (as a Celery worker sends its buffer of task events).
//! What a slow broker makes the buffer drop is counted
//! ([`WorkerStats::events_dropped`](crate::WorkerStats)) and logged, never waited for. A
//! broker without a broadcast side sends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use queue_core::TaskError;
use queue_core::broadcast::Broadcast;
use queue_core::events::{
    EncodedEvent, EventSource, MAX_BATCH, TaskEvent, WorkerEventKind, WorkerStatus,
};
use queue_core::protocol::Headers;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::held::Held;
use crate::runtime::WorkerStats;

/// How many events wait for the publisher before new ones are dropped.
const BUFFER: usize = 8192;
/// The most task events in one body. Celery flushes at 24 ([`MAX_BATCH`]), but one
/// PUBLISH round trip per 24 events cannot keep up with a busy worker (measured on Redis:
/// about 25 000 events/s, and the buffer dropped half of a 20 000-task drain's events),
/// and each PUBLISH costs the worker and the server far more than an event in it.
/// Receivers (Celery's `State`, Flower) take a `task.multi` list of any length.
const MAX_BODY_EVENTS: usize = 32 * MAX_BATCH;
/// A body stops taking events past this size (tracebacks can make events large).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long the publisher waits after an event for more to send with it: a monitor sees
/// events this much later, and a busy worker makes one PUBLISH where it made dozens.
const LINGER: Duration = Duration::from_millis(5);
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
    buffer: Option<mpsc::Sender<EncodedEvent>>,
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
                        hostname: node_name.to_owned(),
                        receiver,
                        tasks: Vec::with_capacity(MAX_BATCH),
                        workers: Vec::new(),
                        bytes: 0,
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

    /// Whether task events go out now: there is a broadcast side and they are on.
    fn sending_task_events(&self) -> bool {
        self.buffer.is_some() && self.task_events_enabled()
    }

    /// Sends a task event, built only when task events are on.
    pub(crate) fn task(&self, event: impl FnOnce() -> TaskEvent) {
        if self.sending_task_events() {
            self.push(self.source.encode(&event()));
        }
    }

    /// Sends `task-received` for a message with `headers` (read in place, not copied).
    pub(crate) fn received(&self, headers: &Headers) {
        if self.sending_task_events() {
            self.push(self.source.encode_received(headers));
        }
    }

    /// Sends a worker event with the worker's current figures.
    pub(crate) fn worker(&self, kind: WorkerEventKind, freq: Duration) {
        if self.buffer.is_some() {
            self.push(self.source.worker(kind, &self.status(freq)).encoded());
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

    fn push(&self, event: EncodedEvent) {
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
    hostname: String,
    receiver: mpsc::Receiver<EncodedEvent>,
    /// The task events of the round being gathered.
    tasks: Vec<EncodedEvent>,
    /// Its worker events (sent alone, after the batch).
    workers: Vec<EncodedEvent>,
    /// The JSON size of its events.
    bytes: usize,
}

impl Publisher {
    /// Runs until `closing` is cancelled, then sends what is still buffered and returns.
    pub(crate) async fn run(mut self, closing: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                event = self.receiver.recv() => event,
                () = closing.cancelled() => None,
            };
            let Some(first) = first else { break };
            self.take(first);
            // A moment for the events of the worker's other tasks to join this body.
            tokio::select! {
                biased;
                () = closing.cancelled() => {}
                () = tokio::time::sleep(LINGER) => {}
            }
            self.send_waiting().await;
        }
        // Closing: the rest of the buffer (`worker-offline` last), without waiting for more.
        self.send_waiting().await;
    }

    /// Sends what waits, in as many bodies as it takes (more may come while one is sent).
    async fn send_waiting(&mut self) {
        loop {
            self.fill();
            if self.tasks.is_empty() && self.workers.is_empty() {
                return;
            }
            self.send_round().await;
        }
    }

    fn take(&mut self, event: EncodedEvent) {
        self.bytes += event.json().len();
        if event.is_task_event() {
            self.tasks.push(event);
        } else {
            self.workers.push(event);
        }
    }

    /// Adds whatever is already buffered, up to a body's worth.
    fn fill(&mut self) {
        while self.tasks.len() + self.workers.len() < MAX_BODY_EVENTS && self.bytes < MAX_BODY_BYTES
        {
            match self.receiver.try_recv() {
                Ok(event) => self.take(event),
                Err(_) => break,
            }
        }
    }

    async fn send_round(&mut self) {
        self.bytes = 0;
        if !self.tasks.is_empty() {
            let routing_key = EncodedEvent::body_routing_key(&self.tasks);
            let mut body = Vec::new();
            EncodedEvent::write_body(&self.tasks, &mut body);
            let count = self.tasks.len();
            self.tasks.clear();
            self.send(routing_key, body, count).await;
        }
        for event in std::mem::take(&mut self.workers) {
            let body = EncodedEvent::body(std::slice::from_ref(&event));
            self.send(event.routing_key(), body, 1).await;
        }
    }

    async fn send(&self, routing_key: String, body: Vec<u8>, count: usize) {
        let sent =
            queue_core::events::publish_body(&*self.broadcast, &self.hostname, routing_key, body)
                .await;
        if let Err(error) = sent {
            // Events are transient: a lost one is not retried (Celery does not either).
            debug!(%error, count, "events not sent");
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
mod tests;
