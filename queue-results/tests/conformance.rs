//! The shared result backend and lease conformance suites, unchanged, on PostgreSQL and on
//! SQLite.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod common;

/// On the PostgreSQL of `QUEUE_TEST_POSTGRES_URL` (skipped without it, failing under CI).
/// Every check uses ids of its own, so they share the database; the expiry check only
/// deletes rows its own short expiry stamped.
#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;
    use std::time::Duration;

    use queue_results::{PostgresBackend, PostgresLease, SqlOptions};

    use super::common;

    queue_core::backend_conformance_tests!(server = common::POSTGRES_VARIABLE, |url: String,
                                                                                expiry: Option<
        Duration,
    >| async move {
        let options = match expiry {
            Some(expiry) => SqlOptions::default().expiry(Some(expiry)),
            None => SqlOptions::default(),
        };
        let backend = PostgresBackend::connect_with(&url, options)
            .await
            .unwrap_or_else(|error| panic!("connect to PostgreSQL: {error}"));
        Arc::new(backend)
    });

    queue_core::lease_conformance_tests!(
        server = common::POSTGRES_VARIABLE,
        |url: String| async move {
            let lease = PostgresLease::connect(&url)
                .await
                .unwrap_or_else(|error| panic!("connect to PostgreSQL: {error}"));
            Arc::new(lease)
        }
    );
}

/// On a SQLite file of its own per test.
#[cfg(feature = "sqlite")]
mod sqlite {
    use std::sync::Arc;
    use std::time::Duration;

    use queue_results::{SqlOptions, SqliteBackend, SqliteLease};

    use super::common;

    queue_core::backend_conformance_tests!(|expiry: Option<Duration>| async move {
        let options = match expiry {
            Some(expiry) => SqlOptions::default().expiry(Some(expiry)),
            None => SqlOptions::default(),
        };
        let backend = SqliteBackend::connect_with(&common::sqlite_url("conformance"), options)
            .await
            .unwrap_or_else(|error| panic!("open SQLite: {error}"));
        Arc::new(backend)
    });

    queue_core::lease_conformance_tests!(async {
        let lease = SqliteLease::connect(&common::sqlite_url("lease"))
            .await
            .unwrap_or_else(|error| panic!("open SQLite: {error}"));
        Arc::new(lease)
    });
}
