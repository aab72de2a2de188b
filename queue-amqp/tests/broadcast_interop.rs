//! Events and remote control against the real Python packages (celery 5.7, kombu, py-amqp
//! from the venv `cargo xtask test` prepares, `QUEUE_TEST_PYTHON`) on a real RabbitMQ:
//!
//! - a Rust node on `celery.pidbox` answers Python's `app.control.ping()`;
//! - a heartbeat we send on `celeryev` reaches Python's `EventReceiver`;
//! - an event Python's `EventDispatcher` sends reaches a Rust `#` subscription;
//! - Python and Rust declare the three exchanges the same way, whoever comes first.
//!
//! Python and Rust wait for each other on real signals: a Rust subscription exists once
//! `subscribe` returns; Python prints a line once it consumes. Without Python or RabbitMQ
//! the tests print `skipped:` and pass, except under CI.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use queue_amqp::AmqpBroker;
use queue_core::broadcast::{Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription};
use queue_core::broker::Broker;
use queue_core::events::{Event, EventSource, WorkerEventKind, WorkerStatus};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long a step may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// The venv's Python: skipped without it, failing under CI.
fn python() -> Option<String> {
    queue_core::conformance::server_url("QUEUE_TEST_PYTHON")
}

/// A Python script running, its stdout read line by line.
struct Python {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Python {
    fn spawn(python: &str, script: &str, arguments: &[&str]) -> Self {
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(script)
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line satisfying `wanted`; panics with stderr if Python ends first.
    async fn line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Ok(None) => self.fail(&format!("python ended before {what}")),
                Err(_) => self.fail(&format!("python printed no {what} within {WAIT:?}")),
            }
        }
    }

    /// Waits for Python to exit successfully; returns its last line as JSON.
    async fn finish(mut self) -> Value {
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            self.seen.push(line);
        }
        let mut child = self.child;
        let output = tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("wait for python");
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            (status, stderr)
        })
        .await
        .expect("join");
        let (status, stderr) = output;
        assert!(
            status.success(),
            "python failed: {stderr}\n{}",
            self.seen.join("\n")
        );
        let last = self.seen.last().cloned().unwrap_or_default();
        serde_json::from_str(&last)
            .unwrap_or_else(|error| panic!("python printed {last:?}: {error}"))
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        panic!(
            "{why}\nstdout:\n{}\nstderr:\n{stderr}",
            self.seen.join("\n")
        );
    }
}

/// Python, the RabbitMQ URL as Python takes it, and our broadcast side.
async fn setup() -> Option<(String, String, Arc<dyn Broadcast>)> {
    let (Some(python), Some(url)) = (python(), common::amqp_url("")) else {
        return None;
    };
    let plain = std::env::var(common::URL_VARIABLE).expect("set");
    let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let broadcast = broker.broadcast().expect("AMQP has a broadcast side");
    Some((python, plain, broadcast))
}

async fn subscribe(
    broadcast: &Arc<dyn Broadcast>,
    exchange: &str,
    kind: ExchangeKind,
    routing_key: &str,
    queue: &str,
) -> Subscription {
    broadcast
        .subscribe(Binding {
            exchange: exchange.to_owned(),
            kind,
            routing_key: routing_key.to_owned(),
            queue: queue.to_owned(),
        })
        .await
        .unwrap_or_else(|error| panic!("subscribe to {exchange}: {error}"))
}

