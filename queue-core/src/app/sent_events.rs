//! `task-sent` events from producers (Celery's `task_send_sent_event`): what Flower shows
//! as a task's SENT state. Best effort: a task is sent whether or not its event is.

use crate::broker::{Broker, Publish};
use crate::events::{EncodedEvent, Event, EventSource, MAX_BATCH, TaskEvent};

/// The `task-sent` events of `publishes`, made before they go out (the publish consumes
/// them).
pub(super) fn events_of(source: &EventSource, publishes: &[Publish]) -> Vec<Event> {
    publishes
        .iter()
        .map(|publish| source.task(TaskEvent::sent(publish)))
        .collect()
}

/// Sends `events` on the broker's event exchange, in batches; failures are logged only.
pub(super) async fn announce(broker: &std::sync::Arc<dyn Broker>, events: Vec<Event>) {
    let Some(broadcast) = broker.clone().broadcast() else {
        return;
    };
    for batch in events.chunks(MAX_BATCH) {
        let encoded: Vec<EncodedEvent> = batch.iter().map(Event::encoded).collect();
        let hostname = batch.first().map_or("", |event| event.hostname.as_str());
        if let Err(error) = crate::events::publish(&*broadcast, hostname, &encoded).await {
            tracing::debug!(%error, count = batch.len(), "task-sent events not sent");
        }
    }
}
