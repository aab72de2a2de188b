//! `queue control …` and `queue revoke`: what `celery control` sends the workers, with
//! Celery's argument names (wire spec §7.4).

use clap::Subcommand;
use queue::App;
use serde_json::{Map, Value};

use crate::inspect::{client, describe};
use crate::output::print_replies;
use crate::{Failure, Target};

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Sets a task's rate limit (e.g. 10/m, 5/s; 0 removes it).
    #[command(name = "rate_limit", alias = "rate-limit")]
    RateLimit {
        /// Task name.
        task: String,
        /// Tasks per second (5/s), minute (10/m) or hour (100/h).
        rate: String,
    },
    /// Sets a task's soft and hard time limits, in seconds.
    #[command(name = "time_limit", alias = "time-limit")]
    TimeLimit {
        /// Task name.
        task: String,
        /// Soft limit (seconds).
        soft: f64,
        /// Hard limit (seconds).
        hard: Option<f64>,
    },
    /// Starts consuming a queue.
    #[command(name = "add_consumer", alias = "add-consumer")]
    AddConsumer {
        /// The queue.
        queue: String,
    },
    /// Stops consuming a queue.
    #[command(name = "cancel_consumer", alias = "cancel-consumer")]
    CancelConsumer {
        /// The queue.
        queue: String,
    },
    /// Shuts the workers down (warm). Sent without waiting for replies.
    Shutdown,
    /// Adds processes (threads) to the workers' pools.
    #[command(name = "pool_grow", alias = "pool-grow")]
    PoolGrow {
        /// How many.
        #[arg(default_value_t = 1)]
        n: u64,
    },
    /// Removes processes (threads) from the workers' pools.
    #[command(name = "pool_shrink", alias = "pool-shrink")]
    PoolShrink {
        /// How many.
        #[arg(default_value_t = 1)]
        n: u64,
    },
    /// Turns the workers' task events on.
    #[command(name = "enable_events", alias = "enable-events")]
    EnableEvents,
    /// Turns the workers' task events off.
    #[command(name = "disable_events", alias = "disable-events")]
    DisableEvents,
}

impl Command {
    /// The command and its arguments, named as Celery names them.
    fn request(&self) -> (&'static str, Map<String, Value>) {
        let mut arguments = Map::new();
        let mut set = |name: &str, value: Value| {
            arguments.insert(name.to_owned(), value);
        };
        let method = match self {
            Self::RateLimit { task, rate } => {
                set("task_name", Value::from(task.as_str()));
                set("rate_limit", Value::from(rate.as_str()));
                "rate_limit"
            }
            Self::TimeLimit { task, soft, hard } => {
                set("task_name", Value::from(task.as_str()));
                set("soft", Value::from(*soft));
                set("hard", hard.map_or(Value::Null, Value::from));
                "time_limit"
            }
            Self::AddConsumer { queue } => {
                set("queue", Value::from(queue.as_str()));
                "add_consumer"
            }
            Self::CancelConsumer { queue } => {
                set("queue", Value::from(queue.as_str()));
                "cancel_consumer"
            }
            Self::Shutdown => "shutdown",
            Self::PoolGrow { n } => {
                set("n", Value::from(*n));
                "pool_grow"
            }
            Self::PoolShrink { n } => {
                set("n", Value::from(*n));
                "pool_shrink"
            }
            Self::EnableEvents => "enable_events",
            Self::DisableEvents => "disable_events",
        };
        (method, arguments)
    }
}

pub async fn run(app: &App, command: Command, target: &Target) -> Result<(), Failure> {
    let control = client(app, target)?;
    let (method, arguments) = command.request();
    if matches!(command, Command::Shutdown) {
        // A worker that shuts down does not reply; Celery's client waits in vain.
        control.cast(method, arguments).await.map_err(describe)?;
        println!("-> shutdown sent to {}", nodes(&target.destination));
        return Ok(());
    }
    let replies = control.call(method, arguments).await.map_err(describe)?;
    print_replies(replies.0, target, false)
}

pub async fn revoke(
    app: &App,
    ids: Vec<String>,
    terminate: bool,
    signal: String,
    destination: Vec<String>,
) -> Result<(), Failure> {
    let mut control = app.control();
    if !destination.is_empty() {
        control = control.destination(destination.iter().cloned());
    }
    let mut arguments = Map::new();
    let task_id = match ids.as_slice() {
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    arguments.insert("task_id".into(), task_id);
    arguments.insert("terminate".into(), Value::from(terminate));
    arguments.insert("signal".into(), Value::from(signal.as_str()));
    control.cast("revoke", arguments).await.map_err(describe)?;
    let what = if terminate {
        format!("revoke (terminate, {signal})")
    } else {
        "revoke".to_owned()
    };
    println!(
        "-> {what} sent to {}: {}",
        nodes(&destination),
        ids.join(", ")
    );
    Ok(())
}

fn nodes(destination: &[String]) -> String {
    if destination.is_empty() {
        "all nodes".to_owned()
    } else {
        destination.join(", ")
    }
}
