//! The broker, backend, broadcast and lease conformance suites, unchanged, through Redis
//! Sentinel (`sentinel://`, the topology of `cargo xtask services up redis-sentinel`, from
//! `QUEUE_TEST_REDIS_SENTINEL_URL`). Without it every test prints a `skipped:` line and
//! returns, except under CI, where that is a failure.
//!
//! Every connection asks the sentinels for the master, so the suites pass wherever the
//! master is after a failover (`tests/sentinel_failover.rs`); they hold the topology shared,
//! so that they never run while that test kills the master. Databases as in
//! `tests/conformance.rs`, plus 10.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sentinel::{self, URL_VARIABLE};
use queue_core::Broker;
use queue_redis::{RedisBackend, RedisBroker, RedisLease};

queue_core::broker_conformance_tests!(server = URL_VARIABLE, |url: String| async move {
    sentinel::shared_topology();
    let url = sentinel::with_db(&url, 8, "priority_steps=0,1,2,3,4,5,6,7,8,9");
    Arc::new(
        RedisBroker::connect(&url)
            .await
            .expect("connect through Sentinel"),
    )
});

queue_core::backend_conformance_tests!(
    server = URL_VARIABLE,
    |url: String, expiry: Option<Duration>| async move {
        sentinel::shared_topology();
        let url = sentinel::with_db(&url, 9, "");
        Arc::new(
            RedisBackend::connect(&url, expiry)
                .await
                .expect("connect through Sentinel"),
        )
    }
);

queue_core::broadcast_conformance_tests!(server = URL_VARIABLE, |url: String| async move {
    sentinel::shared_topology();
    let url = sentinel::with_db(&url, 7, "");
    Arc::new(
        RedisBroker::connect(&url)
            .await
            .expect("connect through Sentinel"),
    )
});

queue_core::lease_conformance_tests!(server = URL_VARIABLE, |url: String| async move {
    sentinel::shared_topology();
    let url = sentinel::with_db(&url, 4, "global_keyprefix=conf:");
    Arc::new(
        RedisLease::connect(&url)
            .await
            .expect("connect through Sentinel"),
    )
});

/// `sentinel://` URLs (with the database on the first part, one valid URL) resolve to a
/// lease store through the link-time connector, and the kombu spelling with the database
/// last connects a broker directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_urls_connect() {
    let _ = &queue_redis::REDIS_CONNECTOR;
    let Some(base) = queue_core::conformance::server_url(URL_VARIABLE) else {
        return;
    };
    sentinel::shared_topology();
    let url = sentinel::with_db(&base, 4, "").parse().expect("one URL");
    let lease = queue_core::connect::connect_lease(&url, &[])
        .await
        .expect("a lease store for sentinel://");
    let name = queue_core::conformance::unique_prefix("sentinel-url");
    let grant = lease
        .acquire(&name, "a", Duration::from_secs(5))
        .await
        .expect("acquire")
        .expect("granted");
    lease.release(&grant).await.expect("release");

    // The variable as exported: kombu's spelling, database on the last part.
    let broker = RedisBroker::connect(&base).await.expect("kombu's spelling");
    let queue = queue_core::conformance::unique_prefix("sentinel-url");
    assert_eq!(broker.queue_length(&queue).await.expect("LLEN").total, 0);
    let error = RedisBroker::connect(&base.replace("master_name=", "master_nom="))
        .await
        .expect_err("no master_name")
        .to_string();
    assert!(error.contains("master_nom"), "{error}");
}
