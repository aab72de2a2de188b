//! [`Monitor`]: the builder that starts ingestion and serves the HTTP side.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use queue_core::App;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::error::MonitorError;
use crate::ingest::pollers::{self, every};
use crate::settings::Settings;
use crate::state::{MonitorState, now};
use crate::store::Store;

/// How long a start waits for the event subscription.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Tasks read back on start to rebuild the overview's series.
const REPLAYED_TASKS: usize = 200_000;
/// Queue samples read back on start.
const QUEUE_SAMPLES_RELOADED: usize = 200_000;

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";
/// The default history: a SQLite file in the working directory.
pub const DEFAULT_HISTORY: &str = "sqlite://queue-monitor.sqlite";

/// A monitor of an app's broker, to configure and then [`serve`](Monitor::serve).
#[derive(Debug)]
pub struct Monitor {
    app: App,
    settings: Settings,
    auth: Option<Auth>,
    history: Option<String>,
    queues: Vec<String>,
    url_prefix: String,
}

impl Monitor {
    /// A monitor of `app`'s broker (and result backend, for task results), with the
    /// default settings, the default history file and authentication from the environment.
    pub fn new(app: App) -> Self {
        Self {
            app,
            settings: Settings::default(),
            auth: None,
            history: Some(DEFAULT_HISTORY.to_owned()),
            queues: Vec::new(),
            url_prefix: String::new(),
        }
    }

    /// Where the history is kept: `sqlite://PATH` (created if missing), a bare file path,
    /// or `postgres://…`.
    pub fn history(mut self, url: impl Into<String>) -> Self {
        self.history = Some(url.into());
        self
    }

    /// Keeps history in memory only (nothing survives a restart).
    pub fn without_history(mut self) -> Self {
        self.history = None;
        self
    }

    /// The credentials requests must carry (default: [`Auth::from_env`]).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Also watches `queue` (besides those the workers consume).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Serves everything under `prefix` (Flower's `--url_prefix`), for a reverse proxy that
    /// forwards `https://ops.example.com/monitor/…` unchanged: `"/monitor"` serves the
    /// overview at `/monitor/`, the API at `/monitor/api/…` and the metrics at
    /// `/monitor/metrics`. Letters, digits, `-`, `_`, `.` and `/` only; checked by
    /// [`start`](Monitor::start).
    ///
    /// ```no_run
    /// # async fn run(app: queue_core::App) -> Result<(), queue_monitor::MonitorError> {
    /// queue_monitor::Monitor::new(app)
    ///     .url_prefix("/monitor")
    ///     .listen(queue_monitor::DEFAULT_LISTEN)
    ///     .await
    /// # }
    /// ```
    pub fn url_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.url_prefix = prefix.into();
        self
    }

    /// Intervals, bounds and thresholds.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Binds `address` (e.g. [`DEFAULT_LISTEN`]) and serves until the process ends.
    pub async fn listen(self, address: &str) -> Result<(), MonitorError> {
        let listener = TcpListener::bind(address).await?;
        self.serve(listener).await
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: TcpListener) -> Result<(), MonitorError> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MonitorError> {
        let running = self.start(listener).await?;
        shutdown.await;
        running.shutdown().await
    }

    /// Opens the history, reloads what it holds, starts ingestion and the server in the
    /// background, and returns at once.
    pub async fn start(self, listener: TcpListener) -> Result<RunningMonitor, MonitorError> {
        let address = listener.local_addr()?;
        let url_prefix = normalized_prefix(&self.url_prefix)?;
        let auth = match self.auth {
            Some(auth) => auth,
            None => Auth::from_env()?,
        };
        if !address.ip().is_loopback() && !auth.is_enabled() {
            return Err(MonitorError::InsecureBind { address });
        }
        let (store, writer) =
            Store::open(self.history.as_deref(), self.settings.write_queue).await?;
        let (stop, stopped) = watch::channel(false);
        let state = MonitorState::new(
            self.app,
            self.settings,
            auth,
            store,
            self.queues,
            stopped.clone(),
        );
        reload(&state).await;
        let settings = state.settings().clone();
        let writer = tokio::spawn(writer.run(stopped.clone()));
        let (subscribed, listening) = tokio::sync::oneshot::channel();
        let mut background = vec![
            tokio::spawn(crate::ingest::events::run(
                state.clone(),
                stopped.clone(),
                subscribed,
            )),
            tokio::spawn(crate::api::live::ticker(state.clone(), stopped.clone())),
        ];
        let polled = state.clone();
        background.push(tokio::spawn(every(
            settings.inspect_interval,
            stopped.clone(),
            move || {
                let state = polled.clone();
                async move {
                    if let Err(error) = pollers::inspect(&state, None).await {
                        tracing::debug!(%error, "inspect skipped");
                    }
                }
            },
        )));
        let polled = state.clone();
        background.push(tokio::spawn(every(
            settings.queue_interval,
            stopped.clone(),
            move || {
                let state = polled.clone();
                async move { pollers::read_queues(&state).await }
            },
        )));
        let polled = state.clone();
        background.push(tokio::spawn(every(
            settings.prune_interval,
            stopped.clone(),
            move || {
                let state = polled.clone();
                async move { pollers::prune(&state).await }
            },
        )));
        // Events sent from now on are seen (a broker that is down does not hold the start up
        // for long: the subscription keeps retrying in the background).
        if tokio::time::timeout(SUBSCRIBE_WAIT, listening)
            .await
            .is_err()
        {
            tracing::warn!("not yet subscribed to the workers' events; retrying in the background");
        }
        let router = app_router(state.clone(), &url_prefix);
        let mut server_stopped = stopped;
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%address, broker = state.broker_url(), history = state.store().label(), "queue monitor listening");
        Ok(RunningMonitor {
            address,
            state,
            stop,
            server,
            background,
            writer,
        })
    }
}

