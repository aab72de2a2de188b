//! The monitor's pages in headless Chromium against a Python-only cluster: the real Celery
//! worker (from the venv, `QUEUE_TEST_PYTHON`) on Redis, the monitor beside it, nothing of
//! ours running tasks. Its worker, tasks, results, tracebacks and queue show in the pages.
//! Screenshots: `target/test-artifacts/monitor/python-*.png`.

mod browser {
    pub mod driver;
    pub mod python;
    pub mod support;
}

use browser::driver::{Browser, tools};
use browser::python::{self, PythonWorker};
use browser::support::{monitor, path_segment, quoted, unique};
use queue::{App, Signature};
use serde_json::json;

/// A Python-only cluster: the real Celery worker on Redis, the monitor beside it, and
/// nothing of ours running tasks. Its worker and tasks show in the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cluster_pages_in_chromium() {
    let Some(url) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let Some(python) = python::python() else {
        return;
    };
    let Some(tools) = tools() else { return };
    let id = unique();
    let queue = format!("browser.py.{id}");
    let node = format!("py-browser-{id}@localhost");
    let worker = {
        let (python, url, queue, node) = (python.clone(), url.clone(), queue.clone(), node.clone());
        tokio::task::spawn_blocking(move || {
            PythonWorker::start(&python, &url, &url, &[&queue], &node)
        })
        .await
        .unwrap()
    };
    let app = App::builder()
        .broker(url.clone())
        .backend(url)
        .build()
        .await
        .expect("connect to Redis");
    let history = tempfile::tempdir().unwrap();
    let monitor = monitor(app.clone(), history.path(), &[]).await;
    let base = format!("http://{}", monitor.address());
    let browser = Browser::start(&tools, &base, "python").await;

    // The worker: online, Celery's software, its queue, its registered tasks.
    browser.open("/workers").await;
    let worker_row = format!("#worker-table tr[data-worker={}]", quoted(&node));
    browser.wait_text(&worker_row, "online").await;
    browser.wait_text(&worker_row, "py-celery").await;
    // Its queues come with the first inspect answer, a moment after its heartbeat.
    browser.wait_text(&worker_row, &queue).await;
    browser.screenshot("workers").await;
    browser
        .open(&format!("/workers/{}", path_segment(&node)))
        .await;
    browser.wait_text("#worker-queues", &queue).await;
    browser.wait_text("#main", "tasks.sleep").await;
    browser.screenshot("worker").await;

    // Its tasks: sent after the page loaded, shown live, with their results.
    let filtered = format!("/tasks?worker={}", path_segment(&node));
    browser.open(&filtered).await;
    let sum = Signature::new("tasks.add")
        .args(vec![json!(20), json!(22)])
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();
    let failed = Signature::new("tasks.fail")
        .arg("from Python")
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();
    browser
        .wait_present(&format!(
            "#task-table tr[data-task={}][data-state=\"SUCCESS\"]",
            quoted(sum.id())
        ))
        .await;
    browser
        .wait_present(&format!(
            "#task-table tr[data-task={}][data-state=\"FAILURE\"]",
            quoted(failed.id())
        ))
        .await;
    browser.screenshot("tasks").await;
    browser.open(&format!("/tasks/{}", sum.id())).await;
    browser.wait_text("#task-state", "SUCCESS").await;
    assert_eq!(browser.wait_text("#task-result", "42").await.trim(), "42");
    browser.screenshot("task").await;
    browser.open(&format!("/tasks/{}", failed.id())).await;
    browser.wait_text("#task-outcome", "Traceback").await;
    browser
        .wait_text("#task-outcome", "ValueError: from Python")
        .await;

    // Its queue, with the Python worker as its consumer.
    browser.open("/queues").await;
    browser
        .wait_text(
            &format!("#queue-table tr[data-queue={}]", quoted(&queue)),
            &node,
        )
        .await;
    browser.screenshot("queues").await;
    browser.open("/").await;
    browser.wait_text("#task-types", "tasks.add").await;
    browser.screenshot("overview").await;

    browser.close().await;
    monitor.shutdown().await.unwrap();
    drop(worker);
}
