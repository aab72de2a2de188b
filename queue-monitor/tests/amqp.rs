//! The monitor on RabbitMQ with a Rust worker: the same scenarios as on memory (events on
//! the `celeryev` topic exchange, control on `celery.pidbox`), and no answer giving away the
//! broker's password. Skips without `QUEUE_TEST_AMQP_URL` (fails under CI).

mod common;

use std::sync::Arc;

use common::scenarios::{self, Setup};
use common::{add, all_answers, init_logs, quick_settings, start_monitor};
use queue::{App, MemoryBackend};
use queue_core::conformance::server_url;

async fn setup() -> Option<Setup> {
    init_logs();
    let url = server_url("QUEUE_TEST_AMQP_URL")?;
    let backend = Arc::new(MemoryBackend::new());
    Some(
        Setup::new(move || {
            App::builder()
                .broker(url.clone())
                .backend_instance(backend.clone())
        })
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_workers_and_metrics_show() {
    let Some(setup) = setup().await else { return };
    scenarios::tasks_workers_and_metrics(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_through_the_api_terminates_a_running_task() {
    let Some(setup) = setup().await else { return };
    scenarios::revoke_terminates_a_running_task(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_shows_and_is_flagged() {
    let Some(setup) = setup().await else { return };
    scenarios::backlog_shows(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_password_is_in_no_answer() {
    let Some(setup) = setup().await else { return };
    let url = server_url("QUEUE_TEST_AMQP_URL").unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    let password = parsed
        .password()
        .expect("the test URL has a password")
        .to_owned();
    let (monitor, http) =
        start_monitor(setup.monitor_app.clone(), None, &[], quick_settings()).await;
    let sum = add::new(1, 2)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    scenarios::task_in_state(&http, sum.id(), "SUCCESS").await;
    // The worker's stats and conf are in (they name the broker).
    common::eventually("the worker's stats", || async {
        let workers = http.get("/api/workers").await;
        workers
            .get(&setup.node)
            .and_then(|worker| worker.get("stats"))
            .map(|_| ())
    })
    .await;
    let text = all_answers(&http, sum.id(), &setup.node, &setup.queue).await;
    let status = http.get("/api/dashboard/status").await;
    assert!(
        status["broker"].as_str().unwrap().contains("***"),
        "{status}"
    );
    for secret in [format!(":{password}@"), format!("{password}@")] {
        assert!(!text.contains(&secret), "{secret} in an answer:\n{text}");
    }
    monitor.shutdown().await.unwrap();
    setup.stop().await;
}
