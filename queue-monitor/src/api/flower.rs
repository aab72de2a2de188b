//! Flower's read endpoints (`flower/api/workers.py`, `flower/api/tasks.py`), same paths,
//! parameters and answers, over the whole history rather than the tasks in memory.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::TimeZone;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, truthy};
use crate::ingest::pollers;
use crate::ingest::task::Task;
use crate::state::{MonitorState, now};
use crate::store::{Sort, TaskSearch, query};

/// Tasks `/api/tasks` returns without a `limit` (Flower returns all it holds in memory, by
/// default at most this many).
pub const DEFAULT_TASKS_LIMIT: i64 = 10_000;

pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .route("/api/workers", get(workers))
        .route("/api/tasks", get(tasks))
        .route("/api/task/types", get(task_types))
        .route("/api/task/info/{task_id}", get(task_info))
        .route("/api/task/result/{task_id}", get(task_result))
        .route("/api/queues/length", get(queue_lengths))
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

async fn workers(State(state): State<MonitorState>, Query(params): Params) -> ApiResult {
    let workername = param(&params, "workername");
    if truthy(param(&params, "refresh")) {
        pollers::inspect(&state, workername)
            .await
            .map_err(|error| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("Failed to update workers: {error}"),
                )
            })?;
    }
    let cluster = state.cluster();
    if truthy(param(&params, "status")) {
        let now = now();
        let status: Map<String, Value> = cluster
            .workers()
            .values()
            .map(|worker| (worker.hostname.clone(), Value::from(worker.alive(now))))
            .collect();
        return Ok(Json(status).into_response());
    }
    if let Some(name) = workername {
        let worker = cluster
            .workers()
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("Unknown worker '{name}'")))?;
        return Ok(Json(json!({ name: worker.flower_json() })).into_response());
    }
    let all: Map<String, Value> = cluster
        .workers()
        .values()
        .map(|worker| (worker.hostname.clone(), worker.flower_json()))
        .collect();
    Ok(Json(all).into_response())
}

/// Flower's `received_start`/`received_end`: `%Y-%m-%d %H:%M` in the server's local time
/// (as `time.mktime`).
fn flower_time(value: Option<&str>) -> ApiResult<Option<f64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let parsed = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M").map_err(|_| {
        ApiError::bad_request(format!("invalid date {value:?}: use %Y-%m-%d %H:%M"))
    })?;
    let local = chrono::Local
        .from_local_datetime(&parsed)
        .earliest()
        .ok_or_else(|| ApiError::bad_request(format!("invalid local time {value:?}")))?;
    Ok(Some(local.timestamp() as f64))
}

/// Flower's filter values, where `All` means none.
fn filter(value: Option<&str>) -> Option<String> {
    value.filter(|value| *value != "All").map(str::to_owned)
}

/// The memory's (fresher) record where it has one.
pub(crate) fn freshest(state: &MonitorState, tasks: Vec<Task>) -> Vec<Task> {
    let cluster = state.cluster();
    tasks
        .into_iter()
        .map(|task| cluster.task(&task.uuid).cloned().unwrap_or(task))
        .collect()
}

async fn tasks(State(state): State<MonitorState>, Query(params): Params) -> ApiResult {
    let number = |name: &str| -> ApiResult<Option<i64>> {
        param(&params, name)
            .map(|value| {
                value
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
            })
            .transpose()
    };
    let (sort, descending) = match param(&params, "sort_by") {
        Some(key) => Sort::parse(key)
            .ok_or_else(|| ApiError::bad_request(format!("cannot sort by {key:?}")))?,
        None => (Sort::Timestamp, true),
    };
    let search = TaskSearch {
        query: Some(
            query::parse(param(&params, "search").unwrap_or_default())
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        states: filter(param(&params, "state")).into_iter().collect(),
        name: filter(param(&params, "taskname")),
        worker: filter(param(&params, "workername")),
        received_from: flower_time(param(&params, "received_start"))?,
        received_to: flower_time(param(&params, "received_end"))?,
        sort,
        descending,
        limit: number("limit")?
            .unwrap_or(DEFAULT_TASKS_LIMIT)
            .clamp(0, DEFAULT_TASKS_LIMIT),
        offset: number("offset")?.unwrap_or(0).max(0),
        ..TaskSearch::default()
    };
    let page = state.store().search(&search).await?;
    let answer: Map<String, Value> = freshest(&state, page.tasks)
        .iter()
        .map(|task| (task.uuid.clone(), task.flower_json()))
        .collect();
    Ok(Json(answer).into_response())
}

async fn task_types(State(state): State<MonitorState>) -> Response {
    let types: Vec<String> = state.cluster().task_types().iter().cloned().collect();
    Json(json!({ "task-types": types })).into_response()
}

/// A task from memory, else from the history, else `404`.
pub(crate) async fn find_task(state: &MonitorState, task_id: &str) -> ApiResult<Task> {
    let in_memory = state.cluster().task(task_id).cloned();
    if let Some(task) = in_memory {
        return Ok(task);
    }
    state
        .store()
        .task(task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Unknown task '{task_id}'")))
}

async fn task_info(State(state): State<MonitorState>, Path(task_id): Path<String>) -> ApiResult {
    let task = find_task(&state, &task_id).await?;
    Ok(Json(task.flower_json()).into_response())
}

async fn task_result(
    State(state): State<MonitorState>,
    Path(task_id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let backend = state.app().backend().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no result backend is configured",
        )
    })?;
    let timeout = param(&params, "timeout")
        .map(|value| {
            value
                .parse::<f64>()
                .map_err(|_| ApiError::bad_request("timeout must be a number"))
        })
        .transpose()?
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0);
    let meta = match timeout {
        Some(seconds) => {
            backend
                .wait(&task_id, Duration::from_secs_f64(seconds.min(3600.0)))
                .await
        }
        None => backend.get(&task_id).await,
    }
    .map_err(ApiError::upstream)?;
    let mut answer = json!({ "task-id": task_id, "state": "PENDING" });
    if let Some(meta) = meta {
        answer["state"] = json!(meta.status.as_str());
        if meta.status.is_ready() {
            answer["result"] = meta.result;
            if meta.status.as_str() == "FAILURE" {
                answer["traceback"] = json!(meta.traceback);
            }
        }
    }
    Ok(Json(answer).into_response())
}

async fn queue_lengths(State(state): State<MonitorState>) -> ApiResult {
    // Read now, as Flower does, rather than the last poll.
    pollers::read_queues(&state).await;
    let queues: Vec<Value> = state
        .queues()
        .queues()
        .values()
        .map(|view| json!({ "name": view.name, "messages": view.reading.messages }))
        .collect();
    Ok(Json(json!({ "active_queues": queues })).into_response())
}
