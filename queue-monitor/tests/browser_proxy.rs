//! The monitor under a path, behind Debian's nginx configured with the README's own block
//! (`<!-- tested: nginx under a path -->`), driven in headless Chromium under a host name
//! that is not loopback: the pages load through the proxy, follow the live stream, act
//! (Terminate ends a running task: the POST's Origin passes the check through the proxy),
//! and their links stay under the path. Screenshot: `target/test-artifacts/monitor/proxy-*.png`.

mod browser {
    pub mod driver;
    pub mod support;
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::driver::{Browser, WAIT, tools};
use browser::support::{path_segment, settings, unique, until_state};
use queue::{App, MemoryBackend, MemoryBroker, Signature, TaskState, Worker, task};
use queue_monitor::{Auth, Monitor};
use serde_json::json;

/// The host name the browser uses (mapped to 127.0.0.1 inside Chromium only).
const HOST: &str = "ops.example.test";
const MARKER: &str = "<!-- tested: nginx under a path -->";

/// Runs until terminated.
#[task(name = "browser.proxy.forever")]
async fn forever() {
    std::future::pending::<()>().await
}

/// `QUEUE_TEST_NGINX` (exported by `cargo xtask test`), else Debian's path when installed;
/// `None` to skip (a failure under CI).
fn nginx_binary() -> Option<PathBuf> {
    let found = std::env::var_os("QUEUE_TEST_NGINX")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|path| path.exists()));
    if found.is_none() {
        queue_core::conformance::skip_or_fail(
            "no nginx (QUEUE_TEST_NGINX unset and no /usr/sbin/nginx: `cargo xtask test` \
             installs Debian's nginx-light)",
        );
    }
    found
}

/// The README's nginx block for serving under a path, pointed at `monitor` and listening
/// on `port` (plain HTTP: the certificate lines go).
fn readme_block(monitor: std::net::SocketAddr, port: u16) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("the README");
    let after = readme
        .split_once(MARKER)
        .unwrap_or_else(|| panic!("the README has no {MARKER}"))
        .1;
    let block = after
        .split_once("```nginx\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("an nginx block after the marker")
        .0;
    assert!(block.contains("listen 443 ssl;") && block.contains("127.0.0.1:5555"));
    block
        .lines()
        .filter(|line| !line.contains("ssl_certificate"))
        .map(|line| {
            line.replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"))
                .replace("127.0.0.1:5555", &monitor.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// nginx in the foreground with a config of its own in a temporary directory; killed on
/// drop.
struct Nginx {
    child: Child,
    port: u16,
    directory: tempfile::TempDir,
}

impl Nginx {
    async fn start(binary: &Path, server: impl FnOnce(u16) -> String) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let directory = tempfile::tempdir().expect("a directory for nginx");
        let dir = directory.path().display();
        // One process (no workers switching users), every path inside the directory.
        let config = format!(
            "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\nevents {{ worker_connections 128; }}\n\
             http {{\n  access_log {dir}/access.log;\n  client_body_temp_path {dir}/body;\n  \
             proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  \
             uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n{}\n}}\n",
            server(port)
        );
        let config_path = directory.path().join("nginx.conf");
        std::fs::write(&config_path, &config).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(directory.path())
            .arg("-e")
            .arg(directory.path().join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        let mut nginx = Self {
            child,
            port,
            directory,
        };
        // Ready when its port accepts.
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}\n{config}", nginx.log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                nginx.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_under_a_path_behind_nginx_in_chromium() {
    let Some(tools) = tools() else { return };
    let Some(nginx_binary) = nginx_binary() else {
        return;
    };
    let queue = format!("browser.proxy.{}", unique());
    let app = App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .backend_instance(Arc::new(MemoryBackend::new()))
        .task(forever)
        .default_queue(&queue)
        .build()
        .await
        .unwrap();
    let hostname = format!("proxy-{}@test", unique());
    let worker = Worker::new(app.clone())
        .node_name(&hostname)
        .queues([queue.as_str()])
        .task_events(true)
        .heartbeat_interval(Duration::from_millis(500))
        .spawn();
    let history = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let monitor = Monitor::new(app.clone())
        .history(format!(
            "sqlite://{}",
            history.path().join("history.sqlite").display()
        ))
        .auth(Auth::basic("ops", "long-secret"))
        .settings(settings())
        .url_prefix("/monitor")
        .start(listener)
        .await
        .expect("the monitor starts");
    let nginx = Nginx::start(&nginx_binary, |port| readme_block(monitor.address(), port)).await;

    let base = format!("http://ops:long-secret@{HOST}:{}/monitor", nginx.port);
    let browser = Browser::start_with(
        &tools,
        &base,
        "proxy",
        &[format!("--host-resolver-rules=MAP {HOST} 127.0.0.1")],
    )
    .await;

    let running = Signature::new("browser.proxy.forever")
        .send(&app)
        .await
        .unwrap();
    browser
        .open(&format!("/tasks/{}", path_segment(running.id())))
        .await;
    browser.wait_text("#task-state", "STARTED").await;
    // The event stream comes through the proxy, unbuffered.
    browser.wait_text("#live", "live").await;
    let path = browser.run("return location.pathname;").await;
    assert_eq!(path, json!(format!("/monitor/tasks/{}", running.id())));

    // The action's POST goes to /monitor/api/…, with an Origin naming ops.example.test.
    browser.click("#terminate").await;
    browser.confirm().await;
    browser.wait_text("#task-state", "REVOKED").await;
    until_state(&running, TaskState::Revoked).await;
    browser.screenshot("task").await;

    // The navigation stays under the path: Workers lists the worker, and its page opens.
    browser.click("a[data-nav=workers]").await;
    browser.wait_text("#main", &hostname).await;
    let path = browser.run("return location.pathname;").await;
    assert_eq!(path, json!("/monitor/workers"));
    let links = browser
        .run(
            "return [...document.querySelectorAll('a[href^=\"/\"]')]\
             .map(a => a.getAttribute('href')).filter(h => !h.startsWith('/monitor/'));",
        )
        .await;
    assert_eq!(links, json!([]), "links outside /monitor/");
    browser.screenshot("workers").await;

    // Flower's API and the metrics are under the path too; nothing answers outside it.
    let status = |path: &str| {
        format!(
            "return fetch(location.origin + '{path}', {{credentials: 'same-origin'}}).then(r => r.status);"
        )
    };
    assert_eq!(
        browser.run(&status("/monitor/api/workers")).await,
        json!(200)
    );
    assert_eq!(browser.run(&status("/monitor/metrics")).await, json!(200));
    assert_eq!(browser.run(&status("/api/workers")).await, json!(404));

    browser.close().await;
    drop(nginx);
    tokio::time::timeout(Duration::from_secs(20), worker.shutdown())
        .await
        .expect("the worker stops")
        .unwrap();
    monitor.shutdown().await.unwrap();
}
