//! The rows are Celery's: what we store is laid out as Celery 5.7's database backend lays it
//! out (JSON bytes, UTC `date_done`), and rows written the way Celery writes them (its
//! SQLAlchemy INSERT, spec §5.4's captured examples) read back as task metas. On PostgreSQL
//! such a write also wakes our waits.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use queue_core::protocol::time::parse_timestamp;
use queue_core::{BackendError, ResultBackend, TaskMeta, TaskState};
use serde_json::{Map, json};

fn extended(task_id: &str) -> TaskMeta {
    let mut meta = TaskMeta::success(task_id, json!({"sum": 4}));
    meta.date_done = parse_timestamp("2026-11-24T16:28:38.218227+01:00");
    meta.name = Some("tasks.add".into());
    meta.args = Some(vec![json!(2), json!(2)]);
    meta.kwargs = Some(Map::new());
    meta.worker = Some("celery@h".into());
    meta.retries = Some(0);
    meta.queue = Some("celery".into());
    meta
}

/// What Celery's row `('dddd…01','SUCCESS', b'4', '2026-11-24 15:28:38.218227', None, None,
/// 'tasks.add', b'[2, 2]', b'{}', 'celery@h', 0, 'celery', None)` must read as.
fn celery_success(task_id: &str) -> TaskMeta {
    let mut meta = extended(task_id);
    meta.result = json!(4);
    meta.children = None;
    meta
}

