//! Wire-level interop with the real Python Celery 5.7 / kombu 5.7 (the venv of
//! `cargo xtask python-venv`, found through `QUEUE_TEST_PYTHON`): Python's `send_task` is
//! consumed here, our messages are consumed by kombu, Python's `AsyncResult` reads our
//! results, and kombu's visibility restore gives back what our consumer took. Database 13.
//! A Python worker-level suite is a later issue.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::{HashesInterface, ListInterface, SortedSetsInterface};
use fred::types::Value;
use queue_core::{Broker, ConsumeOptions, Publish, ResultBackend, TaskMeta};
use serde_json::{Value as Json, json};

use common::{id_of, message, unique};

const DB: u8 = 13;

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

/// Runs `script` with the venv's Python; returns its stdout.
fn run_python(python: &str, script: &str, args: &[&str]) -> String {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

const SEND_TASKS: &str = r#"
import json, sys
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery(broker=url, backend=url)
urgent = app.send_task('interop.add', args=[1, 2], kwargs={'z': 3}, queue=queue, priority=0)
background = app.send_task('interop.add', args=[4, 5], queue=queue, priority=9)
later = app.send_task('interop.later', queue=queue, countdown=30)
print(json.dumps([urgent.id, background.id, later.id]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_send_task_is_consumed_here_and_reads_our_result() {
    let Some(python) = python() else { return };
    let Some(url) = common::redis_url(DB, "") else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let backend = queue_redis::RedisBackend::connect(&url, None)
        .await
        .unwrap();
    let queue = unique("from-python");
    let ids: Vec<String> =
        serde_json::from_str(&run_python(&python, SEND_TASKS, &[&url, &queue])).unwrap();

    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    while deliveries.len() < 3 {
        deliveries.extend(consumer.fetch(3, Duration::from_secs(5)).await.unwrap());
    }
    // kombu 0 (Python's urgent and default) is our 9 and served first; kombu 9 is our 0, last.
    let order: Vec<String> = deliveries.iter().map(id_of).collect();
    assert_eq!(order, [ids[0].clone(), ids[2].clone(), ids[1].clone()]);
    let urgent = deliveries[0].content.as_ref().unwrap();
    assert_eq!(urgent.priority(), 9);
    assert_eq!(urgent.task_name(), "interop.add");
    let body = urgent.decode_body().unwrap();
    assert_eq!(
        (body.args, body.kwargs.get("z")),
        (vec![json!(1), json!(2)], Some(&json!(3)))
    );
    assert_eq!(deliveries[2].content.as_ref().unwrap().priority(), 0);
    let later = deliveries[1].content.as_ref().unwrap();
    assert!(
        later.headers.eta.is_some(),
        "Python's countdown arrives as an eta header"
    );
    for delivery in &deliveries {
        consumer.ack(delivery).await.unwrap();
    }
    consumer.close().await.unwrap();

    // Python's AsyncResult reads (and waits for) what we store.
    let mut reader = Command::new(&python)
        .arg("-c")
        .arg(
            r#"
import sys
from celery import Celery
url, task_id = sys.argv[1], sys.argv[2]
app = Celery(broker=url, backend=url)
result = app.AsyncResult(task_id)
print('waiting', flush=True)
print(result.get(timeout=20), result.status, flush=True)
"#,
        )
        .args([&url, &ids[0]])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "waiting");
    backend
        .store(TaskMeta::success(&ids[0], json!(6)))
        .await
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "6 SUCCESS");
    assert!(reader.wait().unwrap().success());
}

const KOMBU_CONSUME: &str = r#"
import json, sys
from kombu import Connection, Queue
url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
got = []
with Connection(url) as conn:
    channel = conn.channel()
    bound = Queue(queue).bind(channel)
    for _ in range(count):
        m = bound.get(no_ack=False)
        got.append({'id': m.headers['id'], 'task': m.headers['task'], 'body': m.decode(),
                    'priority': m.properties.get('priority'),
                    'routing_key': m.delivery_info.get('routing_key')})
        m.ack()
    unacked = channel.client.hlen('unacked')
print(json.dumps({'got': got, 'unacked': unacked}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_consumes_our_messages_in_the_same_priority_order() {
    let Some(python) = python() else { return };
    let Some(url) = common::redis_url(DB, "global_keyprefix=") else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let queue = unique("to-python");
    let batch = [("ours-0", 0u8), ("ours-9", 9), ("ours-5", 5)]
        .iter()
        .map(|(id, priority)| Publish::new(&queue, message(id, *priority)))
        .collect();
    broker.publish(batch).await.unwrap();
    let out: Json =
        serde_json::from_str(&run_python(&python, KOMBU_CONSUME, &[&url, &queue, "3"])).unwrap();
    let got = out["got"].as_array().unwrap();
    let ids: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["ours-9", "ours-5", "ours-0"],
        "kombu serves our urgent message first"
    );
    assert_eq!(got[0]["priority"], 0, "kombu sees its own number");
    assert_eq!(got[0]["task"], "conformance.task");
    assert_eq!(
        got[0]["body"],
        json!([["ours-9"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])
    );
    assert_eq!(got[0]["routing_key"], json!(queue));
    assert_eq!(broker.queue_length(&queue).await.unwrap().total, 0);
}

const KOMBU_RESTORE: &str = r#"
import sys
from kombu import Connection
url = sys.argv[1]
with Connection(url) as conn:
    conn.default_channel.qos.restore_visible(num=1000)
print('restored')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombus_restore_gives_back_what_a_dead_rust_worker_held() {
    let Some(python) = python() else { return };
    let prefix = unique("restore");
    let Some(url) = common::redis_url(DB, &format!("global_keyprefix={prefix}:")) else {
        return;
    };
    let broker = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let queue = unique("held");
    broker
        .publish(vec![Publish::new(&queue, message("held", 5))])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let delivery = consumer
        .fetch(1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    let queue_core::DeliveryTag::Text(tag) = &delivery.tag else {
        panic!()
    };
    // As if taken long ago by a worker that died since.
    let client = broker.client();
    let _: Value = client
        .zadd(
            format!("{prefix}:unacked_index"),
            None,
            None,
            false,
            false,
            (1.0, tag.as_str()),
        )
        .await
        .unwrap();
    let script = KOMBU_RESTORE.replace(
        "Connection(url)",
        &format!("Connection(url, transport_options={{'global_keyprefix': '{prefix}:'}})"),
    );
    let plain = url.split('?').next().unwrap();
    assert_eq!(run_python(&python, &script, &[plain]).trim(), "restored");
    // Our priority 5 is kombu's 4: list step 3, marked redelivered by kombu.
    let list: Vec<String> = client
        .lrange(format!("{prefix}:{queue}\x06\x163"), 0, -1)
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "kombu put it back into its priority list");
    let restored: Json = serde_json::from_str(&list[0]).unwrap();
    assert_eq!(restored["headers"]["redelivered"], true);
    // Our consumer's ack of a message restored meanwhile changes nothing; another takes it.
    consumer.ack(&delivery).await.unwrap();
    let other = broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let again = other.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.iter().map(id_of).collect::<Vec<_>>(), ["held"]);
    assert!(again[0].redelivered);
    other.ack(&again[0]).await.unwrap();
    other.close().await.unwrap();
    consumer.close().await.unwrap();
}

const KOMBU_RESTORE_AND_GET: &str = r#"
import json, sys, time
from kombu import Connection, Queue
url, prefix, queue, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
got = None
with Connection(url, transport_options={'global_keyprefix': prefix}) as conn:
    channel = conn.default_channel
    bound = Queue(queue).bind(channel)
    deadline = time.time() + seconds
    while True:
        # What a Celery worker does every few seconds (its restore sweep), then a take.
        channel.qos.restore_visible(num=1000)
        message = bound.get(no_ack=False)
        if message is not None:
            got = {'id': message.headers['id'], 'eta': message.headers['eta'], 'at': time.time()}
            message.ack()
            break
        if time.time() >= deadline:
            break
        time.sleep(0.1)
print(json.dumps(got))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_of_a_producer_gone_is_brought_back_by_kombu_when_due() {
    let Some(python) = python() else { return };
    let prefix = format!("{}:", unique("delayed"));
    let Some(url) = common::redis_url(DB, &format!("global_keyprefix={prefix}")) else {
        return;
    };
    let plain = url.split('?').next().unwrap().to_owned();
    let queue = unique("later");
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    {
        // The producer publishes a countdown and goes away before it is due.
        let producer = queue_redis::RedisBroker::connect(&url).await.unwrap();
        let mut later = message("later", 9);
        later.headers.eta = Some(due.fixed_offset());
        producer
            .publish(vec![Publish::new(&queue, later)])
            .await
            .unwrap();
    }
    let run = |seconds: &str| {
        let out = run_python(
            &python,
            KOMBU_RESTORE_AND_GET,
            &[&plain, &prefix, &queue, seconds],
        );
        serde_json::from_str::<Json>(&out).unwrap()
    };
    // Before it is due, kombu's restore leaves it where it is.
    let early = run("0");
    if !early.is_null() {
        let at = early["at"].as_f64().unwrap();
        assert!(
            at + 0.05 >= due.timestamp_millis() as f64 / 1000.0,
            "kombu got it before its eta: {early}"
        );
    }
    // Once due, a Python-only consumer gets it: kombu's restore brings it back.
    let got = if early.is_null() { run("20") } else { early };
    assert_eq!(got["id"], "later", "kombu never saw the delayed message");
    let at = got["at"].as_f64().unwrap();
    assert!(
        at + 0.05 >= due.timestamp_millis() as f64 / 1000.0,
        "not before its eta: {got}"
    );
    assert!(got["eta"].as_str().is_some(), "it keeps its eta header");
    // Taken and acked by kombu: nothing of it left in `unacked` (the delayed set's member
    // is dropped by our next promotion, which finds the entry gone).
    let client = queue_redis::RedisBroker::connect(&url).await.unwrap();
    let unacked: i64 = client
        .client()
        .hlen(format!("{prefix}unacked"))
        .await
        .unwrap();
    assert_eq!(unacked, 0);
    assert_eq!(client.queue_length(&queue).await.unwrap().total, 0);
    let members: i64 = client
        .client()
        .zcard(format!("{prefix}_queue.delayed.{queue}"))
        .await
        .unwrap();
    assert_eq!(members, 0, "the stale member is dropped, promoting nothing");
}
