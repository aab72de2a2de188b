//! The end-to-end scenarios on RabbitMQ (`QUEUE_TEST_AMQP_URL`), results in `memory://`
//! (each scenario runs producer and worker on one app, so one in-process store serves both).
//!
//! Queues are declared with `x-max-priority: 9` (the priority scenario needs priority
//! queues) and `x-expires` of ten minutes, so that runs do not pile up queues on the server.
#![cfg(feature = "amqp")]

mod scenarios;

// A crate nothing refers to is left out by the linker, and its connector with it; the
// facade's `amqp` feature is what should refer to it, this keeps the test independent.
#[used]
static KEEP_AMQP_CONNECTOR: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_amqp::AMQP_CONNECTOR;

fn urls() -> Option<scenarios::Urls> {
    let mut urls = scenarios::Urls::from_env_with_backend("QUEUE_TEST_AMQP_URL", "memory://")?;
    let separator = if urls.broker.contains('?') { '&' } else { '?' };
    urls.broker = format!(
        "{}{separator}max_priority=9&queue_expires=600000",
        urls.broker
    );
    Some(urls)
}

scenarios::e2e_scenarios!(urls());
