//! The shared broker, backend, broadcast and lease conformance suites, unchanged, against a
//! real Redis.
//!
//! The server comes from `QUEUE_TEST_REDIS_URL` (set by `cargo xtask test`). Without it every
//! test prints a `skipped:` line and returns, except under CI (`CI=true` or `CI=1`), where
//! that is a failure: the suites never run on a stand-in. Broker checks use database 8 and
//! the backend database 9, broadcast checks database 7, lease checks database 4 (with a
//! `global_keyprefix`, so that the prefix is honoured on every key); every check names its
//! queues, task ids and leases with a unique prefix, so checks run concurrently on one
//! server.
//!
//! The broker runs with one kombu list per priority (`priority_steps=0,...,9`): the suite
//! checks exact ordering over ten priorities, which kombu's default four lists cannot give
//! (they are FIFO within a list; `tests/redis_broker.rs` covers the default layout).

mod common;

use std::sync::Arc;
use std::time::Duration;

use queue_redis::{RedisBackend, RedisBroker, RedisLease};

queue_core::broker_conformance_tests!(server = common::URL_VARIABLE, |url: String| async move {
    let url = common::with_db(&url, 8, "priority_steps=0,1,2,3,4,5,6,7,8,9");
    Arc::new(RedisBroker::connect(&url).await.expect("connect to Redis"))
});

queue_core::backend_conformance_tests!(server = common::URL_VARIABLE, |url: String,
                                                                       expiry: Option<
    Duration,
>| async move {
    let url = common::with_db(&url, 9, "");
    Arc::new(
        RedisBackend::connect(&url, expiry)
            .await
            .expect("connect to Redis"),
    )
});

queue_core::broadcast_conformance_tests!(server = common::URL_VARIABLE, |url: String| async move {
    let url = common::with_db(&url, 7, "");
    Arc::new(RedisBroker::connect(&url).await.expect("connect to Redis"))
});

queue_core::lease_conformance_tests!(server = common::URL_VARIABLE, |url: String| async move {
    let url = common::with_db(&url, 4, "global_keyprefix=conf:");
    Arc::new(RedisLease::connect(&url).await.expect("connect to Redis"))
});

/// `redis://` URLs resolve to a lease store through the link-time connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_store_from_a_url() {
    let _ = &queue_redis::REDIS_CONNECTOR;
    let Some(url) = common::redis_url(4, "") else {
        return;
    };
    let url = url.parse().expect("a URL");
    let lease = queue_core::connect::connect_lease(&url, &[])
        .await
        .expect("a lease store for redis://");
    let name = queue_core::conformance::unique_prefix("url");
    let grant = lease
        .acquire(&name, "a", Duration::from_secs(5))
        .await
        .expect("acquire")
        .expect("granted");
    lease.release(&grant).await.expect("release");
}
