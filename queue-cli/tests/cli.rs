//! The `queue` command against a real Redis, with a real Python Celery worker serving the
//! tasks it calls.

#[path = "../../tests/interop/python.rs"]
mod python;

use std::process::{Command, Output};

use serde_json::{Value, json};

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

/// `QUEUE_TEST_REDIS_URL`: skipped without it, failing under CI (`CI=true` or `CI=1`).
fn redis_url() -> Option<String> {
    queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL")
}

fn unique(label: &str) -> String {
    format!("cli.{label}.{}", std::process::id())
}

#[test]
fn bad_arguments_are_clear_errors() {
    let output = queue(
        &["call", "tasks.add", "--args", "[1,"],
        "memory://",
        "memory://",
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--args is not valid JSON"),
        "{}",
        stderr(&output)
    );
    let output = queue(
        &["call", "tasks.add", "--kwargs", "[]"],
        "memory://",
        "memory://",
    );
    assert!(
        stderr(&output).contains("--kwargs must be a JSON object"),
        "{}",
        stderr(&output)
    );
    let output = queue(
        &["call", "tasks.add", "--priority", "12"],
        "memory://",
        "memory://",
    );
    assert!(!output.status.success());
    let output = queue(&["queues"], "kafka://user:secret@host", "memory://");
    assert!(!output.status.success());
    assert!(!stderr(&output).contains("secret"), "{}", stderr(&output));
}

#[test]
fn call_result_queues_and_purge_with_a_python_worker() {
    let (Some(python), Some(redis)) = (python::python(), redis_url()) else {
        return;
    };
    let served = unique("served");
    let worker = python::PythonWorker::start(&python, &redis, &redis, &[&served]);

    // call --wait prints the id, then the result as JSON.
    let output = queue(
        &[
            "call",
            "tasks.add",
            "--args",
            "[2, 3]",
            "--queue",
            &served,
            "--wait",
            "60",
        ],
        &redis,
        &redis,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1], "5");

    // result ID: state and result.
    let output = queue(&["result", lines[0]], &redis, &redis);
    let meta: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(
        (&meta["status"], &meta["result"]),
        (&json!("SUCCESS"), &json!(5))
    );

    // kwargs, priority, countdown.
    let output = queue(
        &[
            "call",
            "tasks.add",
            "--kwargs",
            r#"{"x": 4, "y": 5}"#,
            "--queue",
            &served,
            "--priority",
            "9",
            "--countdown",
            "1",
            "--wait",
            "60",
        ],
        &redis,
        &redis,
    );
    assert_eq!(
        stdout(&output).lines().nth(1),
        Some("9"),
        "{}",
        stderr(&output)
    );

    // A failure: non-zero exit, the error on stderr.
    let output = queue(
        &[
            "call",
            "tasks.fail",
            "--args",
            r#"["broken"]"#,
            "--queue",
            &served,
            "--wait",
            "60",
        ],
        &redis,
        &redis,
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("ValueError: broken"),
        "{}",
        stderr(&output)
    );
    worker.stop();

    // queues and purge on a queue nobody serves.
    let idle = unique("idle");
    for priority in ["0", "9", "9"] {
        let output = queue(
            &[
                "call",
                "tasks.add",
                "--args",
                "[1, 1]",
                "--queue",
                &idle,
                "--priority",
                priority,
            ],
            &redis,
            &redis,
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = queue(&["queues", &idle], &redis, &redis);
    let text = stdout(&output);
    let columns: Vec<&str> = text.trim().split('\t').collect();
    assert_eq!(columns[..2], [idle.as_str(), "3"], "{text}");
    let output = queue(&["purge", &idle, "--yes"], &redis, &redis);
    assert!(stdout(&output).contains("purged 3"), "{}", stdout(&output));
    let output = queue(&["queues", &idle], &redis, &redis);
    assert!(
        stdout(&output).starts_with(&format!("{idle}\t0")),
        "{}",
        stdout(&output)
    );
}
