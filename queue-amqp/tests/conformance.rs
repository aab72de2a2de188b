//! The shared broker conformance suite, unchanged, against a real RabbitMQ.
//!
//! The server comes from `QUEUE_TEST_AMQP_URL` (set by `cargo xtask test`). Without it the
//! tests skip with a message, except under CI (`CI=true`), where that is a failure. Every
//! check names its queues with a unique prefix, so checks run concurrently on one server.
//!
//! Queues are declared with `x-max-priority: 9`: the suite checks ordering over our ten
//! priorities, which RabbitMQ gives only on priority queues.

mod common;

use std::sync::Arc;

use queue_amqp::AmqpBroker;

async fn broker() -> Arc<dyn queue_core::Broker> {
    let Some(url) = common::amqp_url("max_priority=9") else {
        return common::skipped_broker();
    };
    Arc::new(
        AmqpBroker::connect(&url)
            .await
            .expect("connect to RabbitMQ"),
    )
}

queue_core::broker_conformance_tests!(broker());
