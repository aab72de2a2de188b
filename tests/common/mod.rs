//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use queue::{App, AppBuilder, MemoryBackend, MemoryBroker};

/// Long enough that a passing test never waits for it; only a failing test does.
pub const WAIT: Duration = Duration::from_secs(20);

/// A broker and a backend to share between a producer app and a worker app.
pub struct Memory {
    pub broker: Arc<MemoryBroker>,
    pub backend: Arc<MemoryBackend>,
}

impl Memory {
    pub fn new() -> Self {
        Self {
            broker: Arc::new(MemoryBroker::new()),
            backend: Arc::new(MemoryBackend::new()),
        }
    }

    /// A builder on these broker and backend.
    pub fn builder(&self) -> AppBuilder {
        App::builder()
            .broker_instance(self.broker.clone())
            .backend_instance(self.backend.clone())
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}
