//! Flower's action endpoints (`flower/api/control.py`, `flower/api/tasks.py`): revoke,
//! send a task, and the worker commands. Every one is a POST behind the CSRF guard.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use queue_core::Signature;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, truthy};
use crate::state::MonitorState;

/// How long a worker command waits for the worker's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait of `/api/task/apply` for a result.
const APPLY_WAIT: Duration = Duration::from_secs(300);

pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .route("/api/task/revoke/{task_id}", post(revoke))
        .route("/api/task/async-apply/{name}", post(async_apply))
        .route("/api/task/send-task/{name}", post(async_apply))
        .route("/api/task/apply/{name}", post(apply))
        .route("/api/task/rate-limit/{name}", post(rate_limit))
        .route("/api/task/timeout/{name}", post(time_limit))
        .route("/api/worker/shutdown/{worker}", post(shutdown))
        .route("/api/worker/pool/grow/{worker}", post(pool_grow))
        .route("/api/worker/pool/shrink/{worker}", post(pool_shrink))
        .route("/api/worker/pool/autoscale/{worker}", post(autoscale))
        .route(
            "/api/worker/queue/add-consumer/{worker}",
            post(add_consumer),
        )
        .route(
            "/api/worker/queue/cancel-consumer/{worker}",
            post(cancel_consumer),
        )
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

fn number<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<T>> {
    param(params, name)
        .map(|value| {
            value
                .parse::<T>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
        })
        .transpose()
}

fn message(text: impl Into<String>) -> Response {
    Json(json!({ "message": text.into() })).into_response()
}

/// Revokes `task_id` (with `terminate`, stops it where it runs) on every worker.
pub(crate) async fn send_revoke(
    state: &MonitorState,
    task_id: &str,
    terminate: bool,
    signal: &str,
) -> ApiResult<()> {
    let mut arguments = Map::new();
    arguments.insert("task_id".into(), Value::from(task_id));
    arguments.insert("terminate".into(), Value::from(terminate));
    arguments.insert("signal".into(), Value::from(signal));
    state.app().control().cast("revoke", arguments).await?;
    Ok(())
}

async fn revoke(
    State(state): State<MonitorState>,
    Path(task_id): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let terminate = truthy(param(&params, "terminate"));
    let signal = param(&params, "signal").unwrap_or("SIGTERM");
    send_revoke(&state, &task_id, terminate, signal).await?;
    Ok(message(format!("Revoked '{task_id}'")))
}

/// Flower's date format for `eta` and `expires`; RFC 3339 is accepted too.
fn parse_time(value: &Value, name: &str) -> ApiResult<chrono::DateTime<chrono::FixedOffset>> {
    let text = value
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a date")))?;
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time);
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|naive| naive.and_utc().fixed_offset())
        .map_err(|_| ApiError::bad_request(format!("invalid {name} {text:?}")))
}

/// The signature a Flower-style body describes: `{"args": [...], "kwargs": {...}, options}`.
fn signature_of(name: &str, body: &Bytes) -> ApiResult<Signature> {
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|error| ApiError::bad_request(error.to_string()))?
    };
    let Value::Object(mut options) = options else {
        return Err(ApiError::bad_request("invalid options"));
    };
    let args = match options.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args,
        Some(_) => return Err(ApiError::bad_request("args must be an array")),
    };
    let kwargs = match options.remove("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(kwargs)) => kwargs,
        Some(_) => return Err(ApiError::bad_request("kwargs must be an object")),
    };
    let mut signature = Signature::new(name).args(args).kwargs(kwargs);
    for (option, value) in options {
        signature = match option.as_str() {
            "queue" => signature.queue(
                value
                    .as_str()
                    .ok_or_else(|| ApiError::bad_request("queue must be a string"))?,
            ),
            "priority" => {
                let priority = value
                    .as_u64()
                    .filter(|p| *p <= u64::from(queue_core::MAX_PRIORITY));
                signature.priority(
                    priority.ok_or_else(|| ApiError::bad_request("priority must be 0 to 9"))? as u8,
                )
            }
            "countdown" => {
                let seconds = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                    .filter(|seconds: &f64| seconds.is_finite() && *seconds >= 0.0)
                    .ok_or_else(|| {
                        ApiError::bad_request("countdown must be a number of seconds")
                    })?;
                signature.countdown(Duration::from_secs_f64(seconds))
            }
            "eta" => signature.eta(parse_time(&value, "eta")?),
            "expires" => match value
                .as_f64()
                .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
            {
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                    signature.expires_in(Duration::from_secs_f64(seconds))
                }
                _ => signature.expires_at(parse_time(&value, "expires")?),
            },
            "task_id" => signature.task_id(
                value
                    .as_str()
                    .ok_or_else(|| ApiError::bad_request("task_id must be a string"))?,
            ),
            // Options Celery takes that mean nothing here are ignored, as unknown ones.
            _ => signature,
        };
    }
    Ok(signature)
}

