//! Remote control of a worker on `memory://` through `App::control` (the same requests as
//! Python's `app.control` and `celery inspect`; against real Python on Redis and RabbitMQ in
//! the interop suites): ping, stats, registered, active queues, active and reserved tasks,
//! query_task, events on and off, unknown commands, shutdown.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{WAIT, init_logs};
use queue::{App, MemoryBroker, Worker, task};
use serde_json::{Map, json};
use tokio::sync::Notify;

/// Released by the test; `started` tells the test the task runs.
fn gates() -> &'static (Notify, Notify) {
    static GATES: OnceLock<(Notify, Notify)> = OnceLock::new();
    GATES.get_or_init(|| (Notify::new(), Notify::new()))
}

#[task(name = "control.hold", rate_limit = "10/m")]
async fn hold(label: String) -> String {
    let (started, release) = gates();
    started.notify_one();
    release.notified().await;
    label
}

#[task(name = "control.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

const NODE: &str = "celery@control-test";

async fn app() -> App {
    init_logs();
    App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .backend("memory://")
        .task(hold)
        .task(add)
        .build()
        .await
        .unwrap()
}

/// The control client, waiting for this node only (so calls end when it replied).
fn control(app: &App) -> queue::control::Control {
    app.control().destination([NODE]).timeout(WAIT)
}

/// The worker subscribes to control requests as it starts: pings until it answers.
async fn until_listening(app: &App) -> queue::control::Replies {
    tokio::time::timeout(WAIT, async {
        loop {
            let replies = app
                .control()
                .destination([NODE])
                .timeout(Duration::from_millis(200))
                .ping()
                .await
                .unwrap();
            if !replies.is_empty() {
                return replies;
            }
        }
    })
    .await
    .expect("the worker answers ping")
}

#[tokio::test]
async fn a_worker_answers_ping_stats_registered_and_active_queues() {
    let app = app().await;
    let worker = Worker::new(app.clone())
        .node_name(NODE)
        .queues(["celery", "reports"])
        .concurrency(3)
        .spawn();
    let ping = until_listening(&app).await;
    assert_eq!(ping.get(NODE), Some(&json!({"ok": "pong"})));

    assert_eq!(
        add::new(1, 2)
            .send(&app)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        3
    );
    let inspect = control(&app).inspect();
    let stats = inspect.stats().await.unwrap();
    let stats = stats.get(NODE).expect("stats reply");
    assert_eq!(stats["total"], json!({"control.add": 1}));
    assert_eq!(stats["pid"], json!(std::process::id()));
    assert_eq!(stats["pool"]["max-concurrency"], json!(3));
    assert_eq!(stats["prefetch_count"], json!(3));
    assert!(
        stats["uptime"].is_u64() && stats["clock"].is_string(),
        "{stats}"
    );
    assert!(stats["rusage"]["utime"].is_number(), "{stats}");

    let registered = inspect.registered().await.unwrap();
    assert_eq!(
        registered.get(NODE),
        Some(&json!(["control.add", "control.hold"]))
    );
    let mut arguments = Map::new();
    arguments.insert("taskinfoitems".into(), json!(["rate_limit"]));
    let annotated = control(&app).call("registered", arguments).await.unwrap();
    assert_eq!(
        annotated.get(NODE),
        Some(&json!(["control.add", "control.hold [rate_limit=10/m]"]))
    );

    let queues = inspect.active_queues().await.unwrap();
    let names: Vec<&str> = queues
        .get(NODE)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["celery", "reports"]);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn active_and_query_task_show_a_running_task() {
    let app = app().await;
    let worker = Worker::new(app.clone()).node_name(NODE).spawn();
    until_listening(&app).await;
    let running = hold::new("x".into()).send(&app).await.unwrap();
    gates().0.notified().await;

    let active = control(&app).inspect().active(true).await.unwrap();
    let tasks = active.get(NODE).unwrap().as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], json!(running.id()));
    assert_eq!(tasks[0]["name"], json!("control.hold"));
    assert_eq!(tasks[0]["args"], json!("('x',)"));
    assert_eq!(tasks[0]["hostname"], json!(NODE));
    assert!(tasks[0]["time_start"].is_f64());
    let reserved = control(&app).inspect().reserved().await.unwrap();
    assert_eq!(reserved.get(NODE), Some(&json!([])));

    let queried = control(&app)
        .inspect()
        .query_task(&[running.id(), "unknown"])
        .await
        .unwrap();
    let found = queried.get(NODE).unwrap();
    assert_eq!(found[running.id()][0], json!("active"));
    assert!(found.get("unknown").is_none());

    gates().1.notify_one();
    assert_eq!(running.get(WAIT).await.unwrap(), "x");
    let active = control(&app).inspect().active(true).await.unwrap();
    assert_eq!(active.get(NODE), Some(&json!([])));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_toggle_unknown_commands_error_and_shutdown_stops_the_worker() {
    let app = app().await;
    let worker = Worker::new(app.clone()).node_name(NODE).spawn();
    until_listening(&app).await;
    let enable = control(&app)
        .call("enable_events", Map::new())
        .await
        .unwrap();
    assert_eq!(
        enable.get(NODE),
        Some(&json!({"ok": "task events enabled"}))
    );
    let again = control(&app)
        .call("enable_events", Map::new())
        .await
        .unwrap();
    assert_eq!(
        again.get(NODE),
        Some(&json!({"ok": "task events already enabled"}))
    );
    let disable = control(&app)
        .call("disable_events", Map::new())
        .await
        .unwrap();
    assert_eq!(
        disable.get(NODE),
        Some(&json!({"ok": "task events disabled"}))
    );

    let unknown = control(&app).call("nosuchcmd", Map::new()).await.unwrap();
    assert_eq!(
        unknown.get(NODE),
        Some(&json!({"error": "KeyError('nosuchcmd')"}))
    );
    // Another node's request is not answered.
    let elsewhere = app
        .control()
        .destination(["celery@someone-else"])
        .timeout(Duration::from_millis(200))
        .ping()
        .await
        .unwrap();
    assert!(elsewhere.is_empty());

    control(&app).cast("shutdown", Map::new()).await.unwrap();
    tokio::time::timeout(WAIT, worker.wait())
        .await
        .expect("the worker stops on a shutdown command")
        .unwrap();
}
