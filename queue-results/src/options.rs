//! [`SqlOptions`] and the URL query parameters that set them.

use std::time::Duration;

use queue_core::connect::RedactedUrl;

use crate::error::SqlError;

/// Celery's default `result_expires`: one day.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Options of a SQL result backend. Each can also be given as a query parameter of the URL
/// (`postgres://host/db?expires=3600&migrate=false`); those are removed before the URL
/// reaches the database driver, and override what the builder methods set.
///
/// | parameter | meaning | default |
/// | --- | --- | --- |
/// | `expires` | seconds a stored result lives; `never` (or `0`) keeps it | `86400` |
/// | `migrate` | create/upgrade the tables on connect (`true`/`false`) | `true` |
/// | `max_connections` | pool size | 10 (PostgreSQL), 4 (SQLite file), 1 (SQLite memory) |
/// | `acquire_timeout` | seconds to wait for a connection before failing | `5` |
/// | `retries` | retries of an operation after a transient error | `2` |
/// | `poll_interval` | longest pause, in seconds, between reads of a polling wait | `0.1` |
///
/// Seconds are non-negative numbers up to 10^10 (about 317 years); anything else
/// (`NaN`, `inf`, `-1`, `1e30`) is a configuration error naming the parameter.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SqlOptions {
    /// How long a stored result lives (`None`: until forgotten). Fixed per row when it is
    /// written, like Redis' `SETEX`; [`cleanup_expired`] deletes rows past it.
    ///
    /// [`cleanup_expired`]: queue_core::ResultBackend::cleanup_expired
    pub expiry: Option<Duration>,
    /// Whether connecting runs the schema migrations.
    pub migrate: bool,
    /// Pool size; `None` picks a default for the database.
    pub max_connections: Option<u32>,
    /// How long an operation waits for a pooled connection (or for a new one to connect).
    pub acquire_timeout: Duration,
    /// How many times an operation is retried after a transient error (connection lost,
    /// server restarting, database busy). Every write is an idempotent upsert, so a retry
    /// never stores a state twice or over a SUCCESS.
    pub retries: u32,
    /// The longest pause between two reads of a polling wait (SQLite, and PostgreSQL while
    /// its LISTEN connection is down).
    pub poll_interval: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            expiry: Some(DEFAULT_EXPIRY),
            migrate: true,
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
            retries: 2,
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl SqlOptions {
    /// Sets how long results live (`None`: forever).
    pub fn expiry(mut self, expiry: Option<Duration>) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets whether connecting runs the migrations.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Sets the pool size.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = Some(max_connections);
        self
    }

    /// Sets how long an operation waits for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets the number of retries after transient errors.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the longest pause of a polling wait.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The pause before retry number `attempt` (1-based): 50 ms, doubling, at most 1 s.
    pub(crate) fn retry_delay(attempt: u32) -> Duration {
        Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)))
            .min(Duration::from_secs(1))
    }
}

/// Parses a URL given as text, for the `connect` functions. `sqlite://:memory:` (an empty
/// host to URL parsers) is read as its synonym `sqlite::memory:`.
pub(crate) fn parse_url(text: &str) -> Result<RedactedUrl, SqlError> {
    let normalised;
    let text = match text.strip_prefix("sqlite://:memory:") {
        Some(rest) => {
            normalised = format!("sqlite::memory:{rest}");
            &normalised
        }
        None => text,
    };
    text.parse()
        .map_err(|error: queue_core::Error| SqlError::Config(error.to_string()))
}

