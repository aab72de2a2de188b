//! A Rust worker for a mixed Rust/Python Celery setup.
//!
//! ```text
//! QUEUE_BROKER_URL=redis://127.0.0.1:6379/0 QUEUE_RESULT_BACKEND=redis://127.0.0.1:6379/1 \
//!     cargo run --example celery_interop -- worker --queues celery,other
//! ```
//!
//! The broker and backend come from `QUEUE_BROKER_URL` / `QUEUE_RESULT_BACKEND` (or
//! Celery's `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`). `examples/python/tasks.py`
//! defines the same task names for a Python worker, so either side can serve either.

use std::time::Duration;

use clap::{Parser, Subcommand};
use queue::{App, TaskContext, TaskError, Worker, task};
use serde_json::{Number, Value};

// Links the Redis and RabbitMQ connectors, so that plain `cargo run --example celery_interop`
// serves `redis://` and `amqp://` URLs (the `queue` features do the same for applications).
#[used]
static LINK_REDIS: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_redis::REDIS_CONNECTOR;
#[used]
static LINK_AMQP: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_amqp::AMQP_CONNECTOR;

/// `tasks.add(x, y)`: the sum of two integers.
#[task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// `tasks.echo(value)`: the value unchanged, kombu's typed envelopes included.
#[task(name = "tasks.echo")]
fn echo(value: Value) -> Value {
    value
}

/// `tasks.fail(message)`: fails with `ValueError(message)`.
#[task(name = "tasks.fail")]
fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", message))
}

/// `tasks.flaky(failures)`: retries itself at once until its retry count equals `failures`,
/// then returns that count.
#[task(name = "tasks.flaky", max_retries = None)]
fn flaky(context: TaskContext, failures: u32) -> Result<u32, TaskError> {
    if context.retries() < failures {
        return Err(context.retry().countdown(Duration::ZERO));
    }
    Ok(context.retries())
}

/// `tasks.sleep(seconds)`: sleeps, then returns `seconds` as given.
#[task(name = "tasks.sleep")]
async fn sleep(seconds: Number) -> Result<Number, TaskError> {
    let duration = seconds
        .as_f64()
        .and_then(|value| Duration::try_from_secs_f64(value).ok())
        .ok_or_else(|| TaskError::new("ValueError", format!("invalid seconds {seconds}")))?;
    tokio::time::sleep(duration).await;
    Ok(seconds)
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a worker until SIGTERM/SIGINT.
    Worker {
        /// Queues to consume, in order, comma-separated.
        #[arg(long, default_value = "celery", value_delimiter = ',')]
        queues: Vec<String>,
        /// Tasks running at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Node name, as shown in results and monitors.
        #[arg(long)]
        name: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Worker {
        queues,
        concurrency,
        name,
    } = Cli::parse().command;
    let app: App = App::from_env()
        .task(add)
        .task(echo)
        .task(fail)
        .task(flaky)
        .task(sleep)
        .build()
        .await?;
    let mut worker = Worker::new(app).queues(queues).concurrency(concurrency);
    if let Some(name) = name {
        worker = worker.node_name(name);
    }
    worker.run().await?;
    Ok(())
}
