//! A three-node RabbitMQ cluster on loopback, for tests of failover across the broker's own
//! clustering: nodes `rmq1@localhost`, `rmq2@localhost` and `rmq3@localhost` on AMQP ports
//! 5681–5683 and distribution ports 25681–25683, each with its data, logs and pid file under
//! `target/services/rabbitmq-cluster/rmqN/` (owned by the `rabbitmq` user, whose Erlang
//! cookie they all share), no plugins. Nodes 2 and 3 join node 1 (`stop_app`,
//! `join_cluster rmq1@localhost`, `start_app`) on their first start; later starts find
//! the membership in their data.
//!
//! `up` starts whichever nodes do not answer, so a node killed by a test comes back with
//! ```text
//! kill -9 $(cat target/services/rabbitmq-cluster/rmq2/rabbitmq.pid)
//! cargo xtask services up rabbitmq-cluster
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::rabbitmq::{USER, answers_on, loopback_script, stop_idle_epmd};
use super::{Outcome, Status, live_pid, start_logged, terminate, wait_until};
use crate::util::{self, Result, err};

/// Start took about 4 s per node on our machines; allow for a slow first boot.
const STARTUP: Duration = Duration::from_secs(120);

/// Node `rmqN@localhost`, N from 1 to 3.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Node(u16);

const NODES: [Node; 3] = [Node(1), Node(2), Node(3)];
/// The node the others join.
const FIRST: Node = Node(1);

impl Node {
    fn short(self) -> &'static str {
        ["rmq1", "rmq2", "rmq3"][usize::from(self.0 - 1)]
    }

    fn name(self) -> String {
        format!("{}@localhost", self.short())
    }

    fn port(self) -> u16 {
        5680 + self.0
    }

    /// Of its own, so neither the single node's 25672 nor each other's is in the way.
    fn dist_port(self) -> u16 {
        25680 + self.0
    }

    fn url(self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
    }

    fn dir(self, root: &Path) -> PathBuf {
        root.join(self.short())
    }

    fn answers(self) -> bool {
        answers_on(self.port())
    }

    fn pid(self, root: &Path) -> Option<u32> {
        live_pid(&self.dir(root).join("rabbitmq.pid"), "beam")
    }

    fn script(self, name: &str, root: &Path) -> Command {
        let dir = self.dir(root);
        let mut cmd = loopback_script(name, &dir, &self.name(), self.port());
        cmd.env("RABBITMQ_DIST_PORT", self.dist_port().to_string())
            // Its own (empty) plugin list: a management plugin enabled system-wide would
            // have every node bind the same HTTP port.
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"));
        cmd
    }

    /// `rabbitmqctl -n <node> <args>`: its stdout.
    fn ctl(self, root: &Path, args: &[&str]) -> Result<String> {
        util::output(
            self.script("rabbitmqctl", root)
                .args(["-n", &self.name()])
                .args(args),
        )
    }

    fn start(self, root: &Path) -> Result<()> {
        let dir = self.dir(root);
        super::make_dir(&dir.join("log"), None)?;
        super::make_dir(&dir.join("mnesia"), None)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let _ = std::fs::remove_file(dir.join("rabbitmq.pid"));
        super::make_dir(&dir, Some(USER))?;
        start_logged(
            self.script("rabbitmq-server", root).arg("-detached"),
            &dir.join("start.log"),
        )
    }

    /// `rabbitmqctl await_startup` fails at once until the node has registered with epmd,
    /// so retry it until the deadline, each attempt bounded too.
    fn await_startup(self, root: &Path) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.ctl(root, &["await_startup", "--timeout", "60"]) {
                Ok(_) => {
                    let what = format!("{} port {}", self.name(), self.port());
                    return wait_until(&what, Duration::from_secs(10), || self.answers());
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let dir = self.dir(root);
        err(format!(
            "{} did not start within {STARTUP:?}: {last}\nlogs in {}\n{}",
            self.name(),
            dir.join("log").display(),
            util::tail(&dir.join("start.log"), 20)
        ))
    }

    /// Stops the node if xtask started it (`rabbitmqctl stop` returns once it halts).
    fn stop(self, root: &Path) -> Result<()> {
        let Some(pid) = self.pid(root) else {
            if self.answers() {
                println!(
                    "{} on port {} was not started by xtask; leaving it",
                    self.name(),
                    self.port()
                );
            } else {
                println!("{} is not running", self.name());
            }
            return Ok(());
        };
        println!("stopping {} (pid {pid})", self.name());
        if let Err(e) = self.ctl(root, &["stop"]) {
            eprintln!("warning: {e}; terminating pid {pid}");
            terminate(pid, "beam", Duration::from_secs(30))?;
        }
        wait_until(
            &format!("{} exit", self.name()),
            Duration::from_secs(30),
            || !super::is_alive(pid, "beam"),
        )?;
        let _ = std::fs::remove_file(self.dir(root).join("rabbitmq.pid"));
        Ok(())
    }
}

