//! Migrations: they adopt tables Celery created first (an app moving over keeps its results
//! table), they can be turned off, and they are idempotent.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod common;

use queue_core::{ResultBackend, TaskMeta, TaskState};
use serde_json::json;

async fn adopted_tables_work(backend: &dyn ResultBackend) {
    let python = backend
        .get("from-python")
        .await
        .unwrap()
        .expect("Celery's row is read");
    assert_eq!(
        (python.status, python.result),
        (TaskState::Success, json!(4))
    );
    let mut ours = TaskMeta::success("from-rust", json!({"a": 1}));
    ours.group_id = Some("g".into());
    ours.name = Some("tasks.add".into());
    backend
        .store(ours.clone())
        .await
        .expect("store into an adopted table");
    assert_eq!(backend.get("from-rust").await.unwrap(), Some(ours));
    let group = queue_core::GroupMeta {
        group_id: "g".into(),
        task_ids: vec!["from-rust".into()],
    };
    backend.save_group(&group).await.unwrap();
    assert_eq!(backend.get_group("g").await.unwrap(), Some(group));
}

#[cfg(feature = "postgres")]
mod postgres {
    use queue_core::BackendError;
    use queue_results::PostgresBackend;
    use sqlx::{Connection, Executor, PgConnection};

    use super::*;

    /// Celery 5.6's tables as SQLAlchemy creates them (no `children`, no extended columns, no
    /// server default for `id`), and one row it wrote.
    const CELERY_5_6_POSTGRES: &str = "
        CREATE SEQUENCE task_id_sequence;
        CREATE SEQUENCE taskset_id_sequence;
        CREATE TABLE celery_taskmeta (
            id INTEGER NOT NULL PRIMARY KEY, task_id VARCHAR(155) UNIQUE, status VARCHAR(50),
            result BYTEA, date_done TIMESTAMP WITHOUT TIME ZONE, traceback TEXT);
        CREATE INDEX ix_celery_taskmeta_date_done ON celery_taskmeta (date_done);
        CREATE TABLE celery_tasksetmeta (
            id INTEGER NOT NULL PRIMARY KEY, taskset_id VARCHAR(155) UNIQUE, result BYTEA,
            date_done TIMESTAMP WITHOUT TIME ZONE);
        INSERT INTO celery_taskmeta (id, task_id, status, result, date_done)
            VALUES (nextval('task_id_sequence'), 'from-python', 'SUCCESS', '\\x34',
                    '2026-11-24 15:28:38.218227');
    ";

    /// A schema of the test's own (dropped at the end), so that the migrations run afresh.
    async fn with_schema(url: &str, schema: &str, setup: &str) -> String {
        let mut admin = PgConnection::connect(url).await.expect("connect");
        admin
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\"; SET search_path = \"{schema}\"; {setup}").as_str())
            .await
            .expect("set up the schema");
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    }

    async fn drop_schema(url: &str, schema: &str) {
        let mut admin = PgConnection::connect(url).await.expect("connect");
        admin
            .execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await
            .expect("drop the schema");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_celery_created_are_adopted() {
        let Some(url) = common::postgres_url() else {
            return;
        };
        let schema = common::unique("adopt").replace('-', "_");
        let scoped = with_schema(&url, &schema, CELERY_5_6_POSTGRES).await;
        let backend = PostgresBackend::connect(&scoped)
            .await
            .expect("migrations adopt");
        adopted_tables_work(&backend).await;
        // Connecting again finds everything in place.
        let again = PostgresBackend::connect(&scoped)
            .await
            .expect("migrations are idempotent");
        assert!(again.get("from-rust").await.unwrap().is_some());
        drop(again);
        drop(backend);
        drop_schema(&url, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_migrations_a_missing_table_is_a_clear_error() {
        let Some(url) = common::postgres_url() else {
            return;
        };
        let schema = common::unique("nomigrate").replace('-', "_");
        let scoped = with_schema(&url, &schema, "").await;
        let backend = PostgresBackend::connect(&format!("{scoped}&migrate=false"))
            .await
            .expect("connecting does not touch the schema");
        let error = backend
            .store(TaskMeta::success("t", json!(1)))
            .await
            .expect_err("no table");
        assert!(
            matches!(&error, BackendError::Other(message) if message.contains("celery_taskmeta")),
            "{error:?}"
        );
        drop(backend);
        drop_schema(&url, &schema).await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use queue_results::{SqlOptions, SqliteBackend};
    use sqlx::{Connection, Executor, SqliteConnection};

    use super::*;

    /// Celery's tables as SQLAlchemy creates them without `result_extended`, and a row.
    const CELERY_SQLITE: &str = "
        CREATE TABLE celery_taskmeta (
            id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, task_id VARCHAR(155) UNIQUE,
            status VARCHAR(50), result BLOB, date_done DATETIME, traceback TEXT, children BLOB);
        CREATE TABLE celery_tasksetmeta (
            id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, taskset_id VARCHAR(155) UNIQUE,
            result BLOB, date_done DATETIME);
        INSERT INTO celery_taskmeta (task_id, status, result, date_done)
            VALUES ('from-python', 'SUCCESS', X'34', '2026-11-24 15:28:38.218227');
    ";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_celery_created_are_adopted() {
        let path = common::sqlite_path("adopt");
        let url = format!("sqlite://{}", path.display());
        let mut python = SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        python.execute(CELERY_SQLITE).await.unwrap();
        python.close().await.unwrap();
        let backend = SqliteBackend::connect(&url)
            .await
            .expect("migrations adopt");
        adopted_tables_work(&backend).await;
        let again = SqliteBackend::connect(&url)
            .await
            .expect("migrations are idempotent");
        assert!(again.get("from-rust").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_migrations_a_missing_table_is_a_clear_error() {
        let backend = SqliteBackend::connect_with(
            &common::sqlite_url("nomigrate"),
            SqlOptions::default().migrate(false),
        )
        .await
        .unwrap();
        let error = backend.get("t").await.expect_err("no table");
        assert!(error.to_string().contains("no such table"), "{error}");
        // The application runs the migrations itself.
        queue_results::SQLITE_MIGRATOR
            .run(backend.pool())
            .await
            .unwrap();
        assert_eq!(backend.get("t").await.unwrap(), None);
    }
}
