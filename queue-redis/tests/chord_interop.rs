//! One chord, finished by Python Celery 5.7 and by us together (the venv of
//! `cargo xtask python-venv`, found through `QUEUE_TEST_PYTHON`): Python's own
//! `RedisBackend.on_chord_part_return` and `set_chord_size` on the same keys as our
//! [`ResultBackend`] chord join, with a global key prefix on both sides. Database 5.
//!
//! - we start the chord and record part 0, Python records part 1: Python completes it,
//!   publishes the body with `[part 0, part 1]` and cleans up (done marker);
//! - Python starts the chord and records parts 0 and 2 (one a failure), we record part 1:
//!   ours is Complete with Python's parts, in order, decoded.

mod common;

use std::process::Command;
use std::time::Duration;

use fred::prelude::{KeysInterface, SortedSetsInterface};
use queue_core::{Broker, ChordJoin, ChordPart, ConsumeOptions, ResultBackend, TaskState};
use queue_redis::{RedisBackend, RedisBroker};
use serde_json::{Value as Json, json};

use common::unique;

const DB: u8 = 5;

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

/// The Python side: an app on the same Redis, its result backend with the same global key
/// prefix, and `part(task_id, index, state, value)` recording a header task's outcome
/// through Celery's own `on_chord_part_return`, with the body signature in `request.chord`
/// as a worker has it.
const PYTHON_APP: &str = r#"
import json, sys
from celery import Celery, signature
from celery.app.task import Context
url, prefix, gid, queue = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
app = Celery(broker=url, backend=url)
app.conf.result_backend_transport_options = {'global_keyprefix': prefix}
body = signature('interop.join', queue=queue, app=app)
body.freeze()

def part(task_id, index, state, value):
    request = Context(id=task_id, group=gid, group_index=index, chord=dict(body))
    app.backend.on_chord_part_return(request, state, value)
"#;

struct Side {
    python: String,
    /// Plain URL for Python (no query).
    url: String,
    prefix: String,
    backend: RedisBackend,
    broker: RedisBroker,
}

async fn side(label: &str) -> Option<Side> {
    let python = python()?;
    let prefix = format!("{}:", unique(label));
    let url = common::redis_url(DB, &format!("global_keyprefix={prefix}"))?;
    let backend = RedisBackend::connect(&url, None)
        .await
        .expect("connect to Redis");
    let plain = url.split('?').next().expect("a URL").to_owned();
    let broker = RedisBroker::connect(&plain)
        .await
        .expect("connect to Redis");
    Some(Side {
        python,
        url: plain,
        prefix,
        backend,
        broker,
    })
}

impl Side {
    fn run(&self, group_id: &str, queue: &str, code: &str) -> String {
        let script = format!("{PYTHON_APP}\n{code}");
        run_python(
            &self.python,
            &script,
            &[&self.url, &self.prefix, group_id, queue],
        )
    }

    fn key(&self, group_id: &str, suffix: &str) -> String {
        format!("{}celery-taskset-meta-{group_id}{suffix}", self.prefix)
    }

    /// The done marker's value and TTL, and whether the join's other keys are gone.
    async fn leftovers(&self, group_id: &str) -> (Option<String>, i64, bool) {
        let client = self.broker.client();
        let marker: Option<String> = client.get(self.key(group_id, ".c")).await.unwrap();
        let ttl: i64 = client.ttl(self.key(group_id, ".c")).await.unwrap();
        let mut gone = true;
        for suffix in [".j", ".s", ".d", ".t"] {
            let exists: i64 = client.exists(self.key(group_id, suffix)).await.unwrap();
            gone &= exists == 0;
        }
        (marker, ttl, gone)
    }
}

