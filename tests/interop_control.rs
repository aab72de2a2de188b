//! Remote control (wire spec §7) against the real Python Celery 5.7, on Redis and on
//! RabbitMQ: a Rust worker and a Python worker on one broker and queue. Python's
//! `app.control.inspect()`, the `celery inspect` / `celery status` CLI and a Flower-like reader
//! see both workers and can read our replies; our `App::control()` sees both, Python's replies
//! included; Python's `enable_events` turns on our task events; Python's `shutdown` broadcast
//! stops our worker.
#![cfg(all(feature = "redis", feature = "amqp"))]

mod interop {
    pub mod python;
    pub mod tasks;
}

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use interop::python::{self, PythonWorker};
use interop::tasks::{self, add};
use queue::{App, Worker, task};
use serde_json::{Value, json};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(60);

/// Per label (the two tests run at once): `started` is notified when `hold` runs; `hold`
/// returns when `release` is notified.
struct Gates {
    started: Notify,
    release: Notify,
}

fn gates(label: &str) -> Arc<Gates> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gates>>>> = OnceLock::new();
    let mut gates = GATES.get_or_init(Default::default).lock().unwrap();
    gates
        .entry(label.to_owned())
        .or_insert_with(|| {
            Arc::new(Gates {
                started: Notify::new(),
                release: Notify::new(),
            })
        })
        .clone()
}

/// Runs until the test releases it, so that `active` has something to show.
#[task(name = "interop.ctl.hold")]
async fn hold(label: String) -> String {
    let gates = gates(&label);
    gates.started.notify_one();
    gates.release.notified().await;
    label
}

/// Never sent: its rate limit shows in `registered` as Celery's default task info items do.
#[task(name = "interop.ctl.limited", rate_limit = "10/m")]
fn limited() {}

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

/// Runs a Python script off the runtime's threads; it prints one JSON document.
async fn script(setup: &Setup, script: String) -> Value {
    let python = setup.python.clone();
    let (broker, backend) = (setup.broker.clone(), setup.backend.clone());
    tokio::task::spawn_blocking(move || python::run_script(&python, &broker, &backend, &script))
        .await
        .unwrap()
}

