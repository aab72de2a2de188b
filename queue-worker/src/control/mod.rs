//! The worker's side of remote control (wire spec §7): it listens on its node queue of the
//! `celery.pidbox` fanout exchange and answers Python's `app.control`, `celery inspect`,
//! Flower and our own `queue inspect` as a Celery worker does.
//!
//! A request that does not decode is logged and dropped; a command this worker does not
//! have is answered `{"error": "KeyError('<name>')"}`, as Celery answers; neither is fatal.
//! Answering never blocks a task: the listener is a task of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::broadcast::{Binding, Broadcast, BroadcastMessage, ExchangeKind};
use queue_core::control::{
    PIDBOX_EXCHANGE, REPLY_EXCHANGE, Request, error, node_queue, ok, reply_message,
};
use queue_core::events::{SOFTWARE_IDENTITY, WorkerEventKind};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::runtime::Runtime;

mod report;
mod steer;

use report::{python_str, queue_info};

/// What the control commands report about the worker and change in it.
pub(crate) struct ControlContext {
    pub(crate) runtime: Arc<Runtime>,
    /// The queues consumed, changed by `add_consumer` / `cancel_consumer`.
    pub(crate) queues: std::sync::Mutex<Vec<String>>,
    pub(crate) prefetch: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) started: Instant,
    /// Cancelled by the `shutdown` command (a warm shutdown).
    pub(crate) warm: CancellationToken,
}

/// Listens for control requests until aborted, re-subscribing with backoff when the
/// subscription ends (a broker outage).
pub(crate) fn spawn(
    broadcast: Arc<dyn Broadcast>,
    context: ControlContext,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let node = context.runtime.config.node_name.clone();
        mingle(&context.runtime).await;
        let mut attempt = 0u32;
        loop {
            let binding = Binding {
                exchange: PIDBOX_EXCHANGE.to_owned(),
                kind: ExchangeKind::Fanout,
                routing_key: String::new(),
                queue: node_queue(&node),
            };
            match broadcast.subscribe(binding).await {
                Ok(mut requests) => {
                    attempt = 0;
                    debug!(node, "listening for control requests");
                    while let Some(message) = requests.next().await {
                        context.handle(&*broadcast, message).await;
                    }
                    warn!(node, "the control subscription ended; subscribing again");
                }
                Err(error) => warn!(node, %error, "cannot listen for control requests"),
            }
            let delay = Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2));
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    })
}

/// Celery's mingle at start: `hello` to the other workers, Python ones included, with our
/// revoked ids; theirs are merged in. It runs beside the first fetches rather than before
/// them, so that a start is not a second slower when no one answers (a task revoked only
/// on another worker and arriving in that first second would still run).
async fn mingle(runtime: &Runtime) {
    let node = runtime.config.node_name.clone();
    let mut arguments = Map::new();
    arguments.insert("from_node".into(), Value::from(node.as_str()));
    arguments.insert("revoked".into(), json!(runtime.revoked.ids()));
    let replies = match runtime
        .app
        .control()
        .timeout(Duration::from_secs(1))
        .call("hello", arguments)
        .await
    {
        Ok(replies) => replies,
        Err(mingle_error) => {
            debug!(%mingle_error, "mingle: no hello sent");
            return;
        }
    };
    let mut neighbours = 0;
    for (other, reply) in replies.0 {
        if other == node || !reply.is_object() {
            continue;
        }
        neighbours += 1;
        if let Some(clock) = reply.get("clock").and_then(Value::as_u64) {
            runtime.events.clock().adjust(clock);
        }
        runtime.revoked.merge(revoked_ids(reply.get("revoked")));
    }
    if neighbours > 0 {
        info!(
            neighbours,
            revoked = runtime.revoked.ids().len(),
            "mingle: synced with other workers"
        );
    } else {
        debug!("mingle: all alone");
    }
}

/// A count argument: a non-negative integer, or a string of one (Celery's CLI sends text).
fn count(arguments: &Map<String, Value>, name: &str) -> Option<usize> {
    match arguments.get(name)? {
        Value::Number(number) => number.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A flag argument read as Python's `if flag:` does: Flower's revoke sends `terminate` as
/// `1` (its `strtobool` gives 1 or 0), Celery's own client `true`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(items) => !items.is_empty(),
    }
}

