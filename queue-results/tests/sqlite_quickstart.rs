//! The quickstart's embedded result store: a relative `sqlite://quickstart.db?mode=rwc` URL
//! through the app builder. Alone in its test binary, because it changes the working
//! directory of the process.

#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use queue_core::{App, TaskMeta};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_sqlite_url_is_a_file_in_the_working_directory() {
    let dir = common::sqlite_path("quickstart-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let _ = &queue_results::SQL_CONNECTOR;
    let app = App::builder()
        .broker("memory://")
        .backend("sqlite://quickstart.db?mode=rwc")
        .build()
        .await
        .expect("the quickstart's URL works");
    assert!(dir.join("quickstart.db").is_file());
    let backend = app.backend().expect("a backend");
    backend
        .store(TaskMeta::success("t", json!(3)))
        .await
        .unwrap();
    assert_eq!(
        app.result::<i64>("t")
            .get(Duration::from_secs(5))
            .await
            .unwrap(),
        3
    );
}