/// Removes our query parameters from `url`, applying them to `options`; returns the URL the
/// driver gets (with its password: never log it) and the options.
pub(crate) fn split_url(
    url: &RedactedUrl,
    mut options: SqlOptions,
) -> Result<(url::Url, SqlOptions), SqlError> {
    let mut driver_url = url.expose().clone();
    let mut kept = Vec::new();
    for (key, value) in url.expose().query_pairs() {
        match &*key {
            "expires" => options.expiry = parse_expiry(&value)?,
            "migrate" => options.migrate = parse_bool(&key, &value)?,
            "max_connections" => {
                let size: u32 = value.parse().ok().filter(|size| *size > 0).ok_or_else(|| {
                    SqlError::Config(format!("`max_connections` must be > 0, not {value:?}"))
                })?;
                options.max_connections = Some(size);
            }
            "acquire_timeout" => options.acquire_timeout = parse_seconds(&key, &value)?,
            "retries" => {
                options.retries = value.parse().map_err(|_| {
                    SqlError::Config(format!("`retries` must be a count, not {value:?}"))
                })?;
            }
            "poll_interval" => options.poll_interval = parse_seconds(&key, &value)?,
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        driver_url.set_query(None);
    } else {
        driver_url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((driver_url, options))
}

fn parse_expiry(value: &str) -> Result<Option<Duration>, SqlError> {
    if matches!(value, "never" | "none" | "0") {
        return Ok(None);
    }
    parse_seconds("expires", value).map(Some)
}

/// The largest number of seconds an option takes (about 317 years). Larger values would
/// overflow where they are used (an `Instant` deadline in the pool panics; PostgreSQL's
/// `now() + interval` fails every store with "timestamp out of range").
const MAX_SECONDS: f64 = 1e10;

fn parse_seconds(key: &str, value: &str) -> Result<Duration, SqlError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|seconds| (0.0..=MAX_SECONDS).contains(seconds))
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| {
            SqlError::Config(format!(
                "`{key}` must be a number of seconds from 0 to {MAX_SECONDS}, not {value:?}"
            ))
        })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, SqlError> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(SqlError::Config(format!(
            "`{key}` must be true or false, not {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Result<(String, SqlOptions), SqlError> {
        let url: RedactedUrl = text.parse().unwrap();
        split_url(&url, SqlOptions::default()).map(|(url, options)| (url.to_string(), options))
    }

    #[test]
    fn our_parameters_are_removed_and_applied() {
        let (url, options) = split(
            "postgres://u:secret@h/db?expires=60&sslmode=disable&migrate=false&retries=0\
             &max_connections=3&acquire_timeout=0.5&poll_interval=0.02",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:secret@h/db?sslmode=disable");
        assert_eq!(options.expiry, Some(Duration::from_secs(60)));
        assert!(!options.migrate);
        assert_eq!(options.retries, 0);
        assert_eq!(options.max_connections, Some(3));
        assert_eq!(options.acquire_timeout, Duration::from_millis(500));
        assert_eq!(options.poll_interval, Duration::from_millis(20));
        let (url, options) = split("sqlite://results.db?expires=never").unwrap();
        assert_eq!(url, "sqlite://results.db");
        assert_eq!(options.expiry, None);
    }

    #[test]
    fn sqlite_url_forms_survive() {
        for text in [
            "sqlite://quickstart.db?mode=rwc",
            "sqlite:///tmp/dir/results.db",
            "sqlite::memory:",
            "sqlite://data/results.db",
        ] {
            assert_eq!(split(text).unwrap().0, text);
        }
    }

    #[test]
    fn memory_synonym_is_accepted() {
        let url = parse_url("sqlite://:memory:?expires=5").unwrap();
        assert_eq!(url.to_string(), "sqlite::memory:?expires=5");
        let error = parse_url("postgres://u:secret@[bad/db")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn bad_values_are_config_errors() {
        for text in [
            "sqlite://x.db?expires=soon",
            "sqlite://x.db?migrate=maybe",
            "sqlite://x.db?max_connections=0",
            "sqlite://x.db?acquire_timeout=-1",
        ] {
            let error = split(text).unwrap_err();
            assert!(matches!(error, SqlError::Config(_)), "{text}: {error}");
        }
    }

    #[test]
    fn hostile_numbers_are_config_errors_naming_the_option() {
        for (text, option) in [
            ("sqlite://x.db?expires=NaN", "expires"),
            ("sqlite://x.db?expires=inf", "expires"),
            ("sqlite://x.db?expires=-1", "expires"),
            ("sqlite://x.db?expires=1e30", "expires"),
            // Valid durations, but past what PostgreSQL's timestamps and the pool's
            // `Instant` deadlines hold.
            ("sqlite://x.db?expires=1e15", "expires"),
            ("sqlite://x.db?acquire_timeout=1e19", "acquire_timeout"),
            ("sqlite://x.db?acquire_timeout=-0.5", "acquire_timeout"),
            ("sqlite://x.db?poll_interval=NaN", "poll_interval"),
            ("sqlite://x.db?poll_interval=1e11", "poll_interval"),
            ("sqlite://x.db?retries=-1", "retries"),
            ("sqlite://x.db?retries=99999999999", "retries"),
            ("sqlite://x.db?retries=1e3", "retries"),
            ("sqlite://x.db?max_connections=1e3", "max_connections"),
            ("sqlite://x.db?max_connections=-4", "max_connections"),
        ] {
            let error = split(text).unwrap_err();
            assert!(matches!(error, SqlError::Config(_)), "{text}: {error}");
            assert!(error.to_string().contains(option), "{text}: {error}");
        }
        let (_, options) = split("sqlite://x.db?expires=1e10&acquire_timeout=0").unwrap();
        assert_eq!(options.expiry, Some(Duration::from_secs(10_000_000_000)));
        assert_eq!(options.acquire_timeout, Duration::ZERO);
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        assert_eq!(SqlOptions::retry_delay(1), Duration::from_millis(50));
        assert_eq!(SqlOptions::retry_delay(2), Duration::from_millis(100));
        assert_eq!(SqlOptions::retry_delay(40), Duration::from_secs(1));
    }
}