/// Pings (from our client) until every node in `nodes` answered, within `WAIT`.
async fn until_all_answer(app: &App, nodes: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let replies = app
            .control()
            .destination(nodes.iter().copied())
            .timeout(Duration::from_millis(500))
            .ping()
            .await
            .unwrap();
        if nodes.iter().all(|node| replies.get(node).is_some()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every node answers ping: {replies:?}"
        );
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// Python's inspect, the CLI and a Flower-like reader, against both workers.
const INSPECT: &str = r#"
import json, subprocess, sys, time
from tasks import app
RUST, PY = sys.argv[1], sys.argv[2]
NODES = [RUST, PY]

# Broadcast to everybody (other workers may share the broker), until both answer.
deadline = time.monotonic() + 60
while True:
    ping = app.control.inspect(timeout=1).ping() or {}
    if all(node in ping for node in NODES):
        break
    assert time.monotonic() < deadline, ping
out = {"ping": {node: ping[node] for node in NODES}}

# As Flower's Inspector does every few seconds (flower/inspector.py): each method broadcast to
# every worker, collected until a quiet `timeout`.
inspect = app.control.inspect(timeout=1.5)
for method in ["stats", "registered", "active_queues", "active", "reserved", "scheduled",
               "revoked", "conf"]:
    result = getattr(inspect, method)()
    assert result is not None and "error" not in result, (method, result)
    out[method] = {node: result.get(node) for node in NODES}
out["active_safe"] = {node: reply for node, reply in (inspect.active(safe=True) or {}).items()
                      if node in NODES}

# What Flower's templates/worker.html reads of those replies.
def flower(node):
    info = {method: out[method][node] for method in (
        "stats", "active_queues", "registered", "scheduled", "active", "reserved", "revoked",
        "conf")}
    if any(reply is None for reply in info.values()):
        return None
    stats = info["stats"]
    rows = [(name, value) for name, value in stats["pool"].items()]
    rows += [stats.get("pid", "N/A"), stats.get("prefetch_count", "N/A")]
    rows += list((stats.get("consumer", None) or stats)["broker"].items())
    for queue in info["active_queues"]:
        rows.append([queue[key] for key in ("name", "exclusive", "durable", "routing_key",
                                            "no_ack", "alias", "queue_arguments",
                                            "binding_arguments", "auto_delete")])
    rows += list(stats["total"].items())
    for task in info["active"]:
        rows.append([task["name"], task["id"], task["acknowledged"], task["worker_pid"],
                     task.get("args", "N/A"), task.get("kwargs", "N/A")])
    for task in info["scheduled"]:
        rows.append([task["request"][key] for key in ("name", "id", "args", "kwargs")])
    for task in info["reserved"]:
        rows.append([task[key] for key in ("name", "id", "args", "kwargs")])
    rows += [task for task in info["revoked"]]
    rows += [name for name in info["registered"]]
    rows += [(name, value) for name, value in sorted(info["conf"].items()) if value is not None]
    if isinstance(stats.get("rusage", None), dict):
        rows += list(stats["rusage"].items())
    return len(rows)
out["flower_rows"] = {node: flower(node) for node in NODES}

def cli(*args):
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", *args],
                          capture_output=True, text=True, timeout=120)
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
out["cli_ping"] = cli("inspect", "ping", "--timeout", "2")
out["cli_status"] = cli("status", "--timeout", "2")
out["cli_stats"] = cli("inspect", "stats", "--timeout", "10", "-d", RUST)
out["cli_registered"] = cli("inspect", "registered", "--timeout", "10", "-d", RUST)
out["cli_active"] = cli("inspect", "active", "--timeout", "10", "-d", RUST)
out["cli_active_queues"] = cli("inspect", "active_queues", "--timeout", "10", "-d", RUST)
out["cli_json"] = cli("inspect", "stats", "--json", "--timeout", "10", "-d", RUST)
print(json.dumps(out, default=str))
"#;

/// `enable_events` from Python: our worker answers, then its task events flow (and did not
/// before).
const EVENTS: &str = r#"
import json, sys, threading, time
from tasks import app
RUST, RUST_ONLY = sys.argv[1], sys.argv[2]
lock = threading.Lock()
seen = []
heartbeat = threading.Event()
succeeded = {}

def on_event(event):
    if event.get("hostname") != RUST:
        return
    with lock:
        seen.append(event)
    if event["type"] == "worker-heartbeat":
        heartbeat.set()
    if event["type"] == "task-succeeded":
        succeeded.setdefault(event["uuid"], threading.Event()).set()

def consume():
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": on_event})
        receiver.capture(limit=None, timeout=None, wakeup=False)

threading.Thread(target=consume, daemon=True).start()
# A heartbeat of our worker proves the receiver's subscription live.
assert heartbeat.wait(60), "no worker-heartbeat from " + RUST
before = app.send_task("tasks.add", args=(1, 1), queue=RUST_ONLY)
assert before.get(timeout=60) == 2
enabled = app.control.enable_events(destination=[RUST], reply=True, timeout=10)
again = app.control.enable_events(destination=[RUST], reply=True, timeout=10)
after = app.send_task("tasks.add", args=(2, 3), queue=RUST_ONLY)
assert after.get(timeout=60) == 5
deadline = time.monotonic() + 60
while after.id not in succeeded and time.monotonic() < deadline:
    time.sleep(0.05)
with lock:
    types = lambda task_id: [e["type"] for e in seen if e.get("uuid") == task_id]
    print(json.dumps({"enabled": enabled, "again": again, "before": types(before.id),
                      "after": types(after.id)}))
"#;

