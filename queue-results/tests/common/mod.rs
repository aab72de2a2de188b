//! Where the tests' databases are: PostgreSQL from `cargo xtask test`'s environment, SQLite
//! files under the target directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable `cargo xtask test` sets to the PostgreSQL server's URL.
pub const POSTGRES_VARIABLE: &str = "QUEUE_TEST_POSTGRES_URL";

/// `QUEUE_TEST_POSTGRES_URL`. Missing: `None` with a `skipped:` line, or a panic under CI
/// (`CI=true` or `CI=1`), where a missing server is a failure
/// ([`queue_core::conformance::server_url`]).
pub fn postgres_url() -> Option<String> {
    queue_core::conformance::server_url(POSTGRES_VARIABLE)
}

/// `label-<pid>-<ns>-<n>`: a name no other call, test or run uses (ids, files).
pub fn unique(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{label}-{}-{nanos:09}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A path for a new SQLite database, unique to this call, under the target directory (so
/// that it outlives the test's own handles and is cleaned with `cargo clean`).
pub fn sqlite_path(label: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("queue-results");
    std::fs::create_dir_all(&dir).expect("create the test database directory");
    SWEPT.call_once(|| remove_stale(&dir));
    dir.join(format!("{}.db", unique(label)))
}

/// Removes databases (and their WAL files) that earlier runs left more than an hour ago;
/// test processes running now are younger than that.
pub fn remove_stale(dir: &std::path::Path) {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified < hour_ago);
        if stale {
            // Files, and the working directories of the quickstart test.
            let _ = std::fs::remove_file(entry.path())
                .or_else(|_| std::fs::remove_dir_all(entry.path()));
        }
    }
}

/// `sqlite://<absolute path>` of a new database file.
pub fn sqlite_url(label: &str) -> String {
    format!("sqlite://{}", sqlite_path(label).display())
}
