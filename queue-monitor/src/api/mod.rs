//! The JSON API: Flower-compatible endpoints ([`flower`]), the dashboard's own
//! ([`dashboard`]), actions ([`actions`]) and live updates ([`live`]).

pub mod actions;
pub mod dashboard;
pub mod flower;
pub mod live;

use axum::Router;

use crate::state::MonitorState;

/// Every API route (the caller adds the auth guard and the state).
pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .merge(flower::router())
        .merge(dashboard::router())
        .merge(actions::router())
        .merge(live::router())
}
