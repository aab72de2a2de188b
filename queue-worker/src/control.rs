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
use queue_core::{RateLimit, TaskMeta, TaskState};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::runtime::Runtime;

/// What the control commands report about the worker, fixed at its start.
pub(crate) struct ControlContext {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) queues: Vec<String>,
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
        let Some(reply) = self.answer(&request) else {
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
    fn answer(&self, request: &Request) -> Option<Value> {
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
            "active_queues" => {
                Value::Array(self.queues.iter().map(|queue| queue_info(queue)).collect())
            }
            "active" => self.held(true),
            "reserved" => self.held(false),
            // The broker holds tasks waiting for their eta (they are not in this worker).
            "scheduled" => json!([]),
            "revoked" => json!(runtime.revoked.ids()),
            "revoke" => self.revoke(arguments),
            "rate_limit" => self.rate_limit(arguments),
            "pool_grow" => {
                runtime.slots.grow(count(arguments, "n").unwrap_or(1));
                ok("pool will grow")
            }
            "pool_shrink" => {
                runtime.slots.shrink(count(arguments, "n").unwrap_or(1));
                ok("pool will shrink")
            }
            // No autoscaler: the pool takes `max` slots (what an autoscaler at full load
            // would give) and keeps them.
            "autoscale" => match (count(arguments, "max"), count(arguments, "min")) {
                (Some(max), min) => {
                    runtime.slots.resize(max);
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

    /// `revoke`: the ids are discarded when they arrive; with `terminate`, stopped if they
    /// run here. As Celery 5.7, REVOKED is stored at once for ids whose stored state says
    /// they have not run yet (none, RECEIVED, RETRY, REJECTED), so that a client waiting on a
    /// delayed task learns it.
    fn revoke(&self, arguments: &Map<String, Value>) -> Value {
        let ids: Vec<String> = match arguments.get("task_id") {
            Some(Value::String(id)) => vec![id.clone()],
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => return error("revoke needs a task_id"),
        };
        let terminate = arguments.get("terminate").is_some_and(truthy);
        for id in &ids {
            self.runtime.revoked.insert(id);
        }
        self.runtime.revoked.save();
        info!(ids = ?ids, terminate, "tasks revoked");
        if let Some(backend) = self.runtime.app.backend().cloned() {
            let pending = ids.clone();
            tokio::spawn(async move {
                for id in pending {
                    let not_run = match backend.get(&id).await {
                        Ok(None) => true,
                        Ok(Some(meta)) => matches!(
                            meta.status,
                            TaskState::Received | TaskState::Retry | TaskState::Rejected
                        ),
                        Err(_) => false,
                    };
                    if not_run {
                        if let Err(store_error) =
                            backend.store(TaskMeta::revoked(&id, "revoked")).await
                        {
                            warn!(%store_error, id, "could not store REVOKED");
                        }
                    }
                }
            });
        }
        let joined = ids.join(", ");
        if !terminate {
            return ok(format!("tasks {joined} flagged as revoked"));
        }
        let terminated: Vec<&str> = ids
            .iter()
            .filter(|id| self.runtime.held.terminate(id))
            .map(String::as_str)
            .collect();
        if terminated.is_empty() {
            ok("terminate: tasks unknown")
        } else {
            ok(format!("terminate: {}", terminated.join(", ")))
        }
    }

    /// `rate_limit {task_name, rate_limit}`: `"10/m"`, a number per second, or 0/null to
    /// turn the limit off, as Celery's command takes it.
    fn rate_limit(&self, arguments: &Map<String, Value>) -> Value {
        let Some(task) = self.known_task(arguments) else {
            return error("unknown task");
        };
        let limit = match arguments.get("rate_limit") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) if number.as_f64() == Some(0.0) => None,
            Some(Value::Number(number)) => {
                match number.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(count) => Some(RateLimit {
                        count,
                        period: Duration::from_secs(1),
                    }),
                    None => return error(format!("Invalid rate limit string: {number}")),
                }
            }
            Some(Value::String(text)) if text.trim() == "0" || text.trim().is_empty() => None,
            Some(Value::String(text)) => match text.parse::<RateLimit>() {
                Ok(limit) => Some(limit),
                Err(reason) => return error(format!("Invalid rate limit string: {reason}")),
            },
            Some(other) => return error(format!("Invalid rate limit string: {other}")),
        };
        let runtime = &self.runtime;
        runtime.overrides.set_rate_limit(&task, limit);
        runtime.rate_limits.reset(&task);
        info!(task, ?limit, "rate limit changed by remote control");
        ok(if limit.is_some() {
            "new rate limit set successfully"
        } else {
            "rate limit disabled successfully"
        })
    }

    /// `time_limit {task_name, soft, hard}` (seconds, null for none).
    fn time_limit(&self, arguments: &Map<String, Value>) -> Value {
        let Some(task) = self.known_task(arguments) else {
            return error("unknown task");
        };
        let seconds = |name: &str| -> Result<Option<Duration>, Value> {
            match arguments.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_f64()
                    .and_then(queue_core::protocol::time::seconds_duration)
                    .map(Some)
                    .ok_or_else(|| error(format!("invalid {name} time limit: {value}"))),
            }
        };
        let (soft, hard) = match (seconds("soft"), seconds("hard")) {
            (Ok(soft), Ok(hard)) => (soft, hard),
            (Err(reply), _) | (_, Err(reply)) => return reply,
        };
        self.runtime.overrides.set_time_limits(&task, soft, hard);
        info!(task, ?soft, ?hard, "time limits changed by remote control");
        ok("time limits set successfully")
    }

    /// The `task_name` argument, when this worker has that task.
    fn known_task(&self, arguments: &Map<String, Value>) -> Option<String> {
        let name = arguments.get("task_name").and_then(Value::as_str)?;
        self.runtime
            .app
            .registry()
            .get(name)
            .map(|_| name.to_owned())
    }

    fn stats(&self) -> Value {
        let runtime = &self.runtime;
        let broker = runtime
            .app
            .broker_url()
            .map(|url| broker_info(url.expose()))
            .unwrap_or_else(|| json!({"transport": "memory"}));
        json!({
            "total": runtime.held.totals(),
            "pid": std::process::id(),
            "clock": runtime.events.clock().value().to_string(),
            "uptime": self.started.elapsed().as_secs(),
            "pool": {
                "implementation": "queue_worker:tokio",
                "max-concurrency": self.runtime.slots.size(),
                "processes": [std::process::id()],
                "max-tasks-per-child": null,
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
            },
            "broker": broker,
            "prefetch_count": self.runtime.slots.size().saturating_add(self.prefetch),
            "rusage": rusage(),
        })
    }

    fn registered(&self, arguments: &Map<String, Value>) -> Value {
        let items = task_info_items(arguments);
        let registry = self.runtime.app.registry();
        let names: Vec<String> = registry
            .names()
            .into_iter()
            .map(|name| {
                let options = registry.get(name).map(|task| task.options.clone());
                let extra: Vec<String> = items
                    .iter()
                    .filter_map(|item| {
                        let options = options.as_ref()?;
                        match *item {
                            "rate_limit" => self
                                .runtime
                                .overrides
                                .rate_limit(name, options.rate_limit)
                                .map(|limit| {
                                    let unit = match limit.period.as_secs() {
                                        60 => "m",
                                        3600 => "h",
                                        _ => "s",
                                    };
                                    format!("rate_limit={}/{unit}", limit.count)
                                }),
                            "time_limit" => options
                                .time_limit
                                .map(|limit| format!("time_limit={}", limit.as_secs_f64())),
                            _ => None,
                        }
                    })
                    .collect();
                if extra.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name} [{}]", extra.join(" "))
                }
            })
            .collect();
        json!(names)
    }

    fn held(&self, active: bool) -> Value {
        let node = self.node();
        Value::Array(
            self.runtime
                .held
                .tasks(active)
                .iter()
                .map(|task| task.info(node))
                .collect(),
        )
    }

    fn query_task(&self, arguments: &Map<String, Value>) -> Value {
        let ids: Vec<&str> = match arguments.get("ids") {
            Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(id)) => vec![id.as_str()],
            _ => Vec::new(),
        };
        let node = self.node();
        let mut found = Map::new();
        for (active, state) in [(true, "active"), (false, "reserved")] {
            for task in self.runtime.held.tasks(active) {
                if ids.contains(&task.id.as_str()) {
                    found.insert(task.id.clone(), json!([state, task.info(node)]));
                }
            }
        }
        Value::Object(found)
    }

    fn conf(&self) -> Value {
        let broker = self
            .runtime
            .app
            .broker_url()
            .map(|url| url.to_string())
            .unwrap_or_else(|| "memory://".to_owned());
        json!({
            "broker_url": broker,
            "worker_concurrency": self.runtime.slots.size(),
            "worker_prefetch_multiplier": 1,
            "task_default_queue": self.runtime.app.router().default_queue(),
            "worker_send_task_events": self.runtime.events.task_events_enabled(),
            "include": [],
        })
    }
}

