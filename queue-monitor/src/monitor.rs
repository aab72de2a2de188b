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
use crate::settings::Settings;
use crate::state::MonitorState;

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

    /// Starts ingestion and the server in the background and returns at once.
    pub async fn start(self, listener: TcpListener) -> Result<RunningMonitor, MonitorError> {
        let address = listener.local_addr()?;
        let auth = match self.auth {
            Some(auth) => auth,
            None => Auth::from_env()?,
        };
        if !address.ip().is_loopback() && !auth.is_enabled() {
            return Err(MonitorError::InsecureBind { address });
        }
        let state = MonitorState::new(self.app, self.settings, auth);
        let router = app_router(state.clone());
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%address, broker = state.broker_url(), "queue monitor listening");
        Ok(RunningMonitor {
            address,
            state,
            stop,
            server,
        })
    }
}

/// The monitor's whole router: API, metrics and pages behind the auth guard.
fn app_router(state: MonitorState) -> Router {
    Router::new()
        .merge(crate::api::router())
        .merge(crate::pages::router())
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

    /// Stops serving and ingesting, flushes the history and returns.
    pub async fn shutdown(self) -> Result<(), MonitorError> {
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(result) => result.map_err(MonitorError::Io),
            Err(error) => Err(MonitorError::Io(std::io::Error::other(error))),
        }
    }
}