async fn remote_control(setup: Setup) {
    let id = uuid_hex();
    let queue = format!("interop.ctl.{id}");
    let rust_only = format!("interop.ctl.rs.{id}");
    let rust_node = format!("celery@rust-ctl-{id}");
    let py_node = format!("celery@py-ctl-{id}");
    let app = tasks::register(App::builder())
        .task(hold)
        .task(limited)
        .broker(setup.broker.clone())
        .backend(setup.backend.clone())
        .default_queue(&queue)
        .build()
        .await
        .expect("connect");
    let worker = Worker::new(app.clone())
        .node_name(&rust_node)
        .queues([queue.as_str(), rust_only.as_str()])
        .concurrency(3)
        .task_events(false)
        .heartbeat_interval(Duration::from_millis(500))
        .spawn();
    let python_worker = {
        let (python, broker, backend) = (
            setup.python.clone(),
            setup.broker.clone(),
            setup.backend.clone(),
        );
        let (queue, py_node) = (queue.clone(), py_node.clone());
        tokio::task::spawn_blocking(move || {
            PythonWorker::start_named(&python, &broker, &backend, &[&queue], &py_node)
        })
        .await
        .unwrap()
    };
    until_all_answer(&app, &[&rust_node, &py_node]).await;

    // Something for `total` and `active`: a held task on the queue only we consume.
    let gate = gates(&id);
    let held = hold::new(id.clone())
        .queue(rust_only.as_str())
        .send(&app)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, gate.started.notified())
        .await
        .expect("the held task starts");

    // 2. Python's inspect, CLI and Flower's reading.
    let out = script(
        &setup,
        format!("import sys; sys.argv[1:] = [{rust_node:?}, {py_node:?}]\n{INSPECT}"),
    )
    .await;
    for node in [&rust_node, &py_node] {
        assert_eq!(out["ping"][node], json!({"ok": "pong"}), "{node}");
        for method in [
            "stats",
            "registered",
            "active_queues",
            "active",
            "reserved",
            "scheduled",
            "revoked",
            "conf",
        ] {
            assert!(
                !out[method][node].is_null(),
                "{method} of {node}: {}",
                out[method]
            );
        }
        assert!(
            out["flower_rows"][node]
                .as_u64()
                .is_some_and(|rows| rows > 0),
            "{node}: {}",
            out["flower_rows"]
        );
    }
    let (ours, theirs) = (&out["stats"][&rust_node], &out["stats"][&py_node]);
    assert_eq!(ours["total"], json!({"interop.ctl.hold": 1}), "{ours}");
    assert_eq!(ours["pid"], json!(std::process::id()));
    assert_eq!(ours["pool"]["max-concurrency"], json!(3));
    assert!(ours["prefetch_count"].is_u64(), "{ours}");
    assert!(ours["rusage"]["utime"].is_number(), "{ours}");
    assert!(
        keys(ours).is_superset(&keys(theirs)),
        "stats keys: ours {:?}, Python's {:?}",
        keys(ours),
        keys(theirs)
    );
    assert_eq!(
        keys(&ours["broker"]),
        keys(&theirs["broker"]),
        "broker keys"
    );
    for same in [
        "hostname",
        "port",
        "userid",
        "virtual_host",
        "transport",
        "ssl",
        "login_method",
    ] {
        assert_eq!(
            ours["broker"][same], theirs["broker"][same],
            "broker {same}"
        );
    }
    // `scheme://user:password@host…`
    let password = setup
        .broker
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password.to_owned());
    for reply in [ours, &out["conf"][&rust_node]] {
        assert!(reply.get("password").is_none());
        assert!(ours["broker"].get("password").is_none());
        if let Some(password) = &password {
            assert!(
                !reply.to_string().contains(&format!(":{password}@")),
                "a password in {reply}"
            );
        }
    }

    let registered = out["registered"][&rust_node].as_array().unwrap();
    assert!(registered.iter().all(Value::is_string), "{registered:?}");
    for name in ["tasks.add", "interop.ctl.hold"] {
        assert!(registered.contains(&json!(name)), "{registered:?}");
    }
    assert!(
        registered.contains(&json!("interop.ctl.limited [rate_limit=10/m]")),
        "Celery's default taskinfoitems include rate_limit: {registered:?}"
    );
    assert!(
        out["registered"][&py_node]
            .as_array()
            .unwrap()
            .contains(&json!("tasks.add"))
    );

    let queues: BTreeSet<&str> = out["active_queues"][&rust_node]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["name"].as_str().unwrap())
        .collect();
    assert_eq!(queues, BTreeSet::from([queue.as_str(), rust_only.as_str()]));
    let python_queue = &out["active_queues"][&py_node][0];
    assert_eq!(python_queue["name"], json!(queue));
    assert_eq!(
        keys(&out["active_queues"][&rust_node][0]),
        keys(python_queue),
        "active_queues entry keys"
    );

    for active in ["active", "active_safe"] {
        let tasks = out[active][&rust_node].as_array().unwrap();
        assert_eq!(tasks.len(), 1, "{active}: {tasks:?}");
        let task = &tasks[0];
        assert_eq!(task["id"], json!(held.id()), "{task}");
        assert_eq!(task["name"], json!("interop.ctl.hold"));
        assert_eq!(task["hostname"], json!(rust_node));
        assert_eq!(task["delivery_info"]["routing_key"], json!(rust_only));
        assert!(task["time_start"].is_number(), "{task}");
    }
    assert!(out["conf"][&rust_node].is_object());

    for (command, nodes) in [
        ("cli_ping", vec![&rust_node, &py_node]),
        ("cli_status", vec![&rust_node, &py_node]),
        ("cli_stats", vec![&rust_node]),
        ("cli_registered", vec![&rust_node]),
        ("cli_active", vec![&rust_node]),
        ("cli_active_queues", vec![&rust_node]),
    ] {
        let run = &out[command];
        assert_eq!(run["code"], json!(0), "{command}: {run}");
        let stdout = run["stdout"].as_str().unwrap();
        for node in nodes {
            assert!(
                stdout.contains(&format!(" {node}: OK")),
                "{command}: {stdout}"
            );
        }
    }
    assert!(
        out["cli_ping"]["stdout"].as_str().unwrap().contains("pong"),
        "{}",
        out["cli_ping"]
    );
    let cli_json: Value = serde_json::from_str(out["cli_json"]["stdout"].as_str().unwrap())
        .unwrap_or_else(|error| panic!("{error}: {}", out["cli_json"]));
    assert_eq!(cli_json[&rust_node]["pid"], json!(std::process::id()));

    // 3. Our client: both workers, Python's replies included.
    let everybody = app.control().ping().await.unwrap();
    for node in [&rust_node, &py_node] {
        assert_eq!(everybody.get(node), Some(&json!({"ok": "pong"})), "{node}");
    }
    let control = app
        .control()
        .destination([rust_node.as_str(), py_node.as_str()])
        .timeout(WAIT);
    let ping = control.ping().await.unwrap();
    assert_eq!(ping.len(), 2, "{ping:?}");
    let stats = control.inspect().stats().await.unwrap();
    assert_eq!(stats.len(), 2, "{stats:?}");
    let python_stats = stats.get(&py_node).unwrap();
    assert_eq!(python_stats["pid"], json!(python_worker.pid()));
    assert_eq!(python_stats["pool"]["max-concurrency"], json!(4));
    assert_eq!(
        stats.get(&rust_node).unwrap()["pid"],
        json!(std::process::id())
    );
    let registered = control.inspect().registered().await.unwrap();
    assert!(
        registered
            .get(&py_node)
            .and_then(Value::as_array)
            .is_some_and(|names| names.contains(&json!("tasks.sleep"))),
        "{registered:?}"
    );
    assert!(
        registered
            .get(&rust_node)
            .and_then(Value::as_array)
            .is_some_and(|names| names.contains(&json!("interop.ctl.hold"))),
        "{registered:?}"
    );
    let unknown = control
        .call("no_such_command", Default::default())
        .await
        .unwrap();
    for node in [&rust_node, &py_node] {
        assert_eq!(
            unknown.get(node),
            Some(&json!({"error": "KeyError('no_such_command')"})),
            "{node}: {unknown:?}"
        );
    }

    gate.release.notify_one();
    assert_eq!(held.get(WAIT).await.unwrap(), id);

    // 4. Python's enable_events: our worker says so, and its task events start.
    let events = script(
        &setup,
        format!("import sys; sys.argv[1:] = [{rust_node:?}, {rust_only:?}]\n{EVENTS}"),
    )
    .await;
    assert_eq!(
        events["enabled"],
        json!([{rust_node.as_str(): {"ok": "task events enabled"}}])
    );
    assert_eq!(
        events["again"],
        json!([{rust_node.as_str(): {"ok": "task events already enabled"}}])
    );
    assert_eq!(events["before"], json!([]), "{events}");
    let after = events["after"].as_array().unwrap();
    for kind in ["task-received", "task-started", "task-succeeded"] {
        assert!(after.contains(&json!(kind)), "{events}");
    }
    let conf = control.inspect().conf().await.unwrap();
    assert_eq!(
        conf.get(&rust_node).unwrap()["worker_send_task_events"],
        json!(true)
    );

    // 4b. Python's add_consumer and cancel_consumer steer our worker: a task Python sends
    // to a queue no one consumed runs here.
    let extra = format!("interop.ctl.extra.{id}");
    let steer = script(
        &setup,
        format!(
            "import json\nfrom tasks import app\n\
             added = app.control.add_consumer({extra:?}, destination=[{rust_node:?}], reply=True, timeout=10)\n\
             value = app.send_task('tasks.add', args=[20, 22], queue={extra:?}).get(timeout=20)\n\
             cancelled = app.control.cancel_consumer({extra:?}, destination=[{rust_node:?}], reply=True, timeout=10)\n\
             print(json.dumps({{'added': added, 'value': value, 'cancelled': cancelled}}))"
        ),
    )
    .await;
    assert_eq!(
        steer["added"],
        json!([{rust_node.as_str(): {"ok": format!("add consumer {extra}")}}])
    );
    assert_eq!(steer["value"], json!(42), "{steer}");
    assert_eq!(
        steer["cancelled"],
        json!([{rust_node.as_str(): {"ok": format!("no longer consuming from {extra}")}}])
    );

    // 5. Python's shutdown broadcast to our node stops our worker, and only ours.
    let shutdown = format!(
        "import json\nfrom tasks import app\n\
         app.control.broadcast('shutdown', destination=[{rust_node:?}])\n\
         print(json.dumps(app.control.ping(destination=[{py_node:?}], timeout=10)))"
    );
    let ping = script(&setup, shutdown).await;
    assert_eq!(ping, json!([{py_node.as_str(): {"ok": "pong"}}]));
    tokio::time::timeout(WAIT, worker.wait())
        .await
        .expect("the worker stops on the shutdown command")
        .unwrap();
    let after = app
        .control()
        .destination([rust_node.as_str(), py_node.as_str()])
        .timeout(Duration::from_secs(2))
        .ping()
        .await
        .unwrap();
    assert_eq!(after.nodes().collect::<Vec<_>>(), vec![py_node.as_str()]);
    assert_eq!(
        add::new(2, 2)
            .send(&app)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        4
    );
    python_worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_remote_control_with_python_celery() {
    if let Some(setup) = setup("QUEUE_TEST_REDIS_URL") {
        remote_control(setup).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_remote_control_with_python_celery() {
    if let Some(setup) = setup("QUEUE_TEST_AMQP_URL") {
        remote_control(setup).await;
    }
}
