//! What an `amqp://` / `amqps://` URL configures, and the builder that can override it.
//!
//! Options of this crate travel in the URL query next to lapin's own (`heartbeat`,
//! `frame_max`, `channel_max`, `connection_timeout`, `auth_mechanism`); ours are removed
//! before the URL reaches lapin:
//!
//! | query | default | meaning |
//! | --- | --- | --- |
//! | `max_priority=N` | none | declare task queues with `x-max-priority: N` (Celery's `task_queue_max_priority`); without it RabbitMQ ignores priorities |
//! | `queue_expires=MS` | none | declare queues with `x-expires: MS` (unused queues are deleted) |
//! | `dead_letter_exchange=NAME` | `dead_letter` | the direct exchange dead letters go through |
//! | `dead_letter_rejected=true` | false | also declare task queues with `x-dead-letter-exchange`, so that RabbitMQ dead-letters rejected and expired messages (from any client) |
//! | `delay_prefix=NAME` | `queue.delay` | prefix of the delay exchanges and queues |
//! | `publish_channels=N` | 4 | publisher channels shared by concurrent producers |
//! | `publish_timeout=S` | 30 | how long a publish retries through reconnections (0 to 86400 s) |
//! | `tls_ca_file=PATH` | system roots | PEM file with the CA that signed the server's certificate (`amqps://`) |
//!
//! Queue arguments must match how the queue was first declared, by any client: RabbitMQ
//! refuses a redeclaration with other arguments (`PRECONDITION_FAILED`). Celery declares
//! `celery` without arguments, so the defaults here add none. When a queue already exists
//! with other arguments, the broker logs a warning and uses it as it is.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::uri::AMQPUri;
use queue_core::connect::RedactedUrl;

use crate::error::AmqpError;

/// Heartbeat asked for when the URL names none: a dead peer is noticed within two intervals.
pub const DEFAULT_HEARTBEAT_SECONDS: u16 = 30;

/// Connection timeout when the URL names none.
const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;

