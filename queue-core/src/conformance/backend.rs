//! Result backend checks. Each takes the backend under test and a unique name prefix (see
//! [`unique_prefix`](super::unique_prefix)); every task and group id it uses starts with it.
//!
//! What they hold a backend to (the contract of [`crate::backend`]):
//!
//! - unknown ids read as `None`; a stored [`TaskMeta`] reads back equal, every field
//!   included (extended ones, exception dicts, tracebacks, custom states);
//! - a stored SUCCESS is never overwritten, by `store` or `store_many`;
//! - `wait` returns as soon as a READY state is stored, and with the latest non-ready state
//!   (or `None`) when its timeout runs out;
//! - `forget` removes; groups round-trip; results expire (after `cleanup_expired` for stores
//!   that do not expire entries by themselves);
//! - the chord join (checks in [`chord`](super::chord), re-exported here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::TaskState;
use crate::backend::{GroupMeta, ResultBackend, TaskMeta};
use crate::protocol::time::parse_timestamp;
use crate::task_error::TaskError;

// The chord join checks live in a module of their own; the suite's macro finds every
// backend check here.
pub use super::chord::{
    chord_completes_once_in_any_order, chord_concurrent_parts_complete_once,
    chord_duplicate_part_counts_once, chord_failure_parts_keep_state,
    chord_part_before_start_counts, chord_restarts_after_done, chord_unindexed_part_sorts_last,
};

/// The expiry the `results_expire` check asks the factory for.
pub const EXPIRY: Duration = Duration::from_secs(1);

/// The timeout of waits that are expected to end early; a wait ending after
/// [`EARLY`] counts as not having noticed the result.
pub const LONG_WAIT: Duration = Duration::from_secs(30);

/// Upper bound for "returned early" (a third of [`LONG_WAIT`]).
pub const EARLY: Duration = Duration::from_secs(10);

/// A SUCCESS meta with every field set, extended ones included.
pub fn extended_meta(task_id: &str, prefix: &str) -> TaskMeta {
    let mut meta = TaskMeta::success(
        task_id,
        json!({"total": 42, "ratio": 0.25, "text": "é ✓ \"quoted\"", "list": [1, null, true],
               "nested": {"a": {"b": []}}}),
    );
    meta.date_done = parse_timestamp("2026-11-24T15:27:26.005122+00:00");
    meta.children = Some(vec![json!([[format!("{prefix}-child"), null], null])]);
    meta.group_id = Some(format!("{prefix}-group"));
    meta.parent_id = Some(format!("{prefix}-parent"));
    meta.name = Some("tasks.add".into());
    meta.args = Some(vec![json!(2), json!("two"), json!({"k": [2]})]);
    meta.kwargs = json!({"z": 1, "flag": false}).as_object().cloned();
    meta.worker = Some("celery@conformance".into());
    meta.retries = Some(2);
    meta.queue = Some("celery".into());
    meta
}

fn meta(task_id: &str, status: TaskState, result: Value) -> TaskMeta {
    TaskMeta::new(task_id, status, result)
}

fn started(task_id: &str) -> TaskMeta {
    let mut meta = meta(
        task_id,
        TaskState::Started,
        json!({"pid": 4242, "hostname": "celery@conformance"}),
    );
    meta.children = None;
    meta
}

async fn store(backend: &Arc<dyn ResultBackend>, meta: TaskMeta) {
    let id = meta.task_id.clone();
    let status = meta.status.clone();
    backend
        .store(meta)
        .await
        .unwrap_or_else(|error| panic!("store({id:?}, {status}) failed: {error}"));
}

async fn get(backend: &Arc<dyn ResultBackend>, task_id: &str) -> Option<TaskMeta> {
    backend
        .get(task_id)
        .await
        .unwrap_or_else(|error| panic!("get({task_id:?}) failed: {error}"))
}

async fn wait(
    backend: &Arc<dyn ResultBackend>,
    task_id: &str,
    timeout: Duration,
) -> (Option<TaskMeta>, Duration) {
    let started = Instant::now();
    let meta = backend
        .wait(task_id, timeout)
        .await
        .unwrap_or_else(|error| panic!("wait({task_id:?}, {timeout:?}) failed: {error}"));
    (meta, started.elapsed())
}

async fn assert_stored(backend: &Arc<dyn ResultBackend>, expected: &TaskMeta, context: &str) {
    let stored = get(backend, &expected.task_id).await;
    assert_eq!(
        stored.as_ref(),
        Some(expected),
        "{context}: get({:?})",
        expected.task_id
    );
}

