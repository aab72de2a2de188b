//! Private server instances for the fault suite (`cargo xtask chaos`): each on a free port
//! of its own, with its data under a directory of the run, so that it can be killed and
//! restarted without touching the shared servers that the other tests use. Stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{make_dir, probe, wait_until};
use crate::util::{self, Result, err};

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A redis-server of our own. With `aof`, append-only with `appendfsync always`: a write
/// Redis acknowledged is on disk, so a SIGKILL loses none of them.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(dir: &Path, aof: bool) -> Result<Self> {
        if util::which("redis-server").is_none() {
            super::apt_install(&["redis-server", "redis-tools"])?;
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut redis = Self {
            port: free_port()?,
            dir: dir.to_path_buf(),
            aof,
            child: None,
        };
        redis.boot()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>/0`, with `query` when not empty.
    pub fn url(&self, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("redis://127.0.0.1:{}/0{query}", self.port)
    }

    /// Starts the server (again, on the same port and data) and waits for its PONG.
    pub fn boot(&mut self) -> Result<()> {
        let persistence: &[&str] = if self.aof {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        // Loading a large AOF takes a while; PING answers LOADING until it is done.
        wait_until(
            &format!("redis-server on port {}", self.port),
            Duration::from_secs(60),
            || self.pong(),
        )
    }

    /// SIGKILL, as a crashed host would: no shutdown, no final write.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pong(&self) -> bool {
        probe(self.port, b"PING\r\n").is_some_and(|a| a.starts_with(b"+PONG"))
    }

    /// One command whose reply is an integer (`LLEN`, `HLEN`), or `None`.
    pub fn integer(&self, command: &[&str]) -> Option<i64> {
        let mut request = format!("*{}\r\n", command.len());
        for part in command {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = [0u8; 64];
        let read = stream.read(&mut reply).ok()?;
        let text = String::from_utf8_lossy(&reply[..read]);
        text.strip_prefix(':')?.trim().parse().ok()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RabbitMQ node of our own (`chaos_<port>@localhost`), on free AMQP and distribution
/// ports, bound to loopback, its data under the run's directory (owned by `rabbitmq`: the
/// Debian scripts switch to that user).
pub struct PrivateRabbit {
    pub port: u16,
    dist_port: u16,
    node: String,
    dir: PathBuf,
}

impl PrivateRabbit {
    pub fn start(dir: &Path) -> Result<Self> {
        if util::which("rabbitmq-server").is_none() {
            super::apt_install(&["rabbitmq-server"])?;
        }
        let _ = std::fs::remove_dir_all(dir);
        let port = free_port()?;
        let rabbit = Self {
            port,
            dist_port: free_port()?,
            node: format!("chaos_{port}@localhost"),
            dir: dir.to_path_buf(),
        };
        make_dir(&dir.join("log"), Some("rabbitmq"))?;
        make_dir(&dir.join("mnesia"), Some("rabbitmq"))?;
        make_dir(dir, Some("rabbitmq"))?;
        rabbit.boot()?;
        Ok(rabbit)
    }

    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(util::which(name).unwrap_or_else(|| name.into()));
        cmd.current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_PID_FILE", self.dir.join("rabbitmq.pid"));
        cmd
    }

    /// `rabbitmqctl -n <node> <args>`: its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        util::output(
            self.script("rabbitmqctl")
                .args(["-n", &self.node])
                .args(args),
        )
    }

    /// Starts the node and waits until it accepts AMQP connections.
    pub fn boot(&self) -> Result<()> {
        let status = self
            .script("rabbitmq-server")
            .arg("-detached")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return err(format!("rabbitmq-server -detached failed ({status})"));
        }
        // `await_startup` fails at once until the node registered with epmd: retry it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.ctl(&["await_startup", "--timeout", "60"]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return err(format!("private RabbitMQ node did not start: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        wait_until("private rabbitmq port", Duration::from_secs(20), || {
            probe(self.port, b"AMQP\x00\x00\x09\x01").is_some_and(|a| a.first() == Some(&1))
        })
    }

    /// Stops the node gracefully (`rabbitmqctl stop`, which returns once it has halted).
    pub fn stop(&self) -> Result<()> {
        self.ctl(&["stop"]).map(drop)
    }

    /// `amqp://` URL of the node, with `query` when not empty.
    pub fn url(&self, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("amqp://guest:guest@127.0.0.1:{}/%2f{query}", self.port)
    }

    /// `(ready, unacked)` messages of `queue`, from `rabbitmqctl list_queues`.
    pub fn queue_counts(&self, queue: &str) -> Option<(u64, u64)> {
        let out = self
            .ctl(&[
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .ok()?;
        out.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == queue).then_some(())?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A PostgreSQL cluster of our own: initdb'd under the run's directory, trust auth on
/// loopback, run as `postgres` when we are root (it refuses to run as root).
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

impl PrivatePostgres {
    pub fn start(dir: &Path) -> Result<Self> {
        if super::postgres::bin_dir().is_none() {
            super::apt_install(&["postgresql"])?;
        }
        let bin = super::postgres::bin_dir().ok_or("no PostgreSQL binaries (initdb)")?;
        let _ = std::fs::remove_dir_all(dir);
        make_dir(dir, Some("postgres"))?;
        let cluster = Self {
            port: free_port()?,
            bin,
            dir: dir.to_path_buf(),
        };
        util::output(cluster.tool("initdb").arg("-D").arg(cluster.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        cluster.boot()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = if util::is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            cmd
        } else {
            Command::new(self.bin.join(name))
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    pub fn boot(&self) -> Result<()> {
        // Results must survive the server's crash: fsync stays on (the default).
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.display()
        );
        util::output(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-o", &options, "-l"])
                .arg(self.dir.join("postgres.log"))
                .args(["-w", "-t", "60", "start"]),
        )
        .map(drop)
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint, as on a crash
    /// (what was committed is replayed from the WAL at the next start).
    pub fn crash(&self) -> Result<()> {
        util::output(self.tool("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
        .map(drop)
    }

    pub fn url(&self, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}
