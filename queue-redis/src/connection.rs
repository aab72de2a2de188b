//! Connections: fred clients that reconnect with backoff, bound how long a command waits
//! for an unreachable server (no silent stall), and log connection trouble.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{Builder, Client, ClientLike, EventInterface, TcpConfig};
use fred::types::RespVersion;
use tracing::{debug, info, warn};

use crate::config::RedisOptions;
use crate::error::RedisError;

fn builder(options: &RedisOptions) -> Result<Builder, RedisError> {
    let mut builder = Builder::from_config(options.fred_config()?);
    let command_timeout = options.command_timeout;
    builder
        .with_connection_config(|connection| {
            connection.connection_timeout = Duration::from_secs(5);
            connection.internal_command_timeout = Duration::from_secs(5);
            // A command in flight when the connection broke is sent again after the
            // reconnect; the scripts are written so that this cannot lose a message.
            connection.max_command_attempts = 3;
            connection.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = command_timeout;
            performance.broadcast_channel_capacity = 4096;
        })
        .set_policy(options.reconnect_policy());
    Ok(builder)
}

fn watch<C: EventInterface>(client: &C, role: &'static str, redacted: String) {
    let url = redacted.clone();
    client.on_error(move |(error, _)| {
        warn!(role, url = %url, %error, "Redis connection error; reconnecting with backoff");
        async { Ok(()) }
    });
    client.on_reconnect(move |_| {
        info!(role, url = %redacted, "Redis connection re-established");
        async { Ok(()) }
    });
}

/// A connected client for ordinary (non-blocking) commands.
pub(crate) async fn connect(
    options: &RedisOptions,
    role: &'static str,
) -> Result<Client, RedisError> {
    let client = builder(options)?.build()?;
    watch(&client, role, options.redacted());
    client.init().await?;
    Ok(client)
}

/// A connected client for pub/sub that resubscribes after a reconnect.
///
/// RESP3 where the server speaks it (Redis 6 and later): a subscribed RESP3 connection still
/// runs ordinary commands, so a read sent after a SUBSCRIBE on it is answered after the
/// subscription took effect. Returns whether RESP3 is in use.
pub(crate) async fn connect_subscriber(
    options: &RedisOptions,
    role: &'static str,
) -> Result<(SubscriberClient, bool), RedisError> {
    for resp3 in [true, false] {
        let mut builder = builder(options)?;
        if resp3 {
            builder.with_config(|config| config.version = RespVersion::RESP3);
        }
        let client = builder.build_subscriber_client()?;
        match client.init().await {
            Ok(_) => {
                watch(&client, role, options.redacted());
                let _resubscribe = client.manage_subscriptions();
                return Ok((client, resp3));
            }
            Err(error) if resp3 => {
                debug!(%error, "no RESP3 (Redis before 6?): subscribing over RESP2");
                let _ = client.quit().await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    unreachable!("the RESP2 attempt returns")
}
