//! The path of a task through the facade on `memory://`: declare, send, route, consume in
//! order, run, store, read back by id.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Memory, WAIT, init_logs};
use queue::{App, AsyncResult, Signature, TaskContext, TaskState, Worker, task};
use tokio::sync::mpsc;

#[task(name = "flow.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "flow.greet")]
async fn greet(name: String, punctuation: Option<String>) -> String {
    format!("hello {name}{}", punctuation.unwrap_or_default())
}

#[tokio::test]
async fn a_sent_task_runs_and_its_typed_result_is_read_back_by_id() {
    init_logs();
    let app = App::builder()
        .backend("memory://")
        .task(add)
        .task(greet)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();

    let sum = add::new(2, 3).send(&app).await.unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 5);
    assert_eq!(sum.state().await.unwrap(), TaskState::Success);

    // By id, from the app (typed and untyped) and from the task.
    let by_app: AsyncResult<i64> = app.result(sum.id());
    assert_eq!(by_app.get(WAIT).await.unwrap(), 5);
    let untyped: AsyncResult = app.result(sum.id());
    assert_eq!(untyped.get(WAIT).await.unwrap(), serde_json::json!(5));
    assert_eq!(add::result(&app, sum.id()).get(WAIT).await.unwrap(), 5);

    // Keyword arguments, as a Python caller may send them; an omitted Option parameter.
    let by_name = Signature::new("flow.greet")
        .kwarg("name", "ada")
        .kwarg("punctuation", "!")
        .send(&app)
        .await
        .unwrap();
    assert_eq!(
        by_name.get(WAIT).await.unwrap(),
        serde_json::json!("hello ada!")
    );
    let omitted = greet::new("bob".into(), None).send(&app).await.unwrap();
    assert_eq!(omitted.get(WAIT).await.unwrap(), "hello bob");

    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_result_is_pending_and_get_times_out() {
    let app = App::builder().backend("memory://").build().await.unwrap();
    let result: AsyncResult<i64> = app.result("no-such-task");
    assert_eq!(result.state().await.unwrap(), TaskState::Pending);
    let error = result.get(Duration::from_millis(20)).await.unwrap_err();
    assert!(
        matches!(error, queue::ResultError::Timeout { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn without_a_backend_results_are_not_stored_and_get_says_so() {
    let app = App::builder().task(add).build().await.unwrap();
    let result = add::new(1, 1).send(&app).await.unwrap();
    assert!(matches!(
        result.get(Duration::from_millis(10)).await,
        Err(queue::ResultError::NoBackend)
    ));
}

#[task(name = "reports.daily", queue = "reports")]
async fn daily_report() {}

#[task(name = "mail.send", queue = "mail")]
async fn send_mail() {}

#[tokio::test]
async fn routing_explicit_then_globs_then_task_queue_then_default() {
    let app = App::builder()
        .route("mail.*", "outbox")
        .task(daily_report)
        .task(send_mail)
        .task(add)
        .build()
        .await
        .unwrap();
    daily_report::new().send(&app).await.unwrap();
    send_mail::new().send(&app).await.unwrap();
    add::new(1, 2).send(&app).await.unwrap();
    add::new(1, 2).queue("elsewhere").send(&app).await.unwrap();
    Signature::new("unregistered.task")
        .send(&app)
        .await
        .unwrap();
    let broker = app.broker();
    assert_eq!(
        broker.queue_length("reports").await.unwrap().total,
        1,
        "task's own queue"
    );
    assert_eq!(
        broker.queue_length("outbox").await.unwrap().total,
        1,
        "route wins over task queue"
    );
    assert_eq!(broker.queue_length("mail").await.unwrap().total, 0);
    assert_eq!(
        broker.queue_length("elsewhere").await.unwrap().total,
        1,
        "explicit queue"
    );
    assert_eq!(
        broker.queue_length("celery").await.unwrap().total,
        2,
        "default queue"
    );
}

type Log = Arc<Mutex<Vec<String>>>;

#[task(name = "flow.record")]
async fn record(context: TaskContext, label: String) {
    context
        .state::<Log>()
        .expect("log registered")
        .lock()
        .unwrap()
        .push(label);
}

/// Runs the worker until every result is ready (waiting on the results, not on time).
async fn run_until_done(worker: Worker, results: Vec<AsyncResult>) {
    let handle = worker.spawn();
    for result in results {
        result.get(WAIT).await.unwrap();
    }
    handle.shutdown().await.unwrap();
}

async fn recording_app(log: &Log) -> App {
    App::builder()
        .backend("memory://")
        .task(record)
        .state(log.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn higher_priority_runs_first_within_a_queue() {
    let log: Log = Default::default();
    let app = recording_app(&log).await;
    let mut results = Vec::new();
    for priority in [0u8, 9, 3, 9, 5] {
        let sent = record::new(format!("p{priority}"))
            .priority(priority)
            .send(&app)
            .await;
        results.push(sent.unwrap().untyped());
    }
    run_until_done(Worker::new(app.clone()).concurrency(1), results).await;
    assert_eq!(*log.lock().unwrap(), ["p9", "p9", "p5", "p3", "p0"]);
}

#[tokio::test]
async fn strict_queue_order_serves_the_first_queue_first() {
    let log: Log = Default::default();
    let app = recording_app(&log).await;
    let mut calls = Vec::new();
    for index in 0..3 {
        calls.push(
            record::new(format!("low{index}"))
                .queue("low")
                .priority(9)
                .into(),
        );
        calls.push(
            record::new(format!("high{index}"))
                .queue("high")
                .priority(0)
                .into(),
        );
    }
    let results = app.send_many(calls).await.unwrap();
    let worker = Worker::new(app.clone())
        .queues(["high", "low"])
        .concurrency(1);
    run_until_done(worker, results).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["high0", "high1", "high2", "low0", "low1", "low2"]
    );
}

#[tokio::test]
async fn weighted_queue_order_serves_every_queue() {
    let log: Log = Default::default();
    let app = recording_app(&log).await;
    let mut calls = Vec::new();
    for index in 0..200 {
        calls.push(record::new("heavy".into()).queue("heavy").into());
        calls.push(record::new(format!("light{index}")).queue("light").into());
    }
    let results = app.send_many(calls).await.unwrap();
    let worker = Worker::new(app.clone())
        .weighted_queues([("heavy", 3), ("light", 1)])
        .concurrency(1);
    run_until_done(worker, results).await;
    let order = log.lock().unwrap().clone();
    let first_half = &order[..200];
    let heavy = first_half.iter().filter(|label| *label == "heavy").count();
    assert!(
        (110..=190).contains(&heavy),
        "with weights 3:1 the heavy queue should take about 3/4 of the first 200 runs, took {heavy}"
    );
    assert!(
        first_half.iter().any(|label| label.starts_with("light")),
        "light queue starved"
    );
}

#[task(name = "flow.gate")]
async fn gate(context: TaskContext, index: usize) -> usize {
    let probe = context.state::<Probe>().unwrap();
    let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
    probe.max_running.fetch_max(now, Ordering::SeqCst);
    probe.started.send(index).unwrap();
    probe.release.acquire().await.unwrap().forget();
    probe.running.fetch_sub(1, Ordering::SeqCst);
    index
}

struct Probe {
    running: AtomicUsize,
    max_running: AtomicUsize,
    started: mpsc::UnboundedSender<usize>,
    release: tokio::sync::Semaphore,
}

#[tokio::test]
async fn concurrency_limits_running_tasks_and_prefetch_takes_only_what_can_start() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let memory = Memory::new();
    let app = memory
        .builder()
        .task(gate)
        .state(Probe {
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            started: started_tx,
            release: tokio::sync::Semaphore::new(0),
        })
        .build()
        .await
        .unwrap();
    let results = app
        .send_many((0..10).map(|index| gate::new(index).into()))
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(3).spawn();

    for _ in 0..3 {
        tokio::time::timeout(WAIT, started.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // Three run; the other seven are still in the broker, not held by the worker.
    assert_eq!(app.broker().queue_length("celery").await.unwrap().total, 7);
    assert_eq!(worker.stats().received.get(), 3);

    let probe = app.state::<Probe>().unwrap();
    for _ in 3..10 {
        probe.release.add_permits(1);
        tokio::time::timeout(WAIT, started.recv())
            .await
            .unwrap()
            .unwrap();
    }
    probe.release.add_permits(3);
    for (index, result) in results.into_iter().enumerate() {
        let value: usize = result.typed().get(WAIT).await.unwrap();
        assert_eq!(value, index);
    }
    assert_eq!(probe.max_running.load(Ordering::SeqCst), 3);
    worker.shutdown().await.unwrap();
}

#[task(name = "flow.fail")]
async fn fail_always() -> Result<(), queue::TaskError> {
    Err(queue::TaskError::new("ValueError", "always"))
}

#[tokio::test]
async fn link_and_link_error_apply_callbacks_with_the_result_or_the_task_id() {
    let log: Log = Default::default();
    let app = App::builder()
        .backend("memory://")
        .task(add)
        .task(record)
        .task(fail_always)
        .state(log.clone())
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    // The callback gets the result prepended to its own args: record(5) would not type-check
    // as a String, so link an untyped call of add with one argument: add(5, 10).
    let callback_id = "callback-of-add".to_owned();
    let sum = add::new(2, 3)
        .link(
            Signature::new("flow.add")
                .arg(10)
                .task_id(callback_id.clone()),
        )
        .send(&app)
        .await
        .unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 5);
    assert_eq!(app.result::<i64>(callback_id).get(WAIT).await.unwrap(), 15);

    let errback_id = "errback-of-fail".to_owned();
    let failed = fail_always::new()
        .link_error(Signature::new("flow.record").task_id(errback_id.clone()))
        .send(&app)
        .await
        .unwrap();
    assert!(failed.get(WAIT).await.is_err());
    // The errback is applied with the failed task's id as its first argument.
    app.result::<()>(errback_id).get(WAIT).await.unwrap();
    assert_eq!(*log.lock().unwrap(), [failed.id().to_owned()]);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn from_env_reads_queue_and_celery_variables() {
    // Only this test in this binary touches these variables.
    // SAFETY: no other thread of this test binary reads or writes the environment here.
    unsafe {
        std::env::set_var("CELERY_BROKER_URL", "memory://");
        std::env::set_var("QUEUE_RESULT_BACKEND", "memory://");
        std::env::set_var("QUEUE_DEFAULT_QUEUE", "from-env");
    }
    let app = App::from_env().task(add).build().await.unwrap();
    assert_eq!(app.router().default_queue(), "from-env");
    assert!(app.backend().is_some());
    add::new(1, 1).send(&app).await.unwrap();
    assert_eq!(
        app.broker().queue_length("from-env").await.unwrap().total,
        1
    );
}
