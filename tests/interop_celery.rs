//! Interoperability with the real Python Celery 5.7, in both directions, on Redis and on
//! RabbitMQ (results in Redis).
#![cfg(all(feature = "redis", feature = "amqp"))]

mod interop {
    pub mod python;
    pub mod setup;
    pub mod tasks;
}

use std::time::Duration;

use interop::python::{self, PythonWorker};
use interop::setup::{Setup, rust_app, setup, unique};
use interop::tasks::{add, echo, fail, flaky};
use queue::protocol::kombu;
use queue::{ResultError, Signature, TaskState, Worker};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Python's `send_task`/`apply_async` → our worker; results read by Python's AsyncResult.
async fn python_clients_rust_worker(setup: Setup) {
    let queue = unique("py2rs");
    let app = rust_app(&setup, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let script = format!(
        r#"
import datetime, json
from tasks import app
Q = "{queue}"
out = {{}}
out["add"] = app.send_task("tasks.add", args=(2, 3), queue=Q).get(timeout=60)
out["kwargs"] = app.send_task("tasks.add", kwargs={{"x": 4, "y": 5}}, queue=Q).get(timeout=60)
out["priority"] = app.send_task("tasks.add", args=(1, 1), queue=Q, priority=9).get(timeout=60)
out["countdown"] = app.send_task("tasks.add", args=(10, 1), queue=Q, countdown=1).get(timeout=60)
eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
out["eta"] = app.send_task("tasks.add", args=(20, 1), queue=Q, eta=eta).get(timeout=60)
past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
expired = app.send_task("tasks.add", args=(1, 2), queue=Q, expires=past)
try:
    expired.get(timeout=60); out["expired"] = "no error"
except Exception as error:
    out["expired"] = [type(error).__name__, expired.state]
out["flaky"] = app.send_task("tasks.flaky", args=(2,), queue=Q).get(timeout=60)
failing = app.send_task("tasks.fail", args=("broken input",), queue=Q)
try:
    failing.get(timeout=60); out["fail"] = "no error"
except Exception as error:
    out["fail"] = [type(error).__name__, str(error), failing.state]
when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
echoed = app.send_task("tasks.echo", args=({{"when": when, "n": [1, "x", None]}},), queue=Q).get(timeout=60)
out["echo"] = [echoed["when"] == when, echoed["n"]]
unknown = app.send_task("tasks.nobody_knows", queue=Q)
try:
    unknown.get(timeout=60); out["unknown"] = "no error"
except Exception as error:
    out["unknown"] = [type(error).__name__, unknown.state]
print(json.dumps(out))
"#
    );
    let python = setup.python.clone();
    let (broker, backend) = (setup.broker.clone(), setup.backend.clone());
    let out = tokio::task::spawn_blocking(move || {
        python::run_script(&python, &broker, &backend, &script)
    })
    .await
    .unwrap();
    worker.shutdown().await.unwrap();
    assert_eq!(out["add"], 5);
    assert_eq!(out["kwargs"], 9);
    assert_eq!(out["priority"], 2);
    assert_eq!(out["countdown"], 11);
    assert_eq!(out["eta"], 21);
    assert_eq!(out["expired"], json!(["TaskRevokedError", "REVOKED"]));
    assert_eq!(out["flaky"], 2);
    assert_eq!(
        out["fail"],
        json!(["ValueError", "broken input", "FAILURE"])
    );
    assert_eq!(out["echo"], json!([true, [1, "x", null]]));
    assert_eq!(out["unknown"], json!(["NotRegistered", "FAILURE"]));
    // The unknown task's message is kept in the dead-letter place, not lost.
    let dead = app.broker().dead_letters(&queue, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("tasks.nobody_knows"),
        "{}",
        dead[0].reason
    );
}

/// Our typed API and signatures → a Python worker; results read by our AsyncResult.
async fn rust_client_python_worker(setup: Setup) {
    let queue = unique("rs2py");
    let app = rust_app(&setup, &queue).await;
    let worker = PythonWorker::start(&setup.python, &setup.broker, &setup.backend, &[&queue]);
    assert_eq!(
        add::new(2, 3)
            .send(&app)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        5
    );
    let by_name = Signature::new("tasks.add")
        .kwarg("x", 4)
        .kwarg("y", 5)
        .send(&app)
        .await
        .unwrap();
    assert_eq!(by_name.get(WAIT).await.unwrap(), json!(9));
    let urgent = add::new(1, 1).priority(9).send(&app).await.unwrap();
    assert_eq!(urgent.get(WAIT).await.unwrap(), 2);
    let later = add::new(10, 1)
        .countdown(Duration::from_secs(1))
        .send(&app)
        .await
        .unwrap();
    assert_eq!(later.get(WAIT).await.unwrap(), 11);
    let expired = add::new(1, 2)
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
        .send(&app)
        .await
        .unwrap();
    assert!(matches!(
        expired.get(WAIT).await,
        Err(ResultError::Revoked { .. })
    ));
    assert_eq!(expired.state().await.unwrap(), TaskState::Revoked);
    assert_eq!(
        flaky::new(2)
            .send(&app)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        2
    );
    match fail::new("broken input".into())
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
    {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(
                (error.exc_type(), error.message()),
                ("ValueError", "broken input")
            );
            assert!(
                error
                    .traceback_text()
                    .is_some_and(|text| text.contains("Traceback"))
            );
        }
        other => panic!("expected ValueError, got {other:?}"),
    }
    let when = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05+00:00").unwrap();
    let value = json!({"when": kombu::datetime(&when), "n": [1, "x", null]});
    let echoed = echo::new(value.clone())
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(
        echoed, value,
        "Python gave back the typed datetime as kombu writes it"
    );
    worker.stop();
}

