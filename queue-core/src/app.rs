//! [`App`]: configuration, the task registry, routing and the client side (send a task, read
//! a result by id). Cheap to clone; share one per process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::backend::ResultBackend;
use crate::broker::{Broker, Publish};
use crate::connect::{self, Connector, MemoryConnector, RedactedUrl};
use crate::error::Error;
use crate::protocol::{Embed, Headers, Message, Properties, TaskBody, TimeLimit, repr, time};
use crate::result::AsyncResult;
use crate::routing::Router;
use crate::signature::Signature;
use crate::task::{Registry, Task};

/// Environment variable with the broker URL.
pub const BROKER_URL_ENV: &str = "QUEUE_BROKER_URL";
/// Environment variable with the result backend URL.
pub const RESULT_BACKEND_ENV: &str = "QUEUE_RESULT_BACKEND";
/// Celery's name for the broker URL, accepted for teams moving over.
pub const CELERY_BROKER_URL_ENV: &str = "CELERY_BROKER_URL";
/// Celery's name for the result backend URL.
pub const CELERY_RESULT_BACKEND_ENV: &str = "CELERY_RESULT_BACKEND";
/// Celery's default queue.
pub const DEFAULT_QUEUE: &str = "celery";

/// The largest per-message TTL (`expiration` property) RabbitMQ accepts: ten years, in
/// milliseconds (measured: one more is `PRECONDITION_FAILED - value_too_large`).
pub const MAX_MESSAGE_TTL_MS: i64 = 315_360_000_000;

/// Protocol v2 header names that a custom header may not take.
const RESERVED_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// A task application: broker, result backend, tasks, routes and shared state.
///
/// ```
/// # async fn example() -> Result<(), queue_core::Error> {
/// use queue_core::{App, Signature};
/// let app = App::builder()
///     .broker("memory://")
///     .backend("memory://")
///     .route("reports.*", "reports")
///     .build()
///     .await?;
/// let result = Signature::new("reports.daily").send(&app).await?;
/// assert_eq!(app.broker().queue_length("reports").await?.total, 1);
/// # let _ = result; Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    broker: Arc<dyn Broker>,
    backend: Option<Arc<dyn ResultBackend>>,
    broker_url: Option<RedactedUrl>,
    backend_url: Option<RedactedUrl>,
    registry: Registry,
    router: Router,
    ignore_result: bool,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    origin: String,
    reply_to: String,
}

impl fmt::Debug for App {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("App")
            .field("broker", &self.inner.broker_url)
            .field("backend", &self.inner.backend_url)
            .field("tasks", &self.inner.registry)
            .field("default_queue", &self.inner.router.default_queue())
            .finish_non_exhaustive()
    }
}

enum Source<T: ?Sized> {
    Url(String),
    Instance(Arc<T>),
}

/// Builds an [`App`].
pub struct AppBuilder {
    broker: Option<Source<dyn Broker>>,
    backend: Option<Source<dyn ResultBackend>>,
    registry: Registry,
    router: Router,
    ignore_result: bool,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    connectors: Vec<Arc<dyn Connector>>,
    errors: Vec<Error>,
}

impl App {
    /// A builder with the memory broker, no result backend, and the default queue `celery`.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            broker: None,
            backend: None,
            registry: Registry::default(),
            router: Router::new(DEFAULT_QUEUE),
            ignore_result: false,
            state: HashMap::new(),
            connectors: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// A builder configured from the environment: `QUEUE_BROKER_URL` (or
    /// `CELERY_BROKER_URL`, default `memory://`), `QUEUE_RESULT_BACKEND` (or
    /// `CELERY_RESULT_BACKEND`, default none) and `QUEUE_DEFAULT_QUEUE`.
    pub fn from_env() -> AppBuilder {
        let variable = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        };
        let mut builder = App::builder();
        if let Some(url) = variable(&[BROKER_URL_ENV, CELERY_BROKER_URL_ENV]) {
            builder = builder.broker(url);
        }
        if let Some(url) = variable(&[RESULT_BACKEND_ENV, CELERY_RESULT_BACKEND_ENV]) {
            builder = builder.backend(url);
        }
        if let Some(queue) = variable(&["QUEUE_DEFAULT_QUEUE"]) {
            builder = builder.default_queue(queue);
        }
        builder
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The result backend, if any.
    pub fn backend(&self) -> Option<&Arc<dyn ResultBackend>> {
        self.inner.backend.as_ref()
    }

