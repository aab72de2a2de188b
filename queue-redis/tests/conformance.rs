//! The shared broker and backend conformance suites, unchanged, against a real Redis.
//!
//! The server comes from `QUEUE_TEST_REDIS_URL` (set by `cargo xtask test`). Without it the
//! tests skip with a message, except under CI (`CI=true`), where that is a failure. Broker
//! checks use database 8 and the backend database 9; every check names its queues and task
//! ids with a unique prefix, so checks run concurrently on one server.
//!
//! The broker runs with one kombu list per priority (`priority_steps=0,...,9`): the suite
//! checks exact ordering over ten priorities, which kombu's default four lists cannot give
//! (they are FIFO within a list; `tests/redis_broker.rs` covers the default layout).

mod common;

use std::sync::Arc;
use std::time::Duration;

use queue_redis::{RedisBackend, RedisBroker};

async fn broker() -> Arc<dyn queue_core::Broker> {
    let Some(url) = common::redis_url(8, "priority_steps=0,1,2,3,4,5,6,7,8,9") else {
        return common::skipped_broker();
    };
    Arc::new(RedisBroker::connect(&url).await.expect("connect to Redis"))
}

async fn backend(expiry: Option<Duration>) -> Arc<dyn queue_core::ResultBackend> {
    let Some(url) = common::redis_url(9, "") else {
        return common::skipped_backend(expiry);
    };
    Arc::new(
        RedisBackend::connect(&url, expiry)
            .await
            .expect("connect to Redis"),
    )
}

queue_core::broker_conformance_tests!(broker());
queue_core::backend_conformance_tests!(backend);
