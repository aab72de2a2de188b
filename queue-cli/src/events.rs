//! `queue events`: a live tail of the workers' events, like `celery events --dump`.

use std::collections::HashMap;

use queue::App;
use queue::broadcast::{Binding, ExchangeKind};
use queue::events::{EVENT_EXCHANGE, Event};
use serde_json::{Map, Value};

use crate::Failure;

/// Task names remembered from `task-received`/`task-sent`, for the events that lack one.
const NAMES_KEPT: usize = 10_000;

pub async fn run(app: &App, json: bool, count: Option<u64>) -> Result<(), Failure> {
    let broadcast = app
        .broker()
        .clone()
        .broadcast()
        .ok_or("this broker cannot broadcast: events need Redis or RabbitMQ")?;
    let queue = format!("celeryev.{}", uuid());
    let mut subscription = broadcast
        .subscribe(Binding {
            exchange: EVENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            routing_key: "#".to_owned(),
            queue,
        })
        .await
        .map_err(|error| error.to_string())?;
    // As Celery's receivers do (`wakeup_workers`): workers answer with a heartbeat at once.
    let _ = app.control().cast("heartbeat", Map::new()).await;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    loop {
        let message = tokio::select! {
            message = subscription.next() => message,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(message) = message else {
            return Err("the broker ended the event stream".into());
        };
        let events = match Event::decode(&message.body) {
            Ok(events) => events,
            Err(error) => {
                eprintln!("skipped a message on {}: {error}", message.routing_key);
                continue;
            }
        };
        for event in events {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    eprintln!("skipped an event: {error}");
                    continue;
                }
            };
            if json {
                match serde_json::to_string(&event) {
                    Ok(line) => println!("{line}"),
                    Err(error) => eprintln!("skipped an event: {error}"),
                }
            } else {
                println!("{}", describe(&event, &mut names));
            }
            seen += 1;
            if count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
    }
}

/// One line per event: `<hostname> [<local time>] <type> <fields>`.
fn describe(event: &Event, names: &mut HashMap<String, String>) -> String {
    let time = chrono::DateTime::from_timestamp_micros((event.timestamp * 1e6) as i64)
        .map(|time| {
            time.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string()
        })
        .unwrap_or_else(|| event.timestamp.to_string());
    let mut line = format!("{} [{time}] {}", event.hostname, event.kind);
    let mut fields: Vec<(&str, &Value)> = Vec::new();
    if event.is_task_event() {
        let uuid = event.uuid().unwrap_or_default();
        if let Some(Value::String(task)) = event.field("name") {
            if names.len() >= NAMES_KEPT {
                names.clear();
            }
            names.insert(uuid.to_owned(), task.clone());
        }
        line.push_str(&format!(" uuid={uuid}"));
        if let Some(name) = names.get(uuid) {
            line.push_str(&format!(" name={name}"));
        }
        for key in [
            "args",
            "kwargs",
            "retries",
            "eta",
            "expires",
            "result",
            "runtime",
            "exception",
            "terminated",
            "expired",
            "requeue",
        ] {
            if let Some(value) = event.field(key) {
                fields.push((key, value));
            }
        }
    } else {
        for key in ["freq", "active", "processed", "sw_ident", "sw_ver"] {
            if let Some(value) = event.field(key) {
                fields.push((key, value));
            }
        }
    }
    for (key, value) in fields {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!(" {key}={text}"));
    }
    line
}

fn uuid() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn events_print_on_one_line_with_their_task_name() {
        let mut names = HashMap::new();
        let received = event(
            r#"{"type": "task-received", "hostname": "celery@w", "timestamp": 1.5,
                "uuid": "t1", "name": "tasks.add", "args": "(1, 2)", "kwargs": "{}"}"#,
        );
        let line = describe(&received, &mut names);
        assert!(line.starts_with("celery@w ["), "{line}");
        assert!(
            line.ends_with("] task-received uuid=t1 name=tasks.add args=(1, 2) kwargs={}"),
            "{line}"
        );
        let succeeded = event(
            r#"{"type": "task-succeeded", "hostname": "celery@w", "timestamp": 2.0,
                "uuid": "t1", "result": "3", "runtime": 0.5}"#,
        );
        let line = describe(&succeeded, &mut names);
        assert!(
            line.ends_with("task-succeeded uuid=t1 name=tasks.add result=3 runtime=0.5"),
            "{line}"
        );
        let heartbeat = event(
            r#"{"type": "worker-heartbeat", "hostname": "celery@w", "timestamp": 1e300,
                "freq": 2.0, "active": 0, "processed": 3}"#,
        );
        let line = describe(&heartbeat, &mut names);
        assert!(
            line.ends_with("worker-heartbeat freq=2.0 active=0 processed=3"),
            "{line}"
        );
    }
}
