//! A Rust worker for a mixed Rust/Python Celery setup.
//!
//! ```text
//! QUEUE_BROKER_URL=redis://127.0.0.1:6379/0 QUEUE_RESULT_BACKEND=redis://127.0.0.1:6379/1 \
//!     cargo run --example celery_interop -- worker -Q celery,other -c 8 -n rust1@%h -E
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
    /// Runs a worker until SIGTERM/SIGINT. Flags as `celery worker` takes them.
    Worker {
        /// Queues to consume, in order, comma-separated.
        #[arg(short = 'Q', long, default_value = "celery", value_delimiter = ',')]
        queues: Vec<String>,
        /// Tasks running at once.
        #[arg(short = 'c', long, default_value_t = 8)]
        concurrency: usize,
        /// Node name, as shown in results and monitors: `name@host`, `%h` for this host's
        /// name; without `@`, `celery@<value>` (as Celery reads `-n`).
        #[arg(short = 'n', long = "hostname", visible_alias = "name")]
        hostname: Option<String>,
        /// Sends task events (for Flower and `celery events`), as `celery worker -E`.
        #[arg(short = 'E', long)]
        events: bool,
    },
}

/// Celery's reading of `-n`: `%h` is this host's name; a name without `@` is a host name.
fn node_name(value: &str) -> String {
    let value = value.replace("%h", &queue::app::hostname());
    if value.contains('@') {
        value
    } else {
        format!("celery@{value}")
    }
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
        hostname,
        events,
    } = Cli::parse().command;
    let app: App = tasks::register(App::from_env()).build().await?;
    let mut worker = Worker::new(app).queues(queues).concurrency(concurrency);
    // Without -E the default stands (on with CELERY_WORKER_SEND_TASK_EVENTS=1).
    if events {
        worker = worker.task_events(true);
    }
    if let Some(hostname) = hostname {
        worker = worker.node_name(node_name(&hostname));
    }
    worker.run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::node_name;

    #[test]
    fn node_names_read_as_celery_reads_dash_n() {
        let host = queue::app::hostname();
        assert_eq!(node_name("rust1@%h"), format!("rust1@{host}"));
        assert_eq!(node_name("worker.example"), "celery@worker.example");
        assert_eq!(node_name("a@b"), "a@b");
    }
}