    /// The broker URL (secrets redacted when displayed).
    pub fn broker_url(&self) -> Option<&RedactedUrl> {
        self.inner.broker_url.as_ref()
    }

    /// The registered tasks.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The router (task name → queue).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Whether results are ignored for every task.
    pub fn ignores_results(&self) -> bool {
        self.inner.ignore_result
    }

    /// This process's node name as producer (`gen<pid>@<host>`, as Celery's clients).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Shared state registered with [`AppBuilder::state`].
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .state
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
    }

    /// A handle on the result of task `id`, typed.
    pub fn result<T: DeserializeOwned>(&self, id: impl Into<String>) -> AsyncResult<T> {
        AsyncResult::new(self.clone(), id.into())
    }

    /// Sends one task.
    pub async fn send(&self, signature: Signature) -> Result<AsyncResult, Error> {
        let publish = self.prepare(signature)?;
        let id = publish.message.headers.id.clone();
        let span = publish_span(&publish);
        async {
            self.inner.broker.publish(vec![publish]).await?;
            tracing::debug!("task sent");
            Ok::<_, Error>(())
        }
        .instrument(span)
        .await?;
        Ok(AsyncResult::new(self.clone(), id))
    }

    /// Sends many tasks in one broker round trip where the broker can batch.
    pub async fn send_many(
        &self,
        signatures: impl IntoIterator<Item = Signature>,
    ) -> Result<Vec<AsyncResult>, Error> {
        let batch = signatures
            .into_iter()
            .map(|signature| self.prepare(signature))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<String> = batch
            .iter()
            .map(|publish| publish.message.headers.id.clone())
            .collect();
        let span = tracing::debug_span!("publish_batch", count = batch.len());
        async {
            self.inner.broker.publish(batch).await?;
            tracing::debug!(count = ids.len(), "tasks sent");
            Ok::<_, Error>(())
        }
        .instrument(span)
        .await?;
        Ok(ids
            .into_iter()
            .map(|id| AsyncResult::new(self.clone(), id))
            .collect())
    }

    /// Builds the message for `signature` and where it goes, without sending it: routing,
    /// the task's declared defaults, eta from countdown, absolute expiry, full Celery headers.
    pub fn prepare(&self, signature: Signature) -> Result<Publish, Error> {
        let Signature {
            name,
            args,
            kwargs,
            options,
            ..
        } = signature;
        let declared = self
            .inner
            .registry
            .get(&name)
            .map(|task| task.options.clone());
        let declared_queue = declared
            .as_ref()
            .and_then(|options| options.queue.as_deref());
        let queue = self
            .inner
            .router
            .route(&name, options.queue.as_deref(), declared_queue)
            .to_owned();
        let id = options
            .task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = time::now();
        // Deadlines past what Python's `datetime` holds are saturated at its maximum, so that
        // every worker can still read them; a countdown of zero or less runs at once.
        let eta = match (options.eta, options.countdown) {
            (Some(eta), _) => Some(time::clamp(eta)),
            (None, Some(seconds)) if seconds.is_nan() || seconds.is_infinite() => {
                return Err(Error::Config(format!(
                    "`countdown` must be a finite number of seconds, not {seconds}"
                )));
            }
            (None, Some(seconds)) if seconds > 0.0 => {
                time::seconds_duration(seconds).map(|delay| time::add(now, delay))
            }
            (None, _) => None,
        };
        let expires = options
            .expires
            .map(|expires| time::clamp(expires.resolve(now)));
        // Unset stays unset: on Redis, "no priority" is kombu's default list, where Python's
        // own tasks go, not our lowest priority.
        let priority = options
            .priority
            .or_else(|| declared.as_ref().and_then(|options| options.priority))
            .map(|priority| priority.min(crate::MAX_PRIORITY));
        let hard_limit = limit("time_limit", options.time_limit)?
            .or_else(|| declared.as_ref().and_then(|options| options.time_limit));
        let soft_limit = limit("soft_time_limit", options.soft_time_limit)?.or_else(|| {
            declared
                .as_ref()
                .and_then(|options| options.soft_time_limit)
        });
        let ignore_result = options.ignore_result.unwrap_or(false)
            || self.inner.ignore_result
            || declared
                .as_ref()
                .is_some_and(|options| options.ignore_result);

        let mut headers = Headers::new(name, id.clone());
        headers.eta = eta;
        headers.expires = expires;
        headers.retries = options.retries.unwrap_or(0);
        headers.timelimit = TimeLimit::new(hard_limit, soft_limit);
        headers.root_id = Some(options.root_id.clone().unwrap_or_else(|| id.clone()));
        headers.parent_id = options.parent_id.clone();
        headers.group = options.group_id.clone();
        headers.group_index = options.group_index;
        headers.shadow = options.shadow.clone();
        headers.argsrepr = Some(repr::args_repr(&args));
        headers.kwargsrepr = Some(repr::kwargs_repr(&kwargs));
        headers.origin = Some(self.inner.origin.clone());
        headers.ignore_result = Some(ignore_result);
        if let Some(reserved) = options
            .headers
            .keys()
            .find(|name| RESERVED_HEADERS.contains(&name.as_str()))
        {
            return Err(Error::Config(format!(
                "custom header {reserved:?} would overwrite a protocol header; set it through \
                 the signature's options instead"
            )));
        }
        headers.extra = options.headers.clone();

        // Past RabbitMQ's largest per-message TTL the publish would be refused (the channel
        // closed); the `expires` header alone then bounds the task, as the worker checks it.
        let expiration = expires
            .map(|at| (at - now).num_milliseconds().max(0))
            .filter(|milliseconds| *milliseconds <= MAX_MESSAGE_TTL_MS)
            .map(|milliseconds| milliseconds.to_string());
        let properties = Properties {
            correlation_id: Some(id),
            reply_to: Some(self.inner.reply_to.clone()),
            delivery_mode: Some(2),
            priority,
            expiration,
            extra: Default::default(),
        };
        let non_empty = |list: Vec<Signature>| (!list.is_empty()).then_some(list);
        let body = TaskBody {
            args,
            kwargs,
            embed: Some(Embed {
                callbacks: non_empty(options.link),
                errbacks: non_empty(options.link_error),
                chain: None,
                chord: None,
            }),
        };
        Ok(Publish {
            queue,
            exchange: options.exchange,
            routing_key: options.routing_key,
            message: Message::new(headers, properties, &body),
        })
    }
}

