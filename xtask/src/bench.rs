//! `cargo xtask bench`: the throughput benchmark (`benches/throughput.rs`, harness = false,
//! prints its own table). What it needs is declared in the constants below, so adding a
//! broker or the Python Celery side-by-side run is a one-line change here.

use crate::python;
use crate::services::{Service, Session};
use crate::util::{self, Result};

/// Servers the benchmark talks to; their `QUEUE_TEST_*` URLs are exported to it.
const BENCH_SERVICES: &[Service] = &[Service::Redis, Service::Rabbitmq, Service::Postgres];

/// Whether the benchmark compares against Python Celery; if so the venv is prepared and
/// its interpreter exported as `QUEUE_BENCH_PYTHON`.
const BENCH_NEEDS_PYTHON: bool = true;

pub fn run(extra: &[String]) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args([
        "bench",
        "--bench",
        "throughput",
        "-p",
        "queue",
        "--all-features",
    ]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }

    if BENCH_NEEDS_PYTHON {
        util::header("python venv");
        let venv = python::ensure_venv()?;
        cmd.env("QUEUE_BENCH_PYTHON", python::interpreter(&venv));
    }

    util::header("services");
    // Numbers without the servers they measure are meaningless: a missing service fails.
    let mut session = Session::start(BENCH_SERVICES, true)?;
    cmd.envs(session.env.iter().map(|(k, v)| (k, v)));

    util::header("cargo bench");
    let result = util::run(&mut cmd);
    session.stop();
    result
}

/// `cargo xtask bench --monitor`: the monitor's history bench. It needs no server (SQLite
/// in a temporary directory, the memory broker); sizes come from `QUEUE_MONITOR_BENCH_*`.
pub fn monitor(extra: &[String]) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["bench", "--bench", "history", "-p", "queue-monitor"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    util::header("cargo bench (queue-monitor history)");
    util::run(&mut cmd)
}
