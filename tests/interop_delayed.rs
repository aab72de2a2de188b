//! A countdown sent by a Rust producer to a queue that only Python Celery workers consume
//! runs when due, though the producer exited before (issue 9, defect 5): the delayed
//! message waits in Redis where kombu's own restore finds it when due (see `queue_redis`'s
//! docs, "Delayed messages"). The broker keys of the test carry a prefix of their own, so no
//! Rust consumer of another test on the same Redis comes near them: only Python does.
#![cfg(feature = "redis")]

mod interop {
    pub mod python;
    pub mod tasks;
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop::python;
use interop::tasks::{self, add};
use queue::App;

/// Set for the child process: `<broker URL> <backend URL> <queue>`.
const CHILD: &str = "QUEUE_TEST_DELAYED_PRODUCER";
/// The countdown the producer sends; it exits long before.
const COUNTDOWN: Duration = Duration::from_secs(4);

/// Run as a child process by the test below: sends `tasks.add(2, 3)` with a countdown to
/// the queue, prints its id, and exits. Does nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_sends_a_countdown_and_exits() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let [broker, backend, queue]: [&str; 3] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three words");
    let app = tasks::register(App::builder())
        .broker(broker)
        .backend(backend)
        .default_queue(queue)
        .build()
        .await
        .expect("connect");
    let sent = add::new(2, 3)
        .countdown(COUNTDOWN)
        .send(&app)
        .await
        .unwrap();
    println!("sent {}", sent.id());
}

/// A Celery worker (threads pool) on `queue` whose kombu restores every second and whose
/// broker keys carry `prefix`; killed on drop.
struct PythonWorker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl PythonWorker {
    fn start(
        python: &std::path::Path,
        broker: &str,
        backend: &str,
        prefix: &str,
        queue: &str,
    ) -> Self {
        let script = format!(
            r#"
import sys
from tasks import app
app.conf.broker_transport_options = {{
    "global_keyprefix": "{prefix}",
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}}
app.worker_main(sys.argv[1:])
"#
        );
        let name = format!("py-delayed-{}@%h", std::process::id());
        let mut child = Command::new(python)
            .args(["-c", &script, "worker", "--pool=threads", "-c", "2"])
            .args(["-Q", queue, "-n", &name])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["--loglevel", "INFO"])
            .current_dir(python::tasks_dir())
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

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_runs_on_python_workers_after_its_producer_exited() {
    let Some(python) = python::python() else {
        return;
    };
    let ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    let Ok(redis) = std::env::var("QUEUE_TEST_REDIS_URL") else {
        assert!(
            !ci,
            "QUEUE_TEST_REDIS_URL is not set under CI: run `cargo xtask test`"
        );
        eprintln!("skipped: QUEUE_TEST_REDIS_URL not set (use `cargo xtask test`)");
        return;
    };
    let backend = redis.split('?').next().unwrap().to_owned();
    let suffix = format!("{:016x}", rand::random::<u64>());
    let prefix = format!("delayed-{suffix}:");
    let queue = format!("interop.delayed.{suffix}");
    let broker = format!("{backend}?global_keyprefix={prefix}");
    let worker = PythonWorker::start(&python, &backend, &backend, &prefix, &queue);

    // The producer: another process, gone before the countdown ends.
    let sent_at = chrono::Utc::now();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_sends_a_countdown_and_exits",
            "--nocapture",
        ])
        .env(CHILD, format!("{broker} {backend} {queue}"))
        .output()
        .unwrap();
    let exited_at = chrono::Utc::now();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the producer failed: {stdout}");
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("sent "))
        .unwrap_or_else(|| panic!("no id from the producer: {stdout}"))
        .trim()
        .to_owned();
    let due = sent_at + chrono::Duration::from_std(COUNTDOWN).unwrap();
    assert!(
        exited_at < due,
        "the scenario needs the producer gone before the task is due"
    );

    // Results only: this process consumes nothing, so no Rust consumer promotes it.
    let app = App::builder()
        .broker(broker)
        .backend(backend)
        .build()
        .await
        .unwrap();
    let sum: Result<i64, _> = app.result::<i64>(&id).get(Duration::from_secs(60)).await;
    assert_eq!(
        sum.unwrap_or_else(|error| panic!("{error}\n{}", worker.log())),
        5
    );
    let meta = app
        .backend()
        .unwrap()
        .get(&id)
        .await
        .unwrap()
        .expect("stored");
    let done = meta.date_done.expect("a date_done");
    assert!(done >= due, "run at {done}, before its eta {due}");
}