/// Sends `signature`; answers Flower's `{"task-id", "state"}`.
pub(crate) async fn send(state: &MonitorState, signature: Signature) -> ApiResult<(String, Value)> {
    let result = state
        .app()
        .send(signature)
        .await
        .map_err(ApiError::upstream)?;
    let id = result.id().to_owned();
    let mut answer = json!({ "task-id": id });
    if let Some(backend) = state.app().backend() {
        let status = backend
            .get(&id)
            .await
            .ok()
            .flatten()
            .map(|meta| meta.status);
        answer["state"] = json!(status.as_ref().map_or("PENDING", |status| status.as_str()));
    }
    Ok((id, answer))
}

async fn async_apply(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (_, answer) = send(&state, signature_of(&name, &body)?).await?;
    Ok(Json(answer).into_response())
}

async fn apply(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let backend = state.app().backend().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no result backend is configured",
        )
    })?;
    let (id, mut answer) = send(&state, signature_of(&name, &body)?).await?;
    if let Some(meta) = backend
        .wait(&id, APPLY_WAIT)
        .await
        .map_err(ApiError::upstream)?
    {
        answer["state"] = json!(meta.status.as_str());
        answer["result"] = meta.result;
        if meta.status.as_str() == "FAILURE" {
            answer["traceback"] = json!(meta.traceback);
        }
    }
    Ok(Json(answer).into_response())
}

/// Sends `method` to `worker` and returns its `ok` text; `404` for an unknown worker,
/// `403` with the worker's error.
async fn command(
    state: &MonitorState,
    worker: &str,
    method: &str,
    arguments: Map<String, Value>,
) -> ApiResult<String> {
    if !state.cluster().workers().contains_key(worker) {
        return Err(ApiError::not_found(format!("Unknown worker '{worker}'")));
    }
    let replies = state
        .app()
        .control()
        .timeout(REPLY_TIMEOUT)
        .destination([worker])
        .call(method, arguments)
        .await?;
    let reply = replies.get(worker);
    if let Some(ok) = reply.and_then(|reply| reply.get("ok")) {
        return Ok(ok.as_str().map_or_else(|| ok.to_string(), str::to_owned));
    }
    let reason = reply.and_then(|reply| reply.get("error")).map_or_else(
        || "Unknown reason".to_owned(),
        |error| {
            error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned)
        },
    );
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("Failed: {reason}"),
    ))
}

async fn shutdown(State(state): State<MonitorState>, Path(worker): Path<String>) -> ApiResult {
    if !state.cluster().workers().contains_key(&worker) {
        return Err(ApiError::not_found(format!("Unknown worker '{worker}'")));
    }
    state
        .app()
        .control()
        .destination([worker.as_str()])
        .cast("shutdown", Map::new())
        .await?;
    Ok(message("Shutting down!"))
}

async fn pool_grow(
    State(state): State<MonitorState>,
    Path(worker): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let n: u64 = number(&params, "n")?.unwrap_or(1);
    let mut arguments = Map::new();
    arguments.insert("n".into(), Value::from(n));
    command(&state, &worker, "pool_grow", arguments).await?;
    Ok(message(format!("Growing '{worker}' worker's pool by {n}")))
}

