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

use clap::{Parser, Subcommand};
use queue::{App, Worker};

// Links the Redis and RabbitMQ connectors, so that plain `cargo run --example celery_interop`
// serves `redis://` and `amqp://` URLs (the `queue` features do the same for applications).
#[used]
static LINK_REDIS: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_redis::REDIS_CONNECTOR;
#[used]
static LINK_AMQP: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_amqp::AMQP_CONNECTOR;

// The tasks are shared with the interop test suite, which runs them in-process.
#[path = "../tests/interop/tasks.rs"]
mod tasks;

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
    let app: App = tasks::register(App::from_env()).build().await?;
    let mut worker = Worker::new(app).queues(queues).concurrency(concurrency);
    if let Some(name) = name {
        worker = worker.node_name(name);
    }
    worker.run().await?;
    Ok(())
}