/// A time limit option as a duration: a limit that is not a non-negative number of seconds
/// is refused (it would otherwise reach a panicking conversion); a huge one saturates.
fn limit(option: &str, seconds: Option<f64>) -> Result<Option<Duration>, Error> {
    seconds
        .map(|seconds| {
            time::seconds_duration(seconds).ok_or_else(|| {
                Error::Config(format!(
                    "`{option}` must be a non-negative number of seconds, not {seconds}"
                ))
            })
        })
        .transpose()
}

/// The span of one publish: task id, name, queue and retry count.
pub fn publish_span(publish: &Publish) -> tracing::Span {
    tracing::debug_span!(
        "publish",
        task_id = %publish.message.headers.id,
        task_name = %publish.message.headers.task,
        queue = %publish.queue,
        retries = publish.message.headers.retries,
    )
}

impl AppBuilder {
    /// The broker URL: `memory://`, `redis://…`, `amqp://…` (default `memory://`).
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.broker = Some(Source::Url(url.into()));
        self
    }

    /// A broker instance (e.g. a [`crate::MemoryBroker`] shared between apps).
    pub fn broker_instance(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(Source::Instance(broker));
        self
    }

    /// The result backend URL: `memory://`, `redis://…`, `postgres://…`, `sqlite://…`.
    /// Without one, results are not stored.
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.backend = Some(Source::Url(url.into()));
        self
    }

    /// A result backend instance.
    pub fn backend_instance(mut self, backend: Arc<dyn ResultBackend>) -> Self {
        self.backend = Some(Source::Instance(backend));
        self
    }

    /// Registers a task (what `#[task]` generates).
    pub fn task(mut self, task: impl Task) -> Self {
        self.registry.insert(Arc::new(task));
        self
    }

    /// Routes tasks whose name matches the glob `pattern` (e.g. `reports.*`) to `queue`.
    /// Routes are tried in the order added; an explicit queue on the call wins over them,
    /// and they win over the queue a task declares.
    pub fn route(mut self, pattern: &str, queue: impl Into<String>) -> Self {
        if let Err(error) = self.router.add(pattern, queue.into()) {
            self.errors.push(error);
        }
        self
    }

    /// The queue of tasks with no route and no declared queue (default `celery`).
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.router.set_default_queue(queue.into());
        self
    }

    /// Ignores results of every task (nothing is stored).
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = ignore;
        self
    }

    /// Registers shared state that tasks reach with `TaskContext::state::<T>()`, such as a
    /// database pool. One value per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Adds a connector for more URL schemes.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connectors.push(connector);
        self
    }

    /// Connects the broker and backend and builds the app.
    pub async fn build(self) -> Result<App, Error> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let mut connectors = self.connectors;
        connectors.extend(connect::registered_connectors());
        connectors.push(Arc::new(MemoryConnector));

        let (broker, broker_url) = match self.broker.unwrap_or(Source::Url("memory://".into())) {
            Source::Instance(broker) => (broker, None),
            Source::Url(text) => {
                let url: RedactedUrl = text.parse()?;
                (connect::connect_broker(&url, &connectors).await?, Some(url))
            }
        };
        let (backend, backend_url) = match self.backend {
            None => (None, None),
            Some(Source::Instance(backend)) => (Some(backend), None),
            Some(Source::Url(text)) => {
                let url: RedactedUrl = text.parse()?;
                (
                    Some(connect::connect_backend(&url, &connectors).await?),
                    Some(url),
                )
            }
        };
        tracing::debug!(broker = ?broker_url, backend = ?backend_url, "app built");
        Ok(App {
            inner: Arc::new(AppInner {
                broker,
                backend,
                broker_url,
                backend_url,
                registry: self.registry,
                router: self.router,
                ignore_result: self.ignore_result,
                state: self.state,
                origin: format!("gen{}@{}", std::process::id(), hostname()),
                reply_to: uuid::Uuid::new_v4().to_string(),
            }),
        })
    }
}