/// Revoked ids as workers exchange them: a list (5.7), or a mapping id → stamp (older).
fn revoked_ids(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::Object(ids)) => ids.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl ControlContext {
    fn node(&self) -> &str {
        &self.runtime.config.node_name
    }

    fn queues(&self) -> Vec<String> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn handle(&self, broadcast: &dyn Broadcast, message: BroadcastMessage) {
        let clock = self.runtime.events.clock();
        if let Some(theirs) = message.headers.get("clock").and_then(Value::as_u64) {
            clock.adjust(theirs);
        }
        let request = match Request::decode(&message.body) {
            Ok(request) => request,
            Err(decode_error) => {
                warn!(%decode_error, "control request that does not decode: dropped");
                return;
            }
        };
        if !request.is_for(self.node()) {
            return;
        }
        debug!(method = %request.method, "control request");
        let Some(reply) = self.answer(&request).await else {
            return;
        };
        let Some(message) = reply_message(self.node(), &request, reply, clock.forward()) else {
            return;
        };
        if let Err(send_error) = broadcast
            .send(REPLY_EXCHANGE, ExchangeKind::Direct, message)
            .await
        {
            warn!(%send_error, method = %request.method, "control reply not sent");
        }
    }

    /// The reply to `request`; `None` for commands that do not reply (`shutdown`).
    async fn answer(&self, request: &Request) -> Option<Value> {
        let arguments = &request.arguments;
        let runtime = &self.runtime;
        Some(match request.method.as_str() {
            "ping" => ok("pong"),
            "clock" => json!({"clock": runtime.events.clock().value()}),
            "hello" => {
                let from = arguments.get("from_node").and_then(Value::as_str);
                if from == Some(self.node()) {
                    Value::Null
                } else {
                    // Celery 5.7's mingle: their ids in, ours out (ids only, oldest first).
                    runtime.revoked.merge(revoked_ids(arguments.get("revoked")));
                    json!({"revoked": runtime.revoked.ids(), "clock": runtime.events.clock().forward()})
                }
            }
            "stats" => self.stats(),
            "registered" => self.registered(arguments),
            "active_queues" => Value::Array(
                self.queues()
                    .iter()
                    .map(|queue| queue_info(queue))
                    .collect(),
            ),
            "add_consumer" => self.add_consumer(arguments).await,
            "cancel_consumer" => self.cancel_consumer(arguments).await,
            "active" => self.held(true),
            "reserved" => self.held(false),
            // The broker holds tasks waiting for their eta (they are not in this worker).
            "scheduled" => json!([]),
            "revoked" => json!(runtime.revoked.ids()),
            "revoke" => self.revoke(arguments),
            "rate_limit" => self.rate_limit(arguments),
            "pool_grow" => {
                runtime.slots.grow(count(arguments, "n").unwrap_or(1));
                self.resized().await;
                ok("pool will grow")
            }
            "pool_shrink" => {
                runtime.slots.shrink(count(arguments, "n").unwrap_or(1));
                self.resized().await;
                ok("pool will shrink")
            }
            // No autoscaler: the pool takes `max` slots (what an autoscaler at full load
            // would give) and keeps them.
            "autoscale" => match (count(arguments, "max"), count(arguments, "min")) {
                (Some(max), min) => {
                    runtime.slots.resize(max);
                    self.resized().await;
                    ok(format!("autoscale now max={max} min={}", min.unwrap_or(0)))
                }
                (None, _) => error("autoscale needs max"),
            },
            "time_limit" => self.time_limit(arguments),
            "query_task" => self.query_task(arguments),
            "conf" => self.conf(),
            "report" => ok(format!(
                "software -> {SOFTWARE_IDENTITY}:{} ({})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS
            )),
            "enable_events" => ok(if runtime.events.set_task_events(true) {
                "task events already enabled"
            } else {
                "task events enabled"
            }),
            "disable_events" => ok(if runtime.events.set_task_events(false) {
                "task events disabled"
            } else {
                "task events already disabled"
            }),
            "heartbeat" => {
                runtime
                    .events
                    .worker(WorkerEventKind::Heartbeat, self.heartbeat);
                Value::Null
            }
            "shutdown" => {
                info!("shutdown requested by remote control: warm shutdown");
                self.warm.cancel();
                return None;
            }
            other => error(format!("KeyError({})", python_str(other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::report::{broker_info, task_info_items};
    use super::*;

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn flags_are_read_as_python_truth() {
        for yes in [json!(true), json!(1), json!(1.5), json!("yes"), json!([0])] {
            assert!(truthy(&yes), "{yes}");
        }
        for no in [
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!(null),
        ] {
            assert!(!truthy(&no), "{no}");
        }
    }

    #[test]
    fn registered_uses_celerys_default_items_for_an_empty_list() {
        assert_eq!(
            task_info_items(&arguments(json!({"taskinfoitems": []}))),
            ["exchange", "routing_key", "rate_limit"]
        );
        assert_eq!(
            task_info_items(&arguments(
                json!({"taskinfoitems": ["time_limit", "_private"]})
            )),
            ["time_limit"]
        );
        assert!(task_info_items(&Map::new()).is_empty());
    }

    #[test]
    fn broker_info_has_kombus_keys_and_no_password() {
        let url = url::Url::parse("amqp://user:secret@rabbit:5673/%2fprod").unwrap();
        let info = broker_info(&url);
        let mut keys: Vec<&str> = info
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        // kombu 5.7's `Connection.info()` without `password`.
        assert_eq!(
            keys,
            [
                "alternates",
                "connect_timeout",
                "credential_provider",
                "failover_strategy",
                "heartbeat",
                "hostname",
                "insist",
                "login_method",
                "port",
                "ssl",
                "transport",
                "transport_options",
                "uri_prefix",
                "userid",
                "virtual_host",
            ]
        );
        assert!(!info.to_string().contains("secret"));
        assert_eq!(info["virtual_host"], json!("/prod"));
        assert_eq!(info["userid"], json!("user"));
        assert_eq!(info["login_method"], json!("PLAIN"));
        let redis = broker_info(&url::Url::parse("redis://:secret@cache:6379/2").unwrap());
        assert!(!redis.to_string().contains("secret"));
        assert_eq!(
            (
                &redis["virtual_host"],
                &redis["login_method"],
                &redis["userid"]
            ),
            (&json!("2"), &Value::Null, &Value::Null)
        );
    }
}
