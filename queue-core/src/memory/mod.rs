//! In-process broker and result backend: same semantics as the real ones (priorities, many
//! queues, queue order, acks, redelivery, delayed messages, dead letters, expiry), for tests,
//! the quickstart and single-process apps.

mod backend;
mod broadcast;
mod broker;

pub use backend::MemoryBackend;
pub use broker::MemoryBroker;