/// An unknown task id reads as `None` (get and a short wait); an unknown group too.
pub async fn unknown_id_is_none(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let id = format!("{prefix}-unknown");
    assert_eq!(get(&backend, &id).await, None, "get of an unknown id");
    let (waited, _) = wait(&backend, &id, Duration::from_millis(200)).await;
    assert_eq!(waited, None, "wait on an unknown id");
    let group = backend
        .get_group(&format!("{prefix}-unknown-group"))
        .await
        .unwrap_or_else(|error| panic!("get_group failed: {error}"));
    assert_eq!(group, None, "get_group of an unknown id");
}

/// Stored metas read back equal: a SUCCESS with every extended field, a STARTED with
/// `children: null`, a custom state, a SUCCESS with a `null` result.
pub async fn store_get_round_trip(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let full = extended_meta(&format!("{prefix}-full"), prefix);
    let running = started(&format!("{prefix}-started"));
    let mut progress = meta(
        &format!("{prefix}-progress"),
        TaskState::Custom("PROGRESS".into()),
        json!({"progress": 50}),
    );
    progress.children = None;
    let mut nothing = TaskMeta::success(format!("{prefix}-null"), Value::Null);
    nothing.date_done = parse_timestamp("2026-11-24T15:27:26+00:00");
    for meta in [full, running, progress, nothing] {
        store(&backend, meta.clone()).await;
        assert_stored(&backend, &meta, "round trip").await;
    }
}

/// FAILURE, RETRY and REVOKED metas with Celery exception dicts and tracebacks read back equal
/// and convert back to the same [`TaskError`].
pub async fn failure_meta_round_trip(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let traceback = "Traceback (most recent call last):\n  File \"tasks.py\", line 3, in add\n    \
                     raise ValueError('boom')\nValueError: boom\n";
    let error = TaskError::new("ValueError", "boom").traceback(traceback);
    let mut ours = TaskMeta::error(format!("{prefix}-ours"), TaskState::Failure, &error);
    ours.name = Some("tasks.add".into());
    ours.args = Some(vec![json!(1)]);
    ours.kwargs = Some(Map::new());
    ours.retries = Some(3);

    let python = TaskMeta {
        traceback: Some(traceback.into()),
        date_done: parse_timestamp("2026-11-24T15:27:26.005122+00:00"),
        ..meta(
            &format!("{prefix}-python"),
            TaskState::Failure,
            json!({"exc_type": "ValueError", "exc_message": ["boom", 42], "exc_module": "builtins"}),
        )
    };
    let retry = TaskMeta {
        traceback: Some("Traceback (most recent call last): ...".into()),
        children: None,
        ..meta(
            &format!("{prefix}-retry"),
            TaskState::Retry,
            json!({"exc_type": "KeyError", "exc_message": ["x"], "exc_module": "builtins"}),
        )
    };
    let revoked = TaskMeta::revoked(format!("{prefix}-revoked"), "expired");

    for meta in [&ours, &python, &retry, &revoked] {
        store(&backend, meta.clone()).await;
        assert_stored(&backend, meta, "exception round trip").await;
    }
    let read = get(&backend, &ours.task_id).await.expect("stored");
    let read_error = read.error_value().expect("FAILURE carries an error");
    assert_eq!(read_error.exc_type(), "ValueError");
    assert_eq!(read_error.exc_module(), "builtins");
    assert_eq!(read_error.message(), "boom");
    assert_eq!(read_error.traceback_text(), Some(traceback));

    let read = get(&backend, &python.task_id).await.expect("stored");
    let read_error = read.error_value().expect("FAILURE carries an error");
    assert_eq!(read_error.exc_type(), "ValueError");
    assert_eq!(read_error.message(), "boom, 42");

    let read = get(&backend, &revoked.task_id).await.expect("stored");
    assert!(read.status.is_ready(), "REVOKED is ready");
    let read_error = read.error_value().expect("REVOKED carries an error");
    assert_eq!(read_error.exc_type(), "TaskRevokedError");
    assert_eq!(read_error.exc_module(), "celery.exceptions");
    assert_eq!(read_error.message(), "expired");
}

