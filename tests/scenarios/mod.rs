//! End-to-end scenarios through the facade that every broker and backend must pass, with
//! only the public API. A test file per setup expands them with [`e2e_scenarios!`]:
//!
//! ```text
//! mod scenarios;
//! scenarios::e2e_scenarios!(scenarios::Urls::new("memory://", Some("memory://")));
//! ```
//!
//! Every scenario uses queues of its own (random names), so scenarios run concurrently on one
//! server.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use queue::{App, ResultError, Signature, TaskContext, TaskError, TaskState, Worker, task};

mod canvas;
mod steering;
pub use canvas::{
    chains_pass_each_result_on, chords_join_their_header, failures_stop_a_chain_and_fail_a_chord,
    groups_return_every_result_in_order, map_starmap_and_chunks,
    ten_thousand_in_a_group_and_in_a_chord, typed_canvas_retried_parts_and_revoked_groups,
};
pub use steering::consumers_added_and_cancelled_by_remote_control;

/// Long enough that a passing scenario never waits for it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where a scenario's app connects.
#[derive(Clone, Debug)]
pub struct Urls {
    /// Broker URL.
    pub broker: String,
    /// Result backend URL (every scenario reads results, so one is needed).
    pub backend: String,
}

impl Urls {
    pub fn new(broker: impl Into<String>, backend: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            backend: backend.into(),
        }
    }

    /// URLs from environment variables set by `cargo xtask test`. When one is missing the
    /// scenario is skipped — except under CI (`CI=true` or `CI=1`), where that is a failure
    /// ([`queue_core::conformance::server_url`]).
    pub fn from_env(broker_variable: &str, backend_variable: &str) -> Option<Self> {
        let broker = queue_core::conformance::server_url(broker_variable)?;
        let backend = queue_core::conformance::server_url(backend_variable)?;
        Some(Self::new(broker, backend))
    }

    /// A fixed broker URL and the backend URL from an environment variable, skipped or
    /// failing like [`Urls::from_env`] when it is missing.
    pub fn backend_from_env(broker: &str, backend_variable: &str) -> Option<Self> {
        let backend = queue_core::conformance::server_url(backend_variable)?;
        Some(Self::new(broker, backend))
    }

    /// The broker URL from an environment variable and a fixed backend URL (e.g.
    /// `memory://`, which works because every scenario uses one app for producer and
    /// worker), skipped or failing like [`Urls::from_env`] when the variable is missing.
    pub fn from_env_with_backend(broker_variable: &str, backend: &str) -> Option<Self> {
        let broker = queue_core::conformance::server_url(broker_variable)?;
        Some(Self::new(broker, backend))
    }
}

/// A queue name no other scenario uses.
pub fn unique_queue(label: &str) -> String {
    format!("e2e.{label}.{}", uuid_like())
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

#[task(name = "e2e.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "e2e.describe")]
async fn describe(name: String, count: u32, tags: Option<Vec<String>>) -> String {
    format!("{name}:{count}:{}", tags.unwrap_or_default().join(","))
}

#[task(name = "e2e.record")]
async fn record(context: TaskContext, label: String) -> String {
    let order = context.state::<Order>().expect("order state");
    order.0.lock().unwrap().push(label.clone());
    label
}

#[derive(Default)]
struct Order(std::sync::Mutex<Vec<String>>);

#[task(name = "e2e.flaky", max_retries = 5, retry_delay = 0.01)]
async fn flaky(context: TaskContext, failures: u32) -> Result<u32, TaskError> {
    if context.retries() < failures {
        return Err(TaskError::new("ConnectionError", "not yet").into_retry());
    }
    Ok(context.retries())
}

#[task(name = "e2e.fail")]
async fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", message))
}

#[task(name = "e2e.panic")]
fn panics() -> u32 {
    panic!("task exploded")
}

#[task(name = "e2e.hold")]
async fn hold(context: TaskContext) -> String {
    let gate = context.state::<Gate>().expect("gate state");
    gate.started.fetch_add(1, Ordering::SeqCst);
    gate.started_signal.notify_one();
    gate.release.acquire().await.unwrap().forget();
    context.id().to_owned()
}

