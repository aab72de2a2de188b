//! `queue beat --schedule FILE`: the periodic scheduler from a TOML schedule file. Run it on
//! every node; the instance holding the lease sends each tick, once. `--dry-run` prints the
//! next fire times and touches nothing.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use queue::App;
use queue::beat::Beat;
use queue::beat::file::ScheduleFile;

#[derive(Args)]
pub struct BeatArgs {
    /// The schedule file (TOML; see `queue-beat`'s docs or the README).
    #[arg(long, short)]
    schedule: PathBuf,
    /// Prints the entries and their next fire times, and exits; sends nothing.
    #[arg(long)]
    dry_run: bool,
    /// How many fire times --dry-run prints per entry.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Where the lease and the last ticks live (redis://, postgres://, sqlite://).
    /// Default: the result backend when it is one of those, else the broker.
    #[arg(long, env = "QUEUE_BEAT_STORE")]
    store: Option<String>,
    /// Sends beat-heartbeat events (who leads, the schedule, next runs) for the monitor.
    #[arg(long)]
    events: bool,
    /// Seconds a lease holding lasts unless renewed (overrides the file).
    #[arg(long)]
    lease_ttl: Option<f64>,
}

impl BeatArgs {
    /// Whether the command needs no broker (a dry run).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }
}

/// Prints the schedule and its next fire times.
pub fn dry_run(args: &BeatArgs) -> Result<(), String> {
    let file = ScheduleFile::read(&args.schedule).map_err(|error| error.to_string())?;
    let now = chrono::Utc::now();
    println!(
        "schedule {} ({} entries), next fire times after {}:",
        file.name.as_deref().unwrap_or(queue::beat::DEFAULT_NAME),
        file.entries.len(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for entry in &file.entries {
        println!(
            "\n{}  {}  {}",
            entry.name(),
            entry.signature().name,
            entry.schedule()
        );
        let upcoming = entry.schedule().upcoming(now, args.count);
        if upcoming.is_empty() {
            println!("  (no further runs)");
        }
        for tick in upcoming {
            println!(
                "  {}",
                tick.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
    }
    Ok(())
}

/// Runs the beat until Ctrl-C or SIGTERM.
pub async fn run(app: App, args: BeatArgs) -> Result<(), String> {
    let file = ScheduleFile::read(&args.schedule).map_err(|error| error.to_string())?;
    let mut beat = file.apply(Beat::new(app));
    if args.events {
        beat = beat.send_events(true);
    }
    if let Some(seconds) = args.lease_ttl {
        let ttl = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("invalid --lease-ttl {seconds}"))?;
        beat = beat.lease_ttl(ttl);
    }
    if let Some(store) = &args.store {
        let url = store
            .parse()
            .map_err(|error: queue::Error| error.to_string())?;
        let lease = queue::connect::connect_lease(&url, &[])
            .await
            .map_err(|error| error.to_string())?;
        beat = beat.lease(lease);
    }
    beat.run().await.map_err(|error| error.to_string())
}
