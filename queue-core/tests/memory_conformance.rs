//! The shared conformance suites, run on the in-memory broker and result backend
//! (`cargo test -p queue-core --features conformance`).
#![cfg(feature = "conformance")]

use std::sync::Arc;
use std::time::Duration;

use queue_core::{MemoryBackend, MemoryBroker};

queue_core::broker_conformance_tests!(async { Arc::new(MemoryBroker::new()) });
queue_core::broadcast_conformance_tests!(async { Arc::new(MemoryBroker::new()) });

queue_core::backend_conformance_tests!(|expiry: Option<Duration>| async move {
    Arc::new(match expiry {
        Some(expiry) => MemoryBackend::with_expiry(Some(expiry)),
        None => MemoryBackend::new(),
    })
});

queue_core::lease_conformance_tests!(async { Arc::new(queue_core::lease::MemoryLease::new()) });
