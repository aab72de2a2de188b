//! The HTTP side: Flower-compatible endpoints ([`flower`] to read, [`control`] to act),
//! the dashboard's own JSON ([`dashboard`], [`backlog`], [`beat`]), live updates ([`live`]), `/metrics`
//! and `/api/csrf`. What each answers is in `API.md`.

pub mod backlog;
pub mod beat;
pub mod control;
pub mod dashboard;
pub mod flower;
mod literal;
pub mod live;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, extract::State};
use serde_json::json;

use crate::auth::{CSRF_COOKIE, cookie, csrf_set_cookie, new_csrf_token};
use crate::state::MonitorState;

/// Every API route (the caller adds the auth guard and the state).
pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .merge(flower::router())
        .merge(control::router())
        .merge(dashboard::router())
        .merge(backlog::router())
        .merge(beat::router())
        .merge(live::router())
        .route("/metrics", get(metrics))
        .route("/api/csrf", get(csrf))
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message (secrets in URLs are redacted).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: crate::redact::text(&message.into()),
        }
    }

    /// `400`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `502`: the broker or a database failed.
    pub fn upstream(error: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        match error {
            crate::store::StoreError::Query(error) => Self::bad_request(error.to_string()),
            other => Self::upstream(other),
        }
    }
}

impl From<queue_core::control::ControlError> for ApiError {
    fn from(error: queue_core::control::ControlError) -> Self {
        match error {
            queue_core::control::ControlError::Unsupported => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this broker cannot broadcast control commands",
            ),
            other => Self::upstream(other),
        }
    }
}

impl From<queue_core::BrokerError> for ApiError {
    fn from(error: queue_core::BrokerError) -> Self {
        match error {
            queue_core::BrokerError::Unsupported(what) => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("not supported by this broker: {what}"),
            ),
            other => Self::upstream(other),
        }
    }
}

/// An API result.
pub type ApiResult<T = Response> = Result<T, ApiError>;

/// A query-string boolean as Flower reads them (`1`, `true`, `yes`, `on`).
pub fn truthy(value: Option<&str>) -> bool {
    value.is_some_and(|value| {
        matches!(
            value.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "t" | "y"
        )
    })
}

async fn metrics(State(state): State<MonitorState>) -> Response {
    state
        .metrics()
        .sync_dropped(state.events_dropped(), state.store().dropped());
    state.sync_beat_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

async fn csrf(headers: HeaderMap) -> Response {
    let existing = cookie(&headers, CSRF_COOKIE).map(str::to_owned);
    let token = existing.clone().unwrap_or_else(new_csrf_token);
    let mut response = Json(json!({
        "token": token,
        "header": "X-CSRF-Token",
        "cookie": CSRF_COOKIE,
    }))
    .into_response();
    if existing.is_none() {
        if let Ok(value) = HeaderValue::from_str(&csrf_set_cookie(&token)) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}
