//! `queue`: send a task by name, read a result by id, show queue lengths, purge a queue;
//! inspect and control the workers and tail their events — against any broker and result
//! backend the `queue` crate supports (Redis, RabbitMQ, PostgreSQL, SQLite), including ones
//! shared with Python Celery.

mod beat;
mod call;
mod control;
mod events;
mod inspect;
mod monitor;
mod output;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use queue::App;

#[derive(Parser)]
#[command(name = "queue", version, about)]
struct Cli {
    /// Broker URL (redis://, amqp://, memory://).
    #[arg(long, global = true, env = "QUEUE_BROKER_URL")]
    broker: Option<String>,
    /// Result backend URL (redis://, postgres://, sqlite://).
    #[arg(long, global = true, env = "QUEUE_RESULT_BACKEND")]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends a task by name and prints its id (and, with --wait, its result as JSON).
    Call(call::CallArgs),
    /// Prints the state and result of a task.
    Result {
        /// Task id.
        id: String,
    },
    /// Prints the number of ready messages of queues, by priority.
    Queues {
        /// Queues to show (default: celery).
        #[arg(default_value = "celery")]
        queues: Vec<String>,
    },
    /// Removes every ready message of a queue.
    Purge {
        /// The queue.
        queue: String,
        /// Does not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Asks the workers (Rust and Python) what they are doing, like `celery inspect`.
    Inspect {
        #[command(subcommand)]
        method: inspect::Method,
        #[command(flatten)]
        target: Target,
    },
    /// Changes what the workers do, like `celery control`.
    Control {
        #[command(subcommand)]
        command: control::Command,
        #[command(flatten)]
        target: Target,
    },
    /// Revokes tasks: workers discard them when they arrive (and, with --terminate, stop
    /// them if they run). Sent without waiting for replies.
    Revoke {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also stops the tasks if they are running.
        #[arg(long)]
        terminate: bool,
        /// Signal for --terminate (Python workers).
        #[arg(long, default_value = "SIGTERM")]
        signal: String,
        /// Only these nodes (repeat, or comma-separated).
        #[arg(short, long, value_delimiter = ',')]
        destination: Vec<String>,
    },
    /// Serves the dashboard, a Flower-compatible HTTP API and Prometheus metrics for the
    /// workers on the broker (Rust and Python); runs until Ctrl-C.
    Monitor(monitor::MonitorArgs),
    /// Runs the periodic scheduler from a TOML schedule file (on every node: one sends each
    /// tick); --dry-run prints the next fire times.
    Beat(beat::BeatArgs),
    /// Prints the workers' events as they come, like `celery events --dump`; runs until
    /// Ctrl-C.
    Events {
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
        /// Stops after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Which workers to ask, how long to wait and how to print.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Only these nodes, e.g. celery@host (repeat, or comma-separated).
    #[arg(short, long, global = true, value_delimiter = ',')]
    pub destination: Vec<String>,
    /// Seconds to wait for the next reply.
    #[arg(short, long, global = true, default_value_t = 1.0)]
    pub timeout: f64,
    /// Prints the replies as one JSON object {node: reply}.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why the command failed.
pub enum Failure {
    /// A message printed after `error: `.
    Message(String),
    /// No worker replied (printed as Celery prints it).
    NoReplies,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::Message(message.to_owned())
    }
}

async fn connect(cli: &Cli) -> Result<App, String> {
    let broker = cli
        .broker
        .clone()
        .or_else(|| std::env::var("CELERY_BROKER_URL").ok())
        .ok_or("no broker: pass --broker or set QUEUE_BROKER_URL")?;
    let mut builder = App::builder().broker(broker);
    if let Some(backend) = cli
        .backend
        .clone()
        .or_else(|| std::env::var("CELERY_RESULT_BACKEND").ok())
    {
        builder = builder.backend(backend);
    }
    builder.build().await.map_err(|error| error.to_string())
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Beat(args) = &cli.command {
        if args.is_dry_run() {
            return Ok(beat::dry_run(args)?);
        }
    }
    let app = connect(&cli).await?;
    match cli.command {
        Command::Call(args) => call::call(&app, args).await?,
        Command::Result { id } => call::result(&app, id).await?,
        Command::Queues { queues } => call::queues(&app, queues).await?,
        Command::Purge { queue, yes } => call::purge(&app, queue, yes).await?,
        Command::Inspect { method, target } => return inspect::run(&app, method, &target).await,
        Command::Control { command, target } => {
            return control::run(&app, command, &target).await;
        }
        Command::Revoke {
            ids,
            terminate,
            signal,
            destination,
        } => control::revoke(&app, ids, terminate, signal, destination).await?,
        Command::Events { json, count } => events::run(&app, json, count).await?,
        Command::Monitor(args) => monitor::run(app, args).await?,
        Command::Beat(args) => beat::run(app, args).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A beat says who leads and what it sends: its lines are the point of running it.
    let default_filter = match cli.command {
        Command::Beat(_) => "warn,queue_beat=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal, plain lines for a log file or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::NoReplies) => {
            eprintln!("Error: No nodes replied within time constraint");
            ExitCode::FAILURE
        }
    }
}
