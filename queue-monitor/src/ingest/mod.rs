//! Ingestion: Celery events, inspect polling and queue lengths folded into the state.

pub mod cluster;
pub(crate) mod events;
pub mod overview;
pub mod pollers;
pub mod queues;
pub mod task;
pub mod worker;
