//! RabbitMQ: node `rabbit@localhost` bound to loopback (node, epmd and distribution), so
//! nothing depends on the host name, with its data and logs under `target/services/rabbitmq`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Outcome, Status, live_pid, probe, start_logged, terminate, wait_until};
use crate::util::{self, Result, err};

const PORT: u16 = 5672;
const NODE: &str = "rabbit@localhost";
/// The Debian wrapper scripts switch to this user when run as root.
pub(super) const USER: &str = "rabbitmq";
/// Start took about 4 s on our machines; allow for a slow first boot.
const STARTUP: Duration = Duration::from_secs(90);

fn url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{PORT}/%2f")
}

pub fn env_vars() -> Vec<(&'static str, String)> {
    vec![("QUEUE_TEST_AMQP_URL", url())]
}

/// The AMQP 0-9-1 protocol header answered by a method frame (type 1, connection.start).
fn answers() -> bool {
    answers_on(PORT)
}

/// Whether an AMQP 0-9-1 server answers on loopback port `port`.
pub(super) fn answers_on(port: u16) -> bool {
    probe(port, b"AMQP\x00\x00\x09\x01").is_some_and(|a| a.first() == Some(&1))
}

/// A RabbitMQ script with the environment that pins the node to loopback. The wrapper's
/// `su` keeps these variables, so they reach the server and rabbitmqctl alike.
fn script(name: &str, dir: &Path) -> Command {
    loopback_script(name, dir, NODE, PORT)
}

/// `name` (`rabbitmq-server`, `rabbitmqctl`) for node `node` on AMQP port `port`, bound to
/// loopback, with its logs, data and pid file under `dir`. The cluster's nodes use it too.
pub(super) fn loopback_script(name: &str, dir: &Path, node: &str, port: u16) -> Command {
    let mut cmd = Command::new(util::which(name).unwrap_or_else(|| name.into()));
    cmd.current_dir(dir)
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"));
    cmd
}

fn ctl(dir: &Path) -> Command {
    let mut cmd = script("rabbitmqctl", dir);
    cmd.args(["-n", NODE]);
    cmd
}

pub fn up(dir: &Path) -> Result<Outcome> {
    if answers() {
        println!("rabbitmq already answers on port {PORT}");
        return Ok(Outcome::Reused);
    }
    if util::which("rabbitmq-server").is_none() {
        super::apt_install(&["rabbitmq-server"])?;
    }
    super::make_dir(&dir.join("log"), Some(USER))?;
    super::make_dir(&dir.join("mnesia"), Some(USER))?;
    super::make_dir(dir, Some(USER))?;
    start_logged(
        script("rabbitmq-server", dir).arg("-detached"),
        &dir.join("start.log"),
    )?;
    await_startup(dir)?;
    Ok(Outcome::Started)
}

/// `rabbitmqctl await_startup` fails at once until the node has registered with epmd, so
/// retry it until the deadline, each attempt bounded too.
fn await_startup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + STARTUP;
    let mut last = String::new();
    while Instant::now() < deadline {
        match util::output(ctl(dir).args(["await_startup", "--timeout", "30"])) {
            Ok(_) => return wait_until("rabbitmq port", Duration::from_secs(10), answers),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    err(format!(
        "rabbitmq did not start within {STARTUP:?}: {last}\nlogs in {}\n{}",
        dir.join("log").display(),
        util::tail(&dir.join("start.log"), 20)
    ))
}

pub fn down(dir: &Path) -> Result<()> {
    let pid_file = dir.join("rabbitmq.pid");
    let Some(pid) = live_pid(&pid_file, "beam") else {
        if answers() {
            println!("rabbitmq on port {PORT} was not started by xtask; leaving it");
        } else {
            println!("rabbitmq is not running");
        }
        return Ok(());
    };
    println!("stopping rabbitmq (pid {pid})");
    if let Err(e) = util::run(ctl(dir).arg("stop")) {
        eprintln!("warning: {e}; terminating pid {pid}");
        terminate(pid, "beam", Duration::from_secs(30))?;
    }
    // The node removes its pid file as it halts; wait for the process itself.
    wait_until("rabbitmq exit", Duration::from_secs(30), || {
        !super::is_alive(pid, "beam")
    })?;
    let _ = std::fs::remove_file(&pid_file);
    stop_idle_epmd();
    Ok(())
}

/// The node started epmd; stop it too once no Erlang node is registered any more.
pub(super) fn stop_idle_epmd() {
    let Some(epmd) = util::which("epmd") else {
        return;
    };
    let mut names = Command::new(&epmd);
    names.arg("-names").env("ERL_EPMD_ADDRESS", "127.0.0.1");
    let idle = util::output(&mut names).is_ok_and(|out| !out.contains("name "));
    if idle {
        let _ = util::output(Command::new(&epmd).arg("-kill"));
    }
}

pub(super) fn status(dir: &Path) -> Status {
    Status {
        name: "rabbitmq",
        port: PORT,
        answers: answers(),
        ours: live_pid(&dir.join("rabbitmq.pid"), "beam"),
        url: url(),
    }
}
