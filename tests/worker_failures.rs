//! What happens when tasks fail, retry, panic, run too long, or cannot run at all.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Memory, WAIT, init_logs};
use queue::protocol::envelope;
use queue::{App, ResultError, Signature, TaskContext, TaskError, TaskState, Worker, task};

#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("gateway timeout")]
    Timeout,
    #[error("card declined")]
    Declined,
}

fn is_transient(error: &PaymentError) -> bool {
    matches!(error, PaymentError::Timeout)
}

/// Fails with a timeout until its retry count reaches `succeed_at`, then returns it.
#[task(name = "failures.charge", max_retries = 5, retry_delay = 0.01, retry_on = is_transient)]
async fn charge(
    context: TaskContext,
    succeed_at: u32,
    declined: bool,
) -> Result<u32, PaymentError> {
    if declined {
        return Err(PaymentError::Declined);
    }
    if context.retries() < succeed_at {
        return Err(PaymentError::Timeout);
    }
    Ok(context.retries())
}

#[tokio::test]
async fn errors_named_by_retry_on_are_retried_with_retries_plus_one() {
    init_logs();
    let app = App::builder()
        .backend("memory://")
        .task(charge)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = charge::new(3, false).send(&app).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 3);
    assert_eq!(worker.stats().retried.get(), 3);

    // Other errors fail at once, with their type and message stored.
    let declined = charge::new(0, true).send(&app).await.unwrap();
    match declined.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.exc_type(), "PaymentError");
            assert_eq!(error.message(), "card declined");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(worker.stats().retried.get(), 3);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn exhausted_retries_fail_and_dead_letter_the_message() {
    let memory = Memory::new();
    let app = memory.builder().task(charge).build().await.unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = charge::new(100, false).send(&app).await.unwrap();
    let error = result.get(WAIT).await.unwrap_err();
    assert!(
        matches!(&error, ResultError::Failed { error, .. } if error.message() == "gateway timeout"),
        "{error}"
    );
    assert_eq!(worker.stats().retried.get(), 5, "max_retries = 5");
    worker.shutdown().await.unwrap();
    let dead = app.broker().dead_letters("celery", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("max retries"), "{}", dead[0].reason);
    assert_eq!(dead[0].content.as_ref().unwrap().headers.retries, 5);
}

/// Asks for a retry with an explicit countdown on its first run.
#[task(name = "failures.retry_later", max_retries = 1)]
async fn retry_later(context: TaskContext) -> Result<String, TaskError> {
    if context.retries() == 0 {
        return Err(context.retry().countdown(Duration::from_millis(1000)));
    }
    Ok("second run".into())
}

/// Signals every retry the worker schedules.
struct RetrySignal(tokio::sync::mpsc::UnboundedSender<Duration>);

#[async_trait::async_trait]
impl queue::Hooks for RetrySignal {
    async fn on_retry(&self, _context: &TaskContext, _error: &TaskError, delay: Duration) {
        self.0.send(delay).unwrap();
    }
}

#[tokio::test]
async fn a_retry_waits_in_the_broker_not_in_the_worker() {
    let memory = Memory::new();
    let app = memory.builder().task(retry_later).build().await.unwrap();
    let (retried_tx, mut retried) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::new(app.clone())
        .hooks(RetrySignal(retried_tx))
        .spawn();
    let result = retry_later::new().send(&app).await.unwrap();
    let delay = retried.recv().await.unwrap();
    assert_eq!(
        delay,
        Duration::from_millis(1000),
        "the countdown the task asked for"
    );
    // RETRY is stored while the retry waits in the broker's delay store, not in the worker.
    assert_eq!(result.state().await.unwrap(), TaskState::Retry);
    assert_eq!(memory.broker.delayed_count(), 1);
    assert_eq!(worker.stats().received.get(), 1);
    assert_eq!(result.get(WAIT).await.unwrap(), "second run");
    worker.shutdown().await.unwrap();
}

#[task(name = "failures.panics")]
fn panics(message: String) -> i64 {
    panic!("{message}")
}

#[task(name = "failures.async_panics")]
async fn async_panics() -> i64 {
    let items: Vec<i64> = Vec::new();
    items[3]
}

#[task(name = "failures.ok")]
async fn ok() -> String {
    "still here".into()
}

