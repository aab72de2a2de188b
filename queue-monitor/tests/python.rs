//! A Python-only cluster (the real Celery 5.7 worker, no Rust worker) on Redis: the monitor
//! lists its worker from inspect and its heartbeats, turns its task events on (as Flower
//! does: the worker runs without -E) and shows its tasks with their states and results.
//! Skips without `QUEUE_TEST_REDIS_URL` and `QUEUE_TEST_PYTHON` (fails under CI).

mod common;
#[path = "../../tests/interop/python.rs"]
mod python;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::scenarios::task_in_state;
use common::{eventually, init_logs, quick_settings, start_monitor, unique};
use queue::App;
use queue_core::conformance::server_url;
use serde_json::json;

/// A Celery worker on `queue` as a team runs one: heartbeats on (unlike the interop
/// helper's), task events off until a monitor enables them. Killed on drop.
struct Worker(Child);

impl Worker {
    fn start(interpreter: &std::path::Path, url: &str, queue: &str, node: &str) -> Self {
        let mut child = Command::new(interpreter)
            .args([
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "--pool=threads",
                "-c",
                "2",
            ])
            .args([
                "-Q",
                queue,
                "-n",
                node,
                "--without-gossip",
                "--without-mingle",
            ])
            .args(["--loglevel", "INFO"])
            .current_dir(python::tasks_dir())
            .env("CELERY_BROKER_URL", url)
            .env("CELERY_RESULT_BACKEND", url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python Celery worker");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" ready.") {
                    let _ = ready.send(());
                }
            }
        });
        if started.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!("the Python worker did not start");
        }
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_worker_and_its_tasks_show() {
    init_logs();
    let Some(url) = server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let Some(interpreter) = python::python() else {
        return;
    };
    let queue = unique("pyq");
    let node = format!("celery@{}", unique("py"));
    let worker = Worker::start(&interpreter, &url, &queue, &node);
    let app = App::builder()
        .broker(url.clone())
        .backend(url.clone())
        .build()
        .await
        .unwrap();
    let (monitor, http) = start_monitor(app, None, &[&queue], quick_settings()).await;

    // Listed from inspect: Celery's stats, registered tasks and the queue it consumes.
    let (name, entry) = eventually("the Python worker in /api/workers", || async {
        let workers = http.get("/api/workers").await;
        workers
            .as_object()
            .unwrap()
            .iter()
            .find_map(|(name, entry)| {
                let consumes = entry["active_queues"]
                    .as_array()
                    .is_some_and(|queues| queues.iter().any(|q| q["name"] == queue.as_str()));
                (consumes && entry.get("stats").is_some() && entry.get("registered").is_some())
                    .then(|| (name.clone(), entry.clone()))
            })
    })
    .await;
    assert!(
        entry["registered"]
            .as_array()
            .unwrap()
            .contains(&json!("tasks.add")),
        "{entry}"
    );
    assert_eq!(entry["stats"]["pid"], worker.pid());
    let detail = http.get(&format!("/api/dashboard/workers/{name}")).await;
    assert_eq!(detail["online"], true, "{detail}");
    assert_eq!(detail["queues"], json!([queue]));
    assert_eq!(
        detail["sw_ident"], "py-celery",
        "known from its heartbeats: {detail}"
    );
    let status = http.get("/api/workers?status=1").await;
    assert_eq!(status[&name], true);

    // A task sent through Flower's API, run by Python, seen through its events: the worker
    // was started without -E; the monitor's enable_events (sent before each inspect round,
    // so before the answers above) turned them on, as Flower does.
    let answer = http
        .post(
            "/api/task/send-task/tasks.add",
            Some(json!({"args": [20, 22], "queue": queue})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = answer.json()["task-id"].as_str().unwrap().to_owned();
    let task = task_in_state(&http, &sent, "SUCCESS").await;
    assert_eq!(task["name"], "tasks.add");
    assert_eq!(task["result"], "42");
    assert_eq!(task["worker"], name.as_str());
    assert!(task["runtime"].is_number(), "{task}");
    let failed = http
        .post(
            "/api/task/send-task/tasks.fail",
            Some(json!({"args": ["from python"], "queue": queue})),
        )
        .await
        .json()["task-id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failure = task_in_state(&http, &failed, "FAILURE").await;
    assert!(
        failure["exception"]
            .as_str()
            .unwrap()
            .contains("from python"),
        "{failure}"
    );
    assert!(
        failure["traceback"]
            .as_str()
            .unwrap()
            .contains("ValueError"),
        "{failure}"
    );
    let listed = http.get(&format!("/api/tasks?workername={name}")).await;
    assert!(
        listed.get(&sent).is_some() && listed.get(&failed).is_some(),
        "{listed}"
    );
    let result = http.get(&format!("/api/task/result/{sent}")).await;
    assert_eq!(result["result"], 42);
    monitor.shutdown().await.unwrap();
    drop(worker);
}
