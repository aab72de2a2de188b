//! `queue monitor`: the dashboard, Flower-compatible API and Prometheus metrics of
//! `queue-monitor`, served by one command.

use std::time::Duration;

use clap::Args;
use queue::App;
use queue_monitor::{DEFAULT_HISTORY, DEFAULT_LISTEN, Monitor, Settings};

use crate::Failure;

#[derive(Args)]
pub struct MonitorArgs {
    /// Address to listen on. Anything but loopback needs QUEUE_MONITOR_BASIC_AUTH=user:pass
    /// or QUEUE_MONITOR_TOKEN.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Serves everything under this path (e.g. /monitor), for a reverse proxy that forwards
    /// it unchanged (Flower's --url_prefix).
    #[arg(long, env = "QUEUE_MONITOR_URL_PREFIX", default_value = "")]
    url_prefix: String,
    /// Where the history is kept: sqlite://PATH (or a path) or postgres://…
    #[arg(long, env = "QUEUE_MONITOR_HISTORY", default_value = DEFAULT_HISTORY)]
    history: String,
    /// Keeps the history in memory only (nothing survives a restart).
    #[arg(long, conflicts_with = "history")]
    no_history: bool,
    /// Queues to watch besides those the workers consume (repeat, or comma-separated).
    #[arg(short, long = "queue", value_delimiter = ',')]
    queues: Vec<String>,
    /// Flags a queue with at least this many ready messages.
    #[arg(long, default_value_t = Settings::default().backlog_threshold)]
    backlog_threshold: u64,
    /// Flags a queue whose oldest message waited this many seconds.
    #[arg(long, default_value_t = Settings::default().oldest_age_threshold.as_secs_f64())]
    oldest_age_threshold: f64,
    /// Days of history kept.
    #[arg(long, default_value_t = 7.0)]
    history_days: f64,
    /// Task rows kept in the history.
    #[arg(long, default_value_t = Settings::default().history_max_tasks)]
    history_tasks: u64,
}

fn seconds(value: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{name} must be a positive number"))
}

pub async fn run(app: App, args: MonitorArgs) -> Result<(), Failure> {
    let settings = Settings {
        backlog_threshold: args.backlog_threshold,
        oldest_age_threshold: seconds(args.oldest_age_threshold, "--oldest-age-threshold")?,
        history_max_age: seconds(args.history_days * 86_400.0, "--history-days")?,
        history_max_tasks: args.history_tasks,
        ..Settings::default()
    };
    let mut monitor = Monitor::new(app)
        .settings(settings)
        .url_prefix(args.url_prefix.clone());
    monitor = if args.no_history {
        monitor.without_history()
    } else {
        monitor.history(args.history)
    };
    for queue in args.queues {
        monitor = monitor.queue(queue);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let running = monitor
        .start(listener)
        .await
        .map_err(|error| error.to_string())?;
    let prefix = args.url_prefix.trim_matches('/');
    let path = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    eprintln!("queue monitor on http://{address}/{path} (Ctrl-C to stop)");
    let _ = tokio::signal::ctrl_c().await;
    running
        .shutdown()
        .await
        .map_err(|error| error.to_string())?;
    Ok(())
}
