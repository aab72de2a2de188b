//! One AMQP connection that is re-established on demand after it broke.
//!
//! The broker keeps two: publishers on one, consumers on the other. RabbitMQ throttles a
//! connection whose publishers go faster than queues can take (credit flow, memory alarms);
//! on a shared connection that would hold back consumers' acks too, which is what frees the
//! queues. Each link counts its connections (`generation`), so that what was opened on an
//! earlier connection (channels, declarations, delivery tags) is recognised as stale.

use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::config::AmqpConfig;
use crate::error::AmqpError;

/// A live connection and its generation number (1 for the first).
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) connection: Arc<Connection>,
    pub(crate) generation: u64,
}

pub(crate) struct Link {
    config: Arc<AmqpConfig>,
    role: &'static str,
    current: Mutex<Option<Live>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Link {
    pub(crate) fn new(config: Arc<AmqpConfig>, role: &'static str) -> Self {
        Self {
            config,
            role,
            current: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The live connection, connecting (once, no retry) if there is none or it broke.
    pub(crate) async fn live(&self) -> Result<Live, AmqpError> {
        let mut current = self.current.lock().await;
        if let Some(live) = current.as_ref() {
            if live.connection.status().connected() {
                return Ok(live.clone());
            }
            warn!(role = self.role, url = %self.config.url, "AMQP connection lost; reconnecting");
        }
        let connection = connect(&self.config, self.role).await?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if generation > 1 {
            info!(role = self.role, url = %self.config.url, generation, "AMQP connection re-established");
        }
        let live = Live {
            connection: Arc::new(connection),
            generation,
        };
        *current = Some(live.clone());
        Ok(live)
    }

    /// A new channel on the live connection, and the connection's generation.
    pub(crate) async fn channel(&self) -> Result<(Channel, u64), AmqpError> {
        let live = self.live().await?;
        match live.connection.create_channel().await {
            Ok(channel) => Ok((channel, live.generation)),
            Err(error) => Err(AmqpError::operation("channel.open", error)),
        }
    }

    /// Closes the connection (used when the broker is dropped or by tests).
    pub(crate) async fn close(&self) {
        if let Some(live) = self.current.lock().await.take() {
            let _ = live.connection.close(200, "closing").await;
        }
    }
}

/// Opens a connection with the configured heartbeat, timeout and TLS roots.
async fn connect(config: &AmqpConfig, role: &str) -> Result<Connection, AmqpError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| AmqpError::NoRuntime)?;
    let name = format!("queue-amqp {role} (pid {})", std::process::id());
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(name.as_bytes()))
        .with_executor(tokio_executor_trait::Tokio::default().with_handle(handle.clone()))
        .with_reactor(tokio_reactor_trait::Tokio::default().with_handle(handle));
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = &config.tls_ca_file {
        // A small local file, read once per connection: not worth a blocking-pool hop.
        let pem = std::fs::read_to_string(path).map_err(|source| AmqpError::TlsCaFile {
            path: path.clone(),
            source,
        })?;
        tls.cert_chain = Some(pem);
    }
    Connection::connect_uri_with_config(config.uri.clone(), properties, tls)
        .await
        .map_err(|source| AmqpError::Connect {
            url: config.url.to_string(),
            source: Box::new(source),
        })
}

/// Exponential backoff with jitter for reconnection attempts: 100 ms doubling to 2 s.
///
/// The cap bounds how long a worker stays idle after the server is back (at most 2.5 s
/// plus the handshake); a reconnect attempt against a down server costs one refused TCP
/// connect, so retrying every 2 s is cheap for the server too.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1u64 << attempt.min(5)).min(2_000);
    let jitter = rand::rng().random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}
