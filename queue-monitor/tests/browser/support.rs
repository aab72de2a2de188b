//! What the browser tests share: the monitor they start (quick polls, a history file,
//! extra queues), selectors and paths built from names, and waits on the result backend.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use queue::{App, TaskState};
use queue_monitor::{Auth, Monitor, RunningMonitor, Settings};

use super::driver::WAIT;

/// A short random hex id, to keep queue and worker names apart between runs.
pub fn unique() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Quick polls so the pages change within a second; small overview buckets so the charts
/// have several points within a test.
pub fn settings() -> Settings {
    Settings {
        inspect_interval: Duration::from_millis(700),
        queue_interval: Duration::from_millis(500),
        live_interval: Duration::from_millis(250),
        overview_bucket: Duration::from_secs(2),
        overview_buckets: 90,
        ..Settings::default()
    }
}

/// The monitor of `app` on a free loopback port, with its history in `history_dir`,
/// also watching `queues`, without authentication.
pub async fn monitor(app: App, history_dir: &Path, queues: &[&str]) -> RunningMonitor {
    monitor_with(app, history_dir, queues, Auth::none()).await
}

/// As [`monitor`], requiring `auth`.
pub async fn monitor_with(
    app: App,
    history_dir: &Path,
    queues: &[&str],
    auth: Auth,
) -> RunningMonitor {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let history = format!("sqlite://{}", history_dir.join("history.sqlite").display());
    let mut monitor = Monitor::new(app)
        .history(history)
        .auth(auth)
        .settings(settings());
    for queue in queues {
        monitor = monitor.queue(*queue);
    }
    monitor.start(listener).await.expect("the monitor starts")
}

/// A CSS attribute selector's value, quoted.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Waits until the result backend says `result`'s task is in `state`.
pub async fn until_state(result: &queue::AsyncResult, state: TaskState) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = result.state().await.unwrap();
        if now == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the task is {now:?}, not {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies the screenshots the README shows into `docs/` (only when asked: a test run
/// should not change the work tree).
pub fn keep_for_docs(browser_prefix: &str, pages: &[&str]) {
    if std::env::var("QUEUE_MONITOR_DOCS_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).unwrap();
    for page in pages {
        let from = super::driver::artifacts_dir().join(format!("{browser_prefix}-{page}.png"));
        std::fs::copy(&from, docs.join(format!("monitor-{page}.png"))).unwrap();
    }
}
