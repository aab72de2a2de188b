//! Redis behind Sentinel: a master on 6390, a replica on 6391 and three sentinels on
//! 26390..26392 watching them as `queue-master` (quorum 2, down after 2 s), all on loopback
//! without persistence, from Debian's `redis-server` and `redis-sentinel`. Pid files, logs
//! and the sentinels' (rewritten) configuration under `target/services/redis-sentinel/<port>/`.
//!
//! A failover test may have moved the master: nodes that do not answer are started as
//! replicas of the master the sentinels name (6390 when none answers), and sentinels that do
//! not answer are started watching that master.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Outcome, Status, live_pid, start_logged, terminate, wait_until};
use crate::util::{self, Result, err};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "queue-master";
const DATA_PORTS: [u16; 2] = [6390, 6391];
const SENTINEL_PORTS: [u16; 3] = [26390, 26391, 26392];
const QUORUM: u8 = 2;
const DOWN_AFTER_MS: u32 = 2000;
const FAILOVER_TIMEOUT_MS: u32 = 10_000;

pub fn url() -> String {
    let list: Vec<String> = SENTINEL_PORTS
        .iter()
        .map(|port| format!("sentinel://127.0.0.1:{port}"))
        .collect();
    format!("{}/0?master_name={MASTER_NAME}", list.join(";"))
}

pub fn env_vars() -> Vec<(&'static str, String)> {
    vec![("QUEUE_TEST_REDIS_SENTINEL_URL", url())]
}

/// Sends one inline command and returns the answer as text (one read, up to 16 KiB).
fn command(port: u16, line: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn pong(port: u16) -> bool {
    command(port, "PING").is_some_and(|answer| answer.starts_with("+PONG"))
}

/// The master's port as an answering sentinel names it.
fn master_port() -> Option<u16> {
    SENTINEL_PORTS.iter().find_map(|&port| {
        let answer = command(
            port,
            &format!("SENTINEL get-master-addr-by-name {MASTER_NAME}"),
        )?;
        // *2\r\n$9\r\n127.0.0.1\r\n$4\r\n6390\r\n
        answer.split("\r\n").nth(4)?.parse().ok()
    })
}

/// The master has a replica online and the sentinels can authorize a failover.
fn healthy() -> bool {
    let Some(master) = master_port() else {
        return false;
    };
    let replicated = command(master, "INFO replication").is_some_and(|info| {
        info.contains("role:master") && info.lines().any(|l| l.contains("state=online"))
    });
    let quorum = SENTINEL_PORTS.iter().all(|&port| {
        command(port, &format!("SENTINEL ckquorum {MASTER_NAME}"))
            .is_some_and(|answer| answer.starts_with("+OK 3 usable"))
    });
    replicated && quorum
}

fn node_dir(base: &Path, port: u16) -> PathBuf {
    base.join(port.to_string())
}

fn pid_file(base: &Path, port: u16) -> PathBuf {
    node_dir(base, port).join("redis.pid")
}

/// What the pid file of a node's process says its command line holds.
fn binary(port: u16) -> &'static str {
    if SENTINEL_PORTS.contains(&port) {
        "sentinel"
    } else {
        "redis-server"
    }
}

pub fn up(base: &Path) -> Result<Outcome> {
    let all = DATA_PORTS.iter().chain(&SENTINEL_PORTS).copied();
    for port in all.clone() {
        if !pong(port) && command(port, "PING").is_some() {
            return err(format!(
                "something that is not a password-less Redis holds port {port}"
            ));
        }
    }
    if all.clone().all(pong) {
        println!("redis-sentinel: all five nodes already answer");
        wait_until("the Sentinel topology", Duration::from_secs(30), healthy)?;
        return Ok(Outcome::Reused);
    }
    if util::which("redis-server").is_none() {
        super::apt_install(&["redis-server", "redis-tools"])?;
    }
    if util::which("redis-sentinel").is_none() {
        super::apt_install(&["redis-sentinel"])?;
    }
    let master = master_port().unwrap_or(DATA_PORTS[0]);
    for port in DATA_PORTS {
        if pong(port) {
            continue;
        }
        let dir = node_dir(base, port);
        super::make_dir(&dir, None)?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if port != master {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        start_logged(&mut cmd, &dir.join("start.log"))?;
        wait_until(&format!("redis on {port}"), Duration::from_secs(10), || {
            pong(port)
        })
        .map_err(|e| format!("{e}; {}", util::tail(&dir.join("redis.log"), 20)))?;
    }
    for port in SENTINEL_PORTS {
        if pong(port) {
            continue;
        }
        let dir = node_dir(base, port);
        super::make_dir(&dir, None)?;
        // Sentinel rewrites its configuration (known replicas and sentinels, epochs): a
        // fresh one each start, watching the current master.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\n\
                 pidfile {pid}\nlogfile {log}\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {QUORUM}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                pid = dir.join("redis.pid").display(),
                log = dir.join("sentinel.log").display(),
                dir = dir.display(),
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new("redis-sentinel");
        cmd.arg(&conf);
        start_logged(&mut cmd, &dir.join("start.log"))?;
        wait_until(
            &format!("sentinel on {port}"),
            Duration::from_secs(10),
            || pong(port),
        )
        .map_err(|e| format!("{e}; {}", util::tail(&dir.join("sentinel.log"), 20)))?;
    }
    // Sentinels find each other through hello messages every 2 s.
    wait_until("the Sentinel topology", Duration::from_secs(30), healthy)?;
    Ok(Outcome::Started)
}

pub fn down(base: &Path) -> Result<()> {
    // Sentinels first, so that stopping the master starts no failover.
    for port in SENTINEL_PORTS.iter().chain(&DATA_PORTS).copied() {
        let pid_file = pid_file(base, port);
        match live_pid(&pid_file, binary(port)) {
            Some(pid) => {
                println!("stopping redis-sentinel node {port} (pid {pid})");
                terminate(pid, binary(port), Duration::from_secs(10))?;
                let _ = std::fs::remove_file(&pid_file);
            }
            None if pong(port) => {
                println!("port {port} was not started by xtask; leaving it")
            }
            None => println!("redis-sentinel node {port} is not running"),
        }
    }
    Ok(())
}

pub(super) fn status(base: &Path) -> Vec<Status> {
    let master = master_port();
    DATA_PORTS
        .iter()
        .chain(&SENTINEL_PORTS)
        .map(|&port| Status {
            name: if SENTINEL_PORTS.contains(&port) {
                "sentinel"
            } else if Some(port) == master {
                "s-master"
            } else {
                "s-replica"
            },
            port,
            answers: pong(port),
            ours: live_pid(&pid_file(base, port), binary(port)),
            url: if SENTINEL_PORTS.contains(&port) {
                url()
            } else {
                format!("redis://127.0.0.1:{port}/0")
            },
        })
        .collect()
}
