//! The shared broker conformance suite, unchanged, against a real RabbitMQ.
//!
//! The server comes from `QUEUE_TEST_AMQP_URL` (set by `cargo xtask test`). Without it every
//! test prints a `skipped:` line and returns, except under CI (`CI=true` or `CI=1`), where
//! that is a failure: the suite never runs on a stand-in. Every check names its queues with
//! a unique prefix, so checks run concurrently on one server.
//!
//! Queues are declared with `x-max-priority: 9`: the suite checks ordering over our ten
//! priorities, which RabbitMQ gives only on priority queues.

mod common;

use std::sync::Arc;

use queue_amqp::AmqpBroker;

queue_core::broker_conformance_tests!(server = common::URL_VARIABLE, |url: String| async move {
    let url = common::with_query(&url, "max_priority=9");
    Arc::new(
        AmqpBroker::connect(&url)
            .await
            .expect("connect to RabbitMQ"),
    )
});

// The broadcast side (events, remote control): exchanges and queues as kombu declares them.
queue_core::broadcast_conformance_tests!(server = common::URL_VARIABLE, |url: String| async move {
    Arc::new(
        AmqpBroker::connect(&common::with_query(&url, ""))
            .await
            .expect("connect to RabbitMQ"),
    )
});
