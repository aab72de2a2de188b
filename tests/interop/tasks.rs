//! The interop tasks: the Rust side of `examples/python/tasks.py`, used by
//! `examples/celery_interop.rs` and by the interop tests' in-process worker.
#![allow(dead_code)]

use std::time::Duration;

use queue::{AppBuilder, TaskContext, TaskError, task};
use serde_json::{Number, Value};

/// `tasks.add(x, y)`: the sum of two integers.
#[task(name = "tasks.add")]
pub fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// `tasks.mul(x, y)`: the product of two integers.
#[task(name = "tasks.mul")]
pub fn mul(x: i64, y: i64) -> i64 {
    x * y
}

/// `tasks.xsum(numbers)`: the sum of a list of integers (a chord's body).
#[task(name = "tasks.xsum")]
pub fn xsum(numbers: Vec<i64>) -> i64 {
    numbers.iter().sum()
}

/// `tasks.echo(value)`: the value unchanged, kombu's typed envelopes included.
#[task(name = "tasks.echo")]
pub fn echo(value: Value) -> Value {
    value
}

/// `tasks.fail(message)`: fails with `ValueError(message)`.
#[task(name = "tasks.fail")]
pub fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", message))
}

/// `tasks.flaky(failures)`: retries itself at once until its retry count equals `failures`.
#[task(name = "tasks.flaky", max_retries = None)]
pub fn flaky(context: TaskContext, failures: u32) -> Result<u32, TaskError> {
    if context.retries() < failures {
        return Err(context.retry().countdown(Duration::ZERO));
    }
    Ok(context.retries())
}

/// `tasks.sleep(seconds)`: sleeps, then returns `seconds` as given.
#[task(name = "tasks.sleep")]
pub async fn sleep(seconds: Number) -> Result<Number, TaskError> {
    let duration = seconds
        .as_f64()
        .and_then(|value| Duration::try_from_secs_f64(value).ok())
        .ok_or_else(|| TaskError::new("ValueError", format!("invalid seconds {seconds}")))?;
    tokio::time::sleep(duration).await;
    Ok(seconds)
}

/// Registers all of them.
pub fn register(builder: AppBuilder) -> AppBuilder {
    builder
        .task(add)
        .task(mul)
        .task(xsum)
        .task(echo)
        .task(fail)
        .task(flaky)
        .task(sleep)
}
