//! SQLite specifics: the URL forms an embedded store is given, waits that see writes of
//! another connection (SQLite cannot push; they poll), in-memory databases.

#![cfg(feature = "sqlite")]

mod common;

use std::time::{Duration, Instant};

use queue_core::{ResultBackend, TaskMeta, TaskState};
use queue_results::{SqlOptions, SqliteBackend};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_create_the_database() {
    for (label, query) in [
        ("rwc", "?mode=rwc"),
        ("plain", ""),
        ("expiring", "?expires=5"),
    ] {
        let path = common::sqlite_path(label);
        let backend = SqliteBackend::connect(&format!("sqlite://{}{query}", path.display()))
            .await
            .unwrap_or_else(|error| panic!("{label}: {error}"));
        assert!(path.is_file(), "{label}: the file is created");
        backend
            .store(TaskMeta::success("t", json!(label)))
            .await
            .unwrap();
        // Reopened, the result is there: it is in the file.
        drop(backend);
        let reopened = SqliteBackend::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(
            reopened.get("t").await.unwrap().unwrap().result,
            json!(label)
        );
    }
    let expiring = SqliteBackend::connect("sqlite::memory:?expires=5")
        .await
        .unwrap();
    assert_eq!(expiring.options().expiry, Some(Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_is_the_drivers() {
    let missing = common::sqlite_path("absent");
    let error = SqliteBackend::connect(&format!("sqlite://{}?mode=ro", missing.display()))
        .await
        .expect_err("an explicit mode is not overridden: no file is created");
    assert!(error.is_unavailable(), "{error}");
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_databases_are_private_and_live_with_the_backend() {
    let first = SqliteBackend::connect("sqlite::memory:").await.unwrap();
    let second = SqliteBackend::connect("sqlite://:memory:").await.unwrap();
    first.store(TaskMeta::success("t", json!(1))).await.unwrap();
    assert!(first.get("t").await.unwrap().is_some());
    assert_eq!(
        second.get("t").await.unwrap(),
        None,
        "each URL opens its own database"
    );
    // Concurrent use of the single connection.
    let writes = (0..20).map(|index| {
        let first = first.clone();
        async move {
            first
                .store(TaskMeta::success(format!("c{index}"), json!(index)))
                .await
        }
    });
    for outcome in futures::future::join_all(writes).await {
        outcome.unwrap();
    }
    assert_eq!(first.get("c19").await.unwrap().unwrap().result, json!(19));
}

/// Two backends on one file (two processes, in effect): a wait in one returns soon after the
/// other stores, by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_see_writes_of_other_connections() {
    let url = common::sqlite_url("shared");
    let reader = SqliteBackend::connect_with(
        &url,
        SqlOptions::default().poll_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let writer = SqliteBackend::connect(&url).await.unwrap();
    writer
        .store(TaskMeta::new("t", TaskState::Started, json!({"pid": 1})))
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let reader = reader.clone();
        async move { reader.wait("t", Duration::from_secs(30)).await }
    });
    let success = TaskMeta::success("t", json!("done"));
    writer.store(success.clone()).await.unwrap();
    let stored_at = Instant::now();
    assert_eq!(waiter.await.unwrap().unwrap(), Some(success));
    assert!(
        stored_at.elapsed() < Duration::from_secs(5),
        "the wait noticed after {:?}",
        stored_at.elapsed()
    );
}

/// Processes starting together on a new file (a worker and a client of the quickstart) all
/// connect: concurrent migrations do not fail each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_all_succeed() {
    let url = common::sqlite_url("race");
    let connects = (0..4).map(|_| SqliteBackend::connect(&url));
    for outcome in futures::future::join_all(connects).await {
        let backend = outcome.expect("connect while others migrate");
        assert_eq!(backend.get("t").await.unwrap(), None);
    }
}
