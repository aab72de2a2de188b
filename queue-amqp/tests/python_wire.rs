//! Wire-level interop with the real Python packages (celery 5.7, kombu, py-amqp from the venv
//! `cargo xtask test` prepares, `QUEUE_TEST_PYTHON`): a message Celery's `send_task` puts on
//! RabbitMQ decodes here field by field, and a message we publish reads back in kombu with
//! the same headers (nulls, nested arrays and tables), properties and body.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use queue_amqp::AmqpBroker;
use queue_core::broker::{Broker, ConsumeOptions, Publish};
use queue_core::conformance::broker::message;
use serde_json::{Value, json};

/// The venv's Python: skipped without it, failing under CI.
fn python() -> Option<String> {
    queue_core::conformance::server_url("QUEUE_TEST_PYTHON")
}

/// Runs `script` with the venv's Python; `argv[1]` is the broker URL, `argv[2]` the queue.
/// Returns what it printed last, as JSON.
fn run_python(python: &str, script: &str, url: &str, queue: &str) -> Value {
    let output = Command::new(python)
        .args(["-c", script, url, queue])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|error| panic!("python printed {last:?}: {error}"))
}

const SEND_TASK: &str = r#"
import json, sys
from celery import Celery
from kombu import Exchange, Queue
app = Celery("interop", broker=sys.argv[1])
# The same arguments as our test queues (x-expires), so that both declarations agree.
app.conf.task_queues = [Queue(sys.argv[2], Exchange(sys.argv[2]), routing_key=sys.argv[2],
                              queue_arguments={"x-expires": 600000})]
result = app.send_task(
    "tasks.add", args=(2, 3), kwargs={"z": 1}, queue=sys.argv[2], priority=5, expires=60,
    time_limit=30, soft_time_limit=20, headers={"custom_hdr": "x"}, shadow="shadowname",
)
print(json.dumps({"id": result.id}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_send_task_decodes_here() {
    let (Some(python), Some(url)) = (python(), common::amqp_url("")) else {
        return;
    };
    let plain = std::env::var(common::URL_VARIABLE).expect("set");
    let queue = common::unique("from-python");
    let sent = run_python(&python, SEND_TASK, &plain, &queue);

    let broker = AmqpBroker::connect(&url).await.expect("connect");
    // Celery declared the queue without arguments; declaring it the same way is accepted.
    broker
        .declare_queue(&queue)
        .await
        .expect("declare like Celery");
    let consumer = broker
        .consume(ConsumeOptions::new([&queue]))
        .await
        .expect("consume");
    let deliveries = consumer
        .fetch(1, Duration::from_secs(10))
        .await
        .expect("fetch");
    let delivery = deliveries.first().expect("Celery's message arrives");
    let received = delivery.content.as_ref().expect("Celery's message decodes");
    let headers = &received.headers;
    assert_eq!(received.id(), sent["id"].as_str().unwrap());
    assert_eq!(received.task_name(), "tasks.add");
    assert_eq!(headers.lang.as_deref(), Some("py"));
    assert_eq!(headers.shadow.as_deref(), Some("shadowname"));
    assert_eq!(
        headers.timelimit.hard(),
        Some(Duration::from_secs(30)),
        "timelimit is [hard, soft]"
    );
    assert_eq!(headers.timelimit.soft(), Some(Duration::from_secs(20)));
    assert_eq!(headers.retries, 0);
    assert!(headers.expires.is_some() && headers.eta.is_none());
    assert_eq!(headers.argsrepr.as_deref(), Some("(2, 3)"));
    assert_eq!(headers.stamps, Some(serde_json::Map::new()));
    assert_eq!(headers.extra.get("custom_hdr"), Some(&json!("x")));
    let properties = &received.properties;
    assert_eq!(properties.correlation_id.as_deref(), Some(received.id()));
    assert_eq!(properties.priority, Some(5));
    assert_eq!(properties.delivery_mode, Some(2));
    assert!(properties.reply_to.is_some());
    let ttl: u64 = properties
        .expiration
        .as_deref()
        .expect("expiration")
        .parse()
        .unwrap();
    assert!((50_000..=60_000).contains(&ttl), "expiration {ttl}");
    assert_eq!(received.content_type, "application/json");
    let body = received.decode_body().expect("body decodes");
    assert_eq!(body.args, vec![json!(2), json!(3)]);
    assert_eq!(body.kwargs.get("z"), Some(&json!(1)));
    consumer.ack(delivery).await.expect("ack");
    consumer.close().await.expect("close");
}

const KOMBU_GET: &str = r#"
import json, sys
from kombu import Connection
with Connection(sys.argv[1]) as connection:
    queue = connection.SimpleQueue(sys.argv[2], queue_args={"x-expires": 600000})
    message = queue.get(timeout=10)
    out = {
        "headers": message.headers,
        "properties": {k: message.properties.get(k) for k in
                       ("correlation_id", "reply_to", "delivery_mode", "priority")},
        "content_type": message.content_type,
        "payload": message.payload,
    }
    message.ack()
    print(json.dumps(out, default=str))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_reads_our_message() {
    let (Some(python), Some(url)) = (python(), common::amqp_url("")) else {
        return;
    };
    let plain = std::env::var(common::URL_VARIABLE).expect("set");
    let queue = common::unique("to-python");
    let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let mut sent = message("rust-1", 3);
    sent.headers.timelimit =
        queue_core::protocol::TimeLimit(Some(30.into()), serde_json::Number::from_f64(20.5));
    sent.headers.extra = json!({"nested": {"list": [1, 2.5, null, true, "s"], "empty": {}}, "big": 4_000_000_000i64})
        .as_object()
        .cloned()
        .unwrap();
    broker
        .publish(vec![Publish::new(&queue, sent.clone())])
        .await
        .expect("publish");

    let read = run_python(&python, KOMBU_GET, &plain, &queue);
    let headers = &read["headers"];
    assert_eq!(headers["task"], json!("conformance.task"));
    assert_eq!(headers["id"], json!("rust-1"));
    assert_eq!(headers["timelimit"], json!([30, 20.5]));
    assert_eq!(headers["eta"], Value::Null, "nulls travel as void");
    assert_eq!(
        headers["nested"],
        json!({"list": [1, 2.5, null, true, "s"], "empty": {}})
    );
    assert_eq!(headers["big"], json!(4_000_000_000i64));
    assert_eq!(headers["stamps"], json!({}));
    assert_eq!(read["properties"]["correlation_id"], json!("rust-1"));
    assert_eq!(read["properties"]["delivery_mode"], json!(2));
    assert_eq!(read["properties"]["priority"], json!(3));
    assert_eq!(read["content_type"], json!("application/json"));
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(read["payload"], body);
}
