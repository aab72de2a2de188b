//! API: live.

use axum::Router;

use crate::state::MonitorState;

pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
}
