//! Headless Chromium driven over WebDriver: chromedriver started on a free port, a fresh
//! profile in a temporary directory, waits that poll the page until a deadline (never a
//! fixed sleep), and screenshots saved under `target/test-artifacts/monitor/`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Long enough that a passing test never waits for it; only a failing one does.
pub const WAIT: Duration = Duration::from_secs(30);
const WINDOW: (u32, u32) = (1400, 1000);

/// Where the browser and its driver are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// `QUEUE_TEST_CHROMIUM` and `QUEUE_TEST_CHROMEDRIVER` (exported by `cargo xtask test`),
/// else Debian's paths when installed; `None` to skip (a failure under CI).
pub fn tools() -> Option<Tools> {
    let find = |variable: &str, default: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from(default)).filter(|path| path.exists()))
    };
    let chromium = find("QUEUE_TEST_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = find("QUEUE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        _ => {
            queue_core::conformance::skip_or_fail(
                "no Chromium or chromedriver (QUEUE_TEST_CHROMIUM / QUEUE_TEST_CHROMEDRIVER \
                 unset and not in /usr/bin: `cargo xtask test` installs Debian's chromium and \
                 chromium-driver)",
            );
            None
        }
    }
}

/// `target/test-artifacts/monitor/`, created.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts").join("monitor");
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(chromedriver)
            // Its own process group, which the browsers it starts join: dropping the driver
            // ends them all, even when a failed test never closed its session.
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", chromedriver.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = ready.send(());
                }
            }
        });
        if started.recv_timeout(WAIT).is_err() {
            let _ = child.kill();
            panic!("chromedriver did not start on port {port}");
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session on the monitor at `base`.
pub struct Browser {
    client: Client,
    base: String,
    /// Screenshot names start with it (`memory-tasks.png`).
    prefix: String,
    artifacts: PathBuf,
    // Dropped last: the profile outlives the browser, chromedriver outlives the session.
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start(tools: &Tools, base: &str, prefix: &str) -> Self {
        Self::start_with(tools, base, prefix, &[]).await
    }

    /// As [`Browser::start`], with more Chromium switches (e.g. `--host-resolver-rules`).
    pub async fn start_with(tools: &Tools, base: &str, prefix: &str, switches: &[String]) -> Self {
        let driver = Driver::start(&tools.chromedriver);
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut arguments = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        arguments.extend_from_slice(switches);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": tools.chromium, "args": arguments }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless Chromium");
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            prefix: prefix.to_owned(),
            artifacts: artifacts_dir(),
            _driver: driver,
            _profile: profile,
        }
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `path` of the monitor and waits until its page script has rendered.
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|error| panic!("open {path}: {error}"));
        let state: String = self
            .wait_for("the page to render", || async {
                let state = self
                    .client
                    .execute("return document.body.dataset.ready || null;", vec![])
                    .await
                    .ok()?;
                state.as_str().map(str::to_owned)
            })
            .await;
        assert_eq!(
            state,
            "true",
            "{path} failed to render: {}",
            self.main_text().await
        );
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|error| panic!("run {script}: {error}"))
    }

    /// The text of the first element matching `css`, if there is one now. The pages redraw
    /// as live updates come, so an element found may be replaced before its text is read:
    /// then it is found again.
    pub async fn text(&self, css: &str) -> Option<String> {
        for _ in 0..5 {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            if let Ok(text) = element.text().await {
                return Some(text);
            }
        }
        None
    }

    /// The text of the page's content, for failure messages.
    pub async fn main_text(&self) -> String {
        self.text("#main").await.unwrap_or_default()
    }

    /// Polls `probe` until it answers, within [`WAIT`]; on timeout saves a screenshot and
    /// fails with the page's text.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot(&format!("failed-{}", slug(what))).await;
                let loaded = self
                    .client
                    .execute(
                        "return performance.getEntriesByType('resource')\
                         .map(e => `${e.name} ${Math.round(e.duration)} ms`).join('\\n');",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                panic!(
                    "waited {WAIT:?} for {what} (screenshot {}); the page says:\n{}\n\
                     resources loaded:\n{}",
                    shot.display(),
                    self.main_text().await,
                    loaded.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element matching `css` exists and its text contains `needle`;
    /// returns that text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        self.wait_for(&format!("{css} to show {needle:?}"), || async {
            self.text(css).await.filter(|text| text.contains(needle))
        })
        .await
    }

    /// Waits until an element matches `css`.
    pub async fn wait_present(&self, css: &str) {
        self.wait_for(&format!("{css} to appear"), || async {
            self.client.find(Locator::Css(css)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Waits until no element matches `css`.
    pub async fn wait_absent(&self, css: &str) {
        self.wait_for(&format!("{css} to go"), || async {
            self.client
                .find_all(Locator::Css(css))
                .await
                .ok()
                .filter(Vec::is_empty)
                .map(|_| ())
        })
        .await;
    }

    /// Clicks the element matching `css`, waiting for it to exist. The pages redraw as
    /// live updates come, so an element found may be replaced before the click lands: then
    /// it is found again.
    pub async fn click(&self, css: &str) {
        self.wait_for(&format!("{css} to click"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await;
    }

    /// Types `text` into the input matching `css`, replacing what it held.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_for(&format!("{css} to type into"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.clear().await.ok()?;
            element.send_keys(text).await.ok()
        })
        .await;
    }

    /// Answers the page's confirmation dialog with Confirm.
    pub async fn confirm(&self) {
        self.wait_present("dialog#confirm[open]").await;
        self.click("#confirm-ok").await;
        self.wait_absent("dialog#confirm[open]").await;
    }

    /// Saves a screenshot of the whole page as `<prefix>-<name>.png`; returns its path.
    /// Fails if the page's Content-Security-Policy blocked anything on it.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let blocked = self
            .client
            .execute(
                "return document.body.dataset.policyViolations || null;",
                vec![],
            )
            .await
            .unwrap_or_default();
        assert!(
            blocked.is_null(),
            "{name}: the Content-Security-Policy blocked {blocked} thing(s)"
        );
        // The window grows to the page's height so the picture shows all of it.
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|height| height.as_u64())
            .map_or(WINDOW.1, |height| (height as u32).clamp(WINDOW.1, 4000));
        let _ = self.client.set_window_size(WINDOW.0, height + 90).await;
        let picture = self.client.screenshot().await;
        let _ = self.client.set_window_size(WINDOW.0, WINDOW.1).await;
        let path = self.artifacts.join(format!("{}-{name}.png", self.prefix));
        match picture {
            Ok(png) => std::fs::write(&path, png).expect("write the screenshot"),
            Err(error) => eprintln!("no screenshot {name}: {error}"),
        }
        path
    }

    /// Ends the WebDriver session (the browser exits).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn slug(text: &str) -> String {
    let slug: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug.split('-')
        .filter(|part| !part.is_empty())
        .take(8)
        .collect::<Vec<_>>()
        .join("-")
}