/// This machine's host name (for node names), `localhost` if unknown.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scheme_whose_feature_is_off_names_the_feature() {
        // queue-core alone links no broker crate.
        let error = App::builder()
            .broker("redis://127.0.0.1:6379/0")
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                Error::FeatureDisabled {
                    feature: "redis",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("`redis` feature"), "{error}");
        let error = App::builder()
            .backend("postgres://u:p@h/db")
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("`postgres` feature"), "{error}");
        assert!(!error.to_string().contains(":p@"), "{error}");
        let error = App::builder()
            .broker("kafka://h")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)));
    }

    #[tokio::test]
    async fn prepare_fills_celery_headers_and_properties() {
        let app = App::builder().build().await.unwrap();
        let publish = app
            .prepare(
                Signature::new("tasks.add")
                    .arg(2)
                    .kwarg("z", 1)
                    .priority(5)
                    .countdown(Duration::from_secs(10))
                    .expires_in(Duration::from_secs(60))
                    .time_limit(Duration::from_secs(30))
                    .soft_time_limit(Duration::from_secs(20)),
            )
            .unwrap();
        let message = &publish.message;
        assert_eq!(publish.queue, "celery");
        let headers = &message.headers;
        assert_eq!(headers.root_id.as_deref(), Some(headers.id.as_str()));
        assert_eq!(headers.argsrepr.as_deref(), Some("(2,)"));
        assert_eq!(headers.kwargsrepr.as_deref(), Some("{'z': 1}"));
        assert_eq!(headers.timelimit.hard(), Some(Duration::from_secs(30)));
        assert_eq!(headers.timelimit.soft(), Some(Duration::from_secs(20)));
        let eta = headers.eta.unwrap();
        let expires = headers.expires.unwrap();
        assert_eq!((expires - eta).num_seconds(), 50);
        assert_eq!(message.properties.priority, Some(5));
        assert_eq!(
            message.properties.correlation_id.as_deref(),
            Some(headers.id.as_str())
        );
        assert_eq!(message.properties.delivery_mode, Some(2));
        let expiration: i64 = message
            .properties
            .expiration
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59_000..=60_000).contains(&expiration), "{expiration}");
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[tokio::test]
    async fn custom_headers_cannot_overwrite_protocol_headers() {
        let app = App::builder().build().await.unwrap();
        let error = app
            .prepare(Signature::new("tasks.add").header("retries", 5))
            .unwrap_err();
        assert!(error.to_string().contains("\"retries\""), "{error}");
        let publish = app
            .prepare(Signature::new("tasks.add").header("traceparent", "00-abc"))
            .unwrap();
        assert_eq!(publish.message.headers.extra["traceparent"], "00-abc");
    }
}
