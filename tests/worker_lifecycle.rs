//! Hooks, acks, shutdown (warm, cold, by signal), rate limits, delayed tasks, logs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Memory, WAIT, init_logs};
use queue::protocol::envelope;
use queue::worker::Outcome;
use queue::{App, Hooks, TaskContext, TaskError, TaskState, Worker, task};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

type Events = Arc<Mutex<Vec<String>>>;

struct Recorder(Events);

#[async_trait::async_trait]
impl Hooks for Recorder {
    async fn before_task(&self, context: &TaskContext) {
        self.push(format!("before {}", context.name()));
    }
    async fn on_success(&self, context: &TaskContext, result: &Value) {
        self.push(format!("success {} {result}", context.name()));
    }
    async fn on_failure(&self, context: &TaskContext, error: &TaskError) {
        self.push(format!("failure {} {}", context.name(), error.message()));
    }
    async fn on_retry(&self, context: &TaskContext, _error: &TaskError, _delay: Duration) {
        self.push(format!("retry {} #{}", context.name(), context.retries()));
    }
    async fn after_task(&self, context: &TaskContext, outcome: &Outcome) {
        let kind = match outcome {
            Outcome::Success(_) => "success",
            Outcome::Failure(_) => "failure",
            Outcome::Retry(_) => "retry",
        };
        self.push(format!("after {} {kind}", context.name()));
    }
}

impl Recorder {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
}

#[task(name = "life.double")]
async fn double(value: i64) -> i64 {
    value * 2
}

#[task(name = "life.broken")]
async fn broken() -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", "nope"))
}

#[task(name = "life.once_more", retry_delay = 0)]
async fn once_more(context: TaskContext) -> Result<u32, TaskError> {
    if context.retries() == 0 {
        return Err(context.retry());
    }
    Ok(context.retries())
}

#[tokio::test]
async fn hooks_run_around_every_task_in_order() {
    init_logs();
    let events: Events = Default::default();
    let app = App::builder()
        .backend("memory://")
        .task(double)
        .task(broken)
        .task(once_more)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone())
        .concurrency(1)
        .hooks(Recorder(events.clone()))
        .spawn();
    double::new(21)
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    broken::new()
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap_err();
    once_more::new()
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    worker.shutdown().await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [
            "before life.double",
            "success life.double 42",
            "after life.double success",
            "before life.broken",
            "failure life.broken nope",
            "after life.broken failure",
            "before life.once_more",
            "retry life.once_more #0",
            "after life.once_more retry",
            "before life.once_more",
            "success life.once_more 1",
            "after life.once_more success",
        ]
    );
}

struct Gate {
    started: mpsc::UnboundedSender<String>,
    release: Semaphore,
}

#[task(name = "life.held")]
async fn held(context: TaskContext) -> String {
    let gate = context.state::<Gate>().unwrap();
    gate.started.send(context.id().to_owned()).unwrap();
    gate.release.acquire().await.unwrap().forget();
    "released".into()
}

#[task(name = "life.held_early_ack", acks_late = false)]
async fn held_early_ack(context: TaskContext) -> String {
    let gate = context.state::<Gate>().unwrap();
    gate.started.send(context.id().to_owned()).unwrap();
    gate.release.acquire().await.unwrap().forget();
    "released".into()
}

async fn gated_app(memory: &Memory) -> (App, mpsc::UnboundedReceiver<String>) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let app = memory
        .builder()
        .task(held)
        .task(held_early_ack)
        .task(double)
        .state(Gate {
            started,
            release: Semaphore::new(0),
        })
        .build()
        .await
        .unwrap();
    (app, started_rx)
}

