//! Our worker under the real Flower 2.2 (from the venv `cargo xtask python-venv` prepares), on
//! Redis and on RabbitMQ: Flower, started as a child process, lists the Rust worker with its
//! stats, registered tasks and queues; shows the tasks it ran (a success, a failure) with
//! their states and runtimes; revokes a running task with terminate; sets a task's rate
//! limit on it; and counts its tasks in its Prometheus metrics.
#![cfg(all(feature = "redis", feature = "amqp"))]

mod interop {
    pub mod python;
    pub mod tasks;
}

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop::python;
use interop::tasks::{self, add, fail};
use queue::{App, TaskState, Worker, task};
use serde_json::{Map, Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Runs until revoked: what Flower's revoke with terminate has to end.
#[task(name = "flower.forever")]
async fn forever() {
    std::future::pending::<()>().await
}

/// The real Flower, `celery -A tasks flower` run from `examples/python` (so that the task
/// names Flower's rate-limit endpoint checks are known to its app); killed on drop.
struct Flower {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
}

impl Flower {
    fn start(python: &Path, broker: &str, backend: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(python)
            .args(["-m", "celery", "-A", "tasks"])
            .arg(format!("--broker={broker}"))
            .args(["flower", "--address=127.0.0.1", "--persistent=False"])
            .arg(format!("--port={port}"))
            .current_dir(python::tasks_dir())
            .env("CELERY_BROKER_URL", broker)
            .env("CELERY_RESULT_BACKEND", backend)
            // Flower 2.2 answers its API without authentication only when told to.
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start Flower");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut flower = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            agent,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = flower.child.try_wait() {
                panic!("Flower exited ({status}):\n{}", flower.log());
            }
            if flower
                .agent
                .get(format!("{}/healthcheck", flower.base))
                .call()
                .is_ok_and(|response| response.status() == 200)
            {
                return flower;
            }
            assert!(
                Instant::now() < deadline,
                "Flower does not answer on {}:\n{}",
                flower.base,
                flower.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `GET path`: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", self.log()));
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), body)
    }

    /// `GET path`, a JSON answer with status 200.
    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
    }

    /// `GET path`: a JSON answer, or null for a 404 (a task Flower has no event of yet).
    fn get_json_if_known(&self, path: &str) -> Value {
        match self.get(path) {
            (404, _) => Value::Null,
            (200, body) => serde_json::from_str(&body)
                .unwrap_or_else(|error| panic!("GET {path}: {error}: {body}")),
            (status, body) => panic!("GET {path}: {status} {body}\n{}", self.log()),
        }
    }

    /// `POST path` with a form: the status and the body.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_form(form.iter().copied())
            .unwrap_or_else(|error| panic!("POST {path}: {error}\n{}", self.log()));
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), body)
    }
}

impl Drop for Flower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs blocking HTTP off the runtime's threads.
async fn http<T: Send + 'static>(
    flower: &Arc<Flower>,
    call: impl FnOnce(&Flower) -> T + Send + 'static,
) -> T {
    let flower = flower.clone();
    tokio::task::spawn_blocking(move || call(&flower))
        .await
        .unwrap()
}