fn success(group_id: &str, index: u64, result: Json) -> ChordPart {
    ChordPart {
        task_id: format!("{group_id}-{index}"),
        group_index: Some(index),
        state: TaskState::Success,
        result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_completes_a_chord_we_started() {
    let Some(side) = side("chord-py-last").await else {
        return;
    };
    let group_id = unique("chord");
    let queue = unique("chord-body");
    side.backend.chord_start(&group_id, 2).await.unwrap();
    let ours = success(&group_id, 0, json!({"from": "rust", "n": [1, 2]}));
    assert_eq!(
        side.backend
            .chord_part(&group_id, ours.clone())
            .await
            .unwrap(),
        ChordJoin::Pending {
            ready: 1,
            size: Some(2)
        }
    );
    // Celery's spelling of our member, as its own would be.
    let members: Vec<String> = side
        .broker
        .client()
        .zrange(side.key(&group_id, ".j"), 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(
        members,
        [format!(
            r#"[1, "{}", "SUCCESS", {{"from": "rust", "n": [1, 2]}}]"#,
            ours.task_id
        )]
    );

    side.run(
        &group_id,
        &queue,
        &format!("part('{group_id}-1', 1, 'SUCCESS', 'from python')"),
    );

    let consumer = side
        .broker
        .consume(ConsumeOptions::new([queue.clone()]))
        .await
        .unwrap();
    let deliveries = consumer.fetch(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(deliveries.len(), 1, "Python published the chord body");
    let message = deliveries[0].content.as_ref().expect("a task message");
    assert_eq!(message.task_name(), "interop.join");
    let body = message.decode_body().unwrap();
    assert_eq!(
        body.args,
        [json!([{"from": "rust", "n": [1, 2]}, "from python"])],
        "the body's first argument: both parts, in index order"
    );
    consumer.ack(&deliveries[0]).await.unwrap();
    consumer.close().await.unwrap();

    let (marker, ttl, gone) = side.leftovers(&group_id).await;
    assert_eq!(marker.as_deref(), Some("done"), "Python's cleanup marker");
    assert!((1..=300).contains(&ttl), "done marker TTL {ttl}");
    assert!(gone, "Python's cleanup dropped the join's keys");
    assert_eq!(
        side.backend.chord_part(&group_id, ours).await.unwrap(),
        ChordJoin::Done,
        "a late copy of our part after Python dispatched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_complete_a_chord_python_started() {
    let Some(side) = side("chord-rs-last").await else {
        return;
    };
    let group_id = unique("chord");
    let queue = unique("chord-body");
    side.run(
        &group_id,
        &queue,
        &format!(
            "app.backend.set_chord_size('{group_id}', 3)\n\
             part('{group_id}-2', 2, 'FAILURE', ValueError('boom', 42))\n\
             part('{group_id}-0', 0, 'SUCCESS', {{'text': '\\u00e9', 'list': [1, None, 2.5]}})\n\
             print('recorded')"
        ),
    );
    let ours = success(&group_id, 1, json!("from rust"));
    let join = side
        .backend
        .chord_part(&group_id, ours.clone())
        .await
        .unwrap();
    let ChordJoin::Complete { parts, claim } = join else {
        panic!("our last part completes the chord Python started: {join:?}");
    };
    assert_eq!(
        parts,
        [
            success(&group_id, 0, json!({"text": "é", "list": [1, null, 2.5]})),
            ours,
            ChordPart {
                task_id: format!("{group_id}-2"),
                group_index: Some(2),
                state: TaskState::Failure,
                result: json!({"exc_type": "ValueError", "exc_message": ["boom", 42],
                               "exc_module": "builtins"}),
            },
        ]
    );
    // While we hold the claim, Python's copy of a part does not dispatch.
    side.run(
        &group_id,
        &queue,
        &format!("part('{group_id}-0', 0, 'SUCCESS', 'again')"),
    );
    side.backend.chord_dispatched(&claim).await.unwrap();
    let (marker, ttl, gone) = side.leftovers(&group_id).await;
    assert_eq!(marker.as_deref(), Some("done"));
    assert!((1..=300).contains(&ttl), "done marker TTL {ttl}");
    assert!(gone, "our cleanup dropped the join's keys");
    // After our cleanup, Python's late copy does nothing either (and never publishes).
    side.run(
        &group_id,
        &queue,
        &format!("part('{group_id}-2', 2, 'SUCCESS', 'late')"),
    );
    assert_eq!(
        side.broker.queue_length(&queue).await.unwrap().total,
        0,
        "Python published no body"
    );
}