/// Non-ready states replace each other; a stored SUCCESS is never overwritten by a later
/// STARTED, RETRY or FAILURE, whether stored one by one or with `store_many`.
pub async fn success_not_overwritten(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let id = format!("{prefix}-t");
    store(&backend, started(&id)).await;
    let retry = TaskMeta::error(&id, TaskState::Retry, &TaskError::new("KeyError", "x"));
    store(&backend, retry.clone()).await;
    assert_stored(&backend, &retry, "RETRY replaces STARTED").await;

    let success = TaskMeta::success(&id, json!({"answer": 42}));
    store(&backend, success.clone()).await;
    assert_stored(&backend, &success, "SUCCESS replaces RETRY").await;

    store(&backend, started(&id)).await;
    store(
        &backend,
        TaskMeta::error(&id, TaskState::Retry, &TaskError::new("KeyError", "x")),
    )
    .await;
    store(
        &backend,
        TaskMeta::error(&id, TaskState::Failure, &TaskError::msg("late")),
    )
    .await;
    assert_stored(
        &backend,
        &success,
        "SUCCESS after later STARTED/RETRY/FAILURE",
    )
    .await;

    backend
        .store_many(vec![
            TaskMeta::error(&id, TaskState::Failure, &TaskError::msg("late, batched")),
            TaskMeta::success(format!("{prefix}-other"), json!(1)),
        ])
        .await
        .unwrap_or_else(|error| panic!("store_many failed: {error}"));
    assert_stored(&backend, &success, "SUCCESS after a FAILURE in store_many").await;
    let other = get(&backend, &format!("{prefix}-other")).await;
    assert_eq!(
        other.map(|meta| meta.status),
        Some(TaskState::Success),
        "the rest of the batch is stored"
    );
}

/// A `wait` in progress returns as soon as another task stores a READY state (SUCCESS, or
/// FAILURE), ignoring non-ready states stored meanwhile; a wait on a task already READY
/// returns at once.
pub async fn wait_returns_when_ready(backend: Arc<dyn ResultBackend>, prefix: &str) {
    for (name, ready) in [
        (
            "success",
            TaskMeta::success(format!("{prefix}-success"), json!([1, 2, 3])),
        ),
        (
            "failure",
            TaskMeta::error(
                format!("{prefix}-failure"),
                TaskState::Failure,
                &TaskError::new("ValueError", "boom"),
            ),
        ),
    ] {
        let id = ready.task_id.clone();
        store(&backend, started(&id)).await;
        let (started_tx, started_rx) = oneshot::channel();
        let waiter = tokio::spawn({
            let backend = backend.clone();
            let id = id.clone();
            async move {
                let _ = started_tx.send(());
                wait(&backend, &id, LONG_WAIT).await
            }
        });
        started_rx.await.expect("the waiting task started");
        let retry = TaskMeta::error(&id, TaskState::Retry, &TaskError::new("KeyError", "x"));
        store(&backend, retry).await;
        store(&backend, ready.clone()).await;
        let (waited, elapsed) = waiter.await.expect("the waiting task panicked");
        assert_eq!(
            waited.as_ref(),
            Some(&ready),
            "wait ({name}): returns the READY meta, not an earlier state"
        );
        assert!(
            elapsed < EARLY,
            "wait ({name}) with timeout {LONG_WAIT:?} returned after {elapsed:?}, not as soon as \
             the result was stored"
        );

        let (again, elapsed) = wait(&backend, &id, LONG_WAIT).await;
        assert_eq!(
            again.as_ref(),
            Some(&ready),
            "wait ({name}) on a READY task"
        );
        assert!(
            elapsed < EARLY,
            "wait ({name}) on a READY task took {elapsed:?}"
        );
    }
}

/// A `wait` whose timeout runs out returns the latest stored non-ready meta (or `None` for an
/// unknown task), after about the timeout, not before.
pub async fn wait_times_out_with_latest(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let timeout = Duration::from_millis(500);
    let id = format!("{prefix}-running");
    let running = started(&id);
    store(&backend, running.clone()).await;
    let (waited, elapsed) = wait(&backend, &id, timeout).await;
    assert_eq!(
        waited.as_ref(),
        Some(&running),
        "wait timed out: latest stored meta"
    );
    assert!(
        elapsed >= timeout.mul_f64(0.8),
        "wait({timeout:?}) on a running task returned after {elapsed:?}: it should wait"
    );
    assert!(
        elapsed < timeout + EARLY,
        "wait({timeout:?}) took {elapsed:?}"
    );

    let unknown = format!("{prefix}-unknown");
    let (waited, elapsed) = wait(&backend, &unknown, timeout).await;
    assert_eq!(waited, None, "wait timed out on an unknown task");
    assert!(
        elapsed >= timeout.mul_f64(0.8),
        "wait({timeout:?}) on an unknown task returned after {elapsed:?}: it should wait"
    );
}

