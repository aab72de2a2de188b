//! `queue`: send a task by name, read a result by id, show queue lengths, purge a queue —
//! against any broker and result backend the `queue` crate supports (Redis, RabbitMQ,
//! PostgreSQL, SQLite), including ones shared with Python Celery.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use queue::{App, AsyncResult, ResultError, Signature};
use serde_json::{Map, Value, json};

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
    Call {
        /// Task name, e.g. tasks.add.
        name: String,
        /// Positional arguments, a JSON array.
        #[arg(long, default_value = "[]")]
        args: String,
        /// Keyword arguments, a JSON object.
        #[arg(long, default_value = "{}")]
        kwargs: String,
        /// Queue to send to (default: celery).
        #[arg(long)]
        queue: Option<String>,
        /// Priority 0 (lowest) to 9 (highest).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
        priority: Option<u8>,
        /// Seconds before the task may run.
        #[arg(long)]
        countdown: Option<f64>,
        /// Seconds after which the task expires (is REVOKED instead of run).
        #[arg(long)]
        expires: Option<f64>,
        /// Waits up to this many seconds for the result and prints it.
        #[arg(long)]
        wait: Option<f64>,
    },
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
}

fn parse_json(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("--{what} is not valid JSON: {error}"))
}

fn seconds(what: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{what} must be a positive number"))
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

async fn run(cli: Cli) -> Result<(), String> {
    let app = connect(&cli).await?;
    match cli.command {
        Command::Call {
            name,
            args,
            kwargs,
            queue,
            priority,
            countdown,
            expires,
            wait,
        } => {
            let Value::Array(args) = parse_json("args", &args)? else {
                return Err("--args must be a JSON array".into());
            };
            let Value::Object(kwargs) = parse_json("kwargs", &kwargs)? else {
                return Err("--kwargs must be a JSON object".into());
            };
            let mut signature = Signature::new(name).args(args).kwargs(kwargs);
            if let Some(queue) = queue {
                signature = signature.queue(queue);
            }
            if let Some(priority) = priority {
                signature = signature.priority(priority);
            }
            if let Some(countdown) = countdown {
                signature = signature.countdown(seconds("countdown", countdown)?);
            }
            if let Some(expires) = expires {
                signature = signature.expires_in(seconds("expires", expires)?);
            }
            let result = app
                .send(signature)
                .await
                .map_err(|error| error.to_string())?;
            println!("{}", result.id());
            if let Some(wait) = wait {
                let value = result
                    .get(seconds("wait", wait)?)
                    .await
                    .map_err(|error| describe(&error))?;
                println!("{value}");
            }
            Ok(())
        }
        Command::Result { id } => {
            let result: AsyncResult = app.result(id);
            let meta = result.meta().await.map_err(|error| error.to_string())?;
            let shown = match meta {
                None => json!({"task_id": result.id(), "status": "PENDING", "result": null}),
                Some(meta) => serde_json::to_value(&meta).map_err(|error| error.to_string())?,
            };
            println!("{shown}");
            Ok(())
        }
        Command::Queues { queues } => {
            for queue in queues {
                let length = app
                    .broker()
                    .queue_length(&queue)
                    .await
                    .map_err(|error| error.to_string())?;
                let by_priority: Map<String, Value> = length
                    .by_priority
                    .iter()
                    .map(|(priority, count)| (priority.to_string(), json!(count)))
                    .collect();
                println!("{queue}\t{}\t{}", length.total, Value::Object(by_priority));
            }
            Ok(())
        }
        Command::Purge { queue, yes } => {
            if !yes && !confirm(&format!("Purge every ready message of {queue:?}? [y/N] "))? {
                return Err("not purged".into());
            }
            let removed = app
                .broker()
                .purge(&queue)
                .await
                .map_err(|error| error.to_string())?;
            println!("purged {removed} messages from {queue}");
            Ok(())
        }
    }
}

fn describe(error: &ResultError) -> String {
    match error {
        ResultError::Failed { error, .. } => {
            let mut text = format!("{}: {}", error.exc_type(), error.message());
            if let Some(traceback) = error.traceback_text() {
                text.push('\n');
                text.push_str(traceback);
            }
            text
        }
        other => other.to_string(),
    }
}

fn confirm(question: &str) -> Result<bool, String> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| error.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
