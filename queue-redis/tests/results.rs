//! The result backend as Celery's Redis backend writes it: the keys, the JSON, the expiry,
//! the publication a Python `AsyncResult` waits for; and `wait` without polling. Database 12.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use queue_core::{GroupMeta, ResultBackend, TaskError, TaskMeta, TaskState};
use serde_json::{Value as Json, json};

use common::unique;

const DB: u8 = 12;

async fn backend(query: &str, expires: Option<Duration>) -> Option<queue_redis::RedisBackend> {
    let url = common::redis_url(DB, query)?;
    Some(
        queue_redis::RedisBackend::connect(&url, expires)
            .await
            .expect("connect to Redis"),
    )
}

async fn raw_client() -> fred::clients::Client {
    let url = common::redis_url(DB, "").expect("checked by the caller");
    let client =
        fred::types::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_meta_is_celerys_with_a_day_of_expiry_and_is_published() {
    let Some(backend) = backend("", None).await else {
        return;
    };
    let client = raw_client().await;
    let id = unique("meta");
    let key = format!("celery-task-meta-{id}");
    assert_eq!(backend.task_key(&id), key);

    // A raw subscriber, as Python's AsyncResult listens.
    let subscriber = fred::types::Builder::from_config(client.client_config())
        .build_subscriber_client()
        .unwrap();
    subscriber.init().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(key.as_str()).await.unwrap();
    let _: fred::types::Value = subscriber.ping(None).await.unwrap();

    backend
        .store(TaskMeta::success(&id, json!(3)))
        .await
        .unwrap();
    let stored: String = client.get(key.as_str()).await.unwrap();
    let meta: Json = serde_json::from_str(&stored).unwrap();
    assert_eq!(meta["status"], "SUCCESS");
    assert_eq!(meta["result"], 3);
    assert_eq!(meta["traceback"], Json::Null);
    assert_eq!(meta["children"], json!([]));
    assert_eq!(meta["task_id"], json!(id));
    assert!(chrono::DateTime::parse_from_rfc3339(meta["date_done"].as_str().unwrap()).is_ok());
    assert!(
        stored.starts_with(r#"{"status":"SUCCESS""#),
        "status first, as Celery writes it"
    );
    let ttl: i64 = client.ttl(key.as_str()).await.unwrap();
    assert!(
        (86_390..=86_400).contains(&ttl),
        "Celery's default expiry of a day, got {ttl}"
    );

    let published = tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*published.channel, key.as_str());
    assert_eq!(
        published.value.as_str().unwrap(),
        stored,
        "the same JSON is published on the key"
    );
    let _ = subscriber.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_success_is_never_overwritten() {
    let Some(backend) = backend("", None).await else {
        return;
    };
    let id = unique("success");
    backend
        .store(TaskMeta::new(
            &id,
            TaskState::Started,
            json!({"pid": 1, "hostname": "w"}),
        ))
        .await
        .unwrap();
    backend
        .store(TaskMeta::success(&id, json!("first")))
        .await
        .unwrap();
    let failure = TaskMeta::error(
        &id,
        TaskState::Failure,
        &TaskError::new("ValueError", "late"),
    );
    backend.store(failure).await.unwrap();
    backend
        .store(TaskMeta::success(&id, json!("second")))
        .await
        .unwrap();
    let meta = backend.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (meta.status, meta.result),
        (TaskState::Success, json!("first"))
    );

    // A SUCCESS written by Python (its spacing, its key order) is protected too.
    let client = raw_client().await;
    let python = unique("python");
    let written = format!(
        r#"{{"status": "SUCCESS", "result": 4, "traceback": null, "children": [], "date_done": "2026-11-24T15:27:26.005122+00:00", "task_id": "{python}"}}"#
    );
    let _: () = client
        .set(
            format!("celery-task-meta-{python}"),
            written.as_str(),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    backend
        .store(TaskMeta::new(&python, TaskState::Retry, Json::Null))
        .await
        .unwrap();
    let stored: String = client
        .get(format!("celery-task-meta-{python}"))
        .await
        .unwrap();
    assert_eq!(stored, written);
    let reordered = unique("reordered");
    let written = format!(r#"{{"task_id": "{reordered}", "result": 5, "status": "SUCCESS"}}"#);
    let _: () = client
        .set(
            format!("celery-task-meta-{reordered}"),
            written.as_str(),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    backend
        .store(TaskMeta::new(&reordered, TaskState::Started, Json::Null))
        .await
        .unwrap();
    let stored: String = client
        .get(format!("celery-task-meta-{reordered}"))
        .await
        .unwrap();
    assert_eq!(stored, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_type_message_and_traceback_in_celerys_shape() {
    let Some(backend) = backend("", None).await else {
        return;
    };
    let client = raw_client().await;
    let id = unique("failure");
    let error =
        TaskError::new("ValueError", "bad input").traceback("backtrace:\n  0: tasks::charge");
    backend
        .store(TaskMeta::error(&id, TaskState::Failure, &error))
        .await
        .unwrap();
    let stored: String = client.get(format!("celery-task-meta-{id}")).await.unwrap();
    let meta: Json = serde_json::from_str(&stored).unwrap();
    assert_eq!(meta["status"], "FAILURE");
    assert_eq!(meta["result"]["exc_type"], "ValueError");
    assert_eq!(meta["result"]["exc_message"], json!(["bad input"]));
    assert_eq!(meta["traceback"], "backtrace:\n  0: tasks::charge");
    let read = backend
        .get(&id)
        .await
        .unwrap()
        .unwrap()
        .error_value()
        .unwrap();
    assert_eq!(
        (read.exc_type(), read.message()),
        ("ValueError", "bad input")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_prefixes_follow_celery() {
    let Some(backend) = backend("global_keyprefix=tenant", None).await else {
        return;
    };
    let client = raw_client().await;
    let group = GroupMeta {
        group_id: unique("group"),
        task_ids: vec!["a".into(), "b".into()],
    };
    backend.save_group(&group).await.unwrap();
    // Celery appends `_` to a prefix that does not end in a separator.
    let key = format!("tenant_celery-taskset-meta-{}", group.group_id);
    assert_eq!(backend.group_key(&group.group_id), key);
    let stored: String = client.get(key.as_str()).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Json>(&stored).unwrap(),
        json!({"result": [[group.group_id, null], [[["a", null], null], [["b", null], null]]]})
    );
    assert_eq!(
        backend.get_group(&group.group_id).await.unwrap(),
        Some(group)
    );
    assert_eq!(backend.task_key("t"), "tenant_celery-task-meta-t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_hears_results_stored_by_another_connection_at_once() {
    let Some(waiting) = backend("", None).await else {
        return;
    };
    let waiting = Arc::new(waiting);
    let Some(writer) = backend("", None).await else {
        return;
    };
    // Stores land before, during and right after the subscription: none may be missed.
    for round in 0..300 {
        let id = unique("wait");
        let wait = tokio::spawn({
            let (waiting, id) = (waiting.clone(), id.clone());
            async move { waiting.wait(&id, Duration::from_secs(10)).await }
        });
        if round % 3 == 1 {
            tokio::task::yield_now().await;
        }
        writer
            .store(TaskMeta::success(&id, json!(round)))
            .await
            .unwrap();
        let stored_at = Instant::now();
        let meta = wait.await.unwrap().unwrap().expect("a result");
        assert_eq!(meta.result, json!(round));
        assert!(
            stored_at.elapsed() < Duration::from_secs(2),
            "round {round}: the wait heard it late"
        );
    }
    // Not ready: the latest state when the time is up.
    let id = unique("pending");
    writer
        .store(TaskMeta::new(&id, TaskState::Started, Json::Null))
        .await
        .unwrap();
    let meta = waiting.wait(&id, Duration::from_millis(200)).await.unwrap();
    assert_eq!(meta.map(|meta| meta.status), Some(TaskState::Started));
    assert_eq!(
        waiting
            .wait(&unique("unknown"), Duration::from_millis(100))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_configurable_and_zero_keeps_results() {
    let Some(short) = backend("result_expires=120", None).await else {
        return;
    };
    let Some(forever) = backend("result_expires=0", None).await else {
        return;
    };
    let client = raw_client().await;
    let (a, b) = (unique("short"), unique("forever"));
    short
        .store(TaskMeta::success(&a, Json::Null))
        .await
        .unwrap();
    forever
        .store(TaskMeta::success(&b, Json::Null))
        .await
        .unwrap();
    let ttl_a: i64 = client.ttl(format!("celery-task-meta-{a}")).await.unwrap();
    let ttl_b: i64 = client.ttl(format!("celery-task-meta-{b}")).await.unwrap();
    assert!((110..=120).contains(&ttl_a), "{ttl_a}");
    assert_eq!(ttl_b, -1, "no expiry");
    forever.forget(&b).await.unwrap();
    assert_eq!(forever.get(&b).await.unwrap(), None);
}

/// Channels with subscribers on the server whose names start with `prefix`.
async fn subscribed_channels(client: &fred::clients::Client, prefix: &str) -> usize {
    let channels: Vec<String> = client.pubsub_channels(format!("{prefix}*")).await.unwrap();
    channels.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_time_out_or_are_dropped_leave_no_subscription() {
    let prefix = format!("{}:", unique("waits"));
    let Some(backend) = backend(&format!("global_keyprefix={prefix}"), None).await else {
        return;
    };
    let client = raw_client().await;
    assert_eq!(subscribed_channels(&client, &prefix).await, 0);
    let count = 10_000;
    let batch = 100;
    for start in (0..count).step_by(batch) {
        let waits = (start..start + batch).map(|index| {
            let backend = backend.clone();
            async move {
                let id = format!("never-{index}");
                if index % 2 == 0 {
                    // Given up by the caller: the wait future is dropped mid-way.
                    let wait = backend.wait(&id, Duration::from_secs(30));
                    let _ = tokio::time::timeout(Duration::from_millis(2), wait).await;
                } else {
                    // Timed out by itself.
                    let meta = backend.wait(&id, Duration::from_millis(2)).await.unwrap();
                    assert_eq!(meta, None);
                }
            }
        });
        futures::future::join_all(waits).await;
    }
    // The server's subscriptions go back to none (dropped waits let go from a task).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = subscribed_channels(&client, &prefix).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} subscriptions left by {count} waits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And waiting still works, on a channel that a dropped wait used before.
    let id = "never-0";
    let wait = tokio::spawn({
        let backend = backend.clone();
        async move { backend.wait(id, Duration::from_secs(10)).await }
    });
    backend
        .store(TaskMeta::success(id, json!("late")))
        .await
        .unwrap();
    let meta = wait.await.unwrap().unwrap().expect("heard");
    assert_eq!(meta.result, json!("late"));
}
