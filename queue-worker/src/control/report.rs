//! The commands that report on a worker: `stats`, `registered`, `active`, `reserved`,
//! `query_task`, `conf`, in the shapes Celery's workers give (Flower reads them).

use serde_json::{Map, Value, json};

use super::ControlContext;

impl ControlContext {
    pub(super) fn stats(&self) -> Value {
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

    pub(super) fn registered(&self, arguments: &Map<String, Value>) -> Value {
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

    pub(super) fn held(&self, active: bool) -> Value {
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

    pub(super) fn query_task(&self, arguments: &Map<String, Value>) -> Value {
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

    pub(super) fn conf(&self) -> Value {
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
pub(super) fn task_info_items(arguments: &Map<String, Value>) -> Vec<&str> {
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
pub(super) fn queue_info(queue: &str) -> Value {
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
pub(super) fn broker_info(url: &url::Url) -> Value {
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

pub(super) fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

/// Python's `repr` of a string: `'name'`.
pub(super) fn python_str(text: &str) -> String {
    queue_core::protocol::repr::value_repr(&Value::from(text))
}

/// `resource.getrusage(RUSAGE_SELF)` as Celery reports it, `"N/A"` where unavailable.
pub(super) fn rusage() -> Value {
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
