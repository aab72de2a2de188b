//! Broadcast interop with the real Python Celery 5.7 / kombu 5.7 (the venv of
//! `cargo xtask python-venv`, found through `QUEUE_TEST_PYTHON`): a Python
//! `app.control.ping` is answered here, a Python event receiver gets our heartbeat, and a
//! Python event dispatcher's event is received here. Database 6.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::ClientInterface;
use queue_core::Broker;
use queue_core::broadcast::{Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription};
use queue_core::events::{Event, EventSource, WorkerEventKind, WorkerStatus};
use queue_redis::RedisBroker;
use serde_json::{Value as Json, json};

const DB: u8 = 6;
const WAIT: Duration = Duration::from_secs(20);
const NODE: &str = "celery@rust-test";

/// The venv's interpreter, or `None` (a panic under CI).
fn python() -> Option<String> {
    if let Ok(python) = std::env::var("QUEUE_TEST_PYTHON") {
        return Some(python);
    }
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/python-venv/bin/python"
    );
    if std::path::Path::new(venv).exists() {
        return Some(venv.to_owned());
    }
    queue_core::conformance::skip_or_fail(
        "QUEUE_TEST_PYTHON is not set and there is no Python Celery venv \
         (run `cargo xtask python-venv`)",
    );
    None
}

/// A Python process killed (by its pid) if the test ends before it does.
struct Python(Option<Child>);

