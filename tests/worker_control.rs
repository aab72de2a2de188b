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

/// This node's reply to `method` with `arguments` (a JSON object).
async fn reply(app: &App, method: &str, arguments: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    let replies = control(app).call(method, arguments).await.unwrap();
    replies.get(NODE).cloned().unwrap_or_default()
}

/// The control client, waiting for this node only (so calls end when it replied).
fn control(app: &App) -> queue::control::Control {
    app.control().destination([NODE]).timeout(WAIT)
}

/// The worker subscribes to control requests as it starts: pings until it answers.
async fn until_listening(app: &App) -> queue::control::Replies {
    until_node_listens(app, NODE).await
}

async fn until_node_listens(app: &App, node: &str) -> queue::control::Replies {
    tokio::time::timeout(WAIT, async {
        loop {
            let replies = app
                .control()
                .destination([node])
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
    assert_eq!(
        reply(&app, "enable_events", json!({})).await,
        json!({"ok": "task events enabled"})
    );
    assert_eq!(
        reply(&app, "enable_events", json!({})).await,
        json!({"ok": "task events already enabled"})
    );
    assert_eq!(
        reply(&app, "disable_events", json!({})).await,
        json!({"ok": "task events disabled"})
    );

    assert_eq!(
        reply(&app, "nosuchcmd", json!({})).await,
        json!({"error": "KeyError('nosuchcmd')"})
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

#[task(name = "control.forever")]
async fn forever() {
    futures::future::pending::<()>().await;
}

#[task(name = "control.counted")]
fn counted() {
    COUNTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

static COUNTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn revoke_app() -> (App, queue::broadcast::Subscription) {
    init_logs();
    let broker = Arc::new(MemoryBroker::new());
    let broadcast = (broker.clone() as Arc<dyn queue::Broker>)
        .broadcast()
        .unwrap();
    let events = broadcast
        .subscribe(queue::broadcast::Binding {
            exchange: queue::events::EVENT_EXCHANGE.into(),
            kind: queue::broadcast::ExchangeKind::Topic,
            routing_key: "task.#".into(),
            queue: "celeryev.revoke-test".into(),
        })
        .await
        .unwrap();
    let app = App::builder()
        .broker_instance(broker)
        .backend("memory://")
        .task(forever)
        .task(counted)
        .build()
        .await
        .unwrap();
    (app, events)
}

/// Waits for the `task-revoked` event of `id`; returns it.
async fn revoked_event(
    events: &mut queue::broadcast::Subscription,
    id: &str,
) -> queue::events::Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let message = events.next().await.expect("events flow");
            for event in queue::events::Event::decode(&message.body).unwrap() {
                let event = event.unwrap();
                if event.kind == "task-revoked" && event.uuid() == Some(id) {
                    return event;
                }
            }
        }
    })
    .await
    .expect("a task-revoked event")
}

#[tokio::test]
async fn a_revoked_delayed_task_never_runs_and_is_revoked() {
    let (app, mut events) = revoke_app().await;
    let worker = Worker::new(app.clone())
        .node_name(NODE)
        .task_events(true)
        .spawn();
    until_listening(&app).await;
    let delayed = queue::Signature::new("control.counted")
        .countdown(Duration::from_millis(500))
        .send(&app)
        .await
        .unwrap();
    app.control().revoke(delayed.id(), false).await.unwrap();
    // Requests are handled in order: this reply means the revoke was taken.
    let listed = control(&app).inspect().revoked().await.unwrap();
    assert_eq!(listed.get(NODE), Some(&json!([delayed.id()])));
    // Stored at once (it has not run), and discarded when it arrives.
    assert!(
        delayed.get(WAIT).await.is_err(),
        "a revoked task has no value"
    );
    assert_eq!(delayed.state().await.unwrap(), queue::TaskState::Revoked);
    let event = revoked_event(&mut events, delayed.id()).await;
    assert_eq!(event.field("terminated"), Some(&json!(false)));
    assert_eq!(COUNTED.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(worker.stats().revoked.get(), 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn revoke_with_terminate_stops_a_running_async_task() {
    let (app, mut events) = revoke_app().await;
    let worker = Worker::new(app.clone())
        .node_name(NODE)
        .task_events(true)
        .spawn();
    until_listening(&app).await;
    let running = forever::new().send(&app).await.unwrap();
    // Started: `active` lists it.
    tokio::time::timeout(WAIT, async {
        loop {
            let active = control(&app).inspect().active(true).await.unwrap();
            if active
                .get(NODE)
                .and_then(|tasks| tasks.as_array())
                .is_some_and(|tasks| !tasks.is_empty())
            {
                break;
            }
        }
    })
    .await
    .expect("the task starts");
    let mut arguments = Map::new();
    arguments.insert("task_id".into(), json!(running.id()));
    arguments.insert("terminate".into(), json!(true));
    let reply = control(&app).call("revoke", arguments).await.unwrap();
    assert_eq!(
        reply.get(NODE),
        Some(&json!({"ok": format!("terminate: {}", running.id())}))
    );
    let event = revoked_event(&mut events, running.id()).await;
    assert_eq!(event.field("terminated"), Some(&json!(true)));
    assert_eq!(event.field("signum"), Some(&json!(15)));
    assert_eq!(running.state().await.unwrap(), queue::TaskState::Revoked);
    // The slot is free again and nothing is left running.
    let active = control(&app).inspect().active(true).await.unwrap();
    assert_eq!(active.get(NODE), Some(&json!([])));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_and_time_limits_change_by_remote_control() {
    let app = app().await;
    let worker = Worker::new(app.clone()).node_name(NODE).spawn();
    until_listening(&app).await;
    let reply = control(&app)
        .rate_limit("control.add", "5/h")
        .await
        .unwrap();
    assert_eq!(
        reply.get(NODE),
        Some(&json!({"ok": "new rate limit set successfully"}))
    );
    let mut items = Map::new();
    items.insert("taskinfoitems".into(), json!(["rate_limit"]));
    let registered = control(&app).call("registered", items).await.unwrap();
    assert_eq!(
        registered.get(NODE),
        Some(&json!([
            "control.add [rate_limit=5/h]",
            "control.hold [rate_limit=10/m]"
        ]))
    );
    let unknown = control(&app)
        .rate_limit("no.such.task", "1/s")
        .await
        .unwrap();
    assert_eq!(unknown.get(NODE), Some(&json!({"error": "unknown task"})));
    let bad = control(&app)
        .rate_limit("control.add", "fast")
        .await
        .unwrap();
    assert!(bad.get(NODE).unwrap()["error"].is_string(), "{bad:?}");
    let off = control(&app).rate_limit("control.add", "0").await.unwrap();
    assert_eq!(
        off.get(NODE),
        Some(&json!({"ok": "rate limit disabled successfully"}))
    );

    // A hard limit set remotely stops a task that declares none.
    let mut limits = Map::new();
    limits.insert("task_name".into(), json!("control.forever"));
    limits.insert("hard".into(), json!(0.2));
    limits.insert("soft".into(), json!(null));
    let reply = control(&app)
        .call("time_limit", limits.clone())
        .await
        .unwrap();
    assert_eq!(reply.get(NODE), Some(&json!({"error": "unknown task"})));
    worker.shutdown().await.unwrap();

    let (app, _events) = revoke_app().await;
    let worker = Worker::new(app.clone()).node_name(NODE).spawn();
    until_listening(&app).await;
    let reply = control(&app).call("time_limit", limits).await.unwrap();
    assert_eq!(
        reply.get(NODE),
        Some(&json!({"ok": "time limits set successfully"}))
    );
    let stopped = forever::new().send(&app).await.unwrap();
    let error = stopped.get(WAIT).await.unwrap_err();
    assert!(error.to_string().contains("TimeLimitExceeded"), "{error}");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn revoked_ids_reach_a_starting_worker_and_survive_a_restart() {
    let app = app().await;
    let first = Worker::new(app.clone()).node_name(NODE).spawn();
    until_listening(&app).await;
    app.control().revoke("revoked-before", false).await.unwrap();
    let listed = control(&app).inspect().revoked().await.unwrap();
    assert_eq!(listed.get(NODE), Some(&json!(["revoked-before"])));

    // A worker that starts now asks the others (hello, Celery's mingle) and takes their ids.
    let other = "celery@control-test-other";
    let dir = std::env::temp_dir().join(format!("state-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("worker.state");
    let second = Worker::new(app.clone())
        .node_name(other)
        .state_file(&state)
        .spawn();
    until_node_listens(&app, other).await;
    let listed = app
        .control()
        .destination([other])
        .timeout(WAIT)
        .inspect()
        .revoked()
        .await
        .unwrap();
    assert_eq!(listed.get(other), Some(&json!(["revoked-before"])));
    first.shutdown().await.unwrap();
    app.control().revoke("revoked-later", false).await.unwrap();
    second.shutdown().await.unwrap();

    // Alone now, restarted on its state file: both ids are still revoked.
    let restarted = Worker::new(app.clone())
        .node_name(other)
        .state_file(&state)
        .spawn();
    until_node_listens(&app, other).await;
    let listed = app
        .control()
        .destination([other])
        .timeout(WAIT)
        .inspect()
        .revoked()
        .await
        .unwrap();
    assert_eq!(
        listed.get(other),
        Some(&json!(["revoked-before", "revoked-later"]))
    );
    restarted.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn pool_grow_shrink_and_autoscale_change_the_concurrency() {
    let app = app().await;
    let worker = Worker::new(app.clone())
        .node_name(NODE)
        .concurrency(3)
        .spawn();
    until_listening(&app).await;
    let concurrency = || async {
        let stats = control(&app).inspect().stats().await.unwrap();
        stats.get(NODE).unwrap()["pool"]["max-concurrency"].clone()
    };
    assert_eq!(
        reply(&app, "pool_grow", json!({"n": 2})).await,
        json!({"ok": "pool will grow"})
    );
    assert_eq!(concurrency().await, json!(5));
    assert_eq!(
        reply(&app, "pool_shrink", json!({"n": "10"})).await,
        json!({"ok": "pool will shrink"})
    );
    assert_eq!(concurrency().await, json!(1), "one slot always stays");
    assert_eq!(
        reply(&app, "autoscale", json!({"max": 4, "min": 2})).await,
        json!({"ok": "autoscale now max=4 min=2"})
    );
    assert_eq!(concurrency().await, json!(4));
    // Tasks still run at the new size.
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
    worker.shutdown().await.unwrap();
}
