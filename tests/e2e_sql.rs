//! The end-to-end scenarios with results in SQL: the memory broker with a PostgreSQL result
//! backend (`QUEUE_TEST_POSTGRES_URL`, from `cargo xtask test`) and with a SQLite file.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod scenarios;

/// Results in the PostgreSQL of `QUEUE_TEST_POSTGRES_URL` (skipped without it, failing
/// under CI).
#[cfg(feature = "postgres")]
mod postgres {
    use super::scenarios;

    scenarios::e2e_scenarios!({
        scenarios::Urls::backend_from_env("memory://", "QUEUE_TEST_POSTGRES_URL")
    });
}

/// Results in a SQLite file of each scenario's own, created by the backend on first use.
#[cfg(feature = "sqlite")]
mod sqlite {
    use super::scenarios;

    fn urls() -> Option<scenarios::Urls> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        static SWEPT: std::sync::Once = std::sync::Once::new();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e_sql");
        std::fs::create_dir_all(&dir).expect("create the database directory");
        SWEPT.call_once(|| remove_stale(&dir));
        let file = dir.join(format!(
            "results-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // A database left by an earlier run with the same pid would hold its results.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        Some(scenarios::Urls::new(
            "memory://",
            format!("sqlite://{}", file.display()),
        ))
    }

    /// Removes databases that earlier runs left more than an hour ago (scenarios running
    /// now, in this process or beside it, are younger).
    fn remove_stale(dir: &std::path::Path) {
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let stale = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified < hour_ago);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    scenarios::e2e_scenarios!(urls());
}

/// A `sqlite://` URL given to the facade's builder makes a SQLite result backend.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn facade_connects_sql_urls() {
    let app = queue::App::builder()
        .broker("memory://")
        .backend("sqlite::memory:")
        .build()
        .await
        .expect("sqlite:// is served with the sqlite feature");
    let backend = format!("{:?}", app.backend().expect("a backend"));
    assert!(backend.starts_with("SqliteBackend"), "{backend}");
}

/// Through the facade alone (no reference to queue-results in this function), `sqlite://`
/// works when the feature is on.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_facade_links_the_sql_connector_by_feature() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let app = queue::App::builder().backend(url).build().await.unwrap();
        assert!(app.backend().is_some(), "{url}");
    }
}
