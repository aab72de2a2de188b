//! The monitor as a person uses it, against a Rust worker on any broker: each scenario
//! starts its own monitor on the apps it is given.

use std::time::Duration;

use queue::{App, AppBuilder, Worker, WorkerHandle};
use serde_json::{Value, json};

use super::{Http, add, eventually, fail, quick_settings, sleep, start_monitor, unique};

/// A Rust worker with task events on `queue`, and an app for the monitor on the same
/// broker and backend.
pub struct Setup {
    pub worker: WorkerHandle,
    pub node: String,
    pub queue: String,
    pub monitor_app: App,
}

impl Setup {
    /// `builder` makes an app on the broker and backend under test (called twice: the
    /// worker's and the monitor's).
    pub async fn new(builder: impl Fn() -> AppBuilder) -> Self {
        let queue = unique("mq");
        let node = format!("celery@{}", unique("rust"));
        let worker_app = builder()
            .task(add)
            .task(fail)
            .task(sleep)
            .build()
            .await
            .expect("the worker's app");
        let worker = Worker::new(worker_app)
            .queues([queue.as_str()])
            .concurrency(4)
            .task_events(true)
            .heartbeat_interval(Duration::from_millis(500))
            .node_name(node.clone())
            .spawn();
        let monitor_app = builder().build().await.expect("the monitor's app");
        // Control requests sent before the worker listens are lost (they are transient):
        // wait until it answers a ping.
        let control = monitor_app
            .control()
            .timeout(Duration::from_millis(300))
            .destination([node.as_str()]);
        eventually("the worker answering control requests", || {
            let control = control.clone();
            async move {
                control
                    .ping()
                    .await
                    .ok()
                    .filter(|replies| !replies.is_empty())
            }
        })
        .await;
        Self {
            worker,
            node,
            queue,
            monitor_app,
        }
    }

    pub async fn stop(self) {
        self.worker.shutdown().await.expect("the worker stops");
    }
}

/// The task `id` as `/api/task/info` gives it, once its state is `state`.
pub async fn task_in_state(http: &Http, id: &str, state: &str) -> Value {
    eventually(&format!("task {id} in {state}"), || async {
        let answer = http
            .request("GET", &format!("/api/task/info/{id}"), &[], None)
            .await;
        (answer.status == 200)
            .then(|| answer.json())
            .filter(|task| task["state"] == state)
    })
    .await
}

/// Sent tasks show in Flower's task list and info with states, runtimes, results and the
/// worker; the dashboard's detail has the timeline; the worker is listed with what inspect
/// says; `/metrics` has Flower's names for them; the result endpoint reads the backend.
pub async fn tasks_workers_and_metrics(setup: &Setup) {
    let (monitor, http) =
        start_monitor(setup.monitor_app.clone(), None, &[], quick_settings()).await;
    let app = &setup.monitor_app;
    let sum = add::new(2, 3).queue(&setup.queue).send(app).await.unwrap();
    let failed = fail::new("boom".to_owned())
        .queue(&setup.queue)
        .send(app)
        .await
        .unwrap();

    let success = task_in_state(&http, sum.id(), "SUCCESS").await;
    assert_eq!(success["name"], "monitor.add");
    assert_eq!(success["worker"], setup.node.as_str());
    assert_eq!(success["result"], "5");
    assert!(
        success["runtime"]
            .as_f64()
            .is_some_and(|runtime| runtime >= 0.0),
        "{success}"
    );
    assert!(success["received"].is_number() && success["started"].is_number());
    assert!(success["succeeded"].is_number());
    let failure = task_in_state(&http, failed.id(), "FAILURE").await;
    assert!(
        failure["exception"].as_str().unwrap().contains("boom"),
        "{failure}"
    );

    // Flower's list, filtered as Flower filters, newest first.
    let listed = eventually("both tasks in /api/tasks", || async {
        let tasks = http
            .get(&format!("/api/tasks?workername={}", setup.node))
            .await;
        (tasks.as_object().unwrap().len() >= 2).then_some(tasks)
    })
    .await;
    assert_eq!(listed[sum.id()]["state"], "SUCCESS");
    assert_eq!(listed[failed.id()]["state"], "FAILURE");
    let failures = http.get("/api/tasks?state=FAILURE&limit=10").await;
    assert!(failures.get(failed.id()).is_some() && failures.get(sum.id()).is_none());
    let searched = http
        .get("/api/tasks?search=state:SUCCESS%20name:monitor.add")
        .await;
    assert!(searched.get(sum.id()).is_some() && searched.get(failed.id()).is_none());
    let bad = http.request("GET", "/api/tasks?search=ab", &[], None).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let types = http.get("/api/task/types").await;
    assert!(
        types["task-types"]
            .as_array()
            .unwrap()
            .contains(&json!("monitor.add"))
    );

    // The dashboard's search and detail.
    let found = http.get("/api/dashboard/tasks?q=boom").await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["tasks"][0]["uuid"], failed.id());
    let detail = http
        .get(&format!("/api/dashboard/tasks/{}", sum.id()))
        .await;
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["task-received", "task-started", "task-succeeded"],
        "{detail}"
    );
    assert!(detail["wait"].is_number());

    // The result backend, through Flower's endpoint.
    let result = http
        .get(&format!("/api/task/result/{}?timeout=5", sum.id()))
        .await;
    assert_eq!(
        result,
        json!({"task-id": sum.id(), "state": "SUCCESS", "result": 5})
    );

    // The worker, from its events and inspect.
    let workers = eventually("the worker's inspect answers", || async {
        let workers = http.get("/api/workers").await;
        workers
            .get(&setup.node)
            .filter(|worker| worker.get("registered").is_some() && worker.get("stats").is_some())
            .cloned()
    })
    .await;
    assert!(
        workers["registered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|name| name.as_str().unwrap().starts_with("monitor.add")),
        "{workers}"
    );
    let status = http.get("/api/workers?status=1").await;
    assert_eq!(status[&setup.node], true);
    let detail = http
        .get(&format!("/api/dashboard/workers/{}", setup.node))
        .await;
    assert_eq!(detail["online"], true);
    assert_eq!(detail["queues"], json!([setup.queue]));
    assert_eq!(detail["concurrency"], 4);

    let overview = http.get("/api/dashboard/overview").await;
    assert!(
        overview["task_types"]["monitor.add"]["runtime_p50"]
            .as_array()
            .unwrap()
            .iter()
            .any(Value::is_number),
        "{overview}"
    );
    assert!(overview["workers_online"].as_u64().unwrap() >= 1);

    let metrics = http.text("/metrics").await;
    for expected in [
        format!(
            "flower_events_total{{task=\"monitor.add\",type=\"task-succeeded\",worker=\"{}\"}} 1",
            setup.node
        ),
        format!(
            "flower_task_runtime_seconds_count{{task=\"monitor.add\",worker=\"{}\"}}",
            setup.node
        ),
        format!(
            "flower_task_prefetch_time_seconds{{task=\"monitor.add\",worker=\"{}\"}}",
            setup.node
        ),
        format!(
            "flower_worker_prefetched_tasks{{task=\"monitor.add\",worker=\"{}\"}} 0",
            setup.node
        ),
        format!("flower_worker_online{{worker=\"{}\"}} 1", setup.node),
        format!(
            "flower_worker_number_of_currently_executing_tasks{{worker=\"{}\"}}",
            setup.node
        ),
        format!(
            "queue_monitor_queue_length{{queue=\"{}\",priority=",
            setup.queue
        ),
        format!(
            "queue_monitor_queue_dead_letters{{queue=\"{}\"}}",
            setup.queue
        ),
        format!("queue_monitor_queue_delayed{{queue=\"{}\"}}", setup.queue),
    ] {
        assert!(metrics.contains(&expected), "{expected} not in\n{metrics}");
    }
    monitor.shutdown().await.unwrap();
}

