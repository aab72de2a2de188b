//! `queue-monitor`: watches the workers on a Celery broker (Rust and Python alike) and
//! serves what it sees.
//!
//! It consumes Celery's events (and the `beat-heartbeat` events of `queue beat`), polls the
//! workers with inspect as Flower does, reads the queues' backlog from the broker, keeps a
//! bounded history in SQLite (or PostgreSQL) that survives restarts, and serves a
//! Flower-compatible JSON API, the dashboard's own JSON and live updates (SSE), and
//! Prometheus metrics with Flower's names.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let app = queue_core::App::builder().broker("memory://").build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5555").await?;
//! queue_monitor::Monitor::new(app)
//!     .history("sqlite://queue-monitor.sqlite")
//!     .queue("celery")
//!     .serve(listener)
//!     .await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
mod error;
pub mod ingest;
pub mod metrics;
mod monitor;
pub(crate) mod pages;
pub mod redact;
pub mod settings;
pub mod state;
pub mod store;

pub use auth::Auth;
pub use error::MonitorError;
pub use monitor::{DEFAULT_HISTORY, DEFAULT_LISTEN, Monitor, RunningMonitor};
pub use settings::Settings;
pub use state::MonitorState;

/// Resolves once `stop` turns true (or its sender is gone): the background tasks' signal.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so no caller holds it across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}
