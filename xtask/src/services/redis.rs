//! Redis: a throwaway instance on 6379 (no persistence) and an append-only instance on 6380
//! with `appendfsync always`, so durability tests can kill and restart it without losing
//! acknowledged writes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Outcome, Status, live_pid, probe, start_logged, terminate, wait_until};
use crate::util::{self, Result, err};

/// One redis-server process of ours.
struct Instance {
    name: &'static str,
    port: u16,
    env_var: &'static str,
    /// Extra arguments: persistence settings.
    args: &'static [&'static str],
}

const INSTANCES: &[Instance] = &[
    Instance {
        name: "redis",
        port: 6379,
        env_var: "QUEUE_TEST_REDIS_URL",
        args: &["--save", "", "--appendonly", "no"],
    },
    Instance {
        name: "redis-aof",
        port: 6380,
        env_var: "QUEUE_TEST_REDIS_AOF_URL",
        args: &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
    },
];

impl Instance {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `target/services/redis/<port>/`: pid file, log and (for AOF) the data directory.
    fn dir(&self, base: &Path) -> std::path::PathBuf {
        base.join(self.port.to_string())
    }
}

pub fn env_vars() -> Vec<(&'static str, String)> {
    INSTANCES.iter().map(|i| (i.env_var, i.url())).collect()
}

/// A RESP PING answered with PONG: the server is up and needs no password.
fn pong(port: u16) -> bool {
    probe(port, b"PING\r\n").is_some_and(|a| a.starts_with(b"+PONG"))
}

pub fn up(base: &Path) -> Result<Outcome> {
    // Refuse before starting anything, so a failure leaves no half-started pair behind.
    for instance in INSTANCES {
        if !pong(instance.port) && probe(instance.port, b"PING\r\n").is_some() {
            return err(format!(
                "something that is not a password-less Redis holds port {}",
                instance.port
            ));
        }
    }
    let mut outcome = Outcome::Reused;
    for instance in INSTANCES {
        if pong(instance.port) {
            println!(
                "{} already answers on port {}",
                instance.name, instance.port
            );
            continue;
        }
        if util::which("redis-server").is_none() {
            super::apt_install(&["redis-server", "redis-tools"])?;
        }
        start(instance, &instance.dir(base))?;
        outcome = Outcome::Started;
    }
    Ok(outcome)
}

fn start(instance: &Instance, dir: &Path) -> Result<()> {
    super::make_dir(dir, None)?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &instance.port.to_string(), "--bind", "127.0.0.1"])
        .args(["--daemonize", "yes"])
        .args(instance.args)
        .arg("--dir")
        .arg(dir)
        .arg("--pidfile")
        .arg(dir.join("redis.pid"))
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    start_logged(&mut cmd, &dir.join("start.log"))?;
    wait_until(instance.name, Duration::from_secs(10), || {
        pong(instance.port)
    })
    .map_err(|e| {
        format!(
            "{e}; {}:\n{}",
            dir.join("redis.log").display(),
            log_tail(dir)
        )
    })?;
    Ok(())
}

fn log_tail(dir: &Path) -> String {
    util::tail(&dir.join("redis.log"), 20)
}

pub fn down(base: &Path) -> Result<()> {
    for instance in INSTANCES {
        let pid_file = instance.dir(base).join("redis.pid");
        match live_pid(&pid_file, "redis-server") {
            Some(pid) => {
                println!("stopping {} (pid {pid})", instance.name);
                terminate(pid, "redis-server", Duration::from_secs(10))?;
                let _ = std::fs::remove_file(&pid_file);
            }
            None if pong(instance.port) => println!(
                "{} on port {} was not started by xtask; leaving it",
                instance.name, instance.port
            ),
            None => println!("{} is not running", instance.name),
        }
    }
    Ok(())
}

pub(super) fn status(base: &Path) -> Vec<Status> {
    INSTANCES
        .iter()
        .map(|i| Status {
            name: i.name,
            port: i.port,
            answers: pong(i.port),
            ours: live_pid(&i.dir(base).join("redis.pid"), "redis-server"),
            url: i.url(),
        })
        .collect()
}
