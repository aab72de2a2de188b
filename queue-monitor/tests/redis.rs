//! The monitor on Redis with a Rust worker (task events on): the same scenarios as on
//! memory, over kombu's Redis layout (events on PUBLISH/PSUBSCRIBE, control replies on
//! lists). Skips without `QUEUE_TEST_REDIS_URL` (fails under CI).

mod common;

use common::init_logs;
use common::scenarios::{self, Setup};
use queue::App;
use queue_core::conformance::server_url;

async fn setup() -> Option<Setup> {
    init_logs();
    let url = server_url("QUEUE_TEST_REDIS_URL")?;
    Some(Setup::new(move || App::builder().broker(url.clone()).backend(url.clone())).await)
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
