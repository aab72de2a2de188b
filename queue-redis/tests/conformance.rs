//! The shared broker and backend conformance suites, unchanged, against a real Redis.
//!
//! The server comes from `QUEUE_TEST_REDIS_URL` (set by `cargo xtask test`). Without it every
//! test prints a `skipped:` line and returns, except under CI (`CI=true` or `CI=1`), where
//! that is a failure: the suites never run on a stand-in. Broker checks use database 8 and
//! the backend database 9, broadcast checks database 7; every check names its queues and task ids with a unique prefix, so
//! checks run concurrently on one server.
//!
//! The broker runs with one kombu list per priority (`priority_steps=0,...,9`): the suite
//! checks exact ordering over ten priorities, which kombu's default four lists cannot give
//! (they are FIFO within a list; `tests/redis_broker.rs` covers the default layout).

mod common;

use std::sync::Arc;
use std::time::Duration;

use queue_redis::{RedisBackend, RedisBroker};

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