/// Python and Rust workers on one queue: every result exactly once.
async fn mixed_workers_share_a_queue(setup: Setup) {
    let queue = unique("mixed");
    let app = rust_app(&setup, &queue).await;
    let python_worker =
        PythonWorker::start(&setup.python, &setup.broker, &setup.backend, &[&queue]);
    let rust_worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();
    let count = 200;
    let results = app
        .send_many((0..count).map(|index| add::new(index, 1000).into()))
        .await
        .unwrap();
    for (index, result) in results.into_iter().enumerate() {
        let value: i64 = result.typed().get(WAIT).await.unwrap();
        assert_eq!(value, index as i64 + 1000);
    }
    let by_rust = rust_worker.stats().succeeded.get() as usize;
    rust_worker.shutdown().await.unwrap();
    // Python logs a success just after storing the result: wait for the log to catch up.
    let expected = count as usize - by_rust;
    let deadline = std::time::Instant::now() + WAIT;
    while python_worker.count("succeeded in") < expected && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let by_python = python_worker.count("succeeded in");
    let log = python_worker.log();
    python_worker.stop();
    assert!(
        by_rust > 0 && by_python > 0,
        "both workers took tasks: rust {by_rust}, python {by_python}"
    );
    assert_eq!(
        by_rust + by_python,
        count as usize,
        "rust {by_rust} + python {by_python}\n{log}"
    );
}

/// The same call published by Python and by us: the same header keys, properties and body
/// shape; values differ only where the wire spec allows (ids, origin, reply_to, lang, tags).
async fn messages_match_field_by_field(setup: Setup, transport: &str) {
    let python_queue = unique("shape.py");
    let rust_queue = unique("shape.rs");
    let app = rust_app(&setup, &rust_queue).await;
    add::new(2, 3).send(&app).await.unwrap();
    let script = format!(
        r#"
import base64, json
from tasks import app
app.send_task("tasks.add", args=(2, 3), queue="{python_queue}", ignore_result=False)
def read(queue):
    if "{transport}" == "redis":
        import redis
        client = redis.Redis.from_url(app.conf.broker_url)
        envelope = json.loads(client.lindex(queue, 0))
        body = json.loads(base64.b64decode(envelope["body"]))
        properties = envelope["properties"]
        return {{"headers": envelope["headers"], "properties": sorted(properties),
                "content_type": envelope["content-type"], "body": body}}
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        message = channel.basic_get(queue, no_ack=True)
        return {{"headers": message.headers, "properties": sorted(message.properties),
                "content_type": message.content_type, "body": json.loads(message.body)}}
print(json.dumps({{"python": read("{python_queue}"), "rust": read("{rust_queue}")}}))
"#
    );
    let python = setup.python.clone();
    let (broker, backend) = (setup.broker.clone(), setup.backend.clone());
    let out = tokio::task::spawn_blocking(move || {
        python::run_script(&python, &broker, &backend, &script)
    })
    .await
    .unwrap();
    let (ours, theirs) = (&out["rust"], &out["python"]);
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&ours["headers"]),
        keys(&theirs["headers"]),
        "header keys"
    );
    for same in [
        "task",
        "retries",
        "timelimit",
        "argsrepr",
        "kwargsrepr",
        "eta",
        "expires",
        "group",
        "group_index",
        "parent_id",
        "shadow",
        "stamps",
        "stamped_headers",
        "replaced_task_nesting",
        "ignore_result",
    ] {
        assert_eq!(
            ours["headers"][same], theirs["headers"][same],
            "header {same}"
        );
    }
    assert_eq!(ours["headers"]["root_id"], ours["headers"]["id"]);
    // Ours carry one property more, `timestamp` (when published; AMQP's standard property,
    // kept and ignored by kombu): the monitor reads the age of a queue's oldest message
    // from it.
    let mut our_properties = ours["properties"].as_array().cloned().unwrap_or_default();
    let stamped = our_properties.len();
    our_properties.retain(|name| name != "timestamp");
    assert_eq!(stamped, our_properties.len() + 1, "ours are timestamped");
    assert_eq!(
        Value::Array(our_properties),
        theirs["properties"],
        "property names"
    );
    assert_eq!(ours["content_type"], theirs["content_type"]);
    assert_eq!(ours["body"], theirs["body"], "body [args, kwargs, embed]");
}

macro_rules! matrix {
    ($($name:ident: $variable:literal => $scenario:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(setup) = setup($variable) {
                    ($scenario)(setup).await;
                }
            }
        )*
    };
}

matrix! {
    redis_python_clients_rust_worker: "QUEUE_TEST_REDIS_URL" => python_clients_rust_worker;
    redis_rust_client_python_worker: "QUEUE_TEST_REDIS_URL" => rust_client_python_worker;
    redis_mixed_workers_share_a_queue: "QUEUE_TEST_REDIS_URL" => mixed_workers_share_a_queue;
    redis_messages_match_field_by_field: "QUEUE_TEST_REDIS_URL" => |setup| messages_match_field_by_field(setup, "redis");
    amqp_python_clients_rust_worker: "QUEUE_TEST_AMQP_URL" => python_clients_rust_worker;
    amqp_rust_client_python_worker: "QUEUE_TEST_AMQP_URL" => rust_client_python_worker;
    amqp_mixed_workers_share_a_queue: "QUEUE_TEST_AMQP_URL" => mixed_workers_share_a_queue;
    amqp_messages_match_field_by_field: "QUEUE_TEST_AMQP_URL" => |setup| messages_match_field_by_field(setup, "amqp");
}
