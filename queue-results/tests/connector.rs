//! URLs through the app builder: the link-time connector serves `sqlite://` and
//! `postgres://` result backends (and lease stores), refuses them as brokers, names a
//! missing feature, and keeps passwords out of errors and `Debug`.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod common;

use std::time::Duration;

use queue_core::{App, Error, TaskMeta};
use serde_json::json;

async fn app_with_backend(url: &str) -> Result<App, Error> {
    // Referring to the static makes sure this crate, and so its connector, is linked.
    let _ = &queue_results::SQL_CONNECTOR;
    App::builder()
        .broker("memory://")
        .backend(url)
        .build()
        .await
}

#[test]
fn schemes_are_served() {
    use queue_core::connect::Connector;
    assert_eq!(
        queue_results::SqlConnector.schemes(),
        ["postgres", "postgresql", "sqlite"]
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_make_result_backends() {
    let path = common::sqlite_path("app");
    for url in [
        format!("sqlite://{}?mode=rwc", path.display()),
        format!("sqlite://{}?expires=60", path.display()),
        "sqlite::memory:".to_owned(),
    ] {
        let app = app_with_backend(&url)
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        let backend = app.backend().expect("a backend");
        backend
            .store(TaskMeta::success("t", json!(1)))
            .await
            .unwrap();
        assert_eq!(
            app.result::<i64>("t")
                .get(Duration::from_secs(5))
                .await
                .unwrap(),
            1,
            "{url}"
        );
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_make_result_backends() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let id = common::unique("connector");
    for url in [url.clone(), url.replacen("postgres://", "postgresql://", 1)] {
        let app = app_with_backend(&url).await.expect("connect");
        let backend = app.backend().expect("a backend");
        backend
            .store(TaskMeta::success(&id, json!(2)))
            .await
            .unwrap();
        assert_eq!(
            app.result::<i64>(&id)
                .get(Duration::from_secs(5))
                .await
                .unwrap(),
            2
        );
        backend.forget(&id).await.unwrap();
    }
}

/// Acquires and releases a lease of a store resolved from `url` by the connector.
async fn lease_from_url(url: &str) {
    let _ = &queue_results::SQL_CONNECTOR;
    let parsed = url.parse().expect("a URL");
    let lease = queue_core::connect::connect_lease(&parsed, &[])
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let name = common::unique("lease");
    let grant = lease
        .acquire(&name, "a", Duration::from_secs(5))
        .await
        .expect("acquire")
        .expect("a new lease is free");
    assert_eq!(grant.token, 1, "{url}");
    lease.release(&grant).await.expect("release");
    assert!(
        lease.holder(&name).await.expect("holder").is_none(),
        "{url}"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_make_lease_stores() {
    lease_from_url(&common::sqlite_url("lease-url")).await;
    lease_from_url("sqlite::memory:").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_make_lease_stores() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    lease_from_url(&url).await;
    lease_from_url(&url.replacen("postgres://", "postgresql://", 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_never_a_broker() {
    let _ = &queue_results::SQL_CONNECTOR;
    for url in ["sqlite::memory:", "postgres://127.0.0.1/db"] {
        let error = App::builder()
            .broker(url)
            .build()
            .await
            .expect_err("SQL as a broker");
        assert!(
            matches!(&error, Error::Config(message) if message.contains("not a broker")),
            "{url}: {error}"
        );
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_errors_and_debug() {
    // Nothing listens on port 1: connecting fails quickly, with a redacted URL.
    let started = std::time::Instant::now();
    let error = app_with_backend("postgres://app:hunter2@127.0.0.1:1/db?acquire_timeout=1")
        .await
        .expect_err("nothing listens there");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("app:***@127.0.0.1:1"), "{text}");
    assert!(
        matches!(
            error,
            Error::Backend(queue_core::BackendError::Unavailable(_))
        ),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let Some(url) = common::postgres_url() else {
        return;
    };
    // The test server trusts local connections, so any password connects.
    let with_password = url.replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    let backend = queue_results::PostgresBackend::connect(&with_password)
        .await
        .expect("connect");
    let shown = format!("{backend:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("***"),
        "{shown}"
    );
}

/// With only the `postgres` feature, `sqlite://` names the feature to enable.
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_scheme_names_its_feature() {
    let error = app_with_backend("sqlite::memory:")
        .await
        .expect_err("no sqlite");
    assert!(
        matches!(
            &error,
            Error::FeatureDisabled {
                feature: "sqlite",
                ..
            }
        ),
        "{error}"
    );
}

/// With only the `sqlite` feature, `postgres://` names the feature to enable.
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_scheme_names_its_feature() {
    for url in ["postgres://127.0.0.1/db", "postgresql://127.0.0.1/db"] {
        let error = app_with_backend(url).await.expect_err("no postgres");
        assert!(
            matches!(
                &error,
                Error::FeatureDisabled {
                    feature: "postgres",
                    ..
                }
            ),
            "{error}"
        );
    }
}