/// A revoke with terminate sent through Flower's endpoint ends a running task: REVOKED.
pub async fn revoke_terminates_a_running_task(setup: &Setup) {
    let (monitor, http) =
        start_monitor(setup.monitor_app.clone(), None, &[], quick_settings()).await;
    let long = sleep::new(60.0)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    task_in_state(&http, long.id(), "STARTED").await;
    let refused = http
        .request(
            "POST",
            &format!("/api/task/revoke/{}?terminate=true", long.id()),
            &[],
            None,
        )
        .await;
    assert_eq!(
        refused.status, 403,
        "no CSRF token, no credentials: {}",
        refused.body
    );
    let answer = http
        .post(
            &format!("/api/task/revoke/{}?terminate=true", long.id()),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"message": format!("Revoked '{}'", long.id())})
    );
    let revoked = task_in_state(&http, long.id(), "REVOKED").await;
    assert!(revoked["succeeded"].is_null(), "{revoked}");
    monitor.shutdown().await.unwrap();
}

/// Messages waiting in a queue nobody consumes show in Flower's queue lengths, in the
/// dashboard's queues with a series and the backlog flag, and in the gauges.
pub async fn backlog_shows(setup: &Setup) {
    let waiting = unique("backlog");
    let mut settings = quick_settings();
    settings.backlog_threshold = 3;
    let (monitor, http) =
        start_monitor(setup.monitor_app.clone(), None, &[&waiting], settings).await;
    for index in 0..5 {
        add::new(index, 1)
            .queue(&waiting)
            .send(&setup.monitor_app)
            .await
            .unwrap();
    }
    let lengths = http.get("/api/queues/length").await;
    let entry = lengths["active_queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == waiting.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{waiting} not in {lengths}"));
    assert_eq!(entry["messages"], 5);
    let queue = eventually("the flagged backlog", || async {
        let queue = http.get(&format!("/api/dashboard/queues/{waiting}")).await;
        (queue["flagged"] == true).then_some(queue)
    })
    .await;
    assert_eq!(queue["messages"], 5);
    assert_eq!(queue["flags"], json!(["backlog"]));
    assert!(
        queue["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|point| point["messages"] == 5)
    );
    assert!(
        queue["oldest_age_seconds"]
            .as_f64()
            .is_some_and(|age| age >= 0.0),
        "{queue}"
    );
    let metrics = http.text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "queue_monitor_queue_messages{{queue=\"{waiting}\"}} 5"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "queue_monitor_queue_flagged{{queue=\"{waiting}\"}} 1"
    )));
    assert!(metrics.contains(&format!(
        "queue_monitor_queue_oldest_message_age_seconds{{queue=\"{waiting}\"}}"
    )));
    // Purged through the dashboard, the backlog goes.
    let purged = http
        .post(&format!("/api/dashboard/queues/{waiting}/purge"), None)
        .await;
    assert_eq!(purged.json(), json!({"queue": waiting, "affected": 5}));
    let queue = http.get(&format!("/api/dashboard/queues/{waiting}")).await;
    assert_eq!(
        (queue["messages"].clone(), queue["flagged"].clone()),
        (json!(0), json!(false))
    );
    monitor.shutdown().await.unwrap();
}
