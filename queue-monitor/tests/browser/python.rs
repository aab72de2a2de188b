//! The real Python Celery worker from the venv (`QUEUE_TEST_PYTHON`), running
//! `examples/python/tasks.py`: copied from the workspace's interop helper, with task events
//! (`-E`) and heartbeats on, since here a monitor watches it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The venv's Python, or `None` to skip (a failure under CI).
pub fn python() -> Option<PathBuf> {
    queue_core::conformance::server_url("QUEUE_TEST_PYTHON").map(PathBuf::from)
}

/// `examples/python` of the workspace, where `tasks.py` lives.
pub fn tasks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("examples/python"))
        .find(|dir| dir.join("tasks.py").is_file())
        .expect("examples/python/tasks.py in the workspace")
}

/// A Python Celery worker; killed on drop.
pub struct PythonWorker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl PythonWorker {
    /// Starts a worker named `name` on `queues` and waits until it says it is ready.
    pub fn start(python: &Path, broker: &str, backend: &str, queues: &[&str], name: &str) -> Self {
        let mut child = Command::new(python)
            .args(["-m", "celery", "-A", "tasks", "worker", "--pool=threads"])
            .args(["-c", "2", "-E", "-Q", &queues.join(",")])
            .args(["-n", name, "--without-gossip", "--without-mingle"])
            .args(["--loglevel", "INFO"])
            .current_dir(tasks_dir())
            .env("CELERY_BROKER_URL", broker)
            .env("CELERY_RESULT_BACKEND", backend)
            .stdin(Stdio::null())
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

    /// Everything the worker logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
