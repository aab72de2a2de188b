//! A message is acked only after its outcome is stored and its follow-ups sent; what cannot
//! be stored is given back; a message whose code may still run is never handed out again;
//! a panic while handling a delivery settles it. Each test failed before its fix.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{WAIT, init_logs};
use faults::{FaultyBackend, OutageBroker};
use queue::{
    App, Broker, ConsumeOptions, MemoryBroker, ResultBackend, ResultError, Signature, TaskContext,
    TaskState, Worker, task,
};

#[task(name = "safety.echo")]
async fn echo(value: u32) -> u32 {
    value
}

/// Counts its runs in the app's state.
#[derive(Default)]
struct Runs(AtomicU32);

#[task(name = "safety.counted")]
async fn counted(context: TaskContext) -> u32 {
    context
        .state::<Runs>()
        .unwrap()
        .0
        .fetch_add(1, Ordering::SeqCst)
        + 1
}

fn app_on(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> queue::AppBuilder {
    App::builder()
        .broker_instance(broker)
        .backend_instance(backend)
        .task(echo)
        .task(counted)
        .state(Runs::default())
}

/// A memory broker, a faulty backend set up by `configure`, and an app on both.
async fn setup(
    configure: impl FnOnce(&FaultyBackend),
) -> (Arc<MemoryBroker>, Arc<FaultyBackend>, App) {
    let broker = Arc::new(MemoryBroker::new());
    let backend = Arc::new(FaultyBackend::new());
    configure(&backend);
    let app = app_on(broker.clone(), backend.clone())
        .build()
        .await
        .unwrap();
    (broker, backend, app)
}

/// Polls `check` until it holds; for states the memory broker has no signal for.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_panic_while_handling_a_delivery_dead_letters_it_and_the_worker_goes_on() {
    init_logs();
    let (broker, _backend, app) = setup(|backend| {
        *backend.panic_for.lock().unwrap() = Some("doomed".into());
    })
    .await;
    let worker = Worker::new(app.clone()).concurrency(1).spawn();

    echo::new(1).task_id("doomed").send(&app).await.unwrap();
    let fine = echo::new(2).send(&app).await.unwrap();
    assert_eq!(fine.get(WAIT).await.unwrap(), 2, "the worker goes on");
    eventually("the message is dead-lettered", async || {
        !app.broker()
            .dead_letters("celery", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let dead = app.broker().dead_letters("celery", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("panicked"), "{}", dead[0].reason);
    assert!(dead[0].reason.contains("the backend's client panicked"));
    assert_eq!(dead[0].content.as_ref().unwrap().headers.id, "doomed");
    worker.shutdown().await.unwrap();
    assert_eq!(broker.queue_length("celery").await.unwrap().total, 0);
}

#[tokio::test]
async fn an_outcome_is_stored_before_the_ack_retrying_while_the_backend_is_down() {
    init_logs();
    let (broker, backend, app) = setup(|backend| {
        backend.set_down(true);
    })
    .await;
    let worker = Worker::new(app.clone()).spawn();

    let result = echo::new(7).send(&app).await.unwrap();
    backend.failed_stores(2).await;
    backend.set_down(false);
    assert_eq!(result.get(WAIT).await.unwrap(), 7);
    assert!(worker.stats().persist_retries.get() >= 2);
    assert_eq!(worker.stats().given_back.get(), 0);
    assert_eq!(worker.stats().received.get(), 1, "ran once, acked once");
    worker.shutdown().await.unwrap();
    assert_eq!(broker.queue_length("celery").await.unwrap().total, 0);
}

#[tokio::test]
async fn a_backend_that_stays_down_gets_the_message_back_instead_of_an_ack() {
    init_logs();
    let (broker, backend, app) = setup(|backend| {
        backend.set_down(true);
    })
    .await;
    let worker = Worker::new(app.clone())
        .persist_timeout(Duration::from_millis(100))
        .spawn();

    let result = counted::new().send(&app).await.unwrap();
    eventually("the message is given back and runs again", async || {
        worker.stats().given_back.get() >= 1 && worker.stats().received.get() >= 2
    })
    .await;
    backend.set_down(false);
    let runs: u32 = result.get(WAIT).await.unwrap();
    assert!(runs >= 2, "it ran again after the give-back: {runs} runs");
    worker.shutdown().await.unwrap();
    assert_eq!(broker.queue_length("celery").await.unwrap().total, 0);
}

#[tokio::test]
async fn an_outcome_the_backend_refuses_for_good_is_dead_lettered_with_the_reason() {
    init_logs();
    let (_broker, _backend, app) = setup(|backend| {
        backend.refuse.store(true, Ordering::SeqCst);
    })
    .await;
    let worker = Worker::new(app.clone()).spawn();

    echo::new(3).task_id("refused").send(&app).await.unwrap();
    eventually("the message is dead-lettered", async || {
        !app.broker()
            .dead_letters("celery", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let dead = app.broker().dead_letters("celery", 10).await.unwrap();
    assert!(
        dead[0].reason.contains("could not store the task state"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        worker.stats().given_back.get(),
        0,
        "refusals are not retried forever"
    );
    worker.shutdown().await.unwrap();
}

/// Run 1 takes the broker down, so its callback cannot be sent; run 2 brings it back.
#[task(name = "safety.parent")]
async fn parent(context: TaskContext) -> u32 {
    let run = context
        .state::<Runs>()
        .unwrap()
        .0
        .fetch_add(1, Ordering::SeqCst)
        + 1;
    let broker = context.state::<Arc<OutageBroker>>().unwrap();
    broker.set_down(run == 1);
    run
}

#[tokio::test]
async fn a_callback_that_cannot_be_sent_gives_the_message_back() {
    init_logs();
    let broker = Arc::new(OutageBroker::default());
    let backend = Arc::new(FaultyBackend::new());
    let app = app_on(broker.clone(), backend.clone())
        .task(parent)
        .state(broker.clone())
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone())
        .persist_timeout(Duration::from_millis(100))
        .spawn();

    // echo(value) with the parent's result as its argument.
    let callback = Signature::new("safety.echo").task_id("the-callback");
    parent::new().link(callback).send(&app).await.unwrap();
    let callback = app.result::<u32>("the-callback");
    assert_eq!(
        callback.get(WAIT).await.unwrap(),
        2,
        "sent by the second run"
    );
    assert_eq!(worker.stats().given_back.get(), 1);
    worker.shutdown().await.unwrap();
}

/// Blocks its thread until the test releases it: code that cannot be stopped.
#[task(name = "safety.runaway", time_limit = 0.2)]
fn runaway(context: TaskContext) {
    let gate = context.state::<Gate>().unwrap();
    gate.started.lock().unwrap().send(()).unwrap();
    let _ = gate.release.lock().unwrap().recv();
    gate.finished.fetch_add(1, Ordering::SeqCst);
}

struct Gate {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    finished: AtomicU32,
}

fn gate() -> (Gate, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Gate {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
        finished: AtomicU32::new(0),
    };
    (gate, started_rx, release_tx)
}

#[test]
fn a_sync_task_running_at_cold_shutdown_is_not_requeued_and_does_not_hold_the_process() {
    init_logs();
    let (gate, started, release) = gate();
    let broker = Arc::new(MemoryBroker::new());
    let (dropped_tx, dropped) = mpsc::channel();
    let in_runtime = broker.clone();
    // The worker's own runtime, dropped at the end as `main` returning would drop it.
    let runtime_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(async move {
            let app = App::builder()
                .broker_instance(in_runtime.clone())
                .backend("memory://")
                .task(runaway)
                .state(gate)
                .build()
                .await
                .unwrap();
            let worker = Worker::new(app.clone()).spawn();
            runaway::new()
                .time_limit(Duration::from_secs(3600))
                .send(&app)
                .await
                .unwrap();
            tokio::task::spawn_blocking(move || started.recv().unwrap())
                .await
                .unwrap();
            worker.shutdown_now().await.unwrap();
            app
        });
        drop(runtime);
        dropped_tx.send(app).unwrap();
    });
    let app = dropped
        .recv_timeout(WAIT)
        .expect("the runtime is dropped although the sync task still runs");
    let gate = app.state::<Gate>().unwrap();
    assert_eq!(gate.finished.load(Ordering::SeqCst), 0, "still running");
    // Not given back while its code runs: no other worker could take it.
    let check = tokio::runtime::Runtime::new().unwrap();
    check.block_on(async {
        assert_eq!(broker.queue_length("celery").await.unwrap().total, 0);
        assert_eq!(broker.delayed_count(), 0);
        let other = broker
            .consume(ConsumeOptions::new(["celery"]))
            .await
            .unwrap();
        assert!(
            other
                .fetch(1, Duration::from_millis(50))
                .await
                .unwrap()
                .is_empty()
        );
    });
    release.send(()).unwrap();
    runtime_thread.join().unwrap();
}

#[tokio::test]
async fn a_sync_task_past_its_hard_limit_fails_once_and_is_never_handed_out_again() {
    init_logs();
    let (gate, started, release) = gate();
    let broker = Arc::new(MemoryBroker::new());
    let app = App::builder()
        .broker_instance(broker.clone())
        .backend("memory://")
        .task(runaway)
        .state(gate)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = runaway::new().send(&app).await.unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.exc_type(), "TimeLimitExceeded")
        }
        other => panic!("expected TimeLimitExceeded, got {other:?}"),
    }
    started.recv_timeout(WAIT).unwrap();
    assert_eq!(worker.stats().abandoned.get(), 1);
    assert_eq!(worker.stats().received.get(), 1);
    worker.shutdown().await.unwrap();
    assert_eq!(broker.queue_length("celery").await.unwrap().total, 0);
    assert_eq!(broker.delayed_count(), 0);
    release.send(()).unwrap();
}

#[tokio::test]
async fn unknown_tasks_are_given_back_with_a_delay_and_nothing_stored_then_dead_lettered() {
    init_logs();
    let (broker, backend, app) = setup(|_| {}).await;
    let worker = Worker::new(app.clone()).unknown_task_requeues(1).spawn();

    let result = app
        .send(Signature::new("nobody.knows.this").task_id("orphan"))
        .await
        .unwrap();
    eventually(
        "the message waits in the broker for another worker",
        async || broker.delayed_count() == 1,
    )
    .await;
    assert_eq!(
        backend.get("orphan").await.unwrap(),
        None,
        "no FAILURE while another worker may still run it"
    );
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert_eq!(error.exc_type(), "NotRegistered"),
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    let dead = app.broker().dead_letters("celery", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("after 1 requeues"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        worker.stats().received.get(),
        2,
        "once, then once more after the delay"
    );
    worker.shutdown().await.unwrap();
    let meta = backend.get("orphan").await.unwrap().unwrap();
    assert_eq!(meta.status, TaskState::Failure);
}

#[tokio::test]
async fn a_retry_replaces_its_message_in_one_step() {
    init_logs();
    let broker = Arc::new(MemoryBroker::new());
    let consumer = broker
        .consume(ConsumeOptions::new(["celery"]))
        .await
        .unwrap();
    let app = App::builder()
        .broker_instance(broker.clone())
        .build()
        .await
        .unwrap();
    app.send(Signature::new("any.task").task_id("original"))
        .await
        .unwrap();
    let delivery = consumer.fetch(1, WAIT).await.unwrap().remove(0);
    let mut retry = delivery.content.clone().unwrap();
    retry.headers.retries = 1;
    consumer
        .republish_and_ack(&delivery, queue::Publish::new("celery", retry))
        .await
        .unwrap();
    assert!(
        consumer.ack(&delivery).await.is_err(),
        "the original is gone"
    );
    let next = consumer.fetch(1, WAIT).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].content.as_ref().unwrap().headers.retries, 1);
}