async fn pool_shrink(
    State(state): State<MonitorState>,
    Path(worker): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let n: u64 = number(&params, "n")?.unwrap_or(1);
    let mut arguments = Map::new();
    arguments.insert("n".into(), Value::from(n));
    command(&state, &worker, "pool_shrink", arguments).await?;
    Ok(message(format!(
        "Shrinking '{worker}' worker's pool by {n}"
    )))
}

async fn autoscale(
    State(state): State<MonitorState>,
    Path(worker): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let min: u64 =
        number(&params, "min")?.ok_or_else(|| ApiError::bad_request("min is required"))?;
    let max: u64 =
        number(&params, "max")?.ok_or_else(|| ApiError::bad_request("max is required"))?;
    let mut arguments = Map::new();
    arguments.insert("min".into(), Value::from(min));
    arguments.insert("max".into(), Value::from(max));
    command(&state, &worker, "autoscale", arguments).await?;
    Ok(message(format!(
        "Autoscaling '{worker}' worker (min={min}, max={max})"
    )))
}

async fn consumer(
    state: &MonitorState,
    worker: &str,
    params: &HashMap<String, String>,
    method: &str,
) -> ApiResult {
    let queue = param(params, "queue").ok_or_else(|| ApiError::bad_request("queue is required"))?;
    let mut arguments = Map::new();
    arguments.insert("queue".into(), Value::from(queue));
    let ok = command(state, worker, method, arguments).await?;
    Ok(message(ok))
}

async fn add_consumer(
    State(state): State<MonitorState>,
    Path(worker): Path<String>,
    Query(params): Params,
) -> ApiResult {
    consumer(&state, &worker, &params, "add_consumer").await
}

async fn cancel_consumer(
    State(state): State<MonitorState>,
    Path(worker): Path<String>,
    Query(params): Params,
) -> ApiResult {
    consumer(&state, &worker, &params, "cancel_consumer").await
}

async fn rate_limit(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let worker = param(&params, "workername")
        .ok_or_else(|| ApiError::bad_request("workername is required"))?;
    let rate = param(&params, "ratelimit")
        .ok_or_else(|| ApiError::bad_request("ratelimit is required"))?;
    let mut arguments = Map::new();
    arguments.insert("task_name".into(), Value::from(name));
    arguments.insert("rate_limit".into(), Value::from(rate));
    Ok(message(
        command(&state, worker, "rate_limit", arguments).await?,
    ))
}

async fn time_limit(
    State(state): State<MonitorState>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let worker = param(&params, "workername")
        .ok_or_else(|| ApiError::bad_request("workername is required"))?;
    let hard: Option<f64> = number(&params, "hard")?;
    let soft: Option<f64> = number(&params, "soft")?;
    let mut arguments = Map::new();
    arguments.insert("task_name".into(), Value::from(name));
    arguments.insert("hard".into(), hard.map_or(Value::Null, Value::from));
    arguments.insert("soft".into(), soft.map_or(Value::Null, Value::from));
    Ok(message(
        command(&state, worker, "time_limit", arguments).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flower_bodies_become_signatures() {
        let body = Bytes::from_static(br#"{"args": [1, 2], "kwargs": {"x": 1}, "queue": "q", "countdown": 5, "priority": 3, "expires": 60}"#);
        assert!(signature_of("tasks.add", &body).is_ok());
        assert!(signature_of("tasks.add", &Bytes::new()).is_ok());
        for bad in [
            &br#"{"args": 1}"#[..],
            br#"[1]"#,
            br#"{"priority": 12}"#,
            br#"{"eta": "tomorrow"}"#,
        ] {
            assert!(signature_of("tasks.add", &Bytes::copy_from_slice(bad)).is_err());
        }
        assert!(
            signature_of(
                "t",
                &Bytes::from_static(br#"{"eta": "2030-01-01 10:00:00.000000"}"#)
            )
            .is_ok()
        );
    }
}
