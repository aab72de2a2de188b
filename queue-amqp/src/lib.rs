//! RabbitMQ broker for `queue`, compatible with Celery's AMQP topology.
//!
//! Not yet implemented: a later issue fills this crate with a broker on `lapin` (publisher
//! confirms, `basic.qos` prefetch, `x-max-priority` queues, a dead-letter exchange, delay
//! queues for eta tasks). It implements the `Broker` trait of `queue-core` and passes the
//! shared conformance suite.
