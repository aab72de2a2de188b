//! `cargo xtask`: the project's automation in Rust, so CI and developers run the same steps
//! with nothing to install but cargo. It drives cargo and the servers; it depends on none
//! of our crates, so it builds even when they do not.

mod bench;
mod chaos;
mod python;
mod services;
mod test;
mod util;

use clap::{Parser, Subcommand};

use services::Service;

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lint, bring up the test services, run every test, print `N passed, M failed`.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
        /// Leave the services this run started running afterwards.
        #[arg(long)]
        keep_services: bool,
        /// Passed to the test runner (nextest, or cargo test without it), e.g. a filter.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Install, start, stop and inspect Redis, RabbitMQ and PostgreSQL on loopback.
    Services {
        #[command(subcommand)]
        action: ServicesCmd,
    },
    /// Run the throughput benchmark (`cargo bench --bench throughput -p queue`).
    Bench {
        /// The monitor's benchmark instead: 1M tasks of history searched, then a sustained
        /// event rate with its memory (`cargo bench -p queue-monitor --bench history`).
        #[arg(long)]
        monitor: bool,
        /// Passed to the benchmark binary.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// The fault suite: workers and servers killed under load, hostile input, decoder fuzz;
    /// one row per scenario (sent, done, lost, duplicated, time to recover).
    Chaos {
        /// The full sizes (100k tasks, 10 kills, 10M fuzz inputs) instead of the short profile.
        #[arg(long)]
        long: bool,
        /// Only the scenarios whose name contains one of these words (e.g. `poison`).
        only: Vec<String>,
    },
    /// Create target/python-venv with Python Celery (for interop tests); print its path.
    PythonVenv,
}

#[derive(Subcommand)]
enum ServicesCmd {
    /// Start services (installing them if missing), reusing any that already answer.
    Up {
        #[arg(value_enum, default_value = "all")]
        which: Which,
    },
    /// Stop services that xtask started.
    Down {
        #[arg(value_enum, default_value = "all")]
        which: Which,
    },
    /// Show which services answer and which xtask started.
    Status,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    Redis,
    Rabbitmq,
    Postgres,
    /// Redis master, replica and three sentinels on 6390, 6391, 26390..26392.
    RedisSentinel,
    /// Three clustered RabbitMQ nodes on 5681..5683 (not part of `all`).
    RabbitmqCluster,
    All,
}

impl Which {
    fn services(self) -> &'static [Service] {
        match self {
            Which::Redis => &[Service::Redis],
            Which::Rabbitmq => &[Service::Rabbitmq],
            Which::Postgres => &[Service::Postgres],
            Which::RedisSentinel => &[Service::RedisSentinel],
            Which::RabbitmqCluster => &[Service::RabbitmqCluster],
            Which::All => services::ALL,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Test {
            no_lint,
            keep_services,
            extra,
        } => test::run(test::Options {
            lint: !no_lint,
            keep_services,
            extra,
        }),
        Cmd::Services { action } => match action {
            ServicesCmd::Up { which } => services::up_cmd(which.services()),
            ServicesCmd::Down { which } => services::down_cmd(which.services()),
            ServicesCmd::Status => services::status_cmd(),
        },
        Cmd::Bench { monitor, extra } => {
            if monitor {
                bench::monitor(&extra)
            } else {
                bench::run(&extra)
            }
        }
        Cmd::Chaos { long, only } => chaos_cmd(long, &only),
        Cmd::PythonVenv => python::run(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// `cargo xtask chaos`: runs the profile on private servers of its own; fails when a row
/// broke what it must hold.
fn chaos_cmd(long: bool, only: &[String]) -> util::Result<()> {
    let profile = if long {
        chaos::Profile::long()
    } else {
        chaos::Profile::short()
    };
    let failed: Vec<String> = chaos::run_only(profile, only)?
        .into_iter()
        .filter(|row| row.verdict.is_err())
        .map(|row| row.scenario)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        util::err(format!("fault suite: {} failed", failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
