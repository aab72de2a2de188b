//! The real servers the integration tests and benchmarks talk to: Redis, RabbitMQ and
//! PostgreSQL, installed from Debian packages when missing and run without systemd, on
//! loopback, with pid files and logs under `target/services/<name>/` (see
//! /work/shared/services.md for what is known to work on our machines).
//!
//! Every server answers a native protocol probe (Redis PING, the AMQP header, PostgreSQL's
//! SSLRequest), so `up` can reuse a server that already answers and `status` needs no client
//! tools. `down` stops only what xtask started itself.

pub mod chromium;
pub mod nginx;
mod postgres;
mod private;
mod rabbitmq;
mod rabbitmq_cluster;
mod redis;
mod redis_sentinel;

pub use private::{PrivatePostgres, PrivateRabbit, PrivateRedis};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{self, Result, err};

/// A server the test suites or benchmarks may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Redis on 6379, plus an append-only instance on 6380 for durability tests.
    Redis,
    /// RabbitMQ on 5672, node rabbit@localhost.
    Rabbitmq,
    /// PostgreSQL on 5432, our own cluster, database `queue_test`.
    Postgres,
    /// Redis master 6390, replica 6391, sentinels 26390..26392 (not in `ALL`).
    RedisSentinel,
    /// Three clustered RabbitMQ nodes rmq1..3@localhost on 5681..5683 (not in `ALL`).
    RabbitmqCluster,
}

/// Every service, in the order `all` brings them up.
pub const ALL: &[Service] = &[Service::Redis, Service::Rabbitmq, Service::Postgres];

/// Services only brought up on request, but shown by `status`.
const OPTIONAL: &[Service] = &[Service::RabbitmqCluster, Service::RedisSentinel];

/// Whether `up` found the server already answering or had to start it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reused,
    Started,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::Rabbitmq => "rabbitmq",
            Service::Postgres => "postgres",
            Service::RedisSentinel => "redis-sentinel",
            Service::RabbitmqCluster => "rabbitmq-cluster",
        }
    }

    /// The environment variables the test processes read to find this service, with URLs.
    pub fn env_vars(self) -> Vec<(&'static str, String)> {
        match self {
            Service::Redis => redis::env_vars(),
            Service::Rabbitmq => rabbitmq::env_vars(),
            Service::Postgres => postgres::env_vars(),
            Service::RedisSentinel => redis_sentinel::env_vars(),
            Service::RabbitmqCluster => rabbitmq_cluster::env_vars(),
        }
    }

    /// Installs (if needed) and starts the service, or reuses one that already answers.
    pub fn up(self) -> Result<Outcome> {
        let started = Instant::now();
        let outcome = match self {
            Service::Redis => redis::up(&self.dir()),
            Service::Rabbitmq => rabbitmq::up(&self.dir()),
            Service::Postgres => postgres::up(&self.dir()),
            Service::RedisSentinel => redis_sentinel::up(&self.dir()),
            Service::RabbitmqCluster => rabbitmq_cluster::up(&self.dir()),
        }?;
        println!(
            "{}: {} in {:.1}s",
            self.name(),
            match outcome {
                Outcome::Reused => "already running, reused",
                Outcome::Started => "started",
            },
            started.elapsed().as_secs_f64()
        );
        Ok(outcome)
    }

    /// Stops the service if xtask started it; leaves anything else alone.
    pub fn down(self) -> Result<()> {
        match self {
            Service::Redis => redis::down(&self.dir()),
            Service::Rabbitmq => rabbitmq::down(&self.dir()),
            Service::Postgres => postgres::down(&self.dir()),
            Service::RedisSentinel => redis_sentinel::down(&self.dir()),
            Service::RabbitmqCluster => rabbitmq_cluster::down(&self.dir()),
        }
    }

    fn status(self) -> Vec<Status> {
        match self {
            Service::Redis => redis::status(&self.dir()),
            Service::Rabbitmq => vec![rabbitmq::status(&self.dir())],
            Service::Postgres => vec![postgres::status(&self.dir())],
            Service::RedisSentinel => redis_sentinel::status(&self.dir()),
            Service::RabbitmqCluster => rabbitmq_cluster::status(&self.dir()),
        }
    }

    /// `target/services/<name>/`: pid files, logs and data of the servers we start.
    fn dir(self) -> PathBuf {
        util::target_dir().join("services").join(self.name())
    }
}

/// One line of `services status`.
struct Status {
    name: &'static str,
    port: u16,
    answers: bool,
    /// Pid of the server xtask started, if it still runs.
    ours: Option<u32>,
    url: String,
}

/// `services up`: brings the services up and prints their URLs.
pub fn up_cmd(services: &[Service]) -> Result<()> {
    for &service in services {
        util::header(&format!("services up {}", service.name()));
        service.up()?;
    }
    print_urls(services);
    Ok(())
}

/// `services down`: stops what xtask started, in reverse order.
pub fn down_cmd(services: &[Service]) -> Result<()> {
    for &service in services.iter().rev() {
        util::header(&format!("services down {}", service.name()));
        service.down()?;
    }
    Ok(())
}

