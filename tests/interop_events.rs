//! Our worker's Celery events as the real Python Celery 5.7 sees them, on Redis and on
//! RabbitMQ: a Python `app.events.Receiver` feeding `app.events.State` (what `celery
//! events` and Flower build on) watches a Rust worker run a task that succeeds and one that
//! fails, then shut down.
#![cfg(all(feature = "redis", feature = "amqp"))]

mod interop {
    pub mod python;
    pub mod tasks;
}

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop::python;
use interop::tasks::{self, add, fail, flaky};
use queue::{App, ResultError, Worker};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(500);

/// The monitor: `State` fed by a `Receiver` in a thread; the main thread proves the
/// subscription live (its own probe event came back) before saying `ready`, then answers
/// commands read from stdin, one JSON line each, with one JSON line on stdout:
/// `{"wait": "tasks", "tasks": {id: [event, ...]}, "processed": n}` waits until the node is
/// alive with `processed >= n` and nothing active, and `State` has handled those events
/// (`succeeded`, `retried`, …) of each task; `{"wait": "offline"}` waits until the node's
/// `worker-offline` was handled. Both report what `State` holds then.
const MONITOR: &str = r#"
import json, os, sys, threading, time
from celery import uuid
from celery.utils.time import utcoffset as local_utcoffset
from tasks import app

node = sys.argv[1]
probe_id = "probe-" + uuid()
probe_seen = threading.Event()
offline_seen = threading.Event()
# Raw facts about the node's events, recorded as State handles them (under its lock).
seen = {"types": set(), "drift": 0.0, "utcoffsets": set(), "alive_before_offline": None,
        "worker_fields": {}}

def record(state, event):
    if event.get("hostname") != node:
        return
    kind = event["type"]
    seen["types"].add(kind)
    seen["utcoffsets"].add(repr(event.get("utcoffset")))
    if event.get("timestamp") and event.get("local_received"):
        drift = abs(event["local_received"] - event["timestamp"])
        seen["drift"] = max(seen["drift"], drift)
    if kind.startswith("worker-"):
        for key in ("freq", "active", "processed", "loadavg", "pid", "clock", "utcoffset"):
            seen["worker_fields"].setdefault(key, set()).add(type(event.get(key)).__name__)
    if kind == "worker-offline":
        worker = state.workers.get(node)
        seen["alive_before_offline"] = bool(worker is not None and worker.alive)
        offline_seen.set()

state = app.events.State(callback=record)

def on_probe(event):
    if event.get("uuid") == probe_id:
        probe_seen.set()

def consume():
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"probe-ready": on_probe, "*": state.event})
        receiver.capture(limit=None, timeout=None, wakeup=True)

threading.Thread(target=consume, daemon=True).start()

with app.connection_for_write() as connection:
    dispatcher = app.events.Dispatcher(connection, hostname="probe@" + node)
    deadline = time.monotonic() + 60
    while not probe_seen.wait(0.2):
        if time.monotonic() > deadline:
            print(json.dumps({"ready": False}), flush=True)
            os._exit(1)
        dispatcher.send("probe-ready", uuid=probe_id)
    dispatcher.close()
print(json.dumps({"ready": True}), flush=True)

def finished(command):
    worker = state.workers.get(node)
    if worker is None or not worker.alive:
        return False
    if (worker.processed or 0) < command["processed"] or worker.active != 0:
        return False
    for task_id, events in command["tasks"].items():
        task = state.tasks.get(task_id)
        if task is None or task.name is None:
            return False
        if any(getattr(task, event) is None for event in events):
            return False
    return True

def report(command):
    worker = state.workers.get(node)
    out = {"worker": None, "tasks": {}}
    if worker is not None:
        out["worker"] = {
            "alive": worker.alive, "status": worker.status_string,
            "heartbeats": len(worker.heartbeats), "sw_ident": worker.sw_ident,
            "sw_ver": worker.sw_ver, "sw_sys": worker.sw_sys, "processed": worker.processed,
            "active": worker.active, "freq": worker.freq, "pid": worker.pid,
            "loadavg": worker.loadavg, "id": worker.id,
        }
    for task_id in command.get("tasks", {}):
        task = state.tasks.get(task_id)
        out["tasks"][task_id] = None if task is None else {
            "state": task.state, "name": task.name, "runtime": task.runtime,
            "result": task.result, "exception": task.exception,
            "traceback": task.traceback, "args": task.args, "kwargs": task.kwargs,
            "retries": task.retries, "received": task.received is not None,
            "started": task.started is not None, "retried": task.retried is not None,
            "expired": getattr(task, "expired", None),
            "worker": task.worker.hostname if task.worker is not None else None,
            "by_type": task.name is not None and task in state.tasks_by_type[task.name],
            "by_worker": task in state.tasks_by_worker[node],
        }
    out["types"] = sorted(seen["types"])
    out["drift"] = seen["drift"]
    out["utcoffsets"] = sorted(seen["utcoffsets"])
    out["local_utcoffset"] = repr(local_utcoffset())
    out["worker_field_types"] = {key: sorted(kinds) for key, kinds in seen["worker_fields"].items()}
    out["offline_seen"] = offline_seen.is_set()
    out["alive_before_offline"] = seen["alive_before_offline"]
    return out

