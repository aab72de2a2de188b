//! The monitor on `memory://` with a Rust worker: what it shows, what it does, what
//! survives a restart, and what it refuses.

mod common;

use common::scenarios::{self, Setup};
use common::{Http, add, eventually, init_logs, quick_settings, start_monitor};
use queue::{App, MemoryBackend, MemoryBroker};
use queue_monitor::{Auth, Monitor, MonitorError};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> Setup {
    init_logs();
    let broker = Arc::new(MemoryBroker::new());
    let backend = Arc::new(MemoryBackend::new());
    Setup::new(move || {
        App::builder()
            .broker_instance(broker.clone())
            .backend_instance(backend.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_workers_and_metrics_show() {
    let setup = setup().await;
    scenarios::tasks_workers_and_metrics(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_through_the_api_terminates_a_running_task() {
    let setup = setup().await;
    scenarios::revoke_terminates_a_running_task(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_shows_and_is_flagged() {
    let setup = setup().await;
    scenarios::backlog_shows(&setup).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_survives_a_monitor_restart() {
    let setup = setup().await;
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("history.sqlite");
    let (monitor, http) = start_monitor(
        setup.monitor_app.clone(),
        Some(&file),
        &[],
        quick_settings(),
    )
    .await;
    let sum = add::new(20, 22)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    scenarios::task_in_state(&http, sum.id(), "SUCCESS").await;
    eventually("the worker known", || async {
        http.get("/api/workers").await.get(&setup.node).map(|_| ())
    })
    .await;
    monitor.shutdown().await.unwrap();
    let node = setup.node.clone();
    setup.stop().await;

    // A new monitor on the same file, its broker silent: everything is still there.
    let silent = App::builder().broker("memory://").build().await.unwrap();
    let (monitor, http) = start_monitor(silent, Some(&file), &[], quick_settings()).await;
    let task = http.get(&format!("/api/task/info/{}", sum.id())).await;
    assert_eq!(
        (task["state"].as_str(), task["result"].as_str()),
        (Some("SUCCESS"), Some("42"))
    );
    let listed = http.get("/api/tasks?search=name:monitor.add").await;
    assert!(listed.get(sum.id()).is_some(), "{listed}");
    let detail = http
        .get(&format!("/api/dashboard/tasks/{}", sum.id()))
        .await;
    assert_eq!(detail["timeline"].as_array().unwrap().len(), 3, "{detail}");
    let workers = http.get("/api/dashboard/workers").await;
    let worker = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|worker| worker["hostname"] == node.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{node} not in {workers}"));
    assert_eq!(
        worker["online"], false,
        "a remembered worker is offline until it beats"
    );
    let overview = http.get("/api/dashboard/overview").await;
    assert!(
        overview["task_types"].get("monitor.add").is_some(),
        "the series are rebuilt: {overview}"
    );
    assert!(
        http.get("/api/task/types").await["task-types"]
            .as_array()
            .unwrap()
            .contains(&json!("monitor.add"))
    );
    monitor.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_bind_without_auth_is_refused() {
    let app = App::builder().broker("memory://").build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = Monitor::new(app.clone())
        .without_history()
        .auth(Auth::none())
        .start(listener)
        .await;
    assert!(
        matches!(refused, Err(MonitorError::InsecureBind { .. })),
        "{refused:?}"
    );

    // With a token it listens, and asks for it.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let running = Monitor::new(app)
        .without_history()
        .auth(Auth::token("t0ken").with_token("t0ken"))
        .start(listener)
        .await
        .expect("with auth it listens");
    let http = Http::new(&format!("http://127.0.0.1:{}", running.address().port()));
    let anonymous = http.request("GET", "/api/workers", &[], None).await;
    assert_eq!(anonymous.status, 401);
    let wrong = http
        .request(
            "GET",
            "/api/workers",
            &[("Authorization", "Bearer nope")],
            None,
        )
        .await;
    assert_eq!(wrong.status, 401);
    let script = http
        .request(
            "GET",
            "/api/workers",
            &[("Authorization", "Bearer t0ken")],
            None,
        )
        .await;
    assert_eq!(script.status, 200, "{}", script.body);
    // A Flower-style script: credentials, no cookie, no CSRF token.
    let sent = http
        .request(
            "POST",
            "/api/task/send-task/monitor.add",
            &[("Authorization", "Bearer t0ken")],
            Some(json!({"args": [1, 2]})),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.json()["task-id"].is_string());
    // A page of another site posting with the browser's credentials is refused.
    let forged = http
        .request(
            "POST",
            "/api/task/send-task/monitor.add",
            &[
                ("Authorization", "Bearer t0ken"),
                ("Origin", "http://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token() {
    let app = App::builder().broker("memory://").build().await.unwrap();
    let (running, http) = start_monitor(app, None, &[], quick_settings()).await;
    let path = "/api/task/send-task/monitor.add";
    let bare = http.request("POST", path, &[], None).await;
    assert_eq!(bare.status, 403, "{}", bare.body);
    let first = http
        .request("GET", "/api/dashboard/status", &[], None)
        .await;
    let cookie = first
        .set_cookie
        .expect("the first answer sets the CSRF cookie");
    assert!(
        cookie.starts_with("queue_monitor_csrf=") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = cookie
        .trim_start_matches("queue_monitor_csrf=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie_only = http
        .request(
            "POST",
            path,
            &[("Cookie", &format!("queue_monitor_csrf={token}"))],
            None,
        )
        .await;
    assert_eq!(cookie_only.status, 403);
    let mismatched = http
        .request(
            "POST",
            path,
            &[
                ("Cookie", &format!("queue_monitor_csrf={token}")),
                ("X-CSRF-Token", "other"),
            ],
            None,
        )
        .await;
    assert_eq!(mismatched.status, 403);
    let page = http
        .request(
            "POST",
            path,
            &[
                ("Cookie", &format!("queue_monitor_csrf={token}")),
                ("X-CSRF-Token", &token),
            ],
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    // GET never changes anything and needs no token; a rebinding Host is refused.
    let rebinding = http
        .request("GET", "/api/workers", &[("Host", "evil.example")], None)
        .await;
    assert_eq!(rebinding.status, 403);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_stream_sends_task_changes() {
    let setup = setup().await;
    let (monitor, _http) =
        start_monitor(setup.monitor_app.clone(), None, &[], quick_settings()).await;
    let mut stream = tokio::net::TcpStream::connect(monitor.address())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 8192];
    // Subscribed once the hello came.
    tokio::time::timeout(common::WAIT, async {
        while !seen.contains("event: hello") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .expect("the hello event");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let sum = add::new(1, 1)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    let wanted = format!(
        "\"uuid\":\"{}\",\"name\":\"monitor.add\",\"state\":\"SUCCESS\"",
        sum.id()
    );
    tokio::time::timeout(common::WAIT, async {
        while !(seen.contains(&wanted)
            && seen.contains("event: stats")
            && seen.contains("event: queues"))
        {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no live update with {wanted} in:\n{seen}"));
    assert!(seen.contains("event: tasks"));
    monitor.shutdown().await.unwrap();
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_is_retried_with_its_arguments() {
    let setup = setup().await;
    let (monitor, http) =
        start_monitor(setup.monitor_app.clone(), None, &[], quick_settings()).await;
    let sum = add::new(40, 2)
        .queue(&setup.queue)
        .send(&setup.monitor_app)
        .await
        .unwrap();
    scenarios::task_in_state(&http, sum.id(), "SUCCESS").await;
    let answer = http
        .post(&format!("/api/dashboard/tasks/{}/retry", sum.id()), None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let again = answer.json()["task-id"].as_str().unwrap().to_owned();
    assert_ne!(again, sum.id());
    // No queue was named when it was sent: the re-sent task goes where routing sends it, the
    // default queue, which the worker does not consume.
    let broker = setup.monitor_app.broker().clone();
    eventually("the re-sent task in the default queue", || {
        let broker = broker.clone();
        async move { (broker.queue_length("celery").await.unwrap().total == 1).then_some(()) }
    })
    .await;
    let unknown = http.post("/api/dashboard/tasks/nope/retry", None).await;
    assert_eq!(unknown.status, 404);
    monitor.shutdown().await.unwrap();
    setup.stop().await;
}
