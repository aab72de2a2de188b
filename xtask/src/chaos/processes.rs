//! The real processes of the fault suite: private redis-server instances (killed and
//! restarted at will), worker processes of `examples/chaos.rs`, and the sink they write.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Result, err};

/// The fault suite's binary (built once per run by [`build`]).
pub fn binary() -> PathBuf {
    util::target_dir().join("debug/examples/chaos")
}

/// Builds `examples/chaos.rs` with the features the full test run uses, so its artifacts are
/// shared with the test build (debug profile: no second, optimised build of every crate).
pub fn build() -> Result<()> {
    util::run(util::cargo().args(["build", "--all-features", "--example", "chaos"]))
}

/// A redis-server of the suite's own: append-only with `appendfsync always`, so a kill -9
/// loses no acknowledged write; killed and restarted on the same port and data directory.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start(port: u16, dir: &Path) -> Result<Redis> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut redis = Redis {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        redis.restart()?;
        Ok(redis)
    }

    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) and waits until it answers PING.
    pub fn restart(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start redis-server: {error}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            if Instant::now() > deadline {
                return err(format!("redis-server on {} did not come up", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `kill -9`: the server dies mid-write, as a crashed host would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One RESP command, for counting (`LLEN`, `DBSIZE`): the integer reply.
    pub fn integer(&self, command: &[&str]) -> Option<i64> {
        let mut request = format!("*{}\r\n", command.len());
        for part in command {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        let reply = self.request(request.as_bytes())?;
        let text = String::from_utf8_lossy(&reply);
        text.strip_prefix(':')?.trim().parse().ok()
    }

    /// Sends raw RESP commands (the hostile messages), returns when all are answered.
    pub fn pipe(&self, commands: &[u8], count: usize) -> Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.write_all(commands)?;
        let mut replies = 0;
        let mut buffer = vec![0u8; 64 * 1024];
        while replies < count {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return err("redis closed the connection while taking the hostile messages");
            }
            replies += buffer[..read].iter().filter(|byte| **byte == b'\n').count();
        }
        Ok(())
    }

    fn answers(&self) -> bool {
        self.request(b"PING\r\n")
            .is_some_and(|reply| reply.starts_with(b"+PONG"))
    }

    fn request(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request).ok()?;
        let mut reply = vec![0u8; 512];
        let read = stream.read(&mut reply).ok()?;
        reply.truncate(read);
        Some(reply)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Worker processes writing to one sink file.
pub struct Workers {
    pub sink: PathBuf,
    broker: String,
    backend: Option<String>,
    concurrency: usize,
    pub children: Vec<Child>,
    pub crashed: usize,
}

impl Workers {
    pub fn new(sink: PathBuf, broker: String, backend: Option<String>, concurrency: usize) -> Self {
        let _ = std::fs::remove_file(&sink);
        Self {
            sink,
            broker,
            backend,
            concurrency,
            children: Vec::new(),
            crashed: 0,
        }
    }

    pub fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(binary());
        command
            .args(["worker", "--broker", &self.broker, "--sink"])
            .arg(&self.sink)
            .args(["--concurrency", &self.concurrency.to_string()])
            .stdout(Stdio::null());
        if let Some(backend) = &self.backend {
            command.args(["--backend", backend]);
        }
        self.children.push(command.spawn()?);
        Ok(())
    }

    /// `kill -9` of worker `index`, replaced by a new one.
    pub fn kill_and_replace(&mut self, index: usize) -> Result<()> {
        let mut child = self.children.remove(index % self.children.len());
        let _ = child.kill();
        let _ = child.wait();
        self.spawn()
    }

    /// Workers that exited by themselves (a crash): counted, and replaced.
    pub fn reap(&mut self) -> Result<()> {
        let mut index = 0;
        while index < self.children.len() {
            if self.children[index].try_wait()?.is_some() {
                let mut exited = self.children.remove(index);
                let _ = exited.wait();
                self.crashed += 1;
                self.spawn()?;
            } else {
                index += 1;
            }
        }
        Ok(())
    }

    /// Executions per id, from the sink.
    pub fn counts(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&self.sink) {
            for line in text.lines().filter(|line| !line.is_empty()) {
                *counts.entry(line.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits until `expected` distinct ids are in the sink; fails on a stall (no progress
    /// for `stall`), which is the suite's watchdog.
    pub fn wait_for(&mut self, expected: usize, stall: Duration) -> Result<()> {
        let mut last = 0;
        let mut progressed = Instant::now();
        loop {
            self.reap()?;
            let done = self.counts().len();
            if done >= expected {
                return Ok(());
            }
            if done > last {
                last = done;
                progressed = Instant::now();
            } else if progressed.elapsed() > stall {
                return err(format!(
                    "stalled: {done} of {expected} done, no progress for {stall:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the sink holds more distinct ids than `than`; returns how long it took.
    pub fn progress_after(&mut self, than: usize, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.counts().len() > than {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM to every worker (warm shutdown), then waits for them.
    pub fn stop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for mut child in self.children.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `count` tasks `<prefix>-<n>` through the chaos binary.
pub fn produce(broker: &str, prefix: &str, count: usize) -> Result<()> {
    util::output(Command::new(binary()).args([
        "produce",
        "--broker",
        broker,
        "--prefix",
        prefix,
        "--count",
        &count.to_string(),
    ]))
    .map(drop)
}

/// How many of `<prefix>-<n>` have their SUCCESS stored in `backend`.
pub fn verified(backend: &str, prefix: &str, count: usize) -> Result<usize> {
    let out = util::output(Command::new(binary()).args([
        "verify",
        "--backend",
        backend,
        "--prefix",
        prefix,
        "--count",
        &count.to_string(),
    ]))?;
    out.split_whitespace()
        .find_map(|word| word.strip_prefix("verified="))
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| format!("unexpected verify output: {out}").into())
}
