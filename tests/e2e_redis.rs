//! The end-to-end scenarios on Redis (broker and result backend), through the facade.
//!
//! Needs the `redis` feature (`cargo xtask test` enables all features) and
//! `QUEUE_TEST_REDIS_URL`; without it the scenarios skip, except under CI.
#![cfg(feature = "redis")]

mod scenarios;

// Keeps the Redis connector linked even before the facade names it itself.
#[used]
static LINK_REDIS: &fn() -> std::sync::Arc<dyn queue_core::connect::Connector> =
    &queue_redis::REDIS_CONNECTOR;

scenarios::e2e_scenarios!(scenarios::Urls::from_env(
    "QUEUE_TEST_REDIS_URL",
    "QUEUE_TEST_REDIS_URL"
));