/// `QUEUE_TEST_AMQP_CLUSTER_URL`: the three nodes in kombu's failover syntax (`;`).
fn url() -> String {
    NODES.map(Node::url).join(";")
}

pub fn env_vars() -> Vec<(&'static str, String)> {
    vec![("QUEUE_TEST_AMQP_CLUSTER_URL", url())]
}

/// The nodes `FIRST` sees running in its cluster, from `cluster_status --formatter json`
/// (`{"running_nodes":["rmq1@localhost",…],…}`); empty when it cannot tell.
fn running_nodes(root: &Path) -> Vec<Node> {
    let Ok(json) = FIRST.ctl(root, &["cluster_status", "--formatter", "json"]) else {
        return Vec::new();
    };
    let running = json
        .split_once("\"running_nodes\":[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(list, _)| list);
    NODES
        .into_iter()
        .filter(|n| running.contains(&format!("\"{}\"", n.name())))
        .collect()
}

fn clustered(root: &Path) -> bool {
    running_nodes(root).len() == NODES.len()
}

pub fn up(root: &Path) -> Result<Outcome> {
    if NODES.iter().all(|n| n.answers()) && clustered(root) {
        println!("rabbitmq-cluster: all three nodes answer and are clustered");
        return Ok(Outcome::Reused);
    }
    if util::which("rabbitmq-server").is_none() {
        super::apt_install(&["rabbitmq-server"])?;
    }
    super::make_dir(root, Some(USER))?;
    // Start every missing node before waiting for any: a node restarted from its data
    // waits for its peers before it finishes booting.
    let mut waiting = Vec::new();
    for node in NODES {
        if node.answers() {
            continue;
        }
        match node.pid(root) {
            Some(pid) => println!("{} (pid {pid}) runs but does not answer yet", node.name()),
            None => node.start(root)?,
        }
        waiting.push(node);
    }
    for node in &waiting {
        node.await_startup(root)?;
    }
    join(root)?;
    wait_until(
        "rabbitmq-cluster membership",
        Duration::from_secs(60),
        || clustered(root),
    )?;
    Ok(Outcome::Started)
}

/// Joins nodes 2 and 3 to node 1 where it does not already see them running (a fresh node;
/// one restarted from its data rejoins by itself).
fn join(root: &Path) -> Result<()> {
    let running = running_nodes(root);
    if !running.contains(&FIRST) {
        return err(format!("{} does not answer cluster_status", FIRST.name()));
    }
    for node in NODES.into_iter().filter(|n| !running.contains(n)) {
        println!("{} joins {}", node.name(), FIRST.name());
        for args in [
            &["stop_app"][..],
            &["join_cluster", &FIRST.name()],
            &["start_app"],
        ] {
            node.ctl(root, args).map_err(|e| {
                format!(
                    "{e}\n(if the nodes' data is stale, `cargo xtask services down \
                     rabbitmq-cluster` and remove {})",
                    root.display()
                )
            })?;
        }
    }
    Ok(())
}

/// Stops the nodes xtask started, node 1 last (so it is the one that has the latest view).
pub fn down(root: &Path) -> Result<()> {
    for node in NODES.into_iter().rev() {
        node.stop(root)?;
    }
    stop_idle_epmd();
    Ok(())
}

pub(super) fn status(root: &Path) -> Vec<Status> {
    NODES
        .into_iter()
        .map(|node| Status {
            name: node.short(),
            port: node.port(),
            answers: node.answers(),
            ours: node.pid(root),
            url: node.url(),
        })
        .collect()
}
