//! The dashboard's pages (HTML, scripts, styles), served beside the JSON API.

use axum::Router;

use crate::state::MonitorState;

/// The pages' routes; merged into the monitor's router.
pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
}
