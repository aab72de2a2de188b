//! Test support: the Redis URL from the environment, and private servers for tests that
//! kill and restart one.
#![allow(dead_code)]

pub mod sentinel;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable `cargo xtask test` sets.
pub const URL_VARIABLE: &str = "QUEUE_TEST_REDIS_URL";

fn under_ci() -> bool {
    queue_core::conformance::is_ci()
}

/// `QUEUE_TEST_REDIS_URL` with database `db` and the query `query` (may be empty). Missing:
/// `None` with a `skipped:` line, or a panic under CI ([`queue_core::conformance::server_url`]).
pub fn redis_url(db: u8, query: &str) -> Option<String> {
    let base = queue_core::conformance::server_url(URL_VARIABLE)?;
    Some(with_db(&base, db, query))
}

/// `base` with database `db` and the query `query` (may be empty).
pub fn with_db(base: &str, db: u8, query: &str) -> String {
    let mut url = url::Url::parse(base).expect("QUEUE_TEST_REDIS_URL is a URL");
    url.set_path(&format!("/{db}"));
    url.set_query((!query.is_empty()).then_some(query));
    url.to_string()
}

/// A redis-server of the test's own, on a free port, append-only with fsync on every write,
/// so that it can be killed and restarted (by pid) without losing acknowledged writes.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// TLS only (`--port 0 --tls-port`), with the certificates in `dir`.
    tls: bool,
}

impl PrivateRedis {
    /// Starts one, or returns `None` (with a message; a panic under CI) when `redis-server`
    /// is not installed.
    pub fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            assert!(!under_ci(), "redis-server is not installed under CI");
            eprintln!("skipped: redis-server not installed (run `cargo xtask services up redis`)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("queue-redis-test-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let mut server = Self {
            port,
            dir,
            child: None,
            tls: false,
        };
        server.spawn();
        Some(server)
    }

    /// Starts one that speaks only TLS, with a fresh CA (`ca.pem` in [`Self::dir`]) and a
    /// certificate for 127.0.0.1. `None` as for [`Self::start`], or without `openssl`.
    pub fn start_tls() -> Option<Self> {
        let mut server = Self::start()?;
        server.kill();
        let dir = server.dir.clone();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output();
            output.is_ok_and(|output| output.status.success())
        };
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let made = openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=queue-test-ca",
                ],
            ]
            .concat(),
        ) && openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        ) && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        if !made {
            assert!(
                !under_ci(),
                "openssl could not make test certificates under CI"
            );
            eprintln!("skipped: openssl could not make test certificates");
            return None;
        }
        server.tls = true;
        server.spawn();
        Some(server)
    }

    /// The server's data directory (certificates of a TLS server).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn url(&self, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("redis://127.0.0.1:{}/0{query}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args([
                    "--tls-cert-file",
                    &file("server.pem"),
                    "--tls-key-file",
                    &file("server.key"),
                ])
                .args([
                    "--tls-ca-cert-file",
                    &file("ca.pem"),
                    "--tls-auth-clients",
                    "no",
                ]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(if self.tls {
            accepts(self.port)
        } else {
            ping(self.port)
        }) {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, by pid) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG"
}

/// A broker on database `db` with `query` options, or `None` when Redis is not configured.
pub async fn broker(db: u8, query: &str) -> Option<queue_redis::RedisBroker> {
    let url = redis_url(db, query)?;
    Some(
        queue_redis::RedisBroker::connect(&url)
            .await
            .expect("connect to Redis"),
    )
}

/// A name no other test (or earlier run) uses.
pub fn unique(label: &str) -> String {
    format!("rs-test.{label}.{}", uuid::Uuid::new_v4().simple())
}

/// A task message with id `id` and our priority `priority`.
pub fn message(id: &str, priority: u8) -> queue_core::Message {
    queue_core::conformance::broker::message(id, priority)
}

/// The task id of a delivery that decoded.
pub fn id_of(delivery: &queue_core::Delivery) -> String {
    delivery.content.as_ref().expect("decoded").id().to_owned()
}

/// Whether something accepts connections on the port (a TLS server does not answer PING).
fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