/// Asks `what` of Flower until `done` says yes of its answer, within `WAIT`; the last answer.
async fn until(
    flower: &Arc<Flower>,
    what: &str,
    ask: impl Fn(&Flower) -> Value + Send + Sync + Clone + 'static,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = http(flower, ask.clone()).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {answer:#}\n{}",
            flower.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Setup {
    python: PathBuf,
    broker: String,
    backend: String,
}

fn setup(broker_variable: &str) -> Option<Setup> {
    let python = python::python()?;
    let broker = queue_core::conformance::server_url(broker_variable)?;
    let backend = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL")?;
    let flower = Command::new(&python)
        .args(["-c", "import flower; print(flower.__version__)"])
        .output();
    let missing = match flower {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned(),
        ),
        Err(error) => Some(error.to_string()),
    };
    if let Some(why) = missing {
        queue_core::conformance::skip_or_fail(format!(
            "Flower does not import in {} ({why}; `cargo xtask python-venv` installs it)",
            python.display()
        ));
        return None;
    }
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

async fn under_flower(setup: Setup) {
    let id = uuid_hex();
    let queue = format!("flower.{id}");
    let node = format!("celery@rust-flower-{id}");
    let app = tasks::register(App::builder())
        .task(forever)
        .broker(setup.broker.clone())
        .backend(setup.backend.clone())
        .default_queue(&queue)
        .build()
        .await
        .expect("connect");
    let worker = Worker::new(app.clone())
        .node_name(&node)
        .queues([queue.as_str()])
        .concurrency(3)
        .task_events(true)
        .heartbeat_interval(Duration::from_millis(500))
        .spawn();
    let flower = {
        let (python, broker, backend) = (
            setup.python.clone(),
            setup.broker.clone(),
            setup.backend.clone(),
        );
        Arc::new(
            tokio::task::spawn_blocking(move || Flower::start(&python, &broker, &backend))
                .await
                .unwrap(),
        )
    };

    // 1. Flower's events see our worker alive (its receiver is live from then on), and its
    // inspector reads our stats, registered tasks and queues.
    let status_node = node.clone();
    until(
        &flower,
        "our worker alive in Flower's events",
        |flower| flower.get_json("/api/workers?status=1"),
        move |status| status[&status_node] == json!(true),
    )
    .await;
    let path = format!("/api/workers?refresh=1&workername={node}");
    let workers = until(
        &flower,
        "our worker in /api/workers",
        move |flower| flower.get_json(&path),
        |workers| {
            let ours = workers.as_object().and_then(|map| map.values().next());
            ours.is_some_and(|ours| {
                ["stats", "registered", "active_queues", "conf"]
                    .iter()
                    .all(|method| ours.get(method).is_some_and(|reply| !reply.is_null()))
            })
        },
    )
    .await;
    let ours = &workers[&node];
    assert_eq!(
        ours["stats"]["pool"]["max-concurrency"],
        json!(3),
        "{ours:#}"
    );
    assert_eq!(ours["stats"]["pid"], json!(std::process::id()), "{ours:#}");
    let registered = ours["registered"].as_array().expect("registered");
    for name in ["tasks.add", "tasks.fail", "flower.forever"] {
        assert!(registered.contains(&json!(name)), "{registered:?}");
    }
    let queues: Vec<&str> = ours["active_queues"]
        .as_array()
        .expect("active_queues")
        .iter()
        .filter_map(|queue| queue["name"].as_str())
        .collect();
    assert_eq!(queues, vec![queue.as_str()], "{ours:#}");
    // The list of all workers (no workername) has us too.
    let all = http(&flower, |flower| flower.get_json("/api/workers?refresh=1")).await;
    assert!(all.get(&node).is_some(), "{all:#}");

    // 2. A success and a failure: Flower shows both, with states and runtimes.
    let succeeded = add::new(2, 3).send(&app).await.unwrap();
    let failed = fail::new("on purpose".to_owned()).send(&app).await.unwrap();
    assert_eq!(succeeded.get(WAIT).await.unwrap(), 5);
    assert!(failed.get(WAIT).await.is_err());
    let (ok_id, failed_id) = (succeeded.id().to_owned(), failed.id().to_owned());
    let path = format!("/api/tasks?workername={node}");
    let listed = until(
        &flower,
        "both tasks done in /api/tasks",
        move |flower| flower.get_json(&path),
        |tasks| {
            tasks[&ok_id]["state"] == json!("SUCCESS")
                && tasks[&failed_id]["state"] == json!("FAILURE")
        },
    )
    .await;
    let ok = &listed[succeeded.id()];
    assert_eq!(ok["name"], json!("tasks.add"), "{ok:#}");
    assert_eq!(ok["worker"], json!(node), "{ok:#}");
    assert_eq!(ok["result"], json!("5"), "{ok:#}");
    assert!(ok["runtime"].as_f64().is_some_and(|r| r >= 0.0), "{ok:#}");
    assert!(
        ok["received"].is_number() && ok["started"].is_number(),
        "{ok:#}"
    );
    let bad = &listed[failed.id()];
    assert_eq!(bad["name"], json!("tasks.fail"), "{bad:#}");
    assert_eq!(bad["worker"], json!(node), "{bad:#}");
    assert!(
        bad["exception"]
            .as_str()
            .is_some_and(|e| e.contains("ValueError") && e.contains("on purpose")),
        "{bad:#}"
    );
    let info = {
        let path = format!("/api/task/info/{}", succeeded.id());
        http(&flower, move |flower| flower.get_json(&path)).await
    };
    assert_eq!(info["state"], json!("SUCCESS"), "{info:#}");
    assert_eq!(info["args"], json!("(2, 3)"), "{info:#}");

    // 3. Revoke with terminate through Flower: the running task ends REVOKED.
    let running = forever::new().send(&app).await.unwrap();
    let path = format!("/api/task/info/{}", running.id());
    until(
        &flower,
        "the long task started in Flower",
        move |flower| flower.get_json_if_known(&path),
        |info| info["state"] == json!("STARTED"),
    )
    .await;
    let (status, body) = {
        let path = format!("/api/task/revoke/{}?terminate=true", running.id());
        http(&flower, move |flower| flower.post(&path, &[])).await
    };
    assert_eq!(status, 200, "revoke: {body}");
    let deadline = Instant::now() + WAIT;
    loop {
        let state = running.state().await.unwrap();
        if state == TaskState::Revoked {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked task is {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/api/task/info/{}", running.id());
    let revoked = until(
        &flower,
        "the long task revoked in Flower",
        move |flower| flower.get_json(&path),
        |info| info["state"] == json!("REVOKED"),
    )
    .await;
    assert!(revoked["revoked"].is_number(), "{revoked:#}");
    // Terminated, not only flagged: it no longer runs on our worker.
    let active = app
        .control()
        .destination([node.as_str()])
        .timeout(WAIT)
        .inspect()
        .active(false)
        .await
        .unwrap();
    assert_eq!(active.get(&node), Some(&json!([])), "{active:?}");
    let revoked_list = until(
        &flower,
        "the revoked id in our worker's `revoked`",
        {
            let path = format!("/api/workers?refresh=1&workername={node}");
            move |flower| flower.get_json(&path)
        },
        |workers| {
            workers
                .as_object()
                .and_then(|map| map.values().next())
                .is_some_and(|ours| ours["revoked"].is_array())
        },
    )
    .await;
    let revoked_ids = revoked_list[&node]["revoked"].as_array().unwrap();
    assert!(
        revoked_ids.contains(&json!(running.id())),
        "{revoked_ids:?}"
    );

    // 4. Flower's rate limit reaches our worker.
    let (status, body) = {
        let node = node.clone();
        http(&flower, move |flower| {
            flower.post(
                "/api/task/rate-limit/tasks.add",
                &[("workername", &node), ("ratelimit", "10/m")],
            )
        })
        .await
    };
    assert_eq!(status, 200, "rate-limit: {body}");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert!(
        message["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit")),
        "{message}"
    );
    let mut arguments = Map::new();
    arguments.insert("taskinfoitems".into(), json!(["rate_limit"]));
    let registered = app
        .control()
        .destination([node.as_str()])
        .timeout(WAIT)
        .call("registered", arguments)
        .await
        .unwrap();
    assert!(
        registered
            .get(&node)
            .and_then(Value::as_array)
            .is_some_and(|names| names.contains(&json!("tasks.add [rate_limit=10/m]"))),
        "{registered:?}"
    );

    // 5. Prometheus metrics count our tasks.
    let node_label = format!("worker=\"{node}\"");
    let metrics = {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = http(&flower, |flower| flower.get("/metrics")).await;
            assert_eq!(status, 200, "{body}");
            let ours = |metric: &str, kind: &str, task: &str| {
                body.lines().any(|line| {
                    line.starts_with(metric)
                        && line.contains(&node_label)
                        && line.contains(kind)
                        && line.contains(&format!("task=\"{task}\""))
                })
            };
            if ours(
                "flower_events_total{",
                "type=\"task-succeeded\"",
                "tasks.add",
            ) && ours("flower_events_total{", "type=\"task-failed\"", "tasks.fail")
                && ours(
                    "flower_events_total{",
                    "type=\"task-revoked\"",
                    "flower.forever",
                )
                && ours("flower_task_runtime_seconds_count{", "", "tasks.add")
            {
                break body;
            }
            assert!(Instant::now() < deadline, "our tasks in /metrics:\n{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let online = format!("flower_worker_online{{{node_label}}} 1.0");
    assert!(metrics.lines().any(|line| line == online), "{metrics}");

    tokio::time::timeout(WAIT, worker.shutdown())
        .await
        .expect("the worker stops")
        .unwrap();
    drop(flower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_worker_under_flower() {
    if let Some(setup) = setup("QUEUE_TEST_REDIS_URL") {
        under_flower(setup).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_worker_under_flower() {
    if let Some(setup) = setup("QUEUE_TEST_AMQP_URL") {
        under_flower(setup).await;
    }
}