/// The broker's configuration. Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct AmqpConfig {
    pub(crate) url: RedactedUrl,
    pub(crate) uri: AMQPUri,
    pub(crate) max_priority: Option<u8>,
    pub(crate) queue_expires: Option<Duration>,
    pub(crate) dead_letter_exchange: String,
    pub(crate) dead_letter_rejected: bool,
    pub(crate) delay_prefix: String,
    pub(crate) publish_channels: usize,
    pub(crate) publish_timeout: Duration,
    pub(crate) tls_ca_file: Option<PathBuf>,
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AmqpConfig")
            .field("url", &self.url)
            .field("max_priority", &self.max_priority)
            .field("queue_expires", &self.queue_expires)
            .field("dead_letter_exchange", &self.dead_letter_exchange)
            .field("dead_letter_rejected", &self.dead_letter_rejected)
            .field("delay_prefix", &self.delay_prefix)
            .field("publish_channels", &self.publish_channels)
            .field("publish_timeout", &self.publish_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl AmqpConfig {
    /// Reads the configuration from an `amqp://` or `amqps://` URL.
    pub fn from_url(url: &RedactedUrl) -> Result<Self, AmqpError> {
        let exposed = url.expose();
        if !matches!(exposed.scheme(), "amqp" | "amqps") {
            return Err(AmqpError::Config(format!(
                "scheme {:?} is not amqp:// or amqps://",
                exposed.scheme()
            )));
        }
        let mut config = Self {
            url: url.clone(),
            uri: AMQPUri::default(),
            max_priority: None,
            queue_expires: None,
            dead_letter_exchange: "dead_letter".to_owned(),
            dead_letter_rejected: false,
            delay_prefix: "queue.delay".to_owned(),
            publish_channels: 4,
            publish_timeout: Duration::from_secs(30),
            tls_ca_file: None,
        };
        let mut passed_on = Vec::new();
        for (key, value) in exposed.query_pairs() {
            config.apply(&key, &value, &mut passed_on)?;
        }
        let mut for_lapin = exposed.clone();
        if passed_on.is_empty() {
            for_lapin.set_query(None);
        } else {
            for_lapin
                .query_pairs_mut()
                .clear()
                .extend_pairs(passed_on.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let mut uri: AMQPUri = for_lapin.as_str().parse().map_err(|error: String| {
            // lapin's messages may quote the URL: never let the password through.
            let error = match exposed.password() {
                Some(password) if !password.is_empty() => error.replace(password, "***"),
                _ => error,
            };
            AmqpError::Config(format!("invalid URL {url}: {error}"))
        })?;
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECONDS);
        uri.query
            .connection_timeout
            .get_or_insert(DEFAULT_CONNECTION_TIMEOUT_MS);
        config.uri = uri;
        Ok(config)
    }

    fn apply(
        &mut self,
        key: &str,
        value: &str,
        passed_on: &mut Vec<(String, String)>,
    ) -> Result<(), AmqpError> {
        let invalid = |what: &str| AmqpError::Config(format!("{key}={value:?}: {what}"));
        match key {
            "max_priority" => {
                let priority: u8 = value.parse().map_err(|_| invalid("expected 1 to 255"))?;
                if priority == 0 {
                    return Err(invalid("expected 1 to 255"));
                }
                self.max_priority = Some(priority);
            }
            "queue_expires" => {
                let millis: u32 = value
                    .parse()
                    .map_err(|_| invalid("expected milliseconds"))?;
                if millis == 0 {
                    return Err(invalid("expected milliseconds above 0"));
                }
                self.queue_expires = Some(Duration::from_millis(millis.into()));
            }
            "dead_letter_exchange" => {
                if value.is_empty() {
                    return Err(invalid("expected an exchange name"));
                }
                self.dead_letter_exchange = value.to_owned();
            }
            "dead_letter_rejected" => {
                self.dead_letter_rejected =
                    parse_bool(value).ok_or_else(|| invalid("expected true or false"))?;
            }
            "delay_prefix" => {
                if value.is_empty() {
                    return Err(invalid("expected a name prefix"));
                }
                self.delay_prefix = value.to_owned();
            }
            "publish_channels" => {
                let channels: usize = value.parse().map_err(|_| invalid("expected a count"))?;
                self.publish_channels = channels.clamp(1, 64);
            }
            "publish_timeout" => {
                self.publish_timeout = parse_seconds(value).map_err(invalid)?;
            }
            "tls_ca_file" => self.tls_ca_file = Some(PathBuf::from(value)),
            _ => passed_on.push((key.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &RedactedUrl {
        &self.url
    }

    /// Priority levels task queues are declared with (`x-max-priority`), if any.
    pub fn max_priority(&self) -> Option<u8> {
        self.max_priority
    }

    /// Name of the dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> &str {
        &self.dead_letter_exchange
    }

    /// Prefix of the delay exchanges and queues.
    pub fn delay_prefix(&self) -> &str {
        &self.delay_prefix
    }
}

/// Longest publish timeout accepted: a day is already "retry for ever" for a producer; the
/// bound keeps the deadline arithmetic far from overflow.
const MAX_PUBLISH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A number of seconds from a URL option: finite, non-negative, at most
/// [`MAX_PUBLISH_TIMEOUT`]. `Duration::from_secs_f64` would panic on NaN, negative or huge
/// values; this says what is wrong instead.
fn parse_seconds(value: &str) -> Result<Duration, &'static str> {
    let seconds: f64 = value.trim().parse().map_err(|_| "expected seconds")?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err("expected a finite, non-negative number of seconds");
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_PUBLISH_TIMEOUT => Ok(duration),
        _ => Err("expected at most 86400 seconds (a day)"),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Builds an [`AmqpBroker`](crate::AmqpBroker): the URL's options, then these overrides.
///
/// ```no_run
/// # async fn example() -> Result<(), queue_amqp::AmqpError> {
/// let broker = queue_amqp::AmqpBroker::builder("amqp://guest:guest@127.0.0.1:5672/%2f")?
///     .max_priority(10)
///     .connect()
///     .await?;
/// # let _ = broker; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AmqpBrokerBuilder {
    pub(crate) config: AmqpConfig,
}

impl AmqpBrokerBuilder {
    /// Starts from `url` and its query options.
    pub fn new(url: &str) -> Result<Self, AmqpError> {
        let url: RedactedUrl = url
            .parse()
            .map_err(|error: queue_core::Error| AmqpError::Config(error.to_string()))?;
        Ok(Self {
            config: AmqpConfig::from_url(&url)?,
        })
    }

    /// Declares task queues with `x-max-priority: levels` (1–255; our priorities are 0–9).
    pub fn max_priority(mut self, levels: u8) -> Self {
        self.config.max_priority = (levels > 0).then_some(levels);
        self
    }

    /// Declares queues with `x-expires`: RabbitMQ deletes them after `after` unused.
    pub fn queue_expires(mut self, after: Option<Duration>) -> Self {
        self.config.queue_expires = after.filter(|after| !after.is_zero());
        self
    }

    /// Name of the dead-letter exchange.
    pub fn dead_letter_exchange(mut self, name: impl Into<String>) -> Self {
        self.config.dead_letter_exchange = name.into();
        self
    }

    /// Declares task queues with `x-dead-letter-exchange`, so that RabbitMQ itself
    /// dead-letters messages rejected without requeue or expired.
    pub fn dead_letter_rejected(mut self, enabled: bool) -> Self {
        self.config.dead_letter_rejected = enabled;
        self
    }

    /// Publisher channels shared by concurrent producers.
    pub fn publish_channels(mut self, channels: usize) -> Self {
        self.config.publish_channels = channels.clamp(1, 64);
        self
    }

    /// How long a publish retries through reconnections before it fails (at most a day;
    /// longer is taken as a day).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout.min(MAX_PUBLISH_TIMEOUT);
        self
    }

    /// PEM file of the CA that signed the server's certificate (`amqps://`).
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls_ca_file = Some(path.into());
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// Connects.
    pub async fn connect(self) -> Result<crate::AmqpBroker, AmqpError> {
        crate::AmqpBroker::with_config(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<AmqpConfig, AmqpError> {
        AmqpConfig::from_url(&url.parse().unwrap())
    }

    #[test]
    fn reads_our_options_and_passes_lapins_on() {
        let config = config(
            "amqp://user:secret@example.org:5673/vh?max_priority=10&heartbeat=7\
             &queue_expires=60000&dead_letter_rejected=true&publish_channels=2",
        )
        .unwrap();
        assert_eq!(config.max_priority, Some(10));
        assert_eq!(config.queue_expires, Some(Duration::from_secs(60)));
        assert!(config.dead_letter_rejected);
        assert_eq!(config.publish_channels, 2);
        assert_eq!(config.uri.query.heartbeat, Some(7));
        assert_eq!(config.uri.vhost, "vh");
        assert_eq!(config.uri.authority.port, 5673);
        assert_eq!(config.uri.authority.userinfo.password, "secret");
    }

    #[test]
    fn defaults_match_celery_and_configure_heartbeats() {
        let config = config("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(config.max_priority, None);
        assert_eq!(config.queue_expires, None);
        assert!(!config.dead_letter_rejected);
        assert_eq!(config.uri.vhost, "/");
        assert_eq!(config.uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECONDS));
        let tls = self::config("amqps://guest:guest@broker.example/%2f").unwrap();
        assert_eq!(tls.uri.authority.port, 5671);
    }

    #[test]
    fn bad_values_are_errors_and_never_show_the_password() {
        for url in [
            "amqp://u:hunter2@h/?max_priority=0",
            "amqp://u:hunter2@h/?max_priority=x",
            "amqp://u:hunter2@h/?publish_timeout=-1",
            "amqp://u:hunter2@h/?heartbeat=abc",
            "redis://u:hunter2@h/",
        ] {
            let error = config(url).expect_err(url).to_string();
            assert!(!error.contains("hunter2"), "{error}");
        }
        let debug = format!("{:?}", config("amqp://u:hunter2@h/").unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn publish_timeout_out_of_range_is_a_clear_error_not_a_panic() {
        for value in [
            "NaN", "nan", "inf", "-inf", "-1", "-0.5", "1e300", "1e20", "86401", "x", "",
        ] {
            let url = format!("amqp://u:hunter2@h/?publish_timeout={value}");
            let error = config(&url).expect_err(&url).to_string();
            assert!(error.contains("publish_timeout"), "{error}");
            assert!(error.contains("seconds"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        for (value, expected) in [
            ("0", Duration::ZERO),
            ("2.5", Duration::from_millis(2500)),
            ("86400", MAX_PUBLISH_TIMEOUT),
        ] {
            let url = format!("amqp://h/?publish_timeout={value}");
            assert_eq!(config(&url).unwrap().publish_timeout, expected, "{value}");
        }
        let builder = AmqpBrokerBuilder::new("amqp://h/")
            .unwrap()
            .publish_timeout(Duration::MAX);
        assert_eq!(builder.config().publish_timeout, MAX_PUBLISH_TIMEOUT);
    }

    #[test]
    fn numeric_options_out_of_range_are_errors() {
        for url in [
            "amqp://h/?max_priority=256",
            "amqp://h/?max_priority=-1",
            "amqp://h/?queue_expires=-1",
            "amqp://h/?queue_expires=4294967296",
            "amqp://h/?queue_expires=0",
            "amqp://h/?publish_channels=-1",
            "amqp://h/?publish_channels=18446744073709551616",
        ] {
            config(url).expect_err(url);
        }
    }
}
