//! The history on PostgreSQL: tasks, their timelines and search survive a monitor restart.
//! Skips without `QUEUE_TEST_POSTGRES_URL` (fails under CI).

mod common;

use std::sync::Arc;

use common::scenarios::{Setup, task_in_state};
use common::{Http, add, init_logs, quick_settings};
use queue::{App, MemoryBackend, MemoryBroker};
use queue_core::conformance::server_url;
use queue_monitor::{Auth, Monitor, RunningMonitor};

async fn start(app: App, url: &str) -> (RunningMonitor, Http) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = Monitor::new(app)
        .settings(quick_settings())
        .auth(Auth::none())
        .history(url)
        .start(listener)
        .await
        .expect("the monitor starts on PostgreSQL");
    let http = Http::new(&format!("http://{}", running.address()));
    (running, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_on_postgres_survives_a_restart() {
    init_logs();
    let Some(url) = server_url("QUEUE_TEST_POSTGRES_URL") else {
        return;
    };
    let broker = Arc::new(MemoryBroker::new());
    let backend = Arc::new(MemoryBackend::new());
    let setup = Setup::new(|| {
        App::builder()
            .broker_instance(broker.clone())
            .backend_instance(backend.clone())
    })
    .await;
    let (monitor, http) = start(setup.monitor_app.clone(), &url).await;
    let marker = common::unique("pgmark");
    let echo = add::new(7, 8)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    let failed = common::fail::new(marker.clone())
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    task_in_state(&http, echo.id(), "SUCCESS").await;
    task_in_state(&http, failed.id(), "FAILURE").await;
    monitor.shutdown().await.unwrap();
    setup.stop().await;

    let (monitor, http) = start(
        App::builder().broker("memory://").build().await.unwrap(),
        &url,
    )
    .await;
    let task = http.get(&format!("/api/task/info/{}", echo.id())).await;
    assert_eq!(task["result"], "15");
    let found = http.get(&format!("/api/dashboard/tasks?q={marker}")).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["tasks"][0]["uuid"], failed.id());
    let flower = http
        .get(&format!("/api/tasks?search=state:FAILURE%20{marker}"))
        .await;
    assert!(flower.get(failed.id()).is_some(), "{flower}");
    let detail = http
        .get(&format!("/api/dashboard/tasks/{}", echo.id()))
        .await;
    assert_eq!(detail["timeline"].as_array().unwrap().len(), 3, "{detail}");
    monitor.shutdown().await.unwrap();
}