/// Puts back what the history holds: recent tasks, the overview's window, workers (offline
/// until they beat), task types and the queues' series.
async fn reload(state: &MonitorState) {
    let settings = state.settings().clone();
    let store = state.store();
    let window = settings.overview_bucket.as_secs_f64() * settings.overview_buckets as f64;
    let since = now() - window;
    let (recent, replayed, workers, types) = futures::join!(
        store.recent_tasks(settings.tasks_in_memory),
        store.tasks_since(since, REPLAYED_TASKS),
        store.workers(),
        store.task_types(),
    );
    let series_since =
        now() - settings.queue_interval.as_secs_f64() * settings.queue_series_points as f64;
    let samples = store
        .queue_samples(series_since, QUEUE_SAMPLES_RELOADED)
        .await;
    {
        let mut cluster = state.cluster();
        for task in recent.unwrap_or_default() {
            cluster.restore_task(task);
        }
        for task in replayed.unwrap_or_default() {
            cluster.replay(&task);
        }
        for worker in workers.unwrap_or_default() {
            cluster.restore_worker(worker);
        }
        for name in types.unwrap_or_default() {
            cluster.restore_task_type(name);
        }
    }
    let mut queues = state.queues();
    for sample in samples.unwrap_or_default() {
        queues.restore(sample);
    }
}

/// `prefix` as served: `""` or `/a/b` (one leading slash, none trailing).
fn normalized_prefix(prefix: &str) -> Result<String, MonitorError> {
    let trimmed = prefix.trim_matches('/');
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    // The prefix is written into the pages' HTML: nothing that could end an attribute.
    if !trimmed.chars().all(allowed)
        || trimmed
            .split('/')
            .any(|part| part.is_empty() && !trimmed.is_empty())
    {
        return Err(MonitorError::UrlPrefix(prefix.to_owned()));
    }
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    })
}

/// The monitor's whole router: API, metrics and pages behind the auth guard, under
/// `prefix` when there is one.
fn app_router(state: MonitorState, prefix: &str) -> Router {
    let routes = Router::new()
        .merge(crate::api::router())
        .merge(crate::pages::router(prefix));
    let routes = if prefix.is_empty() {
        routes
    } else {
        // Nested, `/` is `/monitor` itself; `/monitor/` (what a proxy's `location /monitor/`
        // forwards) is the overview too. Anything outside the prefix is not ours: 404.
        Router::new()
            .nest(prefix, routes)
            .route(&format!("{prefix}/"), crate::pages::overview(prefix))
    };
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard,
        ))
        .with_state(state)
}

/// A monitor started with [`Monitor::start`].
#[derive(Debug)]
pub struct RunningMonitor {
    address: SocketAddr,
    state: MonitorState,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl RunningMonitor {
    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its state.
    pub fn state(&self) -> &MonitorState {
        &self.state
    }

    /// Stops serving and ingesting, writes what the history still has queued, and returns.
    pub async fn shutdown(self) -> Result<(), MonitorError> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        for task in self.background {
            let _ = task.await;
        }
        let _ = self.writer.await;
        match served {
            Ok(result) => result.map_err(MonitorError::Io),
            Err(error) => Err(MonitorError::Io(std::io::Error::other(error))),
        }
    }
}