/// A batch with a meta that cannot be stored stores the rest and reports the bad one.
async fn invalid_meta_costs_nothing_else(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let good = TaskMeta::success(format!("{prefix}-good"), json!(1));
    let bad = TaskMeta::success(format!("{prefix}-{}", "x".repeat(200)), json!(2));
    let also_good = TaskMeta::success(format!("{prefix}-also"), json!(3));
    let error = backend
        .store_many(vec![good.clone(), bad.clone(), also_good.clone()])
        .await
        .expect_err("an id longer than Celery's column is refused");
    match error {
        BackendError::Encoding(message) => {
            assert!(message.contains("characters long"), "{message}")
        }
        other => panic!("expected an encoding error, got {other:?}"),
    }
    assert_eq!(backend.get(&good.task_id).await.unwrap(), Some(good));
    assert_eq!(
        backend.get(&also_good.task_id).await.unwrap(),
        Some(also_good)
    );
    assert!(matches!(
        backend.store(bad).await,
        Err(BackendError::Encoding(_))
    ));
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::Instant;

    use queue_results::{PostgresBackend, SqlOptions};
    use sqlx::Row;

    use super::*;

    async fn backend(options: SqlOptions) -> Option<PostgresBackend> {
        let url = common::postgres_url()?;
        Some(
            PostgresBackend::connect_with(&url, options)
                .await
                .expect("connect"),
        )
    }

    fn prefix(label: &str) -> String {
        common::unique(label)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_rows_have_celery_layout() {
        let Some(backend) = backend(SqlOptions::default()).await else {
            return;
        };
        let id = prefix("pg-layout");
        backend.store(extended(&id)).await.unwrap();
        let row = sqlx::query(
            "SELECT status, result, date_done, children, args, kwargs, retries, expires_at > now() \
             AS live FROM celery_taskmeta WHERE task_id = $1",
        )
        .bind(&id)
        .fetch_one(backend.pool())
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("status"), "SUCCESS");
        assert_eq!(row.get::<Vec<u8>, _>("result"), br#"{"sum":4}"#);
        assert_eq!(
            row.get::<chrono::NaiveDateTime, _>("date_done").to_string(),
            "2026-11-24 15:28:38.218227",
            "UTC, without offset"
        );
        assert_eq!(
            row.get::<Option<Vec<u8>>, _>("children").as_deref(),
            Some(&b"[]"[..])
        );
        assert_eq!(row.get::<Vec<u8>, _>("args"), b"[2,2]");
        assert_eq!(row.get::<Vec<u8>, _>("kwargs"), b"{}");
        assert_eq!(row.get::<i32, _>("retries"), 0);
        assert!(row.get::<bool, _>("live"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_celery_writes_are_read_and_wake_waits() {
        let Some(backend) = backend(SqlOptions::default()).await else {
            return;
        };
        let id = prefix("pg-celery");
        let waiter = tokio::spawn({
            let backend = backend.clone();
            let id = id.clone();
            async move {
                let started = Instant::now();
                (
                    backend.wait(&id, Duration::from_secs(30)).await,
                    started.elapsed(),
                )
            }
        });
        // Subscribed once the first read happened; a short wait of our own orders us after it.
        let _ = backend
            .wait(&format!("{id}-other"), Duration::from_millis(50))
            .await;
        // Celery's SQLAlchemy INSERT: id from the sequence, its own columns only.
        sqlx::query(
            "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done, traceback, \
             children, name, args, kwargs, worker, retries, queue, stamps) VALUES \
             (nextval('task_id_sequence'), $1, 'SUCCESS', '\\x34', '2026-11-24 15:28:38.218227', \
             NULL, NULL, 'tasks.add', '[2, 2]'::bytea, '{}'::bytea, 'celery@h', 0, 'celery', NULL)",
        )
        .bind(&id)
        .execute(backend.pool())
        .await
        .unwrap();
        let (waited, elapsed) = waiter.await.unwrap();
        assert_eq!(waited.unwrap(), Some(celery_success(&id)));
        assert!(elapsed < Duration::from_secs(10), "woken after {elapsed:?}");

        let failed = format!("{id}-failed");
        sqlx::query(
            "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done) VALUES \
             (nextval('task_id_sequence'), $1, 'FAILURE', \
             convert_to('{\"exc_type\": \"ValueError\", \"exc_message\": [\"bad\"], \
             \"exc_module\": \"builtins\"}', 'UTF8'), '2026-11-24 15:28:38')",
        )
        .bind(&failed)
        .execute(backend.pool())
        .await
        .unwrap();
        let meta = backend.get(&failed).await.unwrap().expect("stored");
        assert_eq!(meta.status, TaskState::Failure);
        assert_eq!(meta.error_value().unwrap().message(), "bad");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_meta_in_a_batch() {
        let Some(backend) = backend(SqlOptions::default()).await else {
            return;
        };
        invalid_meta_costs_nothing_else(Arc::new(backend), &prefix("pg-invalid")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_without_expiry_survive_cleanup() {
        let Some(url) = common::postgres_url() else {
            return;
        };
        let keeper = PostgresBackend::connect(&format!(
            "{url}{}expires=never",
            if url.contains('?') { '&' } else { '?' }
        ))
        .await
        .unwrap();
        assert_eq!(keeper.options().expiry, None);
        let id = prefix("pg-never");
        keeper
            .store(TaskMeta::success(&id, json!(1)))
            .await
            .unwrap();
        let sweeper = PostgresBackend::connect_with(
            &url,
            SqlOptions::default().expiry(Some(Duration::from_millis(1))),
        )
        .await
        .unwrap();
        sweeper.cleanup_expired().await.unwrap();
        assert!(keeper.get(&id).await.unwrap().is_some());
        keeper.forget(&id).await.unwrap();
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use queue_results::{SqlOptions, SqliteBackend};
    use sqlx::Row;

    use super::*;

    async fn backend(label: &str) -> SqliteBackend {
        SqliteBackend::connect(&common::sqlite_url(label))
            .await
            .expect("open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_rows_have_celery_layout() {
        let backend = backend("layout").await;
        backend.store(extended("t1")).await.unwrap();
        let row = sqlx::query(
            "SELECT result, date_done, children, args, kwargs, typeof(date_done) AS kind \
             FROM celery_taskmeta WHERE task_id = 't1'",
        )
        .fetch_one(backend.pool())
        .await
        .unwrap();
        assert_eq!(row.get::<Vec<u8>, _>("result"), br#"{"sum":4}"#);
        assert_eq!(row.get::<String, _>("kind"), "text");
        assert_eq!(
            row.get::<String, _>("date_done"),
            "2026-11-24 15:28:38.218227",
            "SQLAlchemy's storage format, UTC"
        );
        assert_eq!(row.get::<Vec<u8>, _>("children"), b"[]");
        assert_eq!(row.get::<Vec<u8>, _>("args"), b"[2,2]");
        assert_eq!(row.get::<Vec<u8>, _>("kwargs"), b"{}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_celery_writes_are_read() {
        let backend = backend("celery").await;
        sqlx::query(
            "INSERT INTO celery_taskmeta (task_id, status, result, date_done, traceback, \
             children, name, args, kwargs, worker, retries, queue, stamps) VALUES \
             ('dddd', 'SUCCESS', X'34', '2026-11-24 15:28:38.218227', NULL, NULL, 'tasks.add', \
             CAST('[2, 2]' AS BLOB), CAST('{}' AS BLOB), 'celery@h', 0, 'celery', NULL), \
             ('eeee', 'STARTED', CAST('{\"pid\": 123, \"hostname\": \"celery@h\"}' AS BLOB), \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        )
        .execute(backend.pool())
        .await
        .unwrap();
        assert_eq!(
            backend.get("dddd").await.unwrap(),
            Some(celery_success("dddd"))
        );
        let started = backend.get("eeee").await.unwrap().expect("stored");
        assert_eq!(started.status, TaskState::Started);
        assert_eq!(started.result, json!({"pid": 123, "hostname": "celery@h"}));
        assert_eq!(started.date_done, None);
        // Rows Python wrote carry no expiry of ours: cleanup leaves them to Celery's own.
        let sweeper = SqliteBackend::connect_with(
            &format!(
                "sqlite://{}",
                backend.pool().connect_options().get_filename().display()
            ),
            SqlOptions::default().expiry(Some(Duration::from_millis(1))),
        )
        .await
        .unwrap();
        sweeper.cleanup_expired().await.unwrap();
        assert!(backend.get("dddd").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_meta_in_a_batch() {
        invalid_meta_costs_nothing_else(Arc::new(backend("invalid").await), "invalid").await;
    }
}
