//! The processes of the fault suite (`cargo xtask chaos`): a worker whose one task records
//! its id in an append-only file outside the worker, a producer, and a checker of stored
//! results. The driver kills and restarts them and the servers, then counts the file.
//!
//! ```sh
//! cargo run --example chaos -- worker --broker redis://127.0.0.1:6390/0 --sink /tmp/sink
//! cargo run --example chaos -- produce --broker redis://127.0.0.1:6390/0 --prefix run1 --count 1000
//! cargo run --example chaos -- verify --backend redis://127.0.0.1:6391/0 --prefix run1 --count 1000
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Parser, Subcommand};
use queue::{App, Signature, TaskContext, TaskError, TaskState, Worker, task};

/// The queue every scenario uses.
const QUEUE: &str = "chaos";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker until SIGTERM.
    Worker {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        backend: Option<String>,
        /// The append-only file each execution writes its task id to.
        #[arg(long)]
        sink: PathBuf,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Send `count` tasks with ids `<prefix>-<n>`, retrying a batch the broker refuses.
    Produce {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
    },
    /// Count the tasks `<prefix>-<n>` whose SUCCESS is stored; print `verified=<n> of=<count>`.
    Verify {
        #[arg(long)]
        backend: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
    },
}

/// Where executions are recorded.
struct Sink(Mutex<std::fs::File>);

/// Records its id; the line is written with one `write` on an `O_APPEND` file, so lines of
/// concurrent workers never mix.
#[task(name = "chaos.record")]
async fn record(context: TaskContext, id: String) -> Result<String, TaskError> {
    let sink = context
        .state::<Sink>()
        .ok_or_else(|| TaskError::msg("no sink"))?;
    let line = format!("{id}\n");
    sink.0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .write_all(line.as_bytes())
        .map_err(|error| TaskError::new("IOError", error.to_string()))?;
    Ok(id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Worker {
            broker,
            backend,
            sink,
            concurrency,
        } => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sink)?;
            let mut app = App::builder()
                .broker(broker)
                .task(record)
                .state(Sink(Mutex::new(file)));
            if let Some(backend) = backend {
                app = app.backend(backend);
            }
            let app = app.build().await?;
            Worker::new(app)
                .queues([QUEUE])
                .concurrency(concurrency)
                .persist_timeout(Duration::from_secs(60))
                .run()
                .await?;
        }
        Command::Produce {
            broker,
            prefix,
            count,
        } => {
            let app = App::builder().broker(broker).build().await?;
            let ids: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
            for batch in ids.chunks(500) {
                let signatures = || {
                    batch.iter().map(|id| {
                        Signature::new("chaos.record")
                            .arg(id.clone())
                            .task_id(id.clone())
                            .queue(QUEUE)
                    })
                };
                let mut attempt = 0u32;
                while let Err(error) = app.send_many(signatures()).await {
                    attempt += 1;
                    if attempt > 100 {
                        return Err(error.into());
                    }
                    eprintln!("produce: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            println!("sent={count}");
        }
        Command::Verify {
            backend,
            prefix,
            count,
        } => {
            let app = App::builder().backend(backend).build().await?;
            let backend = app.backend().ok_or("no backend")?;
            let mut verified = 0;
            for n in 0..count {
                let id = format!("{prefix}-{n}");
                if let Some(meta) = backend.get(&id).await? {
                    if meta.status == TaskState::Success {
                        verified += 1;
                    }
                }
            }
            println!("verified={verified} of={count}");
        }
    }
    Ok(())
}
