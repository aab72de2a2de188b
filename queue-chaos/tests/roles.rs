//! The fault suite's processes play their roles: a producer's tasks all run once on a worker
//! process, each leaving its id in the worker's sink, their results are readable by the
//! checker, and the worker exits on SIGTERM. Against the shared Redis of `cargo xtask test`
//! (`QUEUE_TEST_REDIS_URL`); under CI a missing server is a failure.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_queue-chaos");

/// `redis://host:port/<db>` from the shared server's URL, or `None` (a panic under CI).
fn redis(db: u8) -> Option<String> {
    let Ok(url) = std::env::var("QUEUE_TEST_REDIS_URL") else {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
        assert!(!ci, "QUEUE_TEST_REDIS_URL is not set under CI");
        eprintln!("skipped: QUEUE_TEST_REDIS_URL not set (run `cargo xtask test`)");
        return None;
    };
    let base = url.split('?').next().unwrap_or_default();
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Some(format!("{server}/{db}"))
}

fn sink_counts(path: &Path) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn produced_tasks_run_once_and_their_results_are_readable() {
    let (Some(broker), Some(backend)) = (redis(13), redis(14)) else {
        return;
    };
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let queue = format!("chaos-test.{run}");
    let prefix = format!("roles-{run}");
    let dir = std::env::temp_dir().join(format!("queue-chaos-roles-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("worker.sink");
    let count = 50;

    let mut worker = Command::new(BIN)
        .args(["worker", "--broker", &broker, "--backend", &backend])
        .args(["--queue", &queue, "--node", "roles@localhost"])
        .arg("--sink")
        .arg(&sink)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the worker");
    let produced = Command::new(BIN)
        .args(["produce", "--broker", &broker, "--queue", &queue])
        .args([
            "--prefix",
            &prefix,
            "--count",
            &count.to_string(),
            "--results",
        ])
        .arg("--progress")
        .arg(dir.join("progress"))
        .status()
        .expect("run the producer");
    assert!(produced.success(), "the producer failed: {produced}");
    let progress = std::fs::read_to_string(dir.join("progress")).unwrap();
    assert_eq!(progress.lines().last(), Some("50"), "confirmed in batches");

    // The sink is the only signal a task ran: poll it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_counts(&sink).len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} tasks ran",
            sink_counts(&sink).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let checked = Command::new(BIN)
        .args(["check-results", "--backend", &backend, "--prefix", &prefix])
        .args(["--count", &count.to_string()])
        .output()
        .expect("run the checker");
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "checker failed: {report}");
    assert!(
        report.lines().any(|line| line == "results success 50"),
        "{report}"
    );

    let terminated = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "warm shutdown exits 0: {status}");
    let counts = sink_counts(&sink);
    for n in 0..count {
        assert_eq!(counts.get(&format!("{prefix}-{n}")), Some(&1), "task {n}");
    }
    assert_eq!(counts.len(), count, "nothing else ran: {counts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
