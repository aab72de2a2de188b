//! `redis://` and `rediss://` URLs: where the server is, and the transport options kombu
//! knows (same names, so a team can copy them from `broker_transport_options`).
//!
//! ```text
//! redis[s]://[[user]:password@]host[:port][/db][?option=value&...]
//! ```
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | `visibility_timeout` | 3600 | seconds an unacked message waits before any consumer restores it (use the same value as the Python side: delayed messages rely on it) |
//! | `priority_steps` | `0,3,6,9` | kombu's priority lists; `0,1,2,3,4,5,6,7,8,9` gives one per priority |
//! | `global_keyprefix` | none | prefix of every key (kombu's transport option of that name) |
//! | `result_expires` | 86400 | seconds a stored result lives (`0`: forever) |
//! | `command_timeout` | 30 | seconds before a command fails while the server is unreachable |
//! | `ssl_ca_certs` | system roots | PEM file of the CA that signed the server's certificate (`rediss`) |
//! | `ssl_certfile`, `ssl_keyfile` | none | PEM client certificate and key, for mutual TLS (`rediss`) |
//! | `master_name` | none | `sentinel://` only, required: the master's name in Sentinel (kombu's transport option `master_name`) |
//!
//! `sentinel://` URLs (a master found through Redis Sentinel, followed after a failover)
//! are described in `sentinel.rs`: `sentinel://[:password@]h1:26379;sentinel://h2:26379/0?master_name=mymaster`.
//!
//! Seconds are decimal numbers from 0 to 1e10; anything else (NaN, negative, too large, not
//! a number) is a [`RedisError::Config`] naming the option.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Config, ReconnectPolicy, ServerConfig};
use fred::types::config::TlsConfig;
use url::Url;

use crate::error::RedisError;
use crate::sentinel;

/// kombu's default priority steps.
pub const DEFAULT_PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];
/// kombu's default visibility timeout.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Celery's default `result_expires`.
pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(86_400);

/// Where and how to connect, and the kombu transport options. Built from a URL; its `Debug`
/// and `Display` never show the password.
#[derive(Clone)]
pub struct RedisOptions {
    url: Url,
    pub(crate) database: u8,
    /// Seconds an unacked message waits before it is restored to its queue.
    pub visibility_timeout: Duration,
    /// kombu's `priority_steps`, ascending, starting at 0.
    pub priority_steps: Vec<u8>,
    /// kombu's `global_keyprefix` (broker keys, used as is).
    pub global_keyprefix: String,
    /// How long results live; `None` keeps them forever.
    pub result_expires: Option<Duration>,
    /// How long a command may wait for an unreachable server before it fails.
    pub command_timeout: Duration,
    tls: Option<TlsFiles>,
    /// `sentinel://`: the sentinels to ask for the master (empty otherwise).
    sentinels: Vec<(String, u16)>,
    /// `sentinel://`: the master's name in Sentinel.
    pub(crate) master_name: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct TlsFiles {
    ca_certs: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
}

impl RedisOptions {
    /// Parses a `redis://`, `rediss://` or `sentinel://` URL (list) with its options.
    pub fn from_url(text: &str) -> Result<Self, RedisError> {
        if sentinel::is_sentinel(text) {
            let parsed = sentinel::parse(text)?;
            let mut options = Self::from_parsed(parsed.merged)?;
            options.sentinels = parsed.hosts;
            if options.master_name.is_none() {
                return Err(RedisError::Config(
                    "a sentinel:// URL needs the option master_name (e.g. ?master_name=mymaster)"
                        .into(),
                ));
            }
            return Ok(options);
        }
        let url = Url::parse(text).map_err(|error| {
            // The text may hold a password: name only the scheme.
            let scheme = text.split("://").next().unwrap_or("?");
            RedisError::Config(format!("invalid URL with scheme {scheme:?}: {error}"))
        })?;
        Self::from_parsed(url)
    }

