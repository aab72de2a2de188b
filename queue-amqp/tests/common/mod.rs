//! Test support: the RabbitMQ URL from the environment, and a private RabbitMQ node for the
//! tests that restart the server (restarting the shared one would break the tests running
//! next to them).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable `cargo xtask test` sets.
pub const URL_VARIABLE: &str = "QUEUE_TEST_AMQP_URL";

/// Queues our tests declare disappear ten minutes after their last use, so that runs do
/// not pile up queues in the shared server.
pub const TEST_OPTIONS: &str = "queue_expires=600000";

/// `QUEUE_TEST_AMQP_URL` with `query` added (may be empty). Missing: `None` with a
/// `skipped:` line, or a panic under CI ([`queue_core::conformance::server_url`]).
pub fn amqp_url(query: &str) -> Option<String> {
    let base = queue_core::conformance::server_url(URL_VARIABLE)?;
    Some(with_query(&base, query))
}

/// `url` with `query` appended to its query.
pub fn with_query(url: &str, query: &str) -> String {
    let mut url = url::Url::parse(url).expect("the AMQP URL is a URL");
    let mut pairs: Vec<String> = url.query().into_iter().map(str::to_owned).collect();
    pairs.extend(
        [TEST_OPTIONS, query]
            .into_iter()
            .filter(|part| !part.is_empty())
            .map(str::to_owned),
    );
    url.set_query(Some(&pairs.join("&")));
    url.to_string()
}

/// A unique name for a test's queue.
pub fn unique(label: &str) -> String {
    format!(
        "amqp-test.{label}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A RabbitMQ node of the test's own, on free ports, with its data in a temporary
/// directory; stopped (and its directory removed) on drop.
pub struct PrivateRabbit {
    pub port: u16,
    node: String,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn sbin(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/lib/rabbitmq/bin",
        "/usr/local/sbin",
        "/usr/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(name))
    .find(|path| path.is_file())
}

impl PrivateRabbit {
    /// Starts a node, or returns `None` (with a message; a panic under CI) when RabbitMQ is
    /// not installed or we are not root (the Debian scripts switch to the `rabbitmq` user).
    pub fn start() -> Option<Self> {
        let (Some(_), Some(_)) = (sbin("rabbitmq-server"), sbin("rabbitmqctl")) else {
            queue_core::conformance::skip_or_fail(
                "rabbitmq-server is not installed (`cargo xtask services up rabbitmq`)",
            );
            return None;
        };
        let port = free_port();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let rabbit = Self {
            port,
            node: format!("queue_amqp_test_{id}@localhost"),
            dir: std::env::temp_dir().join(format!("queue-amqp-rabbit-{id}")),
        };
        for sub in ["log", "mnesia"] {
            std::fs::create_dir_all(rabbit.dir.join(sub)).expect("create the node's directory");
        }
        // The server runs as `rabbitmq` and writes there.
        let owned = Command::new("chown")
            .args(["-R", "rabbitmq"])
            .arg(&rabbit.dir)
            .status()
            .is_ok_and(|status| status.success());
        if !owned {
            queue_core::conformance::skip_or_fail(
                "cannot give the node's directory to user rabbitmq (not root?)",
            );
            return None;
        }
        rabbit.boot();
        Some(rabbit)
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(sbin(name).expect("installed"));
        command
            .current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn ctl(&self, arguments: &[&str]) -> bool {
        self.command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(arguments)
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts the node and waits until it accepts AMQP connections.
    fn boot(&self) {
        let started = self
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .is_ok_and(|status| status.success());
        assert!(started, "rabbitmq-server -detached failed");
        // `await_startup` fails at once until the node registered with epmd: retry it.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.ctl(&["await_startup", "--timeout", "30"]) {
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ node did not start"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `amqp://` URL of the node, with `query`.
    pub fn url(&self, query: &str) -> String {
        with_query(
            &format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port),
            query,
        )
    }

    /// Stops the node (gracefully: persistent messages survive) and starts it again.
    pub fn restart(&self) {
        assert!(self.ctl(&["stop"]), "rabbitmqctl stop failed");
        self.boot();
    }

    /// Closes every client connection, as a broker under maintenance or a network failure
    /// would.
    pub fn close_connections(&self) -> bool {
        self.ctl(&["close_all_connections", "closed by the test"])
    }

    /// Stops the node.
    pub fn stop(&self) {
        let _ = self.ctl(&["stop"]);
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain lapin connection and channel to `url`, for what the broker API does not do
/// (passive declarations, deleting test exchanges). Keep the connection while using the
/// channel.
pub async fn raw_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let handle = tokio::runtime::Handle::current();
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::default().with_handle(handle.clone()))
        .with_reactor(tokio_reactor_trait::Tokio::default().with_handle(handle));
    let connection = lapin::Connection::connect(url, properties)
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    (connection, channel)
}

/// The AMQP reply code of a passive `queue.declare` of `queue` on a new channel: `None`
/// when it exists and is free, 404 when it does not exist, 405 when it is another
/// connection's exclusive queue.
pub async fn passive_declare(connection: &lapin::Connection, queue: &str) -> Option<u16> {
    let channel = connection.create_channel().await.expect("open a channel");
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = channel
        .queue_declare(queue, passive, Default::default())
        .await;
    match result {
        Ok(_) => {
            let _ = channel.close(200, "checked").await;
            None
        }
        Err(error) => match error.kind() {
            lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
            other => panic!("passive declare of {queue}: {other:?}"),
        },
    }
}