for line in sys.stdin:
    command = json.loads(line)
    deadline = time.monotonic() + 30
    if command["wait"] == "tasks":
        while not (done := state.freeze_while(finished, command)) and time.monotonic() < deadline:
            time.sleep(0.02)
    else:
        done = offline_seen.wait(30)
    out = state.freeze_while(report, command)
    out["timed_out"] = not done
    print(json.dumps(out, default=repr), flush=True)
os._exit(0)
"#;

struct Setup {
    python: PathBuf,
    broker: String,
    backend: String,
}

fn setup(broker_variable: &str) -> Option<Setup> {
    let python = python::python()?;
    let broker = queue_core::conformance::server_url(broker_variable)?;
    let backend = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL")?;
    Some(Setup {
        python,
        broker,
        backend,
    })
}

fn uuid_hex() -> String {
    use rand::Rng;
    format!("{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// The Python monitor process; killed on drop.
struct Monitor {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    /// Starts the monitor for `node` and waits until its receiver is consuming.
    async fn start(setup: &Setup, node: &str) -> Self {
        let mut child = Command::new(&setup.python)
            .args(["-c", MONITOR, node])
            .current_dir(python::tasks_dir())
            .env("CELERY_BROKER_URL", &setup.broker)
            .env("CELERY_RESULT_BACKEND", &setup.backend)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python event monitor");
        let (sender, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines_of_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines_of_log.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take();
        let mut monitor = Self {
            child,
            stdin,
            lines,
            log,
        };
        let ready = monitor.next().await;
        assert_eq!(ready, json!({"ready": true}), "{}", monitor.log());
        monitor
    }

    /// The next JSON line the monitor prints.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv()).await;
        match line {
            Ok(Some(line)) => serde_json::from_str(&line).unwrap_or_else(|error| {
                panic!(
                    "the monitor printed no JSON ({error}): {line}\n{}",
                    self.log()
                )
            }),
            Ok(None) => panic!("the monitor exited:\n{}", self.log()),
            Err(_) => panic!("the monitor said nothing within {WAIT:?}:\n{}", self.log()),
        }
    }

    /// Sends a command and returns the monitor's report.
    async fn ask(&mut self, command: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("the monitor's stdin");
        writeln!(stdin, "{command}").expect("write to the monitor");
        stdin.flush().expect("flush the monitor's stdin");
        self.next().await
    }

    /// What the monitor logged (Celery's warnings, a traceback).
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rust_app(setup: &Setup, queue: &str) -> App {
    tasks::register(App::builder())
        .broker(setup.broker.clone())
        .backend(setup.backend.clone())
        .default_queue(queue)
        .build()
        .await
        .expect("connect")
}

/// A Rust worker's life as Python's `State` records it: online and alive with our
/// identity, a succeeded and a failed task with name, runtime, result and exception, then
/// offline after `worker-offline`.
async fn python_state_follows_a_rust_worker(setup: Setup) {
    let run = uuid_hex();
    let node = format!("celery@rust-events-{run}");
    let queue = format!("interop.events.{run}");
    let mut monitor = Monitor::start(&setup, &node).await;
    let app = rust_app(&setup, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .node_name(node.as_str())
        .task_events(true)
        .heartbeat_interval(HEARTBEAT)
        .spawn();

    let sum = add::new(2, 3).send(&app).await.unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 5);
    let failed = fail::new("broken input".into()).send(&app).await.unwrap();
    assert!(matches!(
        failed.get(WAIT).await,
        Err(ResultError::Failed { .. })
    ));
    let retried = flaky::new(1).send(&app).await.unwrap();
    assert_eq!(retried.get(WAIT).await.unwrap(), 1);
    let expired = add::new(1, 2)
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
        .send(&app)
        .await
        .unwrap();
    assert!(matches!(
        expired.get(WAIT).await,
        Err(ResultError::Revoked { .. })
    ));
    let events = json!({
        sum.id(): ["received", "started", "succeeded"],
        failed.id(): ["received", "started", "failed"],
        retried.id(): ["received", "started", "retried", "succeeded"],
        expired.id(): ["received", "revoked"],
    });

    // Four executions (flaky's two included): what Celery counts as `processed`.
    let report = monitor
        .ask(json!({"wait": "tasks", "tasks": events, "processed": 4}))
        .await;
    let context = format!("{report:#}\n{}", monitor.log());
    assert_eq!(report["timed_out"], false, "{context}");
    let seen = &report["worker"];
    assert_eq!(seen["alive"], true, "{context}");
    assert_eq!(seen["status"], "ONLINE", "{context}");
    assert_eq!(seen["sw_ident"], "rs-queue", "{context}");
    assert!(
        seen["sw_ver"]
            .as_str()
            .is_some_and(|version| !version.is_empty()),
        "{context}"
    );
    assert_eq!(seen["sw_sys"], python_system(), "{context}");
    assert_eq!(seen["freq"], 0.5, "{context}");
    // Runs started, as Celery counts: not the expired message.
    assert_eq!(seen["processed"], 4, "{context}");
    assert_eq!(seen["active"], 0, "{context}");
    assert_eq!(seen["pid"], std::process::id(), "{context}");
    assert_eq!(
        seen["id"],
        format!("{node}.{}", std::process::id()),
        "{context}"
    );
    let loadavg = seen["loadavg"].as_array().expect("loadavg");
    assert!(
        loadavg.len() == 3 && loadavg.iter().all(Value::is_f64),
        "{context}"
    );
    // Every number is the JSON type Python's own worker sends (float freq, int counts).
    assert_eq!(
        report["worker_field_types"],
        json!({"freq": ["float"], "active": ["int"], "processed": ["int"],
               "loadavg": ["list"], "pid": ["int"], "clock": ["int"], "utcoffset": ["float"]}),
        "{context}"
    );
    // Timestamps in seconds and `utcoffset` in Celery's sign: once the receiver has
    // localized them they agree with its own clock, and our offset is what Python's
    // `utcoffset()` says on this host.
    assert!(
        report["drift"].as_f64().is_some_and(|drift| drift < 5.0),
        "{context}"
    );
    assert_eq!(
        report["utcoffsets"],
        json!([report["local_utcoffset"]]),
        "{context}"
    );
    for kind in [
        "worker-online",
        "worker-heartbeat",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-revoked",
    ] {
        assert!(
            report["types"]
                .as_array()
                .unwrap()
                .contains(&Value::from(kind)),
            "no {kind}: {context}"
        );
    }

    let succeeded = &report["tasks"][sum.id()];
    assert_eq!(succeeded["state"], "SUCCESS", "{context}");
    assert_eq!(succeeded["name"], "tasks.add", "{context}");
    assert_eq!(succeeded["args"], "(2, 3)", "{context}");
    assert_eq!(succeeded["kwargs"], "{}", "{context}");
    assert_eq!(succeeded["retries"], 0, "{context}");
    assert_eq!(succeeded["result"], "5", "{context}");
    assert!(
        succeeded["runtime"]
            .as_f64()
            .is_some_and(|seconds| seconds >= 0.0),
        "{context}"
    );
    assert_eq!(succeeded["exception"], Value::Null, "{context}");
    let failure = &report["tasks"][failed.id()];
    assert_eq!(failure["state"], "FAILURE", "{context}");
    assert_eq!(failure["name"], "tasks.fail", "{context}");
    assert_eq!(failure["args"], "('broken input',)", "{context}");
    assert_eq!(
        failure["exception"], "ValueError('broken input')",
        "{context}"
    );
    assert!(failure["traceback"].is_string(), "{context}");
    assert_eq!(failure["result"], Value::Null, "{context}");
    let retry = &report["tasks"][retried.id()];
    // task-retried goes out before the retry is published, so the retry's own events come
    // after it and State ends at SUCCESS (it stayed at RETRY when they overtook it).
    assert_eq!(retry["state"], "SUCCESS", "{context}");
    assert_eq!(retry["name"], "tasks.flaky", "{context}");
    assert_eq!(retry["retries"], 1, "{context}");
    assert_eq!(retry["retried"], true, "{context}");
    assert_eq!(retry["result"], "1", "{context}");
    let revoked = &report["tasks"][expired.id()];
    assert_eq!(revoked["state"], "REVOKED", "{context}");
    assert_eq!(revoked["name"], "tasks.add", "{context}");
    assert_eq!(revoked["expired"], true, "{context}");
    for task in [succeeded, failure, retry] {
        assert_eq!(task["worker"], node.as_str(), "{context}");
        assert_eq!(task["received"], true, "{context}");
        assert_eq!(task["started"], true, "{context}");
        assert_eq!(task["by_type"], true, "{context}");
        assert_eq!(task["by_worker"], true, "{context}");
    }
    assert_eq!(revoked["worker"], node.as_str(), "{context}");

    worker.shutdown().await.unwrap();
    let report = monitor.ask(json!({"wait": "offline"})).await;
    let context = format!("{report:#}\n{}", monitor.log());
    assert_eq!(report["timed_out"], false, "{context}");
    assert_eq!(report["offline_seen"], true, "{context}");
    // Heartbeats kept it alive until `worker-offline`, which ended that at once.
    assert_eq!(report["alive_before_offline"], true, "{context}");
    assert_eq!(report["worker"]["alive"], false, "{context}");
    assert_eq!(report["worker"]["status"], "OFFLINE", "{context}");
    assert_eq!(report["worker"]["heartbeats"], 0, "{context}");
}

/// `platform.system()` of this host, as our `sw_sys` claims to be.
fn python_system() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_python_state_follows_a_rust_worker() {
    if let Some(setup) = setup("QUEUE_TEST_REDIS_URL") {
        python_state_follows_a_rust_worker(setup).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_python_state_follows_a_rust_worker() {
    if let Some(setup) = setup("QUEUE_TEST_AMQP_URL") {
        python_state_follows_a_rust_worker(setup).await;
    }
}