/// `services status`: what answers where, and whether xtask started it.
pub fn status_cmd() -> Result<()> {
    for s in ALL.iter().chain(OPTIONAL).flat_map(|s| s.status()) {
        let state = match (s.answers, s.ours) {
            (true, Some(pid)) => format!("up (started by xtask, pid {pid})"),
            (true, None) => "up (not started by xtask)".to_string(),
            (false, Some(pid)) => format!("not answering (xtask's pid {pid} still runs)"),
            (false, None) => "down".to_string(),
        };
        println!(
            "{:<10} 127.0.0.1:{:<5} {:<38} {}",
            s.name, s.port, state, s.url
        );
    }
    Ok(())
}

fn print_urls(services: &[Service]) {
    util::header("service URLs");
    for (var, url) in services.iter().flat_map(|s| s.env_vars()) {
        println!("{var}={url}");
    }
}

/// The services a test run or benchmark needs, brought up for its duration.
pub struct Session {
    /// Variables to export to the processes that use the services.
    pub env: Vec<(&'static str, String)>,
    /// What this session started itself, to stop afterwards.
    started: Vec<Service>,
}

impl Session {
    /// Brings up `services`. With `strict` (CI) a service that cannot start is an error;
    /// otherwise it is a warning and its variables stay unset, so its tests skip.
    pub fn start(services: &[Service], strict: bool) -> Result<Session> {
        let mut session = Session {
            env: Vec::new(),
            started: Vec::new(),
        };
        if services.is_empty() {
            println!("no services needed");
        }
        for &service in services {
            match service.up() {
                Ok(outcome) => {
                    session.env.extend(service.env_vars());
                    if outcome == Outcome::Started {
                        session.started.push(service);
                    }
                }
                Err(e) if strict => {
                    session.stop();
                    return err(format!("cannot start {}: {e}", service.name()));
                }
                Err(e) => eprintln!(
                    "warning: cannot start {}: {e}\nwarning: tests that need it will skip",
                    service.name()
                ),
            }
        }
        for (var, url) in &session.env {
            println!("{var}={url}");
        }
        Ok(session)
    }

    /// Stops what this session started; failures are warnings, the run's result stands.
    pub fn stop(&mut self) {
        if !self.started.is_empty() {
            util::header("stopping the services this run started");
        }
        for service in self.started.drain(..).rev() {
            if let Err(e) = service.down() {
                eprintln!("warning: cannot stop {}: {e}", service.name());
            }
        }
    }
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs Debian packages, running `apt-get update` once per xtask run first.
fn apt_install(packages: &[&str]) -> Result<()> {
    if !util::is_root() {
        return err(format!(
            "missing packages and not root: run `sudo apt-get install -y {}`",
            packages.join(" ")
        ));
    }
    let started = Instant::now();
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        util::run(apt().arg("update"))?;
    }
    util::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages),
    )?;
    println!(
        "installed {} in {:.0}s",
        packages.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Creates a service directory, owned by `user` when we are root and the server runs as
/// that user (PostgreSQL refuses to run as root; RabbitMQ's wrapper switches users).
fn make_dir(dir: &Path, user: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let (Some(user), true) = (user, util::is_root()) {
        util::output(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:{user}"))
                .arg(dir),
        )?;
    }
    Ok(())
}

/// Polls `ready` every 200 ms until it holds or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return err(format!("{what} did not become ready within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Connects to a loopback port, sends `hello` and returns the first bytes of the answer.
fn probe(port: u16, hello: &[u8]) -> Option<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(hello).ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    (n > 0).then(|| buf[..n].to_vec())
}

/// The pid in a pid file, if that process still runs and its command line mentions
/// `expect` (guards against a recycled pid).
fn live_pid(pid_file: &Path, expect: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    is_alive(pid, expect).then_some(pid)
}

fn is_alive(pid: u32, expect: &str) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    // A zombie (state Z) is gone for our purposes; it only waits for its parent to reap it.
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    !stat.is_empty() && !zombie && String::from_utf8_lossy(&cmdline).contains(expect)
}

/// Sends SIGTERM and waits up to `timeout` for the process to exit, then SIGKILL.
fn terminate(pid: u32, expect: &str, timeout: Duration) -> Result<()> {
    util::output(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    if wait_until(&format!("exit of pid {pid}"), timeout, || {
        !is_alive(pid, expect)
    })
    .is_err()
    {
        eprintln!("warning: pid {pid} ignored SIGTERM for {timeout:?}; sending SIGKILL");
        util::output(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        wait_until(
            &format!("exit of pid {pid}"),
            Duration::from_secs(5),
            || !is_alive(pid, expect),
        )?;
    }
    Ok(())
}

/// Spawns a start command with its output going to `log` rather than a pipe: a daemon that
/// inherits a pipe would keep it open and make a reader wait forever.
fn start_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    eprintln!("$ {}", util::describe(cmd));
    let file = std::fs::File::create(log)?;
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", util::describe(cmd)))?;
    if !status.success() {
        return err(format!(
            "`{}` failed ({status}); {}:\n{}",
            util::describe(cmd),
            log.display(),
            util::tail(log, 20)
        ));
    }
    Ok(())
}
