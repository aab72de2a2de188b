//! `queue-chaos`: the processes of the fault suite (`cargo xtask chaos`). xtask starts the
//! servers, runs these as separate processes, kills and restarts them and the servers, and
//! counts what the sink files say. Each subcommand is one role:
//!
//! - `worker`: a real worker (the facade's [`queue::Worker`]) running the task
//!   `chaos.record`, which appends its task id to a sink file of this process before it
//!   returns: the record of what ran, kept outside the broker and the result backend.
//! - `produce`: sends `count` tasks with ids `<prefix>-<n>`, in batches, retrying a batch
//!   that failed (same ids) until it is confirmed; appends the confirmed total to a progress
//!   file after each batch.
//! - `poison`: writes hostile messages straight to the broker (raw LPUSH on Redis,
//!   basic_publish on RabbitMQ), below our own encoders.
//! - `check-dead`, `check-results`: read the dead-letter queue and the result backend at the
//!   end of a scenario, and print one JSON line.

mod check;
mod poison;
mod produce;
mod resp;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What a run of this binary fails with; printed by `main`.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(name = "queue-chaos", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a worker on one queue until SIGTERM/SIGINT (or SIGKILL, which is the point).
    Worker(worker::Options),
    /// Send tasks `chaos.record` with deterministic ids.
    Produce(produce::Options),
    /// Write hostile messages straight to the broker.
    Poison(poison::Options),
    /// Count the dead letters of a queue by kind of hostile message; one JSON line.
    CheckDead {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        queue: String,
        /// Read at most this many dead letters.
        #[arg(long, default_value_t = 1_000_000)]
        limit: usize,
    },
    /// Read the result of every task `<prefix>-<n>`, n < count; one JSON line.
    CheckResults {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u64,
    },
}

/// Where a process appends what it did: one line per event, one `write` per line.
pub(crate) fn append_file(path: &PathBuf) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()).into())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command {
            Cmd::Worker(options) => worker::run(options).await,
            Cmd::Produce(options) => produce::run(options).await,
            Cmd::Poison(options) => poison::run(options).await,
            Cmd::CheckDead {
                broker,
                queue,
                limit,
            } => check::dead(&broker, &queue, limit).await,
            Cmd::CheckResults {
                backend,
                prefix,
                count,
            } => check::results(&backend, &prefix, count).await,
        }
    });
    if let Err(error) = outcome {
        eprintln!("queue-chaos: {error}");
        std::process::exit(1);
    }
}
