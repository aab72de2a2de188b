//! Broker and backend URLs: parsing, redaction of secrets, and the [`Connector`]s that turn
//! a URL into a broker or a backend.
//!
//! `memory://` is built in. Other schemes come from the crates that implement them
//! (`queue-redis`, `queue-amqp`, `queue-results`): each adds its connector to the
//! [`CONNECTORS`] slice at link time, so enabling a feature of the facade is all it takes.
//! Connectors can also be added with [`register_connector`] or on the builder. An unknown
//! scheme is an error that names the feature to enable.

use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use url::Url;

use crate::backend::ResultBackend;
use crate::broker::Broker;
use crate::error::Error;
use crate::lease::Lease;
use crate::memory::{MemoryBackend, MemoryBroker};

/// A URL whose password never reaches a log line or `Debug` output.
///
/// ```
/// use queue_core::connect::RedactedUrl;
/// let url: RedactedUrl = "redis://user:secret@localhost:6379/0".parse().unwrap();
/// assert_eq!(url.to_string(), "redis://user:***@localhost:6379/0");
/// assert!(!format!("{url:?}").contains("secret"));
/// assert_eq!(url.expose().password(), Some("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(Url);

impl RedactedUrl {
    /// The URL with its secrets, for the code that connects.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// The scheme, e.g. `redis`.
    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }
}

impl std::str::FromStr for RedactedUrl {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `sqlite://:memory:` is common (SQLAlchemy style) but not a valid URL: read it as
        // sqlx's `sqlite::memory:`.
        let text = if text == "sqlite://:memory:" {
            "sqlite::memory:"
        } else {
            text
        };
        Url::parse(text).map(RedactedUrl).map_err(|error| {
            // The text may hold a password: name only the scheme.
            let scheme = text.split("://").next().unwrap_or("?");
            Error::Config(format!("invalid URL with scheme {scheme:?}: {error}"))
        })
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        formatter.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "RedactedUrl({self})")
    }
}

/// Turns URLs of some schemes into brokers and backends.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Schemes this connector serves, e.g. `["redis", "rediss"]`.
    fn schemes(&self) -> &'static [&'static str];

    /// A broker for `url`, or `None` if this connector has no broker for it.
    async fn broker(&self, _url: &RedactedUrl) -> Result<Option<Arc<dyn Broker>>, Error> {
        Ok(None)
    }

    /// A result backend for `url`, or `None` if this connector has no backend for it.
    async fn backend(&self, _url: &RedactedUrl) -> Result<Option<Arc<dyn ResultBackend>>, Error> {
        Ok(None)
    }

    /// A leader lease store for `url` (periodic schedulers), or `None` if this connector has
    /// none for it.
    async fn lease(&self, _url: &RedactedUrl) -> Result<Option<Arc<dyn Lease>>, Error> {
        Ok(None)
    }
}

/// `memory://`: a new in-process broker or backend per URL resolution.
#[derive(Debug, Default)]
pub struct MemoryConnector;

#[async_trait]
impl Connector for MemoryConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["memory"]
    }

    async fn broker(&self, _url: &RedactedUrl) -> Result<Option<Arc<dyn Broker>>, Error> {
        Ok(Some(Arc::new(MemoryBroker::new())))
    }

    async fn backend(&self, _url: &RedactedUrl) -> Result<Option<Arc<dyn ResultBackend>>, Error> {
        Ok(Some(Arc::new(MemoryBackend::new())))
    }
}

/// Connectors contributed at link time by the broker and backend crates:
///
/// ```text
/// #[linkme::distributed_slice(queue_core::connect::CONNECTORS)]
/// #[linkme(crate = queue_core::connect::linkme)]
/// pub static REDIS_CONNECTOR: fn() -> Arc<dyn Connector> = || Arc::new(RedisConnector);
/// ```
#[linkme::distributed_slice]
pub static CONNECTORS: [fn() -> Arc<dyn Connector>];

#[doc(hidden)]
pub use linkme;

static REGISTERED: RwLock<Vec<Arc<dyn Connector>>> = RwLock::new(Vec::new());

/// Makes a connector available to every application built afterwards.
pub fn register_connector(connector: Arc<dyn Connector>) {
    REGISTERED
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(connector);
}

pub(crate) fn registered_connectors() -> Vec<Arc<dyn Connector>> {
    let mut connectors = REGISTERED
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    connectors.extend(CONNECTORS.iter().map(|make| make()));
    connectors
}

/// The `queue` crate feature that provides a scheme.
pub fn feature_for_scheme(scheme: &str) -> Option<&'static str> {
    match scheme {
        "redis" | "rediss" | "sentinel" => Some("redis"),
        "amqp" | "amqps" => Some("amqp"),
        "postgres" | "postgresql" => Some("postgres"),
        "sqlite" => Some("sqlite"),
        _ => None,
    }
}

fn unsupported(url: &RedactedUrl, what: &str) -> Error {
    match feature_for_scheme(url.scheme()) {
        Some(feature) => Error::FeatureDisabled {
            scheme: url.scheme().to_owned(),
            feature,
        },
        None => Error::Config(format!("no {what} for URL {url}")),
    }
}

pub(crate) async fn connect_broker(
    url: &RedactedUrl,
    connectors: &[Arc<dyn Connector>],
) -> Result<Arc<dyn Broker>, Error> {
    for connector in connectors {
        if connector.schemes().contains(&url.scheme()) {
            if let Some(broker) = connector.broker(url).await? {
                return Ok(broker);
            }
        }
    }
    Err(unsupported(url, "broker"))
}

pub(crate) async fn connect_backend(
    url: &RedactedUrl,
    connectors: &[Arc<dyn Connector>],
) -> Result<Arc<dyn ResultBackend>, Error> {
    for connector in connectors {
        if connector.schemes().contains(&url.scheme()) {
            if let Some(backend) = connector.backend(url).await? {
                return Ok(backend);
            }
        }
    }
    Err(unsupported(url, "result backend"))
}

/// The lease store for `url` from the registered connectors (and `extra` ones first).
/// `memory://` has none: a memory lease is shared within one process only, so it is made
/// explicitly ([`crate::lease::MemoryLease`]).
pub async fn connect_lease(
    url: &RedactedUrl,
    extra: &[Arc<dyn Connector>],
) -> Result<Arc<dyn Lease>, Error> {
    let mut connectors = extra.to_vec();
    connectors.extend(registered_connectors());
    for connector in &connectors {
        if connector.schemes().contains(&url.scheme()) {
            if let Some(lease) = connector.lease(url).await? {
                return Ok(lease);
            }
        }
    }
    Err(unsupported(url, "lease store"))
}
