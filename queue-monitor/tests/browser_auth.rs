//! The pages behind basic auth, in headless Chromium: with the credentials the pages load,
//! follow the live stream and act (Terminate ends a running task: the POST carries the
//! CSRF header); a request without them gets 401, and a POST from the page without the
//! CSRF header gets 403. Screenshot: `target/test-artifacts/monitor/auth-task.png`.

mod browser {
    pub mod driver;
    pub mod support;
}

use std::sync::Arc;
use std::time::Duration;

use browser::driver::{Browser, tools};
use browser::support::{monitor_with, path_segment, unique, until_state};
use queue::{App, MemoryBackend, MemoryBroker, Signature, TaskState, Worker, task};
use queue_monitor::Auth;
use serde_json::json;

/// Runs until terminated.
#[task(name = "browser.auth.forever")]
async fn forever() {
    std::future::pending::<()>().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_behind_basic_auth_in_chromium() {
    let Some(tools) = tools() else { return };
    let queue = format!("browser.auth.{}", unique());
    let app = App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .backend_instance(Arc::new(MemoryBackend::new()))
        .task(forever)
        .default_queue(&queue)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .task_events(true)
        .heartbeat_interval(Duration::from_millis(500))
        .spawn();
    let history = tempfile::tempdir().unwrap();
    let monitor = monitor_with(
        app.clone(),
        history.path(),
        &[],
        Auth::basic("ops", "a long secret"),
    )
    .await;
    // Chromium answers the server's Basic challenge with the address's credentials and
    // sends them again for the page's fetches and its event stream.
    let base = format!("http://ops:a%20long%20secret@{}", monitor.address());
    let browser = Browser::start(&tools, &base, "auth").await;

    let running = Signature::new("browser.auth.forever")
        .send(&app)
        .await
        .unwrap();
    browser
        .open(&format!("/tasks/{}", path_segment(running.id())))
        .await;
    browser.wait_text("#task-state", "STARTED").await;
    browser.wait_text("#live", "live").await;

    // Without the credentials, nothing; without the CSRF header, no action.
    let unauthenticated = browser
        .run(
            "return fetch(location.origin + '/api/dashboard/status', \
             {credentials: 'omit'}).then(r => r.status);",
        )
        .await;
    assert_eq!(unauthenticated, json!(401));
    let forged = browser
        .run(&format!(
            "return fetch(location.origin + '/api/dashboard/tasks/{}/revoke?terminate=1', \
             {{method: 'POST'}}).then(r => r.status);",
            running.id()
        ))
        .await;
    assert_eq!(forged, json!(403));

    // The page's own Terminate passes, and ends the task.
    browser.click("#terminate").await;
    browser.confirm().await;
    browser.wait_text("#task-state", "REVOKED").await;
    until_state(&running, TaskState::Revoked).await;
    browser.screenshot("task").await;

    browser.close().await;
    tokio::time::timeout(Duration::from_secs(20), worker.shutdown())
        .await
        .expect("the worker stops")
        .unwrap();
    monitor.shutdown().await.unwrap();
}