pub(crate) struct Gate {
    started: AtomicUsize,
    started_signal: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            started: AtomicUsize::new(0),
            started_signal: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

/// The app of one scenario: all scenario tasks, `queue` as the default queue.
pub async fn app(urls: &Urls, queue: &str) -> App {
    App::builder()
        .broker(urls.broker.clone())
        .backend(urls.backend.clone())
        .default_queue(queue)
        .task(add)
        .task(describe)
        .task(record)
        .task(flaky)
        .task(fail)
        .task(panics)
        .task(hold)
        .task(canvas::mul)
        .task(canvas::xsum)
        .state(Order::default())
        .state(Gate::default())
        .build()
        .await
        .expect("app connects")
}

pub async fn round_trip_typed_and_by_id(urls: Urls) {
    let queue = unique_queue("round_trip");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let result = add::new(40, 2).send(&app).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 42);
    assert_eq!(app.result::<i64>(result.id()).get(WAIT).await.unwrap(), 42);
    assert_eq!(
        add::result(&app, result.id()).state().await.unwrap(),
        TaskState::Success
    );
    let by_name = Signature::new("e2e.describe")
        .arg("box")
        .kwarg("count", 3)
        .kwarg("tags", ["a", "b"])
        .send(&app)
        .await
        .unwrap();
    assert_eq!(
        by_name.get(WAIT).await.unwrap(),
        serde_json::json!("box:3:a,b")
    );
    worker.shutdown().await.unwrap();
}

pub async fn priorities_within_a_queue(urls: Urls) {
    let queue = unique_queue("priorities");
    let app = app(&urls, &queue).await;
    let calls = [0u8, 9, 4, 9, 1]
        .iter()
        .map(|priority| {
            record::new(format!("p{priority}"))
                .priority(*priority)
                .into()
        })
        .collect::<Vec<Signature>>();
    let results = app.send_many(calls).await.unwrap();
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(1)
        .spawn();
    for result in results {
        result.get(WAIT).await.unwrap();
    }
    worker.shutdown().await.unwrap();
    let order = app.state::<Order>().unwrap().0.lock().unwrap().clone();
    assert_eq!(order, ["p9", "p9", "p4", "p1", "p0"]);
}

pub async fn strict_order_between_queues(urls: Urls) {
    let high = unique_queue("high");
    let low = unique_queue("low");
    let app = app(&urls, &low).await;
    let mut calls: Vec<Signature> = Vec::new();
    for index in 0..3 {
        calls.push(
            record::new(format!("low{index}"))
                .queue(low.as_str())
                .priority(9)
                .into(),
        );
        calls.push(
            record::new(format!("high{index}"))
                .queue(high.as_str())
                .into(),
        );
    }
    let results = app.send_many(calls).await.unwrap();
    let worker = Worker::new(app.clone())
        .queues([high.as_str(), low.as_str()])
        .concurrency(1)
        .spawn();
    for result in results {
        result.get(WAIT).await.unwrap();
    }
    worker.shutdown().await.unwrap();
    let order = app.state::<Order>().unwrap().0.lock().unwrap().clone();
    assert_eq!(order, ["high0", "high1", "high2", "low0", "low1", "low2"]);
}

pub async fn retries_then_success(urls: Urls) {
    let queue = unique_queue("retries");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let result = flaky::new(2).send(&app).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 2);
    worker.shutdown().await.unwrap();
}

pub async fn failures_are_stored_with_type_and_message(urls: Urls) {
    let queue = unique_queue("failures");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let failed = fail::new("bad input".into()).send(&app).await.unwrap();
    let panicked = panics::new().send(&app).await.unwrap();
    let after = add::new(1, 1).send(&app).await.unwrap();
    match failed.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(
                (error.exc_type(), error.message()),
                ("ValueError", "bad input")
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(
        panicked.get(WAIT).await,
        Err(ResultError::Failed { .. })
    ));
    assert_eq!(
        after.get(WAIT).await.unwrap(),
        2,
        "the worker goes on after a panic"
    );
    worker.shutdown().await.unwrap();
}