impl Python {
    fn spawn(python: &str, script: &str, args: &[&str]) -> Self {
        let child = Command::new(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        Self(Some(child))
    }

    /// Its stdout once it exited successfully (waited for off the runtime's threads).
    async fn output(mut self) -> String {
        let child = self.0.take().expect("not yet waited for");
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .expect("python ran");
        assert!(
            output.status.success(),
            "python failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn broker() -> Option<(Arc<RedisBroker>, Arc<dyn Broadcast>, String)> {
    let url = common::redis_url(DB, "")?;
    let broker = Arc::new(RedisBroker::connect(&url).await.expect("connect to Redis"));
    let broadcast = broker
        .clone()
        .broadcast()
        .expect("Redis has a broadcast side");
    Some((broker, broadcast, url))
}

async fn next(subscription: &mut Subscription, context: &str) -> BroadcastMessage {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{context}: the subscription ended"),
        Err(_) => panic!("{context}: nothing within {WAIT:?}"),
    }
}

const PING: &str = r#"
import json, sys
from celery import Celery
app = Celery(broker=sys.argv[1])
replies = app.control.ping(destination=[sys.argv[2]], timeout=15)
print(json.dumps(replies), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ping_is_answered_here() {
    let Some(python) = python() else { return };
    let Some((_broker, broadcast, url)) = broker().await else {
        return;
    };
    let mut requests = broadcast
        .subscribe(Binding {
            exchange: "celery.pidbox".into(),
            kind: ExchangeKind::Fanout,
            routing_key: String::new(),
            queue: format!("{NODE}.celery.pidbox"),
        })
        .await
        .unwrap();
    // Subscribed (live on the server) before Python publishes.
    let client = Python::spawn(&python, PING, &[&url, NODE]);
    let request = next(&mut requests, "pidbox request").await;
    assert_eq!(request.routing_key, "");
    assert!(
        request.headers.contains_key("clock"),
        "{:?}",
        request.headers
    );
    assert!(
        request.headers.contains_key("expires"),
        "{:?}",
        request.headers
    );
    let body: Json = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["method"], "ping");
    assert_eq!(body["destination"], json!([NODE]));
    let ticket = body["ticket"].as_str().expect("a ticket").to_owned();
    let reply_to = &body["reply_to"];
    assert_eq!(reply_to["exchange"], "reply.celery.pidbox");
    let reply_key = reply_to["routing_key"].as_str().expect("a reply key");

    let reply = serde_json::to_vec(&json!({NODE: {"ok": "pong"}})).unwrap();
    let message = BroadcastMessage::new(reply_key, reply)
        .header("ticket", ticket.as_str())
        .header("clock", 2);
    broadcast
        .send("reply.celery.pidbox", ExchangeKind::Direct, message)
        .await
        .unwrap();
    let replies: Json = serde_json::from_str(client.output().await.trim()).unwrap();
    assert_eq!(replies, json!([{NODE: {"ok": "pong"}}]));
}

/// Receives worker heartbeats as Celery's monitors do, under a connection name the test
/// watches for (kombu's `client_name` transport option), until one from `argv[3]`.
const RECEIVE_HEARTBEAT: &str = r#"
import json, sys
from celery import Celery
url, name, node = sys.argv[1], sys.argv[2], sys.argv[3]
app = Celery(broker=url)
app.conf.broker_transport_options = {'client_name': name}
got = []
def on_heartbeat(event):
    if event.get('hostname') == node:
        got.append(event)
with app.connection_for_read() as conn:
    receiver = app.events.Receiver(conn, handlers={'worker-heartbeat': on_heartbeat})
    for _ in receiver.itercapture(limit=None, timeout=20, wakeup=False):
        if got:
            break
print(json.dumps(got[0]), flush=True)
"#;

/// Whether a connection named `name` has a pattern subscription on the server.
async fn pattern_subscribed(broker: &RedisBroker, name: &str) -> bool {
    let clients: String = broker
        .client()
        .client_list::<String, String>(None, None)
        .await
        .unwrap();
    let needle = format!(" name={name} ");
    clients
        .lines()
        .filter(|line| line.contains(&needle))
        .any(|line| !line.contains(" psub=0 "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_heartbeat_reaches_a_python_event_receiver() {
    let Some(python) = python() else { return };
    let Some((broker, broadcast, url)) = broker().await else {
        return;
    };
    let name = format!("rs-test-events-{}", uuid::Uuid::new_v4().simple());
    let receiver = Python::spawn(&python, RECEIVE_HEARTBEAT, &[&url, &name, NODE]);
    // The server's word that kombu's PSUBSCRIBE took effect.
    let deadline = Instant::now() + WAIT;
    while !pattern_subscribed(&broker, &name).await {
        assert!(
            Instant::now() < deadline,
            "the Python receiver never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = WorkerStatus {
        freq: 2.0,
        active: 1,
        processed: 7,
        loadavg: [0.5, 0.25, 0.125],
        version: "0.1.0".into(),
    };
    let event = EventSource::new(NODE).worker(WorkerEventKind::Heartbeat, &status);
    let message = BroadcastMessage::new(event.routing_key(), Event::encode(&[event]))
        .header("hostname", NODE);
    assert_eq!(message.routing_key, "worker.heartbeat");
    broadcast
        .send("celeryev", ExchangeKind::Topic, message)
        .await
        .unwrap();
    let got: Json = serde_json::from_str(receiver.output().await.trim()).unwrap();
    assert_eq!(got["type"], "worker-heartbeat");
    assert_eq!(got["hostname"], NODE);
    assert_eq!((&got["freq"], &got["processed"]), (&json!(2.0), &json!(7)));
}

const DISPATCH: &str = r#"
import sys
from celery import Celery
url, task_id = sys.argv[1], sys.argv[2]
app = Celery(broker=url)
with app.connection_for_write() as conn:
    dispatcher = app.events.Dispatcher(conn, hostname='py@interop', enabled=True)
    dispatcher.send('task-succeeded', uuid=task_id, result='3', runtime=0.5)
    dispatcher.close()
print('sent', flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_event_is_received_here() {
    let Some(python) = python() else { return };
    let Some((_broker, broadcast, url)) = broker().await else {
        return;
    };
    let mut events = broadcast
        .subscribe(Binding {
            exchange: "celeryev".into(),
            kind: ExchangeKind::Topic,
            routing_key: "#".into(),
            queue: format!("celeryev.{}", uuid::Uuid::new_v4()),
        })
        .await
        .unwrap();
    let task_id = uuid::Uuid::new_v4().to_string();
    let sender = Python::spawn(&python, DISPATCH, &[&url, &task_id]);
    assert_eq!(sender.output().await.trim(), "sent");
    // Other tests on this database send events too: ours is the one with our task id.
    loop {
        let message = next(&mut events, "Python's event").await;
        let decoded = Event::decode(&message.body).expect("an event body");
        let Some(Ok(event)) = decoded.into_iter().next() else {
            panic!("not an event: {}", String::from_utf8_lossy(&message.body));
        };
        if event.uuid() != Some(task_id.as_str()) {
            continue;
        }
        assert_eq!(event.kind, "task-succeeded");
        assert_eq!(event.hostname, "py@interop");
        assert_eq!(event.field("result"), Some(&json!("3")));
        assert_eq!(message.routing_key, "task.succeeded");
        assert_eq!(message.headers.get("hostname"), Some(&json!("py@interop")));
        break;
    }
}