async fn next(subscription: &mut Subscription, what: &str) -> BroadcastMessage {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

const PING: &str = r#"
import json, sys
from celery import Celery
app = Celery("interop", broker=sys.argv[1])
print(json.dumps(app.control.ping(timeout=float(sys.argv[2]))))
"#;

/// Node name of the Rust node in the ping test.
const NODE: &str = "rust-test@host";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_node_answers_python_ping() {
    let Some((python, url, broadcast)) = setup().await else {
        return;
    };
    let queue = format!("{NODE}.celery.pidbox");
    let mut requests = subscribe(
        &broadcast,
        "celery.pidbox",
        ExchangeKind::Fanout,
        "",
        &queue,
    )
    .await;
    let ping = Python::spawn(&python, PING, &[&url, "3"]);
    // Other clients may broadcast too (a receiver's `heartbeat` wakeup): take the ping.
    let (request, body) = loop {
        let request = next(&mut requests, "the ping request").await;
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON request");
        if body["method"] == "ping" && body.get("ticket").is_some() {
            break (request, body);
        }
    };
    assert_eq!(request.routing_key, "");
    assert!(
        request.headers.get("clock").is_some_and(Value::is_u64),
        "{:?}",
        request.headers
    );
    assert!(
        request.headers.contains_key("expires"),
        "{:?}",
        request.headers
    );
    assert_eq!(body["arguments"], json!({}));
    assert_eq!(body["destination"], Value::Null);
    let reply_to = &body["reply_to"];
    assert_eq!(reply_to["exchange"], "reply.celery.pidbox");
    let routing_key = reply_to["routing_key"]
        .as_str()
        .expect("reply_to.routing_key");
    let reply = BroadcastMessage::new(
        routing_key,
        serde_json::to_vec(&json!({NODE: {"ok": "pong"}})).unwrap(),
    )
    .header("ticket", body["ticket"].clone())
    .header("clock", 1);
    broadcast
        .send("reply.celery.pidbox", ExchangeKind::Direct, reply)
        .await
        .expect("reply");
    let replies = ping.finish().await;
    let replies = replies.as_array().expect("a list of replies");
    assert!(
        replies.contains(&json!({NODE: {"ok": "pong"}})),
        "our node is among the replies: {replies:?}"
    );
}

const RECEIVE_HEARTBEAT: &str = r#"
import json, sys
from celery import Celery
from celery.events.receiver import EventReceiver
app = Celery("interop", broker=sys.argv[1])
hostname = sys.argv[2]

class Receiver(EventReceiver):
    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        print("consuming", flush=True)

    def _receive(self, body, message, *args, **kwargs):
        if isinstance(body, dict) and body.get("hostname") == hostname:
            print(json.dumps({"headers": message.headers, "event": body,
                              "routing_key": message.delivery_info["routing_key"],
                              "delivery_mode": message.properties.get("delivery_mode"),
                              "content_type": message.content_type}), flush=True)
            self.should_stop = True
        return super()._receive(body, message, *args, **kwargs)

with app.connection_for_read() as connection:
    Receiver(connection, app=app, handlers={"*": lambda event: None}).capture(
        limit=None, timeout=20, wakeup=False)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_receives_our_heartbeat() {
    let Some((python, url, broadcast)) = setup().await else {
        return;
    };
    let hostname = format!("rust-{}@host", &uuid()[..8]);
    let mut receiver = Python::spawn(&python, RECEIVE_HEARTBEAT, &[&url, &hostname]);
    receiver
        .line("`consuming`", |line| line == "consuming")
        .await;
    let status = WorkerStatus {
        freq: 2.0,
        active: 1,
        processed: 7,
        loadavg: [0.5, 0.25, 0.1],
        version: "5.7.0".into(),
    };
    let event = EventSource::new(&hostname).worker(WorkerEventKind::Heartbeat, &status);
    assert_eq!(event.routing_key(), "worker.heartbeat");
    let message = BroadcastMessage::new(event.routing_key(), Event::encode(&[event]))
        .header("hostname", hostname.as_str());
    broadcast
        .send("celeryev", ExchangeKind::Topic, message)
        .await
        .expect("send the heartbeat");
    let got = receiver.finish().await;
    assert_eq!(got["routing_key"], "worker.heartbeat");
    assert_eq!(got["headers"], json!({"hostname": hostname}));
    assert_eq!(got["delivery_mode"], 1);
    assert_eq!(got["content_type"], "application/json");
    let event = &got["event"];
    assert_eq!(event["type"], "worker-heartbeat");
    assert_eq!(event["freq"], 2.0);
    assert_eq!(event["active"], 1);
    assert_eq!(event["processed"], 7);
}

const DISPATCH: &str = r#"
import json, sys
from celery import Celery
app = Celery("interop", broker=sys.argv[1])
with app.connection_for_write() as connection:
    with app.events.Dispatcher(connection, hostname=sys.argv[2]) as dispatcher:
        dispatcher.send("task-succeeded", uuid=sys.argv[3], result="'ok'", runtime=0.5)
print(json.dumps({"sent": True}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_receive_python_events() {
    let Some((python, url, broadcast)) = setup().await else {
        return;
    };
    let queue = format!("celeryev.{}", uuid());
    let mut events = subscribe(&broadcast, "celeryev", ExchangeKind::Topic, "#", &queue).await;
    let hostname = format!("py-{}@host", &uuid()[..8]);
    let task_id = uuid();
    let dispatcher = Python::spawn(&python, DISPATCH, &[&url, &hostname, &task_id]);
    // Other tests send on `celeryev` too: take the one from our dispatcher.
    let message = loop {
        let message = next(&mut events, "Python's event").await;
        if message.headers.get("hostname") == Some(&json!(hostname)) {
            break message;
        }
    };
    assert_eq!(dispatcher.finish().await, json!({"sent": true}));
    assert_eq!(message.routing_key, "task.succeeded");
    let mut decoded = Event::decode(&message.body).expect("an event body");
    assert_eq!(decoded.len(), 1);
    let event = decoded.remove(0).expect("a valid event");
    assert_eq!(event.kind, "task-succeeded");
    assert_eq!(event.hostname, hostname);
    assert_eq!(event.uuid(), Some(task_id.as_str()));
    assert_eq!(event.field("runtime"), Some(&json!(0.5)));
    assert!(event.clock > 0 && event.timestamp > 0.0 && event.pid > 0);
}

/// Declares the event exchange `argv[2]` and the mailbox exchanges of `argv[3]` exactly as
/// Celery's receiver, dispatcher and control client declare them.
const DECLARE: &str = r#"
import json, sys
from celery import Celery
from celery.events.event import get_exchange
app = Celery("interop", broker=sys.argv[1])
app.conf.event_exchange = sys.argv[2]
app.conf.control_exchange = sys.argv[3]
with app.connection_for_write() as connection:
    channel = connection.default_channel
    get_exchange(connection, name=sys.argv[2])(channel).declare()
    mailbox = app.control.mailbox(connection)
    mailbox.exchange(channel).declare()
    mailbox.reply_exchange(channel).declare()
    print(json.dumps([mailbox.exchange.name, mailbox.reply_exchange.name]))
"#;

/// The three exchanges of `control` and `events` as Celery names them.
fn exchanges(events: &str, control: &str) -> [(String, ExchangeKind); 3] {
    [
        (events.to_owned(), ExchangeKind::Topic),
        (format!("{control}.pidbox"), ExchangeKind::Fanout),
        (format!("reply.{control}.pidbox"), ExchangeKind::Direct),
    ]
}

/// Subscribes to and sends on each exchange of `events` and `control`.
async fn use_from_rust(broadcast: &Arc<dyn Broadcast>, events: &str, control: &str) {
    for (exchange, kind) in exchanges(events, control) {
        let queue = format!("{exchange}.q.{}", uuid());
        let mut subscription = subscribe(broadcast, &exchange, kind, "key", &queue).await;
        let message = BroadcastMessage::new("key", b"{}".to_vec());
        broadcast
            .send(&exchange, kind, message)
            .await
            .unwrap_or_else(|error| panic!("send on {exchange}: {error}"));
        assert_eq!(next(&mut subscription, &exchange).await.body, b"{}");
    }
}

/// Python first, then Rust: Rust's declarations are accepted. Rust first, then Python:
/// Python's are accepted, which RabbitMQ does only when flags and arguments are equal (a
/// difference would close Python's channel with PRECONDITION_FAILED and fail the script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_agree_whoever_comes_first() {
    let Some((python, url, broadcast)) = setup().await else {
        return;
    };
    let (events, control) = (format!("ev-{}", uuid()), format!("ctl-{}", uuid()));
    let names = Python::spawn(&python, DECLARE, &[&url, &events, &control])
        .finish()
        .await;
    assert_eq!(
        names,
        json!([
            format!("{control}.pidbox"),
            format!("reply.{control}.pidbox")
        ])
    );
    use_from_rust(&broadcast, &events, &control).await;

    let (events_b, control_b) = (format!("ev-{}", uuid()), format!("ctl-{}", uuid()));
    use_from_rust(&broadcast, &events_b, &control_b).await;
    Python::spawn(&python, DECLARE, &[&url, &events_b, &control_b])
        .finish()
        .await;

    let (_connection, channel) = common::raw_channel(&url).await;
    for (exchange, _) in exchanges(&events, &control)
        .into_iter()
        .chain(exchanges(&events_b, &control_b))
    {
        let _ = channel.exchange_delete(&exchange, Default::default()).await;
    }
}
