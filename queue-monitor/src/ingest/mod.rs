//! Ingestion: Celery events (and the beat instances' heartbeats), inspect polling and queue
//! lengths folded into the state.

pub mod beat;
pub mod cluster;
pub(crate) mod events;
pub mod overview;
pub mod pollers;
pub mod queues;
pub mod task;
pub mod worker;