/// `forget` removes a result (after which SUCCESS no longer protects the id); forgetting an
/// unknown id is not an error.
pub async fn forget_removes(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let id = format!("{prefix}-f");
    store(&backend, TaskMeta::success(&id, json!("done"))).await;
    assert!(get(&backend, &id).await.is_some(), "stored before forget");
    backend
        .forget(&id)
        .await
        .unwrap_or_else(|error| panic!("forget failed: {error}"));
    assert_eq!(get(&backend, &id).await, None, "get after forget");
    let (waited, _) = wait(&backend, &id, Duration::from_millis(200)).await;
    assert_eq!(waited, None, "wait after forget");
    backend
        .forget(&id)
        .await
        .unwrap_or_else(|error| panic!("forget twice failed: {error}"));
    backend
        .forget(&format!("{prefix}-unknown"))
        .await
        .unwrap_or_else(|error| panic!("forget of an unknown id failed: {error}"));

    let failure = TaskMeta::error(&id, TaskState::Failure, &TaskError::msg("again"));
    store(&backend, failure.clone()).await;
    assert_stored(&backend, &failure, "store after forget").await;
}

/// Group records round-trip (with members in order, and empty); unknown groups are `None`.
pub async fn group_round_trip(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group = GroupMeta {
        group_id: format!("{prefix}-g"),
        task_ids: (0..3)
            .map(|index| format!("{prefix}-member-{index}"))
            .collect(),
    };
    let empty = GroupMeta {
        group_id: format!("{prefix}-empty"),
        task_ids: Vec::new(),
    };
    for group in [&group, &empty] {
        backend
            .save_group(group)
            .await
            .unwrap_or_else(|error| panic!("save_group({:?}) failed: {error}", group.group_id));
        let read = backend
            .get_group(&group.group_id)
            .await
            .unwrap_or_else(|error| panic!("get_group({:?}) failed: {error}", group.group_id));
        assert_eq!(read.as_ref(), Some(group), "group round trip");
    }
    let unknown = backend
        .get_group(&format!("{prefix}-unknown"))
        .await
        .unwrap_or_else(|error| panic!("get_group failed: {error}"));
    assert_eq!(unknown, None, "unknown group");
}

/// `store_many` stores every meta of the batch, each readable as stored.
pub async fn store_many_round_trip(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let metas: Vec<TaskMeta> = (0..50)
        .map(|index| {
            let id = format!("{prefix}-{index:02}");
            match index % 4 {
                0 => TaskMeta::success(id, json!(index)),
                1 => started(&id),
                2 => TaskMeta::error(id, TaskState::Failure, &TaskError::new("ValueError", "bad")),
                _ => extended_meta(&id, prefix),
            }
        })
        .collect();
    backend
        .store_many(metas.clone())
        .await
        .unwrap_or_else(|error| panic!("store_many failed: {error}"));
    for meta in &metas {
        assert_stored(&backend, meta, "store_many").await;
    }
    backend
        .store_many(Vec::new())
        .await
        .unwrap_or_else(|error| panic!("store_many of nothing failed: {error}"));
}

/// With an expiry of [`EXPIRY`] (the factory is asked for it), a result is readable at once
/// and gone once the expiry passed and `cleanup_expired` ran (stores that expire entries by
/// themselves return 0 from it); a result stored since is kept.
pub async fn results_expire(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let old = TaskMeta::success(format!("{prefix}-old"), json!("old"));
    store(&backend, old.clone()).await;
    assert_stored(&backend, &old, "before expiry").await;

    // Real time must pass for results to expire.
    tokio::time::sleep(EXPIRY + Duration::from_millis(500)).await;
    let fresh = TaskMeta::success(format!("{prefix}-fresh"), json!("fresh"));
    let fresh_stored_at = Instant::now();
    store(&backend, fresh.clone()).await;
    backend
        .cleanup_expired()
        .await
        .unwrap_or_else(|error| panic!("cleanup_expired failed: {error}"));
    if fresh_stored_at.elapsed() < EXPIRY / 2 {
        assert_stored(
            &backend,
            &fresh,
            "a result younger than the expiry survives cleanup",
        )
        .await;
    }

    // Stores with coarse expiry (TTL in whole seconds) get a few more seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&backend, &old.task_id).await.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a result stored with expiry {EXPIRY:?} is still there {:?} later, after \
             cleanup_expired",
            EXPIRY + Duration::from_millis(500) + Duration::from_secs(5)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        backend
            .cleanup_expired()
            .await
            .unwrap_or_else(|error| panic!("cleanup_expired failed: {error}"));
    }
}