#[tokio::test]
async fn a_panic_fails_that_task_only() {
    let app = App::builder()
        .backend("memory://")
        .task(panics)
        .task(async_panics)
        .task(ok)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    let sync_panic = panics::new("boom".into()).send(&app).await.unwrap();
    let async_panic = async_panics::new().send(&app).await.unwrap();
    let after = ok::new().send(&app).await.unwrap();
    match sync_panic.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.message(), "boom");
            assert_eq!(error.exc_type(), "Panic");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    match async_panic.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert!(error.message().contains("index out of bounds"))
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(after.get(WAIT).await.unwrap(), "still here");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_arguments_fail_without_retry() {
    let app = App::builder()
        .backend("memory://")
        .task(charge)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = Signature::new("failures.charge")
        .arg("not a number")
        .send(&app)
        .await
        .unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.exc_type(), "TypeError");
            assert!(
                error.message().contains("succeed_at"),
                "{}",
                error.message()
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(worker.stats().retried.get(), 0);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecodable_and_unknown_messages_are_dead_lettered_and_the_worker_goes_on() {
    let memory = Memory::new();
    let app = memory.builder().task(ok).build().await.unwrap();
    memory
        .broker
        .publish_raw("celery", b"this is not a message".to_vec());
    let unknown = Signature::new("failures.nobody_knows_me")
        .send(&app)
        .await
        .unwrap();
    // A message whose body is not [args, kwargs, embed].
    let mut bad_body = app.prepare(Signature::new("failures.ok")).unwrap().message;
    bad_body.body = b"[1, 2]".to_vec();
    memory
        .broker
        .publish_raw("celery", envelope::encode(&bad_body));
    let after = ok::new().send(&app).await.unwrap();

    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    assert_eq!(after.get(WAIT).await.unwrap(), "still here");
    worker.shutdown().await.unwrap();

    let dead = app.broker().dead_letters("celery", 10).await.unwrap();
    let reasons: Vec<&str> = dead.iter().map(|letter| letter.reason.as_str()).collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("undecodable message"), "{reasons:?}");
    assert_eq!(
        dead[0].content.as_ref().unwrap_err().raw,
        b"this is not a message"
    );
    assert!(
        reasons[1].contains("unknown task \"failures.nobody_knows_me\""),
        "{reasons:?}"
    );
    assert!(reasons[2].starts_with("undecodable body"), "{reasons:?}");
    // The unknown task's FAILURE is stored, as Celery stores NotRegistered.
    match unknown.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert_eq!(error.exc_type(), "NotRegistered"),
        other => panic!("expected NotRegistered, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_tasks_are_revoked_not_run() {
    let app = App::builder()
        .backend("memory://")
        .task(ok)
        .build()
        .await
        .unwrap();
    let expired = ok::new()
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(1))
        .send(&app)
        .await
        .unwrap();
    let fresh = ok::new()
        .expires_in(Duration::from_secs(60))
        .send(&app)
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    assert_eq!(fresh.get(WAIT).await.unwrap(), "still here");
    match expired.get(WAIT).await {
        Err(ResultError::Revoked { reason, .. }) => assert_eq!(reason, "expired"),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert_eq!(worker.stats().succeeded.get(), 1);
    worker.shutdown().await.unwrap();
}

#[task(name = "failures.stubborn", time_limit = 0.2)]
async fn stubborn() {
    std::future::pending::<()>().await
}

#[task(name = "failures.blocking", time_limit = 0.2)]
fn blocking_forever(seconds: u64) {
    std::thread::sleep(Duration::from_secs(seconds));
}

#[task(name = "failures.polite", soft_time_limit = 0.1, time_limit = 20)]
async fn polite(context: TaskContext) -> String {
    context.cancelled().await;
    "stopped at the soft limit".into()
}

#[tokio::test]
async fn time_limits_stop_tasks_async_and_sync() {
    let app = App::builder()
        .backend("memory://")
        .task(stubborn)
        .task(blocking_forever)
        .task(polite)
        .task(ok)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(2).spawn();
    let hard_async = stubborn::new().send(&app).await.unwrap();
    let hard_sync = blocking_forever::new(1).send(&app).await.unwrap();
    let soft = polite::new().send(&app).await.unwrap();
    for result in [hard_async.untyped(), hard_sync.untyped()] {
        match result.get(WAIT).await {
            Err(ResultError::Failed { error, .. }) => {
                assert_eq!(error.exc_type(), "TimeLimitExceeded");
            }
            other => panic!("expected a time limit failure, got {other:?}"),
        }
    }
    assert_eq!(soft.get(WAIT).await.unwrap(), "stopped at the soft limit");
    // Both slots are free again.
    assert_eq!(
        ok::new().send(&app).await.unwrap().get(WAIT).await.unwrap(),
        "still here"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_time_limit_on_the_call_overrides_the_task() {
    let app = App::builder()
        .backend("memory://")
        .task(polite)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = polite::new()
        .soft_time_limit(Duration::from_millis(10))
        .send(&app)
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), "stopped at the soft limit");
    worker.shutdown().await.unwrap();
}

#[task(name = "failures.quiet", ignore_result = true)]
async fn quiet(context: TaskContext) {
    let log = context.state::<Arc<Mutex<Vec<String>>>>().unwrap();
    log.lock().unwrap().push(context.id().to_owned());
}

#[tokio::test]
async fn ignore_result_stores_nothing() {
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let memory = Memory::new();
    let app = memory
        .builder()
        .task(quiet)
        .task(ok)
        .state(log.clone())
        .build()
        .await
        .unwrap();
    let ignored = quiet::new().send(&app).await.unwrap();
    let stored = ok::new().send(&app).await.unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    // FIFO with one slot: once the second is stored, the first has run.
    stored.get(WAIT).await.unwrap();
    assert_eq!(*log.lock().unwrap(), [ignored.id().to_owned()]);
    assert_eq!(ignored.state().await.unwrap(), TaskState::Pending);
    assert_eq!(memory.backend.len(), 1);

    worker.shutdown().await.unwrap();

    // The app-wide switch.
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<String>();
    let global = Memory::new();
    let app = global
        .builder()
        .task(announce)
        .state(done_tx)
        .ignore_result(true)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).spawn();
    let result = announce::new().send(&app).await.unwrap();
    assert_eq!(done.recv().await.as_deref(), Some(result.id()));
    // A warm shutdown lets the running task finish completely before returning.
    worker.shutdown().await.unwrap();
    assert!(global.backend.is_empty());
}