    fn from_parsed(url: Url) -> Result<Self, RedisError> {
        let tls = match url.scheme() {
            "redis" | "sentinel" => None,
            "rediss" => Some(TlsFiles::default()),
            other => {
                return Err(RedisError::Config(format!(
                    "scheme {other:?} is not redis://, rediss:// or sentinel://"
                )));
            }
        };
        let database = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db.parse().map_err(|_| {
                RedisError::Config(format!("database {db:?} is not a number 0-255"))
            })?,
        };
        let mut options = Self {
            database,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            priority_steps: DEFAULT_PRIORITY_STEPS.to_vec(),
            global_keyprefix: String::new(),
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            command_timeout: Duration::from_secs(30),
            tls,
            sentinels: Vec::new(),
            master_name: None,
            url: url.clone(),
        };
        for (name, value) in url.query_pairs() {
            options.set(&name, &value)?;
        }
        let mut bare = url;
        bare.set_query(None);
        options.url = bare;
        Ok(options)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), RedisError> {
        let seconds = |value: &str| parse_seconds(name, value);
        match name {
            "visibility_timeout" => self.visibility_timeout = seconds(value)?,
            "priority_steps" => self.priority_steps = parse_steps(value)?,
            "global_keyprefix" => self.global_keyprefix = value.to_owned(),
            "master_name" => {
                if self.url.scheme() != "sentinel" {
                    return Err(RedisError::Config(
                        "master_name needs a sentinel:// URL".into(),
                    ));
                }
                if value.is_empty() {
                    return Err(RedisError::Config("master_name is empty".into()));
                }
                self.master_name = Some(value.to_owned());
            }
            "result_expires" => {
                let expires = seconds(value)?;
                self.result_expires = (!expires.is_zero()).then_some(expires);
            }
            "command_timeout" => {
                self.command_timeout = seconds(value)?.max(Duration::from_millis(1))
            }
            "ssl_ca_certs" | "ssl_certfile" | "ssl_keyfile" | "ssl_cert_reqs" => {
                let Some(tls) = self.tls.as_mut() else {
                    return Err(RedisError::Config(format!("{name} needs a rediss:// URL")));
                };
                match name {
                    "ssl_ca_certs" => tls.ca_certs = Some(value.to_owned()),
                    "ssl_certfile" => tls.certfile = Some(value.to_owned()),
                    "ssl_keyfile" => tls.keyfile = Some(value.to_owned()),
                    _ if value.eq_ignore_ascii_case("required") || value == "CERT_REQUIRED" => {}
                    _ => {
                        return Err(RedisError::Config(format!(
                            "ssl_cert_reqs={value:?} is not supported: certificates are always verified"
                        )));
                    }
                }
            }
            other => {
                return Err(RedisError::Config(format!(
                    "unknown Redis URL option {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The fred configuration: server, credentials, database, TLS.
    pub(crate) fn fred_config(&self) -> Result<Config, RedisError> {
        let host = self
            .url
            .host_str()
            .filter(|host| !host.is_empty())
            .unwrap_or("127.0.0.1")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = self.url.port().unwrap_or(6379);
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let username = (!self.url.username().is_empty()).then(|| decode(self.url.username()));
        let password = self.url.password().map(decode);
        let server = match &self.master_name {
            Some(service_name) if !self.sentinels.is_empty() => ServerConfig::Sentinel {
                hosts: self
                    .sentinels
                    .iter()
                    .map(|(h, p)| (h.as_str(), *p).into())
                    .collect(),
                service_name: service_name.clone(),
                // The URL's credentials are the master's (kombu's `master_for`); the
                // sentinels are asked without, as kombu does without `sentinel_kwargs`.
                username: None,
                password: None,
            },
            _ => ServerConfig::new_centralized(host, port),
        };
        let mut config = Config {
            server,
            username,
            password,
            database: (self.database != 0).then_some(self.database),
            fail_fast: true,
            ..Config::default()
        };
        if let Some(files) = &self.tls {
            config.tls = Some(TlsConfig::from(tls_connector(files)?));
        }
        Ok(config)
    }

    /// Reconnect with exponential backoff (100 ms doubling to 5 s, with jitter), forever.
    /// Behind Sentinel at most 1 s apart: each attempt asks the sentinels for the master
    /// again, and a promoted replica takes over within seconds of a failover.
    pub(crate) fn reconnect_policy(&self) -> ReconnectPolicy {
        let max = if self.sentinels.is_empty() {
            5_000
        } else {
            1_000
        };
        let mut policy = ReconnectPolicy::new_exponential(0, 100, max, 2);
        policy.set_jitter(100);
        policy
    }

    /// Whether the master is found through Sentinel (`sentinel://`).
    pub fn is_sentinel(&self) -> bool {
        !self.sentinels.is_empty()
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        if self.is_sentinel() {
            return sentinel::redacted(&self.url, &self.sentinels);
        }
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisOptions")
            .field("url", &self.redacted())
            .field("visibility_timeout", &self.visibility_timeout)
            .field("priority_steps", &self.priority_steps)
            .field("global_keyprefix", &self.global_keyprefix)
            .field("result_expires", &self.result_expires)
            .field("command_timeout", &self.command_timeout)
            .field("tls", &self.tls)
            .field("master_name", &self.master_name)
            .finish()
    }
}

impl fmt::Display for RedisOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.redacted())
    }
}

/// Largest number of seconds an option takes (about 317 years): any larger value (or NaN,
/// infinity, a negative number) is a configuration error, never a panic or an overflow
/// in the arithmetic of deadlines and Redis scores later on.
pub(crate) const MAX_SECONDS: f64 = 1e10;

/// A non-negative, finite number of seconds of at most [`MAX_SECONDS`].
fn parse_seconds(name: &str, value: &str) -> Result<Duration, RedisError> {
    let invalid = |why: &str| {
        RedisError::Config(format!(
            "{name}={value:?} is not a number of seconds from 0 to {MAX_SECONDS:e}: {why}"
        ))
    };
    let seconds: f64 = value.trim().parse().map_err(|_| invalid("not a number"))?;
    if seconds.is_nan() {
        return Err(invalid("NaN"));
    }
    if seconds < 0.0 {
        return Err(invalid("negative"));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid("too large"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid("out of range"))
}

fn parse_steps(value: &str) -> Result<Vec<u8>, RedisError> {
    let invalid = || {
        RedisError::Config(format!(
            "priority_steps={value:?}: expected ascending numbers 0-9 starting with 0, e.g. 0,3,6,9"
        ))
    };
    let steps: Vec<u8> = value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|step| step.trim().parse::<u8>().map_err(|_| invalid()))
        .collect::<Result<_, _>>()?;
    let ascending = steps.windows(2).all(|pair| pair[0] < pair[1]);
    if steps.first() != Some(&0) || !ascending || steps.iter().any(|step| *step > 9) {
        return Err(invalid());
    }
    Ok(steps)
}

fn tls_connector(files: &TlsFiles) -> Result<fred::types::config::TlsConnector, RedisError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let Some(ca_path) = &files.ca_certs else {
        if files.certfile.is_some() || files.keyfile.is_some() {
            return Err(RedisError::Tls(
                "ssl_certfile and ssl_keyfile need ssl_ca_certs".into(),
            ));
        }
        // The system's roots, as fred loads them.
        return fred::types::config::TlsConnector::default_rustls()
            .map_err(|error| RedisError::Tls(error.to_string()));
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_path).map_err(|error| {
        RedisError::Tls(format!("cannot read ssl_ca_certs {ca_path:?}: {error}"))
    })?;
    for cert in certs {
        let cert = cert
            .map_err(|error| RedisError::Tls(format!("bad certificate in {ca_path:?}: {error}")))?;
        roots.add(cert).map_err(|error| {
            RedisError::Tls(format!("bad CA certificate in {ca_path:?}: {error}"))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| RedisError::Tls(error.to_string()))?
        .with_root_certificates(roots);
    let config = match (&files.certfile, &files.keyfile) {
        (Some(certfile), Some(keyfile)) => {
            let chain = CertificateDer::pem_file_iter(certfile)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    RedisError::Tls(format!("cannot read ssl_certfile {certfile:?}: {error}"))
                })?;
            let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|error| {
                RedisError::Tls(format!("cannot read ssl_keyfile {keyfile:?}: {error}"))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| RedisError::Tls(error.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(RedisError::Tls(
                "ssl_certfile and ssl_keyfile go together".into(),
            ));
        }
    };
    Ok(config.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_hides_the_password() {
        let options = RedisOptions::from_url(
            "redis://user:s3cret@localhost:6390/4?visibility_timeout=2.5&priority_steps=0,1,2,3,4,5,6,7,8,9&global_keyprefix=t:&result_expires=0",
        )
        .unwrap();
        assert_eq!(options.database, 4);
        assert_eq!(options.visibility_timeout, Duration::from_millis(2500));
        assert_eq!(options.priority_steps, (0..10).collect::<Vec<u8>>());
        assert_eq!(options.global_keyprefix, "t:");
        assert_eq!(options.result_expires, None);
        assert!(!format!("{options:?}").contains("s3cret"));
        assert!(!options.to_string().contains("s3cret"));
        let config = options.fred_config().unwrap();
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        assert_eq!(config.username.as_deref(), Some("user"));
        assert_eq!(config.database, Some(4));
    }

    #[test]
    fn rejects_bad_options_without_echoing_secrets() {
        for url in [
            "redis://:pw@h/0?nope=1",
            "redis://:pw@h/x",
            "redis://:pw@h/0?priority_steps=3,6",
            "redis://:pw@h/0?priority_steps=0,6,3",
            "redis://:pw@h/0?visibility_timeout=-1",
            "redis://:pw@h/0?ssl_ca_certs=/x",
        ] {
            let error = RedisOptions::from_url(url).unwrap_err().to_string();
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn hostile_numbers_in_options_are_clear_errors_not_panics() {
        for option in ["visibility_timeout", "result_expires", "command_timeout"] {
            for (value, why) in [
                ("NaN", "NaN"),
                ("nan", "NaN"),
                ("-1", "negative"),
                ("-0.001", "negative"),
                ("-inf", "negative"),
                ("inf", "too large"),
                ("1e300", "too large"),
                ("18446744073709551616", "too large"),
                ("10000000001", "too large"),
                ("", "not a number"),
                ("ten", "not a number"),
                ("0x10", "not a number"),
            ] {
                let url = format!("redis://:pw@h/0?{option}={value}");
                let error = RedisOptions::from_url(&url).unwrap_err();
                let text = error.to_string();
                assert!(matches!(error, RedisError::Config(_)), "{text}");
                assert!(text.contains(option) && text.contains(why), "{text}");
                assert!(!text.contains("pw"), "{text}");
            }
        }
        // The bounds themselves are accepted.
        let options =
            RedisOptions::from_url("redis://h/0?visibility_timeout=1e10&result_expires=0").unwrap();
        assert_eq!(
            options.visibility_timeout,
            Duration::from_secs(10_000_000_000)
        );
        for steps in [
            "",
            "0,300",
            "0,-3",
            "0,NaN",
            "0,3,3",
            "0,1,2,3,4,5,6,7,8,9,10",
        ] {
            let url = format!("redis://h/0?priority_steps={steps}");
            let error = RedisOptions::from_url(&url).unwrap_err();
            assert!(error.to_string().contains("priority_steps"), "{error}");
        }
        for database in ["256", "-1", "NaN", "99999999999999999999"] {
            let error = RedisOptions::from_url(&format!("redis://h/{database}")).unwrap_err();
            assert!(error.to_string().contains("database"), "{error}");
        }
    }
}