pub async fn unknown_tasks_are_dead_lettered_and_fail(urls: Urls) {
    let queue = unique_queue("unknown");
    let app = app(&urls, &queue).await;
    let unknown = Signature::new("e2e.nobody").send(&app).await.unwrap();
    let known = add::new(2, 2).send(&app).await.unwrap();
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(1)
        .spawn();
    assert_eq!(known.get(WAIT).await.unwrap(), 4);
    match unknown.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert_eq!(error.exc_type(), "NotRegistered"),
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    worker.shutdown().await.unwrap();
    let dead = app.broker().dead_letters(&queue, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("e2e.nobody"), "{}", dead[0].reason);
}

pub async fn expired_tasks_are_revoked(urls: Urls) {
    let queue = unique_queue("expired");
    let app = app(&urls, &queue).await;
    let expired = add::new(1, 1)
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
        .send(&app)
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    assert!(matches!(
        expired.get(WAIT).await,
        Err(ResultError::Revoked { .. })
    ));
    assert_eq!(expired.state().await.unwrap(), TaskState::Revoked);
    worker.shutdown().await.unwrap();
}

pub async fn countdown_runs_after_its_eta(urls: Urls) {
    let queue = unique_queue("countdown");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let sent = chrono::Utc::now();
    let result = add::new(3, 4)
        .countdown(Duration::from_millis(500))
        .send(&app)
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 7);
    let done = result.meta().await.unwrap().unwrap().date_done.unwrap();
    assert!(done.signed_duration_since(sent) >= chrono::Duration::milliseconds(500));
    worker.shutdown().await.unwrap();
}

pub async fn cold_shutdown_gives_unfinished_tasks_to_the_next_worker(urls: Urls) {
    let queue = unique_queue("cold");
    let app = app(&urls, &queue).await;
    let result = hold::new().send(&app).await.unwrap();
    let gate = app.state::<Gate>().unwrap();
    let first = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    gate.started_signal.notified().await;
    first.shutdown_now().await.unwrap();
    assert_eq!(result.state().await.unwrap(), TaskState::Pending);

    let second = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    gate.started_signal.notified().await;
    gate.release.add_permits(1);
    assert_eq!(result.get(WAIT).await.unwrap(), result.id());
    assert_eq!(gate.started.load(Ordering::SeqCst), 2);
    second.shutdown().await.unwrap();
}

pub async fn many_tasks_two_workers_every_result_once(urls: Urls) {
    let queue = unique_queue("many");
    let app = app(&urls, &queue).await;
    let count = 500;
    let results = app
        .send_many((0..count).map(|index| add::new(index, 1).into()))
        .await
        .unwrap();
    let first = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(8)
        .spawn();
    let second = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(8)
        .spawn();
    for (index, result) in results.into_iter().enumerate() {
        let value: i64 = result.typed().get(WAIT).await.unwrap();
        assert_eq!(value, index as i64 + 1);
    }
    let ran = first.stats().succeeded.get() + second.stats().succeeded.get();
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    assert_eq!(ran, count as u64, "every task ran exactly once");
}

/// Expands to one `#[tokio::test]` per scenario, for the setup `$urls` (an
/// `Option<Urls>`: `None` skips).
#[macro_export]
macro_rules! e2e_scenarios {
    ($urls:expr) => {
        $crate::e2e_scenarios!(@tests $urls;
            round_trip_typed_and_by_id,
            priorities_within_a_queue,
            strict_order_between_queues,
            retries_then_success,
            failures_are_stored_with_type_and_message,
            unknown_tasks_are_dead_lettered_and_fail,
            expired_tasks_are_revoked,
            countdown_runs_after_its_eta,
            cold_shutdown_gives_unfinished_tasks_to_the_next_worker,
            many_tasks_two_workers_every_result_once,
            consumers_added_and_cancelled_by_remote_control,
            chains_pass_each_result_on,
            groups_return_every_result_in_order,
            chords_join_their_header,
            failures_stop_a_chain_and_fail_a_chord,
            typed_canvas_retried_parts_and_revoked_groups,
            ten_thousand_in_a_group_and_in_a_chord,
            map_starmap_and_chunks,
        );
    };
    (@tests $urls:expr; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let urls: Option<scenarios::Urls> = $urls;
                if let Some(urls) = urls {
                    scenarios::$name(urls).await;
                }
            }
        )*
    };
}
pub use e2e_scenarios;
