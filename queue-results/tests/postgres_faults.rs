//! PostgreSQL failures: a connection killed in the middle of a write, and a server restart.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::{BackendError, ResultBackend, TaskMeta, TaskState};
use queue_results::PostgresBackend;
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// Polls `pg_stat_activity` until the connection of `application` waits on a lock, and
/// returns its pid. PostgreSQL offers no event for this, so polling is the only signal.
async fn blocked_pid(observer: &mut PgConnection, application: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_optional(&mut *observer)
        .await
        .expect("query pg_stat_activity");
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the write of {application} never blocked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A write whose connection is killed while it runs fails with a clear `Unavailable` error
/// when retries are off, and is retried to completion when they are on; results stored
/// before are untouched and the pool goes on with fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_mid_write() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let prefix = common::unique("killed");
    for retries in [0, 2] {
        let application = format!("{prefix}-r{retries}");
        let backend = Arc::new(
            PostgresBackend::connect(&with_param(
                &url,
                &format!("application_name={application}&retries={retries}"),
            ))
            .await
            .expect("connect"),
        );
        let earlier = TaskMeta::success(format!("{application}-earlier"), json!("kept"));
        backend.store(earlier.clone()).await.expect("store earlier");
        let id = format!("{application}-victim");
        let started = TaskMeta::new(&id, TaskState::Started, json!({"pid": 1}));
        backend.store(started.clone()).await.expect("store STARTED");

        // Another session holds the row, so the write blocks where it can be killed.
        let mut locker = PgConnection::connect(&url).await.expect("locker connects");
        let mut observer = PgConnection::connect(&url)
            .await
            .expect("observer connects");
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("SELECT 1 FROM celery_taskmeta WHERE task_id = $1 FOR UPDATE")
            .bind(&id)
            .execute(&mut locker)
            .await
            .unwrap();
        let success = TaskMeta::success(&id, json!(42));
        let write = tokio::spawn({
            let backend = backend.clone();
            let success = success.clone();
            async move { backend.store(success).await }
        });
        let pid = blocked_pid(&mut observer, &application).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut observer)
            .await
            .unwrap();
        if retries > 0 {
            // The retry blocks on the lock again, on a new connection; releasing it lets the
            // write through.
            blocked_pid(&mut observer, &application).await;
        }
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
        let outcome = write.await.expect("the write task panicked");

        if retries == 0 {
            match outcome {
                Err(BackendError::Unavailable(message)) => {
                    assert!(
                        message.contains(&id) && message.contains("SUCCESS"),
                        "the error names the task and the state: {message}"
                    );
                }
                other => panic!("a killed write without retries: {other:?}"),
            }
            assert_eq!(backend.get(&id).await.unwrap(), Some(started.clone()));
            backend
                .store(success.clone())
                .await
                .expect("the pool recovers");
        } else {
            outcome.expect("a killed write is retried");
        }
        assert_eq!(backend.get(&id).await.unwrap(), Some(success));
        assert_eq!(backend.get(&earlier.task_id).await.unwrap(), Some(earlier));
    }
}

/// A PostgreSQL cluster of this test's own (restarting the shared one would break the tests
/// running beside this one): initdb'd in a temporary directory, on a free port, run as the
/// `postgres` user when we are root, stopped and removed on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn bin_dir() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        found.sort();
        found.pop()
    }

    fn tool(&self, name: &str) -> Command {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        let mut command = if is_root {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(name));
            command
        } else {
            Command::new(self.bin.join(name))
        };
        command.current_dir(self.dir.path());
        command
    }

    fn run(&self, command: &mut Command) {
        let output = command.output().expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn init() -> Option<Self> {
        let Some(bin) = Self::bin_dir() else {
            queue_core::conformance::skip_or_fail(
                "no PostgreSQL binaries under /usr/lib/postgresql \
                 (run `cargo xtask services up postgres`)",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("queue-results-pg-")
            .tempdir()
            .expect("temporary directory");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self { bin, dir, port };
        cluster.run(cluster.tool("initdb").arg("-D").arg(cluster.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]));
        cluster.start();
        Some(cluster)
    }

    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log: &Path = &self.dir.path().join("log");
        self.run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-o", &options, "-l"])
                .arg(log)
                .args(["-w", "start"]),
        );
    }

    fn stop(&self) {
        self.run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "stop"]),
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// While the server is down, writes fail with `Unavailable` in bounded time; once it is
/// back, the same backend stores and reads again, nothing stored before is lost, and a wait
/// that began before the restart returns when the result arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_waits_recover_after_a_restart() {
    // The backend's warnings (retries, LISTEN lost and resumed) show in a failing run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("queue_results=debug")
        .with_test_writer()
        .try_init();
    let Some(cluster) = Cluster::init() else {
        return;
    };
    let backend = Arc::new(
        PostgresBackend::connect(&format!("{}?acquire_timeout=2&retries=2", cluster.url()))
            .await
            .expect("connect"),
    );
    let before = TaskMeta::success("before-restart", json!([1, 2]));
    backend.store(before.clone()).await.unwrap();
    // A short wait first: it subscribes, so the long one below starts subscribed.
    assert_eq!(
        backend
            .wait("waited", Duration::from_millis(50))
            .await
            .unwrap(),
        None
    );
    let waiter = tokio::spawn({
        let backend = backend.clone();
        async move {
            let started = Instant::now();
            (
                backend.wait("waited", Duration::from_secs(60)).await,
                started.elapsed(),
            )
        }
    });

    cluster.stop();
    let started = Instant::now();
    let during = backend
        .store(TaskMeta::success("during-restart", json!(0)))
        .await;
    assert!(
        matches!(&during, Err(BackendError::Unavailable(message)) if message.contains("during-restart")),
        "a write while the server is down: {during:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failing took {:?}",
        started.elapsed()
    );

    cluster.start();
    let after = TaskMeta::success("after-restart", json!(3));
    backend
        .store(after.clone())
        .await
        .expect("the pool reconnects");
    assert_eq!(backend.get("after-restart").await.unwrap(), Some(after));
    assert_eq!(backend.get("before-restart").await.unwrap(), Some(before));

    let waited = TaskMeta::success("waited", json!("late"));
    backend.store(waited.clone()).await.unwrap();
    let (outcome, elapsed) = waiter.await.expect("the waiter panicked");
    assert_eq!(outcome.unwrap(), Some(waited));
    assert!(
        elapsed < Duration::from_secs(30),
        "the wait took {elapsed:?}"
    );
}
