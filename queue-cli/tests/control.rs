//! `queue inspect`, `queue control`, `queue revoke` and `queue events` against a real broker,
//! with a Rust worker (the interop tasks of `examples/celery_interop.rs`, run in this process)
//! and a Python Celery worker on one queue.

#[path = "../../tests/interop/python.rs"]
mod python;
#[path = "../../tests/interop/tasks.rs"]
mod tasks;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use queue::{App, Worker, WorkerHandle};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn queue(args: &[&str], broker: &str, backend: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("QUEUE_BROKER_URL", broker)
        .env("QUEUE_RESULT_BACKEND", backend)
        .env_remove("CELERY_BROKER_URL")
        .output()
        .expect("run queue")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_replies_and_bad_arguments_are_clear_errors() {
    // The memory broker is this process's own: nobody is there to answer.
    let output = queue(&["inspect", "ping"], "memory://", "memory://");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "Error: No nodes replied within time constraint"
    );
    let output = queue(
        &["control", "rate_limit", "tasks.add", "1/s", "--json"],
        "memory://",
        "memory://",
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    for args in [
        &["inspect", "query_task"][..],
        &["inspect", "nosuchcommand"],
        &["inspect", "ping", "--timeout", "soon"],
        &["control", "rate_limit", "tasks.add"],
        &["control", "pool_grow", "many"],
        &["control", "time_limit", "tasks.add", "soft"],
        &["revoke"],
        &["events", "--count", "-1"],
    ] {
        let output = queue(args, "memory://", "memory://");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = queue(
        &["inspect", "ping", "--timeout=-1"],
        "memory://",
        "memory://",
    );
    assert!(
        stderr(&output).contains("--timeout must be a positive number"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn inspect_control_revoke_and_events_on_redis() {
    let Some(redis) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    scenario("redis", &redis, &redis);
}

#[test]
fn inspect_control_revoke_and_events_on_rabbitmq() {
    let (Some(amqp), Some(redis)) = (
        queue_core::conformance::server_url("QUEUE_TEST_AMQP_URL"),
        queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL"),
    ) else {
        return;
    };
    scenario("amqp", &amqp, &redis);
}

/// A Rust worker in this process, on its own runtime.
struct RustWorker {
    runtime: tokio::runtime::Runtime,
    handle: Option<WorkerHandle>,
}

impl RustWorker {
    fn start(broker: &str, backend: &str, queue: &str, node: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let handle = runtime.block_on(async {
            let builder = App::builder().broker(broker).backend(backend);
            let app = tasks::register(builder).build().await.expect("connect");
            Worker::new(app)
                .queues([queue])
                .node_name(node)
                .heartbeat_interval(Duration::from_secs(1))
                .task_events(false)
                .spawn()
        });
        Self {
            runtime,
            handle: Some(handle),
        }
    }

    /// Waits for the worker to stop by itself (after a shutdown command).
    fn stopped_within(&mut self, limit: Duration) -> bool {
        let handle = self.handle.take().expect("running");
        self.runtime
            .block_on(async { tokio::time::timeout(limit, handle.wait()).await })
            .is_ok()
    }
}

impl Drop for RustWorker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.runtime.block_on(handle.shutdown_now());
        }
    }
}

fn scenario(label: &str, broker: &str, backend: &str) {
    let Some(python) = python::python() else {
        return;
    };
    let pid = std::process::id();
    let served = format!("cli.control.{label}.{pid}");
    let rust_node = format!("rust-cli-{label}-{pid}@testhost");
    let py_node = format!("py-cli-{label}-{pid}@testhost");
    let mut rust = RustWorker::start(broker, backend, &served, &rust_node);
    let py = python::PythonWorker::start_named(&python, broker, backend, &[&served], &py_node);
    let both = format!("{rust_node},{py_node}");
    let run = |args: &[&str]| queue(args, broker, backend);

    // ping until both answer (each worker may take a moment to bind its control queue).
    let deadline = Instant::now() + WAIT;
    let ping = loop {
        let output = run(&["inspect", "ping", "-d", &both, "--timeout", "2"]);
        let text = stdout(&output);
        if text.contains(&format!("->  {rust_node}: OK"))
            && text.contains(&format!("->  {py_node}: OK"))
        {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}\n{}", stderr(&output));
    };
    assert!(ping.contains("        pong\n"), "{ping}");
    assert!(ping.ends_with("\n2 nodes online.\n"), "{ping}");
    // Broadcast to everybody: both are among those who answer.
    let output = run(&["inspect", "ping", "--json", "--timeout", "2"]);
    let all: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(all[&rust_node]["ok"], "pong", "{all}");
    assert_eq!(all[&py_node]["ok"], "pong", "{all}");

    // stats --json: both pids.
    let output = run(&["inspect", "stats", "--json", "-d", &both, "-t", "5"]);
    let stats: Value = serde_json::from_str(stdout(&output).trim())
        .unwrap_or_else(|error| panic!("{error}: {}", stdout(&output)));
    assert_eq!(stats[&rust_node]["pid"], pid, "{stats}");
    assert_eq!(stats[&py_node]["pid"], py.pid(), "{stats}");
    // And in human form: sorted, indented JSON.
    let output = run(&["inspect", "stats", "-d", &rust_node, "-t", "5"]);
    assert!(
        stdout(&output).contains("    \"pid\": "),
        "{}",
        stdout(&output)
    );

    // registered: the task names of both, as a list.
    let output = run(&["inspect", "registered", "-d", &both, "-t", "5"]);
    let text = stdout(&output);
    assert_eq!(text.matches("    * tasks.add").count(), 2, "{text}");
    assert!(text.contains("    * tasks.sleep"), "{text}");

    // The other inspect commands answer from both.
    for method in [
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "active_queues",
        "conf",
    ] {
        let output = run(&["inspect", method, "--json", "-d", &both, "-t", "5"]);
        let replies: Value = serde_json::from_str(stdout(&output).trim())
            .unwrap_or_else(|error| panic!("{method}: {error}: {}", stderr(&output)));
        assert!(
            replies.get(&rust_node).is_some() && replies.get(&py_node).is_some(),
            "{method}: {replies}"
        );
    }
    let output = run(&[
        "inspect",
        "query_task",
        "nosuchid",
        "-d",
        &py_node,
        "-t",
        "5",
    ]);
    assert!(
        stdout(&output).contains(&format!("->  {py_node}: OK")),
        "{}",
        stdout(&output)
    );

    // rate_limit on the Python worker: its ok reply.
    let output = run(&[
        "control",
        "rate_limit",
        "tasks.add",
        "10/m",
        "-d",
        &py_node,
        "-t",
        "5",
    ]);
    assert_eq!(
        stdout(&output),
        format!("->  {py_node}: OK\n        new rate limit set successfully\n"),
        "{}",
        stderr(&output)
    );
    // The same as JSON, and commands the Rust worker may not implement: a reply either way.
    let output = run(&[
        "control",
        "rate_limit",
        "tasks.add",
        "0",
        "--json",
        "-d",
        &py_node,
    ]);
    let reply: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert!(reply[&py_node].get("ok").is_some(), "{reply}");
    // (The threads pool of the Python worker cannot grow: it replies with an error.)
    // The Rust worker does all of them (its pool resizes; it consumes a queue more).
    for (args, rust_status, python_status) in [
        (&["time_limit", "tasks.sleep", "30", "60"][..], "", "OK"),
        (&["pool_grow", "1"], "OK", "ERROR"),
        (&["pool_shrink", "1"], "OK", "ERROR"),
        (&["add_consumer", "cli.extra"], "OK", "OK"),
        (&["cancel_consumer", "cli.extra"], "OK", "OK"),
    ] {
        let mut command = vec!["control"];
        command.extend_from_slice(args);
        command.extend(["-d", &both, "-t", "5"]);
        let output = run(&command);
        let text = stdout(&output);
        assert!(
            text.contains(&format!("->  {rust_node}: {rust_status}"))
                && text.contains(&format!("->  {py_node}: {python_status}\n")),
            "{args:?}: {text}\n{}",
            stderr(&output)
        );
    }

    // revoke a task waiting for its countdown: REVOKED, never run.
    let output = run(&[
        "call",
        "tasks.add",
        "--args",
        "[1, 1]",
        "--queue",
        &served,
        "--countdown",
        "3",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let id = stdout(&output).trim().to_owned();
    let output = run(&["revoke", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&id), "{}", stdout(&output));
    let deadline = Instant::now() + WAIT;
    loop {
        let output = run(&["result", &id]);
        let meta: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
        if meta["status"] == "REVOKED" {
            break;
        }
        assert!(Instant::now() < deadline, "not revoked: {meta}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // events: task events on, then a tail that sees heartbeats and a task's events.
    // (A Python worker started without heartbeat has no event dispatcher: it says so.)
    let output = run(&["control", "enable_events", "-d", &both, "-t", "5"]);
    let text = stdout(&output);
    assert!(
        text.contains(&format!("->  {rust_node}: OK\n        task events "))
            && text.contains(&format!("->  {py_node}: ")),
        "{text}"
    );
    // The task goes to the Rust worker alone: the Python worker stops consuming the queue.
    let output = run(&[
        "control",
        "cancel_consumer",
        &served,
        "-d",
        &py_node,
        "-t",
        "5",
    ]);
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!(
            "->  {py_node}: OK\n        no longer consuming from "
        )) && text.contains(&served),
        "{text}\n{}",
        stderr(&output)
    );
    let mut tail = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["events", "--json", "--count", "100000"])
        .env("QUEUE_BROKER_URL", broker)
        .env("QUEUE_RESULT_BACKEND", backend)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<Value>();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let event = serde_json::from_str(&line).expect("one JSON object per line");
            if lines_tx.send(event).is_err() {
                break;
            }
        }
    });
    let next = |what: &str, matches: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(event) if matches(&event) => return event,
                Ok(_) => {}
                Err(_) => panic!("no {what} event"),
            }
        }
    };
    // Subscribed once an event arrives: the Rust worker's heartbeat.
    let heartbeat = next("heartbeat", &|event| {
        event["type"] == "worker-heartbeat" && event["hostname"] == rust_node.as_str()
    });
    assert!(heartbeat["freq"].is_number() && heartbeat["processed"].is_number());
    let output = run(&[
        "call",
        "tasks.add",
        "--args",
        "[20, 22]",
        "--queue",
        &served,
        "--wait",
        "60",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let id = stdout(&output).lines().next().unwrap().to_owned();
    let succeeded = next("task-succeeded", &|event| {
        event["type"] == "task-succeeded" && event["uuid"] == id.as_str()
    });
    assert_eq!(succeeded["result"], "42", "{succeeded}");
    let _ = tail.kill();
    let _ = tail.wait();

    // --count stops by itself; human lines.
    let output = run(&["events", "--count", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("] worker-"), "{text}");

    // shutdown (a cast) stops the Rust worker.
    let output = run(&["control", "shutdown", "-d", &rust_node]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        rust.stopped_within(WAIT),
        "the Rust worker did not shut down"
    );
    py.stop();
}
