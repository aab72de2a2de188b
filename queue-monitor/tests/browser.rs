//! The monitor's pages as a person uses them, in a real headless Chromium driven over
//! WebDriver: our worker (task events on, in-process, on the memory broker, Redis and
//! RabbitMQ), the monitor serving on 127.0.0.1, and the browser clicking through the pages
//! (the Python cluster is in `browser_python.rs`, pages behind authentication in
//! `browser_auth.rs`). A sent task shows on the tasks page without a reload and its page
//! shows the result; Send again runs it anew; Terminate clicked on a running task's page
//! stops it (REVOKED); the queues page shows a backlog; a dead letter is purged and a
//! delayed task run now from a queue's page; a worker's pool grows, a consumer comes and
//! goes and a rate limit is set from its page. Screenshots of every page go to
//! `target/test-artifacts/monitor/` (and, with `QUEUE_MONITOR_DOCS_SCREENSHOTS=1`, the
//! README's to `docs/`).

mod browser {
    pub mod driver;
    pub mod support;
}

use std::sync::Arc;
use std::time::Duration;

use browser::driver::{Browser, Tools, WAIT, tools};
use browser::support::{keep_for_docs, monitor, path_segment, quoted, unique, until_state};
use queue::{App, MemoryBackend, MemoryBroker, Signature, TaskState, Worker, task};
use serde_json::json;

#[task(name = "browser.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Runs until terminated: what the Terminate button has to stop.
#[task(name = "browser.forever")]
async fn forever() {
    std::future::pending::<()>().await
}

#[task(name = "browser.fail")]
fn fail(message: String) -> Result<(), queue::TaskError> {
    Err(queue::TaskError::new("ValueError", message))
}

#[task(name = "browser.nap")]
async fn nap(milliseconds: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(milliseconds)).await;
    milliseconds
}

