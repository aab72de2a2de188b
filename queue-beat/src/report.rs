//! `beat-heartbeat` events: every beat instance tells, on the broker's event exchange, who
//! it is, whether it leads, and its schedule with the last and next runs, so that
//! `queue monitor` and `queue events` show them. Celery has no beat events; monitors that
//! do not know the type (Flower) pass it over.

use std::sync::Arc;

use queue_core::App;
use queue_core::broadcast::Broadcast;
use queue_core::events::{Event, EventSource};
use serde_json::{Map, Value, json};

use crate::status::BeatStatus;

/// The event type.
pub const HEARTBEAT_EVENT: &str = "beat-heartbeat";

pub(crate) struct Reporter {
    broadcast: Arc<dyn Broadcast>,
    source: EventSource,
}

impl Reporter {
    /// `None` when the broker has no event exchange.
    pub(crate) fn new(app: &App, holder: &str) -> Option<Self> {
        let broadcast = app.broker().clone().broadcast()?;
        Some(Self {
            broadcast,
            source: EventSource::with_clock(holder, app.clock().clone()),
        })
    }

    pub(crate) async fn heartbeat(&self, status: &BeatStatus) {
        let event = self.source.event(HEARTBEAT_EVENT, fields(status));
        let body = Event::encode(std::slice::from_ref(&event));
        if let Err(error) = queue_core::events::publish_body(
            self.broadcast.as_ref(),
            self.source.hostname(),
            event.routing_key(),
            body,
        )
        .await
        {
            tracing::debug!(%error, "beat: heartbeat event not sent");
        }
    }
}

/// The event's fields: `schedule`, `leading`, `token`, and `entries` as
/// `{name, task, schedule, last_run, next_run}` with ISO 8601 times.
pub fn fields(status: &BeatStatus) -> Map<String, Value> {
    let entries: Vec<Value> = status
        .entries
        .iter()
        .map(|entry| {
            json!({
                "name": entry.name,
                "task": entry.task,
                "schedule": entry.schedule,
                "last_run": entry.last_tick.map(|tick| tick.to_rfc3339()),
                "next_run": entry.next_tick.map(|tick| tick.to_rfc3339()),
            })
        })
        .collect();
    let mut fields = Map::new();
    fields.insert("schedule".into(), json!(status.name));
    fields.insert("leading".into(), json!(status.leading));
    fields.insert("token".into(), json!(status.token));
    fields.insert("entries".into(), Value::Array(entries));
    fields
}
