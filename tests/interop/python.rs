//! Drives the real Python Celery (from the venv `cargo xtask test` prepares, given as
//! `QUEUE_TEST_PYTHON`): workers started as child processes, client scripts whose JSON
//! output the tests read.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The venv's Python, or `None` to skip (a failure under CI, `CI=true` or `CI=1`).
pub fn python() -> Option<PathBuf> {
    queue_core::conformance::server_url("QUEUE_TEST_PYTHON").map(PathBuf::from)
}

/// `examples/python` of the workspace, where `tasks.py` lives (this file is also used by the
/// tests of `queue-cli`, one directory down).
pub fn tasks_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("examples/python"))
        .find(|dir| dir.join("tasks.py").is_file())
        .expect("examples/python/tasks.py in the workspace")
}

/// A Python Celery worker running `examples/python/tasks.py`; killed on drop.
pub struct PythonWorker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl PythonWorker {
    /// Starts a worker on `queues` and waits until it says it is ready.
    pub fn start(python: &PathBuf, broker: &str, backend: &str, queues: &[&str]) -> Self {
        // Unique per worker: RabbitMQ refuses a second exclusive control queue of one name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("py-{}-{serial}@%h", std::process::id());
        Self::start_named(python, broker, backend, queues, &name)
    }

    /// Starts a worker with node name `name` (`-n`, which must be unique on the broker) on
    /// `queues` and waits until it says it is ready.
    pub fn start_named(
        python: &PathBuf,
        broker: &str,
        backend: &str,
        queues: &[&str],
        name: &str,
    ) -> Self {
        let mut child = Command::new(python)
            .args([
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "--pool=threads",
                "-c",
                "4",
            ])
            .args(["-Q", &queues.join(",")])
            .args([
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["--loglevel", "INFO", "--prefetch-multiplier", "4"])
            .current_dir(tasks_dir())
            .env("CELERY_BROKER_URL", broker)
            .env("CELERY_RESULT_BACKEND", backend)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python Celery worker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" ready.") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "the Python worker did not start:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        Self { child, log }
    }

    /// The worker's process id (what its `stats` reply reports as `pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines the worker logged that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Everything the worker logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Warm shutdown (SIGTERM), waiting for the process to exit.
    pub fn stop(mut self) {
        // SAFETY: signalling a child process we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script (with `app` from tasks.py importable) and returns its stdout parsed
/// as JSON. The script prints one JSON document.
pub fn run_script(
    python: &PathBuf,
    broker: &str,
    backend: &str,
    script: &str,
) -> serde_json::Value {
    let output = Command::new(python)
        .args(["-c", script])
        .current_dir(tasks_dir())
        .env("CELERY_BROKER_URL", broker)
        .env("CELERY_RESULT_BACKEND", backend)
        .output()
        .expect("run a Python script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python script failed:\n{stderr}\n{stdout}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("Python printed no JSON ({error}):\n{stdout}\n{stderr}"))
}
