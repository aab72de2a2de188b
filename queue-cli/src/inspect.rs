//! `queue inspect …`: what `celery inspect` asks the workers.

use clap::Subcommand;
use queue::App;
use queue::control::{Control, ControlError};
use serde_json::{Map, Value};

use crate::output::print_replies;
use crate::{Failure, Target};

#[derive(Subcommand, Clone, Debug)]
pub enum Method {
    /// Whether the workers are up (pong).
    Ping,
    /// Counts per task, pid, uptime, pool, broker, prefetch.
    Stats,
    /// Tasks running now.
    Active {
        /// Arguments as reprs rather than values (Flower's `safe`).
        #[arg(long)]
        safe: bool,
    },
    /// Tasks received and not yet started.
    Reserved,
    /// Tasks waiting for their eta or countdown.
    Scheduled,
    /// The task names each worker knows.
    Registered,
    /// The queues each worker consumes.
    #[command(name = "active_queues", alias = "active-queues")]
    ActiveQueues,
    /// The task ids each worker holds as revoked.
    Revoked,
    /// What each worker knows of these task ids.
    #[command(name = "query_task", alias = "query-task")]
    QueryTask {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Each worker's configuration.
    Conf {
        /// Includes the default values.
        #[arg(long)]
        with_defaults: bool,
    },
}

impl Method {
    /// The command and the arguments Celery's client sends with it (wire spec §7.4).
    fn request(&self) -> (&'static str, Map<String, Value>) {
        let mut arguments = Map::new();
        let method = match self {
            Self::Ping => "ping",
            Self::Stats => "stats",
            Self::Active { safe } => {
                arguments.insert("safe".into(), Value::from(*safe));
                "active"
            }
            Self::Reserved => "reserved",
            Self::Scheduled => "scheduled",
            Self::Registered => {
                arguments.insert("taskinfoitems".into(), Value::Array(Vec::new()));
                "registered"
            }
            Self::ActiveQueues => "active_queues",
            Self::Revoked => "revoked",
            Self::QueryTask { ids } => {
                arguments.insert("ids".into(), Value::from(ids.clone()));
                "query_task"
            }
            Self::Conf { with_defaults } => {
                arguments.insert("with_defaults".into(), Value::from(*with_defaults));
                "conf"
            }
        };
        (method, arguments)
    }
}

/// A control client for `target`'s nodes and timeout.
pub fn client(app: &App, target: &Target) -> Result<Control, Failure> {
    let timeout = crate::call::seconds("timeout", target.timeout)?;
    let mut control = app.control().timeout(timeout);
    if !target.destination.is_empty() {
        control = control.destination(target.destination.iter().cloned());
    }
    Ok(control)
}

/// A control error as the user sees it.
pub fn describe(error: ControlError) -> Failure {
    match error {
        ControlError::Unsupported => Failure::Message(
            "this broker cannot broadcast: remote control needs Redis or RabbitMQ".into(),
        ),
        other => Failure::Message(other.to_string()),
    }
}

pub async fn run(app: &App, method: Method, target: &Target) -> Result<(), Failure> {
    let control = client(app, target)?;
    let (name, arguments) = method.request();
    let replies = control.call(name, arguments).await.map_err(describe)?;
    print_replies(replies.0, target, true)
}
