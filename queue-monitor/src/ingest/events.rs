//! The event stream: subscribes to `celeryev` on the app's broker (as `celery events` and
//! Flower do), decodes bodies (single events and `task.multi` batches), folds each event
//! into the state, the metrics and the history. Resubscribes when the broker ends the
//! stream.

use std::time::Duration;

use queue_core::broadcast::{Binding, ExchangeKind};
use queue_core::events::{EVENT_EXCHANGE, Event};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::ingest::beat::HEARTBEAT_EVENT;
use crate::ingest::task::{MAX_TEXT, truncate};
use crate::state::{MonitorState, now};
use crate::store::{TimelineEntry, Write};

/// Longest wait between two subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a lookup of an evicted task in the history may take before the event is
/// folded without it.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);

/// Hours west of UTC here, as Celery's `utcoffset()`.
fn local_utcoffset() -> f64 {
    f64::from(chrono::Local::now().offset().utc_minus_local()) / 3600.0
}

/// Celery's `adjust_timestamp`: a sender's timestamp in our terms.
fn adjust(timestamp: f64, offset: f64, here: f64) -> f64 {
    timestamp - (offset - here) * 3600.0
}

/// Consumes events until `stop`; `ready` fires once subscribed (or when it cannot be).
pub(crate) async fn run(
    state: MonitorState,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let Some(broadcast) = state.app().broker().clone().broadcast() else {
        tracing::warn!("this broker cannot broadcast: no events (inspect and queues still work)");
        return;
    };
    let here = local_utcoffset();
    let mut backoff = Duration::from_millis(200);
    loop {
        let binding = Binding {
            exchange: EVENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            routing_key: "#".to_owned(),
            queue: format!("celeryev.{}", uuid::Uuid::new_v4()),
        };
        let mut subscription = match broadcast.subscribe(binding).await {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(error = %crate::redact::text(&error.to_string()), "cannot subscribe to events; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        // As Celery's receivers (`wakeup_workers`): workers answer with a heartbeat at once.
        let _ = state.app().control().cast("heartbeat", Map::new()).await;
        loop {
            let message = tokio::select! {
                message = subscription.next() => message,
                _ = crate::stopped(&mut stop) => return,
            };
            let Some(message) = message else {
                tracing::warn!("the broker ended the event stream; resubscribing");
                break;
            };
            let events = match Event::decode(&message.body) {
                Ok(events) => events,
                Err(error) => {
                    tracing::debug!(%error, routing_key = message.routing_key, "skipped an event body");
                    continue;
                }
            };
            let mut received = 0;
            for event in events.into_iter().flatten() {
                received += 1;
                ingest(&state, event, here).await;
            }
            state.count_events(received, subscription.dropped());
        }
    }
}

/// Folds one event into the state, the metrics and the history.
pub(crate) async fn ingest(state: &MonitorState, event: Event, here: f64) {
    let received_at = now();
    let timestamp = adjust(event.timestamp, event.utcoffset, here);
    if event.kind == HEARTBEAT_EVENT {
        // A beat instance, not a worker: kept in memory only (the next heartbeat says it all).
        state.beat().apply(&event, timestamp, received_at);
        return;
    }
    if let Some(uuid) = event.uuid().filter(|_| is_late_event(&event.kind)) {
        let missing = state.cluster().task(uuid).is_none();
        if missing {
            // Evicted from memory while it ran: fold onto what the history has.
            let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, state.store().task(uuid)).await;
            if let Ok(Ok(Some(task))) = lookup {
                state.cluster().restore_task(task);
            }
        }
    }
    let applied = state.cluster().apply(&event, timestamp, received_at);
    let metrics = state.metrics();
    if let Some(task) = applied.task {
        let runtime = event.field("runtime").and_then(Value::as_f64);
        metrics.task_event(&event.kind, &event.hostname, &task, runtime);
        state
            .store()
            .write(Write::Event(timeline_entry(&task.uuid, &event, timestamp)));
        state.store().write(Write::Task(Box::new(task)));
    } else {
        let active = event.field("active").and_then(Value::as_u64);
        metrics.worker_event(&event.kind, &event.hostname, active);
    }
    if let Some(worker) = applied.worker {
        state.store().write(Write::Worker(Box::new(worker)));
    }
}

/// Events that come after a task was first seen (a miss means it was evicted).
fn is_late_event(kind: &str) -> bool {
    matches!(
        kind,
        "task-started"
            | "task-succeeded"
            | "task-failed"
            | "task-retried"
            | "task-revoked"
            | "task-rejected"
    )
}

fn timeline_entry(uuid: &str, event: &Event, timestamp: f64) -> TimelineEntry {
    let fields: Map<String, Value> = event
        .fields
        .iter()
        .filter(|(name, _)| name.as_str() != "uuid")
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => Value::String(truncate(text, MAX_TEXT)),
                other if other.to_string().len() > MAX_TEXT => {
                    Value::String(truncate(&other.to_string(), MAX_TEXT))
                }
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect();
    TimelineEntry {
        uuid: uuid.to_owned(),
        kind: event.kind.clone(),
        hostname: event.hostname.clone(),
        timestamp,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_adjust_as_celery() {
        assert_eq!(adjust(1000.0, 0.0, 0.0), 1000.0);
        assert_eq!(adjust(1000.0, 1.0, 0.0), 1000.0 - 3600.0);
    }
}
