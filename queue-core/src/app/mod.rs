//! [`App`]: configuration, the task registry, routing and the client side (send a task, read
//! a result by id). Cheap to clone; share one per process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::backend::ResultBackend;
use crate::broker::{Broker, Publish};
use crate::connect::{self, Connector, MemoryConnector, RedactedUrl};
use crate::error::Error;
use crate::result::AsyncResult;
use crate::routing::Router;
use crate::signature::Signature;
use crate::task::{Registry, Task};

mod canvas;
mod prepare;
mod sent_events;

pub use prepare::MAX_MESSAGE_TTL_MS;

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
    /// Where `task-sent` events come from, when they are sent.
    sent_events: Option<crate::events::EventSource>,
    /// Celery's `app.clock`: stamped on this app's events and control requests.
    clock: Arc<crate::events::LamportClock>,
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
    send_sent_events: bool,
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
            send_sent_events: false,
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

    /// The result backend's URL, when the app was built from one (secrets redacted).
    pub fn backend_url(&self) -> Option<&RedactedUrl> {
        self.inner.backend_url.as_ref()
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

    /// Remote control of the workers on this app's broker: `ping`, `inspect()`, `revoke`,
    /// `rate_limit`, any command with `call` (see [`Control`](crate::control::Control)).
    pub fn control(&self) -> crate::control::Control {
        crate::control::Control::new(self.clone())
    }

    /// The app's Lamport clock (Celery's `app.clock`).
    pub fn clock(&self) -> &Arc<crate::events::LamportClock> {
        &self.inner.clock
    }

    fn sent_events(&self, publishes: &[Publish]) -> Option<Vec<crate::events::Event>> {
        let source = self.inner.sent_events.as_ref()?;
        Some(sent_events::events_of(source, publishes))
    }

    /// A handle on the result of task `id`, typed.
    pub fn result<T: DeserializeOwned>(&self, id: impl Into<String>) -> AsyncResult<T> {
        AsyncResult::new(self.clone(), id.into())
    }

    /// Sends one task, or a [chain](crate::canvas::chain) or [chord](crate::canvas::chord)
    /// (whose handle is the result of its last task, or of its body). A group has one
    /// result per member: send it with [`App::send_group`].
    pub async fn send(&self, signature: Signature) -> Result<AsyncResult, Error> {
        if crate::canvas::Shape::of(&signature)? != crate::canvas::Shape::Task {
            return match self.send_canvas(signature).await? {
                crate::canvas::Frozen::Task(id) => Ok(AsyncResult::new(self.clone(), id)),
                crate::canvas::Frozen::Group { .. } => Err(Error::Config(
                    "a group has one result per member: send it with App::send_group".into(),
                )),
            };
        }
        let publish = self.prepare(signature)?;
        let id = publish.message.headers.id.clone();
        let span = publish_span(&publish);
        let events = self.sent_events(std::slice::from_ref(&publish));
        async {
            self.inner.broker.publish(vec![publish]).await?;
            tracing::debug!("task sent");
            Ok::<_, Error>(())
        }
        .instrument(span)
        .await?;
        if let Some(events) = events {
            sent_events::announce(&self.inner.broker, events).await;
        }
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
        let ids = self.publish_prepared(batch).await?;
        Ok(ids
            .into_iter()
            .map(|id| AsyncResult::new(self.clone(), id))
            .collect())
    }

    /// Publishes prepared messages in one round trip where the broker can batch (with
    /// their `task-sent` events when asked); returns their task ids.
    pub(crate) async fn publish_prepared(&self, batch: Vec<Publish>) -> Result<Vec<String>, Error> {
        let ids: Vec<String> = batch
            .iter()
            .map(|publish| publish.message.headers.id.clone())
            .collect();
        let span = tracing::debug_span!("publish_batch", count = batch.len());
        let events = self.sent_events(&batch);
        async {
            self.inner.broker.publish(batch).await?;
            tracing::debug!(count = ids.len(), "tasks sent");
            Ok::<_, Error>(())
        }
        .instrument(span)
        .await?;
        if let Some(events) = events {
            sent_events::announce(&self.inner.broker, events).await;
        }
        Ok(ids)
    }
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

    /// Sends a `task-sent` event for every task sent, as Celery's `task_send_sent_event`
    /// (Flower then shows tasks from the moment they are sent). Off by default.
    pub fn send_sent_events(mut self, enabled: bool) -> Self {
        self.send_sent_events = enabled;
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
        let origin = format!("gen{}@{}", std::process::id(), hostname());
        let clock = Arc::new(crate::events::LamportClock::default());
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
                sent_events: self
                    .send_sent_events
                    .then(|| crate::events::EventSource::with_clock(origin.clone(), clock.clone())),
                clock,
                origin,
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
}