#[tokio::test]
async fn cold_shutdown_requeues_unfinished_acks_late_tasks_only() {
    let memory = Memory::new();
    let (app, mut started) = gated_app(&memory).await;
    let late = held::new().send(&app).await.unwrap();
    let early = held_early_ack::new().send(&app).await.unwrap();
    let worker = Worker::new(app.clone()).concurrency(2).spawn();
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    worker.shutdown_now().await.unwrap();

    // The acks-late task's message is back in the queue, marked redelivered; the early-acked
    // one is gone (at-most-once, as asked).
    assert_eq!(app.broker().queue_length("celery").await.unwrap().total, 1);
    let second = Worker::new(app.clone()).concurrency(2).spawn();
    let redelivered = started.recv().await.unwrap();
    assert_eq!(redelivered, late.id());
    app.state::<Gate>().unwrap().release.add_permits(1);
    assert_eq!(late.get(WAIT).await.unwrap(), "released");
    assert_eq!(early.state().await.unwrap(), TaskState::Pending);
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn warm_shutdown_lets_running_tasks_finish_and_stops_taking_new_ones() {
    let memory = Memory::new();
    let (app, mut started) = gated_app(&memory).await;
    let running = held::new().send(&app).await.unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    started.recv().await.unwrap();
    let waiting = double::new(1).send(&app).await.unwrap();

    let shutdown = tokio::spawn(worker.shutdown());
    app.state::<Gate>().unwrap().release.add_permits(1);
    shutdown.await.unwrap().unwrap();
    assert_eq!(running.get(WAIT).await.unwrap(), "released");
    // The task sent after the shutdown began was not taken.
    assert_eq!(waiting.state().await.unwrap(), TaskState::Pending);
    assert_eq!(app.broker().queue_length("celery").await.unwrap().total, 1);
}

#[tokio::test]
async fn warm_shutdown_goes_cold_after_its_timeout() {
    let memory = Memory::new();
    let (app, mut started) = gated_app(&memory).await;
    held::new().send(&app).await.unwrap();
    let worker = Worker::new(app.clone())
        .shutdown_timeout(Duration::from_millis(50))
        .spawn();
    started.recv().await.unwrap();
    worker.shutdown().await.unwrap();
    assert_eq!(
        app.broker().queue_length("celery").await.unwrap().total,
        1,
        "requeued"
    );
}

#[tokio::test]
async fn sigterm_shuts_the_worker_down_warm() {
    let memory = Memory::new();
    let (app, mut started) = gated_app(&memory).await;
    let running = held::new().send(&app).await.unwrap();
    let worker = tokio::spawn(Worker::new(app.clone()).run());
    started.recv().await.unwrap();
    // SAFETY: sending a signal to our own process; the worker's handler catches it.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
    app.state::<Gate>().unwrap().release.add_permits(1);
    worker.await.unwrap().unwrap();
    assert_eq!(running.get(WAIT).await.unwrap(), "released");
}

#[task(name = "life.limited", rate_limit = "20/s")]
async fn limited() -> u64 {
    0
}

#[tokio::test]
async fn rate_limit_spaces_task_starts_in_a_worker() {
    let app = App::builder()
        .backend("memory://")
        .task(limited)
        .build()
        .await
        .unwrap();
    let results = app
        .send_many((0..5).map(|_| limited::new().into()))
        .await
        .unwrap();
    let started = Instant::now();
    let worker = Worker::new(app.clone()).concurrency(5).spawn();
    for result in results {
        result.get(WAIT).await.unwrap();
    }
    // 20/s: one start every 50 ms, so the fifth cannot start before 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn countdown_tasks_wait_in_the_broker_and_run_when_due() {
    let memory = Memory::new();
    let app = memory.builder().task(double).build().await.unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let sent_at = chrono::Utc::now();
    let result = double::new(4)
        .countdown(Duration::from_millis(300))
        .send(&app)
        .await
        .unwrap();
    assert_eq!(memory.broker.delayed_count(), 1);
    assert_eq!(app.broker().queue_length("celery").await.unwrap().total, 0);
    assert_eq!(result.get(WAIT).await.unwrap(), 8);
    let meta = result.meta().await.unwrap().unwrap();
    let ran_after = meta.date_done.unwrap().signed_duration_since(sent_at);
    assert!(
        ran_after >= chrono::Duration::milliseconds(300),
        "{ran_after}"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_eta_message_put_straight_into_the_queue_is_handed_back_to_the_broker() {
    // Python producers put eta messages straight into the queue; the worker must not hold them.
    let memory = Memory::new();
    let app = memory.builder().task(double).build().await.unwrap();
    let mut publish = app.prepare(double::new(5).into()).unwrap();
    publish.message.headers.eta =
        Some((chrono::Utc::now() + chrono::Duration::seconds(1)).fixed_offset());
    let id = publish.message.headers.id.clone();
    memory
        .broker
        .publish_raw("celery", envelope::encode(&publish.message));
    let worker = Worker::new(app.clone())
        .hooks(Recorder(Default::default()))
        .spawn();
    let result = app.result::<i64>(id);
    // Wait until the worker has looked at it: then it is back in the broker's delay store.
    let deadline = tokio::time::Instant::now() + WAIT;
    while memory.broker.delayed_count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never deferred");
        tokio::task::yield_now().await;
    }
    assert_eq!(result.state().await.unwrap(), TaskState::Pending);
    assert_eq!(result.get(WAIT).await.unwrap(), 10);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn secrets_in_urls_never_reach_debug_output() {
    let app = App::builder()
        .broker("memory://user:hunter2@localhost/0")
        .backend("memory://user:hunter2@localhost/1")
        .build()
        .await
        .unwrap();
    let shown = format!("{app:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("user:***@localhost"), "{shown}");
    let error = App::builder()
        .broker("redis://user:hunter2@[bad")
        .build()
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

struct PanickingHook;

#[async_trait::async_trait]
impl Hooks for PanickingHook {
    async fn before_task(&self, _context: &TaskContext) {
        panic!("hook bug");
    }
}

#[tokio::test]
async fn a_panicking_hook_does_not_lose_the_task() {
    let app = App::builder()
        .backend("memory://")
        .task(double)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).hooks(PanickingHook).spawn();
    let result = double::new(21).send(&app).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 42);
    worker.shutdown().await.unwrap();
}
