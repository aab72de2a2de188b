//! What the monitor's tests share: a monitor started with short intervals, an HTTP client
//! that talks to it as a script (or a page, with the CSRF cookie) would, a bounded poll,
//! and the Rust worker's tasks.
#![allow(dead_code)]

pub mod beat;
pub mod scenarios;

use std::future::Future;
use std::time::Duration;

use queue::{App, TaskError, task};
use queue_monitor::{Auth, Monitor, RunningMonitor, Settings};
use serde_json::Value;

/// Long enough that a passing test never waits for it; only a failing test does.
pub const WAIT: Duration = Duration::from_secs(30);

#[task(name = "monitor.add")]
pub fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "monitor.fail")]
pub async fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", message))
}

#[task(name = "monitor.sleep")]
pub async fn sleep(seconds: f64) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    seconds
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A unique name for this test run (queues, node names), so suites sharing a server never
/// see each other's.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{prefix}-{}-{serial}-{nanos:x}", std::process::id())
}

/// Settings with short intervals, so that a test sees changes within a second.
pub fn quick_settings() -> Settings {
    Settings {
        inspect_interval: Duration::from_millis(500),
        inspect_timeout: Duration::from_millis(500),
        queue_interval: Duration::from_millis(200),
        live_interval: Duration::from_millis(100),
        ..Settings::default()
    }
}

/// Starts a monitor of `app` on 127.0.0.1 (an ephemeral port) with `history` (a SQLite
/// file; `None`: in memory), watching `queues`, without authentication.
pub async fn start_monitor(
    app: App,
    history: Option<&std::path::Path>,
    queues: &[&str],
    settings: Settings,
) -> (RunningMonitor, Http) {
    let mut monitor = Monitor::new(app).settings(settings).auth(Auth::none());
    monitor = match history {
        Some(path) => monitor.history(format!("sqlite://{}", path.display())),
        None => monitor.without_history(),
    };
    for queue in queues {
        monitor = monitor.queue(*queue);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = monitor.start(listener).await.expect("the monitor starts");
    let http = Http::new(&format!("http://{}", running.address()));
    (running, http)
}

/// Polls `check` (every 50 ms) until it gives a value; panics with `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An answer: status, headers of interest and body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub set_cookie: Option<String>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// A plain HTTP client for the monitor (blocking ureq, run off the runtime).
#[derive(Clone)]
pub struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Self {
            base: base.to_owned(),
            agent,
        }
    }

    /// `method path` with `headers` and an optional JSON `body`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let agent = self.agent.clone();
        let method = method.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut response = if method == "GET" {
                let mut request = agent.get(&url);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                request.call()
            } else {
                let mut request = agent.post(&url);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body.to_string()),
                    None => request.send_empty(),
                }
            }
            .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
            let set_cookie = response
                .headers()
                .get("set-cookie")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            Answer {
                status: response.status().as_u16(),
                body: response.body_mut().read_to_string().unwrap_or_default(),
                set_cookie,
            }
        })
        .await
        .unwrap()
    }

    /// `GET path`, expecting `200` and JSON.
    pub async fn get(&self, path: &str) -> Value {
        let answer = self.request("GET", path, &[], None).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.json()
    }

    /// `GET path` as text, expecting `200`.
    pub async fn text(&self, path: &str) -> String {
        let answer = self.request("GET", path, &[], None).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.body
    }

    /// `POST path` as the dashboard's page does: with the CSRF cookie it was given and the
    /// same token in `X-CSRF-Token`.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Answer {
        let token = self.get("/api/csrf").await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let cookie = format!("queue_monitor_csrf={token}");
        self.request(
            "POST",
            path,
            &[("Cookie", &cookie), ("X-CSRF-Token", &token)],
            body,
        )
        .await
    }
}

/// Every answer the dashboard and the Flower API give, concatenated (to check that no
/// secret is in any).
pub async fn all_answers(http: &Http, task_id: &str, worker: &str, queue: &str) -> String {
    let mut text = String::new();
    for path in [
        "/api/workers".to_owned(),
        "/api/workers?status=1".to_owned(),
        format!("/api/workers?workername={worker}"),
        "/api/tasks".to_owned(),
        format!("/api/task/info/{task_id}"),
        "/api/task/types".to_owned(),
        "/api/queues/length".to_owned(),
        "/api/dashboard/status".to_owned(),
        "/api/dashboard/overview".to_owned(),
        "/api/dashboard/queues".to_owned(),
        format!("/api/dashboard/queues/{queue}"),
        format!("/api/dashboard/queues/{queue}/dead-letters"),
        format!("/api/dashboard/queues/{queue}/delayed"),
        "/api/dashboard/workers".to_owned(),
        format!("/api/dashboard/workers/{worker}"),
        "/api/dashboard/tasks".to_owned(),
        "/api/beat".to_owned(),
        format!("/api/dashboard/tasks/{task_id}"),
        "/metrics".to_owned(),
    ] {
        let answer = http.request("GET", &path, &[], None).await;
        text.push_str(&answer.body);
        text.push('\n');
    }
    text
}
