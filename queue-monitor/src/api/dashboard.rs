//! The dashboard's own JSON: status, overview series, workers, task search and task detail
//! with its timeline, and the task actions (revoke, retry).

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use queue_core::Signature;
use serde_json::{Value, json};

use super::flower::{find_task, freshest};
use super::{ApiError, ApiResult, literal, truthy};
use crate::state::{MonitorState, now};
use crate::store::{Sort, TaskSearch, query};

/// Tasks a search page holds by default, and at most.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 1000;

pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .route("/api/dashboard/status", get(status))
        .route("/api/dashboard/overview", get(overview))
        .route("/api/dashboard/workers", get(workers))
        .route("/api/dashboard/workers/{worker}", get(worker))
        .route("/api/dashboard/tasks", get(tasks))
        .route("/api/dashboard/task-types", get(task_types))
        .route("/api/dashboard/tasks/{task_id}", get(task))
        .route("/api/dashboard/tasks/{task_id}/revoke", post(revoke))
        .route("/api/dashboard/tasks/{task_id}/retry", post(retry))
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

async fn status(State(state): State<MonitorState>) -> Response {
    let settings = state.settings();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "broker": state.broker_url(),
        "backend": state.backend_url(),
        "history": state.store().label(),
        "events_received": state.events_received(),
        "events_dropped": state.events_dropped(),
        "store_dropped": state.store().dropped(),
        "store_pending": state.store().pending(),
        "started_at": state.started_at(),
        "now": now(),
        "settings": {
            "backlog_threshold": settings.backlog_threshold,
            "oldest_age_threshold": settings.oldest_age_threshold.as_secs_f64(),
            "queue_interval": settings.queue_interval.as_secs_f64(),
            "inspect_interval": settings.inspect_interval.as_secs_f64(),
            "overview_bucket": settings.overview_bucket.as_secs_f64(),
            "live_interval": settings.live_interval.as_secs_f64(),
        },
    }))
    .into_response()
}

async fn overview(State(state): State<MonitorState>, Query(params): Params) -> ApiResult {
    let window = param(&params, "window")
        .map(|value| {
            value
                .parse::<f64>()
                .map_err(|_| ApiError::bad_request("window must be seconds"))
        })
        .transpose()?;
    let now = now();
    let cluster = state.cluster();
    let mut answer = cluster.overview().json(now, window);
    let online = cluster
        .workers()
        .values()
        .filter(|worker| worker.online(now))
        .count();
    answer["now"] = json!(now);
    answer["workers_online"] = json!(online);
    answer["workers_offline"] = json!(cluster.workers().len() - online);
    Ok(Json(answer).into_response())
}

async fn workers(State(state): State<MonitorState>) -> Response {
    Json(json!({ "workers": state.workers_json() })).into_response()
}

async fn worker(State(state): State<MonitorState>, Path(name): Path<String>) -> ApiResult {
    let cluster = state.cluster();
    let worker = cluster
        .workers()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("Unknown worker '{name}'")))?;
    Ok(Json(worker.detail_json(now())).into_response())
}

/// Epoch seconds, or an RFC 3339 time.
fn time(value: Option<&str>, name: &str) -> ApiResult<Option<f64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if let Ok(seconds) = value.parse::<f64>() {
        return Ok(Some(seconds));
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|time| Some(time.timestamp_micros() as f64 / 1e6))
        .map_err(|_| ApiError::bad_request(format!("{name} must be epoch seconds or RFC 3339")))
}

async fn tasks(State(state): State<MonitorState>, Query(params): Params) -> ApiResult {
    let integer = |name: &str, default: i64| -> ApiResult<i64> {
        param(&params, name).map_or(Ok(default), |value| {
            value
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
        })
    };
    let (sort, descending) = match param(&params, "sort") {
        Some(key) => Sort::parse(key)
            .ok_or_else(|| ApiError::bad_request(format!("cannot sort by {key:?}")))?,
        None => (Sort::Timestamp, true),
    };
    let limit = integer("limit", PAGE)?.clamp(0, MAX_PAGE);
    let offset = integer("offset", 0)?.max(0);
    let search = TaskSearch {
        query: Some(
            query::parse(param(&params, "q").unwrap_or_default())
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        states: param(&params, "state")
            .map(|states| {
                states
                    .split(',')
                    .map(|state| state.trim().to_uppercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        name: param(&params, "name").map(str::to_owned),
        worker: param(&params, "worker").map(str::to_owned),
        from: time(param(&params, "from"), "from")?,
        to: time(param(&params, "to"), "to")?,
        sort,
        descending,
        limit,
        offset,
        count: true,
        ..TaskSearch::default()
    };
    let page = state.store().search(&search).await?;
    let tasks: Vec<Value> = freshest(&state, page.tasks)
        .iter()
        .map(|task| task.summary_json())
        .collect();
    Ok(Json(json!({
        "total": page.total,
        "total_capped": page.total_capped,
        "limit": limit,
        "offset": offset,
        "took_ms": page.took_ms,
        "tasks": tasks,
    }))
    .into_response())
}

async fn task_types(State(state): State<MonitorState>) -> Response {
    let types: Vec<String> = state.cluster().task_types().iter().cloned().collect();
    Json(json!({ "task_types": types })).into_response()
}

async fn task(State(state): State<MonitorState>, Path(task_id): Path<String>) -> ApiResult {
    let task = find_task(&state, &task_id).await?;
    let timeline = state.store().timeline(&task_id).await?;
    let mut children = task.children.clone();
    for child in state.store().children(&task_id).await? {
        if !children.contains(&child) {
            children.push(child);
        }
    }
    let mut answer = task.flower_json();
    answer["children"] = json!(children);
    answer["wait"] = json!(task.wait());
    answer["queue"] = json!(task.queue.clone().or_else(|| task.routing_key.clone()));
    answer["timeline"] = json!(timeline);
    Ok(Json(answer).into_response())
}

async fn revoke(
    State(state): State<MonitorState>,
    Path(task_id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let terminate = truthy(param(&params, "terminate"));
    let signal = param(&params, "signal").unwrap_or("SIGTERM");
    super::control::send_revoke(&state, &task_id, terminate, signal).await?;
    Ok(
        Json(json!({ "message": format!("Revoked '{task_id}'"), "terminate": terminate }))
            .into_response(),
    )
}

async fn retry(State(state): State<MonitorState>, Path(task_id): Path<String>) -> ApiResult {
    let task = find_task(&state, &task_id).await?;
    let name = task.name.clone().ok_or_else(|| {
        ApiError::bad_request("the task's name is not known: it cannot be re-sent")
    })?;
    let args = match task.args.as_deref() {
        None => Vec::new(),
        Some(text) => match literal::parse(text) {
            Ok(Value::Array(args)) => args,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "the task's args cannot be read back: {text}"
                )));
            }
        },
    };
    let kwargs = match task.kwargs.as_deref() {
        None => serde_json::Map::new(),
        Some(text) => match literal::parse(text) {
            Ok(Value::Object(kwargs)) => kwargs,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "the task's kwargs cannot be read back: {text}"
                )));
            }
        },
    };
    let mut signature = Signature::new(name).args(args).kwargs(kwargs);
    if let Some(queue) = &task.queue {
        signature = signature.queue(queue.clone());
    }
    let (id, _) = super::control::send(&state, signature).await?;
    Ok(Json(json!({ "task-id": id, "retry_of": task_id })).into_response())
}
