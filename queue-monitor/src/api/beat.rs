//! `/api/beat`: the periodic schedulers (`queue beat`) as their `beat-heartbeat` events tell
//! them — per schedule, who leads (holder, fencing token), every instance (online or not,
//! last seen) and the entries with their last and next runs.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::MonitorState;

pub(crate) fn router() -> Router<MonitorState> {
    Router::new().route("/api/beat", get(beat))
}

async fn beat(State(state): State<MonitorState>) -> Response {
    Json(state.beat_json()).into_response()
}
