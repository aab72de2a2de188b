//! [`MonitorState`]: what the monitor knows, shared by ingestion, the API and the pages.

use std::sync::Arc;

use queue_core::App;

use crate::auth::Auth;
use crate::settings::Settings;

/// The monitor's shared state (cheap to clone: one `Arc`).
#[derive(Clone)]
pub struct MonitorState {
    inner: Arc<Inner>,
}

struct Inner {
    app: App,
    settings: Settings,
    auth: Auth,
    broker_url: String,
}

impl std::fmt::Debug for MonitorState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MonitorState")
            .field("broker", &self.inner.broker_url)
            .finish_non_exhaustive()
    }
}

impl MonitorState {
    pub(crate) fn new(app: App, settings: Settings, auth: Auth) -> Self {
        let broker_url = app
            .broker_url()
            .map(ToString::to_string)
            .unwrap_or_else(|| "memory://".to_owned());
        Self {
            inner: Arc::new(Inner {
                app,
                settings,
                auth,
                broker_url,
            }),
        }
    }

    /// The app whose broker is watched.
    pub fn app(&self) -> &App {
        &self.inner.app
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The broker URL with its password redacted (safe to show).
    pub fn broker_url(&self) -> &str {
        &self.inner.broker_url
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }
}
