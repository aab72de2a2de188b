//! The queues: backlog with series and flags, dead letters and delayed tasks to browse,
//! and the actions on them (purge, requeue, run now), through the broker's backlog side.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use queue_core::Message;
use queue_core::broker::Undecodable;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, truthy};
use crate::ingest::pollers;
use crate::state::{MonitorState, now};

/// Messages listed by default, and at most.
const LISTED: usize = 100;
const MAX_LISTED: usize = 1000;

pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .route("/api/dashboard/queues", get(queues))
        .route("/api/dashboard/queues/{queue}", get(queue))
        .route("/api/dashboard/queues/{queue}/purge", post(purge))
        .route(
            "/api/dashboard/queues/{queue}/dead-letters",
            get(dead_letters),
        )
        .route(
            "/api/dashboard/queues/{queue}/dead-letters/requeue",
            post(requeue),
        )
        .route(
            "/api/dashboard/queues/{queue}/dead-letters/purge",
            post(purge_dead_letters),
        )
        .route("/api/dashboard/queues/{queue}/delayed", get(delayed))
        .route(
            "/api/dashboard/queues/{queue}/delayed/{task_id}/run-now",
            post(run_now),
        )
}

type Params = Query<HashMap<String, String>>;

fn limit(params: &HashMap<String, String>) -> ApiResult<usize> {
    params
        .get("limit")
        .map_or(Ok(LISTED), |value| {
            value
                .parse()
                .map_err(|_| ApiError::bad_request("limit must be a number"))
        })
        .map(|limit: usize| limit.min(MAX_LISTED))
}

fn queues_json(state: &MonitorState, only: Option<&str>, with_series: bool) -> Vec<Value> {
    let consumers = pollers::consumers(state);
    let empty = Vec::new();
    state
        .queues()
        .queues()
        .values()
        .filter(|view| only.is_none_or(|name| view.name == name))
        .map(|view| view.json(consumers.get(&view.name).unwrap_or(&empty), with_series))
        .collect()
}

async fn queues(State(state): State<MonitorState>, Query(params): Params) -> Response {
    let with_series = params.get("series").is_none_or(|value| truthy(Some(value)));
    let settings = state.settings();
    Json(json!({
        "now": now(),
        "interval_seconds": settings.queue_interval.as_secs_f64(),
        "thresholds": {
            "backlog": settings.backlog_threshold,
            "oldest_age_seconds": settings.oldest_age_threshold.as_secs_f64(),
        },
        "queues": queues_json(&state, None, with_series),
    }))
    .into_response()
}

async fn queue(State(state): State<MonitorState>, Path(name): Path<String>) -> ApiResult {
    queues_json(&state, Some(&name), true)
        .pop()
        .map(|queue| Json(queue).into_response())
        .ok_or_else(|| ApiError::not_found(format!("Unknown queue '{name}'")))
}

/// A message as listed: its task, id and arguments (as data: the page escapes them).
fn message_json(content: &Result<Message, Undecodable>) -> Value {
    match content {
        Ok(message) => {
            let headers = &message.headers;
            let body = message.decode_body().ok();
            json!({
                "id": headers.id,
                "task": headers.task,
                "args": body.as_ref().map(|body| Value::Array(body.args.clone())),
                "kwargs": body.as_ref().map(|body| Value::Object(body.kwargs.clone())),
                "argsrepr": headers.argsrepr,
                "kwargsrepr": headers.kwargsrepr,
                "retries": headers.retries,
                "priority": message.priority(),
                "eta": headers.eta.map(|eta| eta.to_rfc3339()),
                "expires": headers.expires.map(|expires| expires.to_rfc3339()),
                "origin": headers.origin,
                "parent_id": headers.parent_id,
                "root_id": headers.root_id,
            })
        }
        Err(undecodable) => json!({
            "id": null,
            "task": null,
            "undecodable": undecodable.error,
            "size": undecodable.raw.len(),
        }),
    }
}

async fn dead_letters(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let letters = state
        .app()
        .broker()
        .dead_letters(&name, limit(&params)?)
        .await?;
    let messages: Vec<Value> = letters
        .iter()
        .map(|letter| {
            let mut message = message_json(&letter.content);
            message["reason"] = json!(letter.reason);
            message
        })
        .collect();
    let total = state
        .queues()
        .queues()
        .get(&name)
        .and_then(|view| view.reading.dead_letters);
    Ok(Json(json!({ "queue": name, "total": total, "messages": messages })).into_response())
}

async fn delayed(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let messages = state.app().broker().delayed(&name, limit(&params)?).await?;
    let listed: Vec<Value> = messages
        .iter()
        .map(|delayed| {
            let mut message = message_json(&delayed.content);
            message["eta"] = json!(delayed.eta.to_rfc3339());
            message["due"] = json!(delayed.eta.timestamp_micros() as f64 / 1e6);
            message
        })
        .collect();
    let total = state
        .queues()
        .queues()
        .get(&name)
        .and_then(|view| view.reading.delayed);
    Ok(Json(json!({ "queue": name, "total": total, "messages": listed })).into_response())
}

/// `{"ids": [...]}`, or nothing for all.
fn ids_of(body: &Bytes) -> ApiResult<Option<Vec<String>>> {
    if body.is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    match value.get("ids") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("ids must be strings"))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_request("ids must be an array")),
    }
}

async fn affected(state: &MonitorState, queue: &str, count: u64) -> Response {
    // Show the change at once rather than at the next poll.
    pollers::read_queues(state).await;
    Json(json!({ "queue": queue, "affected": count })).into_response()
}

async fn purge(State(state): State<MonitorState>, Path(name): Path<String>) -> ApiResult {
    let count = state.app().broker().purge(&name).await?;
    Ok(affected(&state, &name, count).await)
}

async fn requeue(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let ids = ids_of(&body)?;
    let count = state
        .app()
        .broker()
        .requeue_dead_letters(&name, ids.as_deref())
        .await?;
    Ok(affected(&state, &name, count).await)
}

async fn purge_dead_letters(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
) -> ApiResult {
    let count = state.app().broker().purge_dead_letters(&name).await?;
    Ok(affected(&state, &name, count).await)
}

async fn run_now(
    State(state): State<MonitorState>,
    Path((name, task_id)): Path<(String, String)>,
) -> ApiResult {
    if !state
        .app()
        .broker()
        .run_delayed_now(&name, &task_id)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "no delayed task '{task_id}' in '{name}'"
        )));
    }
    Ok(affected(&state, &name, 1).await)
}
