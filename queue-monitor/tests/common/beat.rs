//! `beat-heartbeat` events as `queue beat` sends them, published on the app's broker event
//! exchange (the monitor does not depend on queue-beat: the fields are written out here).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use queue::App;
use queue_core::events::{Event, EventSource, publish_body};
use serde_json::{Map, Value, json};

/// One entry of a heartbeat: `{name, task, schedule, last_run, next_run}`.
pub fn entry(
    name: &str,
    task: &str,
    schedule: &str,
    last_run: Option<DateTime<Utc>>,
    next_run: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "name": name,
        "task": task,
        "schedule": schedule,
        "last_run": last_run.map(|time| time.to_rfc3339()),
        "next_run": next_run.map(|time| time.to_rfc3339()),
    })
}

/// Sends a `beat-heartbeat` of `holder` for `schedule` on `app`'s broker.
pub async fn heartbeat(
    app: &App,
    holder: &str,
    schedule: &str,
    leading: bool,
    token: Option<u64>,
    entries: &[Value],
) {
    let mut fields = Map::new();
    fields.insert("schedule".into(), json!(schedule));
    fields.insert("leading".into(), json!(leading));
    fields.insert("token".into(), json!(token));
    fields.insert("entries".into(), Value::Array(entries.to_vec()));
    let event = EventSource::new(holder).event("beat-heartbeat", fields);
    let broadcast = app
        .broker()
        .clone()
        .broadcast()
        .expect("the broker has an event exchange");
    publish_body(
        broadcast.as_ref(),
        holder,
        event.routing_key(),
        Event::encode(std::slice::from_ref(&event)),
    )
    .await
    .expect("the heartbeat is sent");
}