/// The task attributes `registered` shows: those asked for in `taskinfoitems`, except
/// private ones, or Celery's defaults (`exchange`, `routing_key`, `rate_limit`) when the list
/// is empty, as Python's `inspect().registered()` and `celery inspect registered` send it.
/// Without `taskinfoitems` at all (our own client) the names are plain.
fn task_info_items(arguments: &Map<String, Value>) -> Vec<&str> {
    const DEFAULT_TASK_INFO_ITEMS: [&str; 3] = ["exchange", "routing_key", "rate_limit"];
    let Some(Value::Array(items)) = arguments.get("taskinfoitems") else {
        return Vec::new();
    };
    if items.is_empty() {
        return DEFAULT_TASK_INFO_ITEMS.to_vec();
    }
    items
        .iter()
        .filter_map(Value::as_str)
        .filter(|item| !item.starts_with('_'))
        .collect()
}

/// kombu's `Queue.as_dict(recurse=True)` for a queue on the default direct exchange.
fn queue_info(queue: &str) -> Value {
    json!({
        "name": queue,
        "exchange": {
            "name": queue,
            "type": "direct",
            "arguments": null,
            "durable": true,
            "passive": false,
            "auto_delete": false,
            "delivery_mode": null,
            "no_declare": false,
        },
        "routing_key": queue,
        "queue_arguments": null,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": true,
        "exclusive": false,
        "auto_delete": false,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": null,
    })
}