/// Our worker and its monitor: everything a person checks in the pages.
async fn rust_worker_pages(tools: Tools, builder: queue::AppBuilder, prefix: &str) {
    let id = unique();
    let queue = format!("browser.{id}");
    // Tasks sent without a queue (the page's "Send again" when the events did not say the
    // queue) go to the worker's.
    let app = builder
        .task(add)
        .task(forever)
        .task(fail)
        .task(nap)
        .default_queue(&queue)
        .build()
        .await
        .expect("connect");
    let backlog = format!("browser.backlog.{id}");
    let node = format!("celery@browser-{prefix}-{id}");
    let worker = Worker::new(app.clone())
        .node_name(&node)
        .queues([queue.as_str()])
        .concurrency(2)
        .task_events(true)
        .heartbeat_interval(Duration::from_millis(500))
        .spawn();
    let history = tempfile::tempdir().unwrap();
    let monitor = monitor(app.clone(), history.path(), &[backlog.as_str()]).await;
    let base = format!("http://{}", monitor.address());
    let browser = Browser::start(&tools, &base, prefix).await;

    // Some traffic first, so the charts and tables have something to show.
    for n in 0..12 {
        Signature::new("browser.nap")
            .arg(20 + 15 * n)
            .queue(&queue)
            .send(&app)
            .await
            .unwrap();
    }
    // And a steady trickle while the test runs, as a live cluster has: naps of various
    // lengths, now and then a failure (pacing, not synchronisation).
    let traffic = tokio::spawn({
        let (app, queue) = (app.clone(), queue.clone());
        async move {
            for n in 1u64.. {
                let signature = if n % 9 == 0 {
                    Signature::new("browser.fail").arg("a background failure")
                } else {
                    Signature::new("browser.nap").arg(10 + (n * 37) % 180)
                };
                let _ = signature.queue(&queue).send(&app).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let failed = Signature::new("browser.fail")
        .arg(format!("<img src=x onerror=alert(1)> on purpose {id}"))
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();

    // 1. The tasks page, loaded before the task is sent, shows it without a reload.
    browser.open("/tasks").await;
    browser.run("window.loadedOnce = 'yes'; return null;").await;
    let sent = Signature::new("browser.add")
        .args(vec![json!(2), json!(3)])
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();
    let row = format!("#task-table tr[data-task={}]", quoted(sent.id()));
    browser
        .wait_present(&format!("{row}[data-state=\"SUCCESS\"]"))
        .await;
    assert_eq!(
        browser.run("return window.loadedOnce || null;").await,
        json!("yes"),
        "the page reloaded instead of updating live"
    );
    browser
        .wait_present(&format!(
            "#task-table tr[data-task={}][data-state=\"FAILURE\"]",
            quoted(failed.id())
        ))
        .await;
    // A task's own strings are shown as text, never run as markup.
    let failure_text = browser
        .text(&format!(
            "#task-table tr[data-task={}]",
            quoted(failed.id())
        ))
        .await
        .unwrap();
    assert!(failure_text.contains("<img src=x"), "{failure_text}");
    assert_eq!(
        browser
            .run("return document.querySelectorAll('#main img').length;")
            .await,
        json!(0)
    );
    browser.screenshot("tasks").await;

    // A search in Flower's syntax narrows the list to the failure.
    browser
        .type_into(
            "#search",
            &format!("state:FAILURE name:browser.fail args:{id}"),
        )
        .await;
    browser.click("#task-search button[type=submit]").await;
    browser.wait_text("#task-count", "1 found").await;
    browser
        .wait_present(&format!(
            "#task-table tr[data-task={}]",
            quoted(failed.id())
        ))
        .await;
    browser.click("#clear-search").await;

    // 2. Its link opens the task's page, which shows the result and the timeline.
    browser
        .click(&format!("{row} a[href=\"/tasks/{}\"]", sent.id()))
        .await;
    browser.wait_text("#task-state", "SUCCESS").await;
    assert_eq!(browser.wait_text("#task-result", "5").await.trim(), "5");
    browser
        .wait_present("#timeline tr[data-event=\"task-succeeded\"]")
        .await;
    browser
        .wait_present("#timeline tr[data-event=\"task-received\"]")
        .await;
    browser.screenshot("task").await;

    // "Send again" sends the same task anew and opens its page.
    browser.click("#retry").await;
    browser.confirm().await;
    let again = browser
        .wait_for("the page of the task sent again", || async {
            let url = browser.client().current_url().await.ok()?;
            let id = url.path().strip_prefix("/tasks/")?.to_owned();
            (id != sent.id()).then_some(id)
        })
        .await;
    browser.wait_text("#task-state", "SUCCESS").await;
    assert_eq!(browser.wait_text("#task-result", "5").await.trim(), "5");
    assert_ne!(again, sent.id());

    // 3. Terminate, clicked on a running task's page, stops it: REVOKED.
    let running = Signature::new("browser.forever")
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();
    browser
        .open(&format!("/tasks/{}", path_segment(running.id())))
        .await;
    browser.wait_text("#task-state", "STARTED").await;
    browser.click("#terminate").await;
    browser.confirm().await;
    browser.wait_text("#task-state", "REVOKED").await;
    until_state(&running, TaskState::Revoked).await;
    let active = app
        .control()
        .destination([node.as_str()])
        .timeout(WAIT)
        .inspect()
        .active(false)
        .await
        .unwrap();
    let still_running = active
        .get(&node)
        .and_then(serde_json::Value::as_array)
        .expect("our worker answers active")
        .iter()
        .any(|task| task["id"] == json!(running.id()));
    assert!(!still_running, "the terminated task still runs: {active:?}");
    browser.screenshot("task-revoked").await;

    // 4. The queues page shows a backlog that was created (a queue no worker consumes).
    for n in 0..7 {
        Signature::new("browser.add")
            .args(vec![json!(n), json!(n)])
            .queue(&backlog)
            .send(&app)
            .await
            .unwrap();
    }
    browser.open("/queues").await;
    let backlog_row = format!("#queue-table tr[data-queue={}]", quoted(&backlog));
    browser
        .wait_for("the backlog of 7 on the queues page", || async {
            let text = browser.text(&format!("{backlog_row} td.messages")).await?;
            (text.trim() == "7").then_some(())
        })
        .await;
    browser.wait_present("#main .uplot canvas").await;
    browser.screenshot("queues").await;

    // 5. A queue's page: a dead letter (a task no worker knows) purged, a delayed task run
    // now.
    let unknown = Signature::new("browser.nobody-knows-me")
        .queue(&queue)
        .send(&app)
        .await
        .unwrap();
    browser
        .open(&format!("/queues/{}", path_segment(&queue)))
        .await;
    let letter = format!("#dead-letters tr[data-id={}]", quoted(unknown.id()));
    browser.wait_present(&letter).await;
    browser.screenshot("queue").await;
    browser.click("#purge-dead-letters").await;
    browser.confirm().await;
    browser.wait_absent(&letter).await;
    browser.wait_text("#dead-letters", "No dead letters.").await;

    let delayed = Signature::new("browser.add")
        .args(vec![json!(40), json!(2)])
        .queue(&backlog)
        .countdown(Duration::from_secs(3600))
        .send(&app)
        .await
        .unwrap();
    browser
        .open(&format!("/queues/{}", path_segment(&backlog)))
        .await;
    let waiting = format!("#delayed tr[data-id={}]", quoted(delayed.id()));
    browser.click(&format!("{waiting} button.run-now")).await;
    browser.wait_absent(&waiting).await;
    browser
        .wait_for("the delayed task among the ready messages", || async {
            let text = browser.text("[data-card=\"Ready\"] .value").await?;
            (text.trim() == "8").then_some(())
        })
        .await;

    // 6. The workers page lists ours online; its page grows its pool.
    browser.open("/workers").await;
    let worker_row = format!("#worker-table tr[data-worker={}]", quoted(&node));
    browser.wait_text(&worker_row, "online").await;
    browser.screenshot("workers").await;
    browser
        .open(&format!("/workers/{}", path_segment(&node)))
        .await;
    browser.wait_text("#worker-queues", &queue).await;
    let concurrency = "[data-card=\"Concurrency\"] .value";
    browser.wait_text(concurrency, "2").await;
    browser.click("#pool-grow").await;
    browser.wait_text(concurrency, "3").await;
    // It consumes one more queue, then stops again.
    let extra = format!("browser.extra.{id}");
    browser.type_into("#consumer-queue", &extra).await;
    browser.click("#add-consumer").await;
    let extra_row = format!("#worker-queues tr[data-queue={}]", quoted(&extra));
    browser.wait_present(&extra_row).await;
    browser
        .click(&format!("{extra_row} button.cancel-consumer"))
        .await;
    browser.confirm().await;
    browser.wait_absent(&extra_row).await;
    // A rate limit set from the page reaches the worker.
    browser
        .click("#limit-task option[value=\"browser.add\"]")
        .await;
    browser.type_into("#rate-limit", "10/m").await;
    browser.click("#set-rate-limit").await;
    browser.wait_text("#toasts", "rate limit").await;
    let mut arguments = serde_json::Map::new();
    arguments.insert("taskinfoitems".into(), json!(["rate_limit"]));
    let registered = app
        .control()
        .destination([node.as_str()])
        .timeout(WAIT)
        .call("registered", arguments)
        .await
        .unwrap();
    assert!(
        registered
            .get(&node)
            .and_then(serde_json::Value::as_array)
            .is_some_and(|names| names.contains(&json!("browser.add [rate_limit=10/m]"))),
        "{registered:?}"
    );
    browser.screenshot("worker").await;

    // 7. The overview: workers online, rates, latency charts per task type.
    browser.open("/").await;
    browser.wait_text("#task-types", "browser.nap").await;
    browser.wait_present("#main .uplot canvas").await;
    browser
        .wait_for("a worker online in the overview", || async {
            let text = browser
                .text("[data-card=\"Workers online\"] .value")
                .await?;
            (text.trim().parse::<u32>().ok()? >= 1).then_some(())
        })
        .await;
    browser.screenshot("overview").await;

    keep_for_docs(prefix, &["overview", "tasks", "task"]);
    browser.close().await;
    traffic.abort();
    tokio::time::timeout(WAIT, worker.shutdown())
        .await
        .expect("the worker stops")
        .unwrap();
    monitor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_worker_pages_in_chromium() {
    let Some(tools) = tools() else { return };
    let builder = App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .backend_instance(Arc::new(MemoryBackend::new()));
    rust_worker_pages(tools, builder, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_worker_pages_in_chromium() {
    let Some(url) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let Some(tools) = tools() else { return };
    let builder = App::builder().broker(url.clone()).backend(url);
    rust_worker_pages(tools, builder, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_worker_pages_in_chromium() {
    let Some(broker) = queue_core::conformance::server_url("QUEUE_TEST_AMQP_URL") else {
        return;
    };
    let Some(backend) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let Some(tools) = tools() else { return };
    let builder = App::builder().broker(broker).backend(backend);
    rust_worker_pages(tools, builder, "amqp").await;
}