#[task(name = "failures.announce")]
async fn announce(context: TaskContext) -> u32 {
    let done = context
        .state::<tokio::sync::mpsc::UnboundedSender<String>>()
        .unwrap();
    done.send(context.id().to_owned()).unwrap();
    7
}

use faults::OutageBroker;

struct Outage {
    broker: Arc<OutageBroker>,
    runs: std::sync::atomic::AtomicU32,
}

/// Run 1: asks for a retry and takes the broker down, so the retry cannot be published.
/// Run 2 (the original, given back): brings the broker up and asks again. Run 3: succeeds.
#[task(name = "failures.retry_into_outage", retry_delay = 0)]
async fn retry_into_outage(context: TaskContext) -> Result<u32, TaskError> {
    let outage = context.state::<Outage>().unwrap();
    let run = outage
        .runs
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    match run {
        1 => {
            outage
                .broker
                .down
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Err(context.retry())
        }
        2 => {
            assert_eq!(context.retries(), 0, "the original message came back");
            outage
                .broker
                .down
                .store(false, std::sync::atomic::Ordering::SeqCst);
            Err(context.retry())
        }
        _ => Ok(context.retries()),
    }
}

#[tokio::test]
async fn a_retry_the_broker_refuses_gives_the_message_back_instead_of_losing_it() {
    let broker = Arc::new(OutageBroker::default());
    let app = App::builder()
        .broker_instance(broker.clone())
        .backend("memory://")
        .task(retry_into_outage)
        .state(Outage {
            broker: broker.clone(),
            runs: std::sync::atomic::AtomicU32::new(0),
        })
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).concurrency(1).spawn();
    let result = retry_into_outage::new().send(&app).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 1);
    let runs = app
        .state::<Outage>()
        .unwrap()
        .runs
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(runs, 3);
    worker.shutdown().await.unwrap();
}