/// The broker as Celery's `stats` reports it, never with the password.
fn broker_info(url: &url::Url) -> Value {
    let virtual_host = match url.scheme() {
        "amqp" | "amqps" => {
            let path = url.path().trim_start_matches('/');
            if path.is_empty() {
                "/".to_owned()
            } else {
                percent_decode(path)
            }
        }
        _ => url.path().trim_start_matches('/').to_owned(),
    };
    json!({
        "hostname": url.host_str().unwrap_or_default(),
        "userid": (!url.username().is_empty()).then(|| url.username().to_owned()),
        "virtual_host": virtual_host,
        "port": url.port_or_known_default(),
        "insist": false,
        "ssl": matches!(url.scheme(), "amqps" | "rediss"),
        "transport": match url.scheme() {
            "amqp" | "amqps" => "amqp",
            "rediss" => "rediss",
            other => other,
        },
        "connect_timeout": 4,
        "transport_options": {},
        // What kombu reports for py-amqp, and what the AMQP client uses.
        "login_method": matches!(url.scheme(), "amqp" | "amqps").then_some("PLAIN"),
        "uri_prefix": null,
        "heartbeat": 120.0,
        "failover_strategy": "round-robin",
        "alternates": [],
        // kombu 5.7's `Connection.info()` has it (a callable giving credentials): never set.
        "credential_provider": null,
    })
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

/// Python's `repr` of a string: `'name'`.
fn python_str(text: &str) -> String {
    queue_core::protocol::repr::value_repr(&Value::from(text))
}

/// `resource.getrusage(RUSAGE_SELF)` as Celery reports it, `"N/A"` where unavailable.
fn rusage() -> Value {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_SELF is always a valid `who`.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
            return json!({
                "utime": seconds(usage.ru_utime),
                "stime": seconds(usage.ru_stime),
                "maxrss": usage.ru_maxrss,
                "ixrss": usage.ru_ixrss,
                "idrss": usage.ru_idrss,
                "isrss": usage.ru_isrss,
                "minflt": usage.ru_minflt,
                "majflt": usage.ru_majflt,
                "nswap": usage.ru_nswap,
                "inblock": usage.ru_inblock,
                "oublock": usage.ru_oublock,
                "msgsnd": usage.ru_msgsnd,
                "msgrcv": usage.ru_msgrcv,
                "nsignals": usage.ru_nsignals,
                "nvcsw": usage.ru_nvcsw,
                "nivcsw": usage.ru_nivcsw,
            });
        }
    }
    json!("N/A")
}

#[cfg(test)]
mod tests {
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
