//! Canvas across languages, against the real Python Celery 5.7, on Redis and on RabbitMQ
//! (results in Redis): chains, groups and chords built in Python run on our worker, ours
//! run on a Python worker, each side reads the other's results (a chain's, a group restored
//! by id, a chord's body), and one chord's header runs on both kinds of worker at once.
#![cfg(all(feature = "redis", feature = "amqp"))]

mod interop {
    pub mod python;
    pub mod setup;
    pub mod tasks;
}

use std::time::Duration;

use interop::python::PythonWorker;
use interop::setup::{Setup, run_script, rust_app, setup, unique};
use interop::tasks::{add, fail, mul, xsum};
use queue::canvas::{GroupResult, chain, chord, chunks, group, map};
use queue::{ResultError, Signature, Worker};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Python's `chain`, `group`, `chord` and a chain with a chord inside → our worker; Python
/// reads the results, we restore Python's saved group.
async fn python_canvas_rust_worker(setup: Setup) {
    let queue = unique("canvas.py2rs");
    let app = rust_app(&setup, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();
    let script = format!(
        r#"
import json
from celery import chain, chord, group
from tasks import add, fail, mul, xsum
Q = "{queue}"
def s(task, *args):
    return task.s(*args).set(queue=Q)
out = {{}}
out["chain"] = chain(s(add, 2, 2), s(mul, 8), s(add, 1)).apply_async().get(timeout=60)
sums = group(s(add, i, i) for i in range(10)).apply_async()
out["group"] = sums.get(timeout=60)
sums.save()
out["group_id"] = sums.id
out["chord"] = chord((s(add, i, i) for i in range(10)), s(xsum)).apply_async().get(timeout=60)
nested = chain(s(add, 1, 1), chord([s(mul, 2), s(mul, 3)], s(xsum)), s(add, 100))
out["chain_of_chord"] = nested.apply_async().get(timeout=60)
out["map"] = xsum.map([[1, 2], [3, 4, 5]]).set(queue=Q).apply_async().get(timeout=60)
out["starmap"] = mul.starmap([(2, 3), (4, 5)]).set(queue=Q).apply_async().get(timeout=60)
out["chunks"] = add.chunks(list(zip(range(10), range(10))), 4).apply_async(queue=Q).get(timeout=60)
failing = chord([s(add, 1, 1), s(fail, "boom")], s(xsum)).apply_async()
# Not propagated: Python's get would raise the failed part's own error first.
failing.get(timeout=60, propagate=False)
out["chord_error"] = [type(failing.result).__name__, failing.state, str(failing.result)]
print(json.dumps(out))
"#
    );
    let out = run_script(&setup, script).await;
    assert_eq!(out["chain"], 33);
    assert_eq!(out["group"], json!([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]));
    assert_eq!(out["chord"], 90);
    assert_eq!(out["chain_of_chord"], 110);
    assert_eq!(out["map"], json!([3, 12]));
    assert_eq!(out["starmap"], json!([6, 20]));
    assert_eq!(
        out["chunks"],
        json!([[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]])
    );
    assert_eq!(out["chord_error"][0], "ChordError");
    assert_eq!(out["chord_error"][1], "FAILURE");
    assert!(
        out["chord_error"][2].as_str().unwrap().contains("boom"),
        "{out}"
    );
    let restored = GroupResult::<i64>::restore(&app, out["group_id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("Python's saved group");
    assert_eq!(restored.len(), 10);
    assert_eq!(restored.get(WAIT).await.unwrap()[9], 18);
    worker.shutdown().await.unwrap();
}

/// Our canvas → a Python worker; we read the results, Python restores our saved group.
async fn rust_canvas_python_worker(setup: Setup) {
    let queue = unique("canvas.rs2py");
    let app = rust_app(&setup, &queue).await;
    let worker = PythonWorker::start(&setup.python, &setup.broker, &setup.backend, &[&queue]);
    let pipeline = chain([add::new(2, 2), mul::partial(8), add::partial(1)]);
    let result = app.send(pipeline).await.unwrap().typed::<i64>();
    let got = result.get(WAIT).await;
    assert_eq!(got.as_ref().ok(), Some(&33), "{got:?}\n{}", worker.log());
    let sums = app
        .send_group(group((0..10).map(|i| add::new(i, i))))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(sums.get(WAIT).await.unwrap()[9], 18);
    sums.save().await.unwrap();
    let total = app
        .send(chord((0..10).map(|i| add::new(i, i)), xsum::partial()))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(total.get(WAIT).await.unwrap(), 90);
    let nested = chain([
        Signature::from(add::new(1, 1)),
        chord([mul::partial(2), mul::partial(3)], xsum::partial()),
        add::partial(100).into(),
    ]);
    let nested = app.send(nested).await.unwrap().typed::<i64>();
    assert_eq!(nested.get(WAIT).await.unwrap(), 110);
    let mapped = app
        .send(map(xsum::partial(), [vec![1, 2], vec![3, 4, 5]]))
        .await
        .unwrap();
    assert_eq!(mapped.get(WAIT).await.unwrap(), json!([3, 12]));
    let pairs: Vec<[i64; 2]> = (0..10).map(|i| [i, i]).collect();
    let parts = app
        .send_group(chunks(add::partial(0), pairs, 4))
        .await
        .unwrap();
    assert_eq!(parts.get(WAIT).await.unwrap()[2], json!([16, 18]));
    let failing = app
        .send(chord(
            [
                Signature::from(add::new(1, 1)),
                fail::new("boom".into()).into(),
            ],
            xsum::partial(),
        ))
        .await
        .unwrap();
    match failing.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert_eq!(error.exc_type(), "ChordError"),
        other => panic!("the body should fail with ChordError: {other:?}"),
    }
    let script = format!(
        r#"
import json
from celery.result import GroupResult
from tasks import app
restored = GroupResult.restore("{}", app=app)
print(json.dumps(restored.get(timeout=60)))
"#,
        sums.id()
    );
    let out = run_script(&setup, script).await;
    assert_eq!(out, json!([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]));
    worker.stop();
}

/// One chord whose header parts run half on our worker, half on a Python worker (each
/// consumes its own queue): whichever finishes last sends the body, which gets every
/// result in header order.
async fn one_chord_on_both_kinds_of_worker(setup: Setup) {
    let ours = unique("canvas.both.rs");
    let theirs = unique("canvas.both.py");
    let app = rust_app(&setup, &ours).await;
    let worker = Worker::new(app.clone())
        .queues([ours.as_str()])
        .concurrency(4)
        .spawn();
    let python = PythonWorker::start(&setup.python, &setup.broker, &setup.backend, &[&theirs]);
    let header = (0..20).map(|i| {
        let queue = if i % 2 == 0 { &ours } else { &theirs };
        add::new(i, i).queue(queue.as_str())
    });
    let total = app
        .send(chord(header, xsum::partial()))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(
        total.get(WAIT).await.unwrap(),
        (0..20).map(|i| i * 2).sum::<i64>()
    );
    // And from Python: the same split, the body on the Python side's queue.
    let script = format!(
        r#"
import json
from celery import chord
from tasks import add, xsum
parts = [add.s(i, i).set(queue="{ours}" if i % 2 == 0 else "{theirs}") for i in range(20)]
print(json.dumps(chord(parts, xsum.s().set(queue="{theirs}")).apply_async().get(timeout=60)))
"#
    );
    assert_eq!(run_script(&setup, script).await, json!(380));
    assert!(python.count("succeeded") >= 10, "{}", python.log());
    python.stop();
    worker.shutdown().await.unwrap();
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
    redis_python_canvas_rust_worker: "QUEUE_TEST_REDIS_URL" => python_canvas_rust_worker;
    redis_rust_canvas_python_worker: "QUEUE_TEST_REDIS_URL" => rust_canvas_python_worker;
    redis_one_chord_on_both_kinds_of_worker: "QUEUE_TEST_REDIS_URL" => one_chord_on_both_kinds_of_worker;
    amqp_python_canvas_rust_worker: "QUEUE_TEST_AMQP_URL" => python_canvas_rust_worker;
    amqp_rust_canvas_python_worker: "QUEUE_TEST_AMQP_URL" => rust_canvas_python_worker;
    amqp_one_chord_on_both_kinds_of_worker: "QUEUE_TEST_AMQP_URL" => one_chord_on_both_kinds_of_worker;
}
