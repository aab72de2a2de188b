//! What our beat sends are plain Celery messages: a Python Celery 5.7 worker runs them (an
//! interval entry with args, a cron entry with kwargs), and its results, stored under the
//! tick ids, are read back. Redis broker and results; the lease in Redis too.
#![cfg(all(feature = "redis", feature = "beat"))]

mod interop {
    pub mod python;
    pub mod setup;
    pub mod tasks;
}

use std::collections::HashMap;
use std::time::Duration;

use interop::python::PythonWorker;
use interop::setup::{rust_app, setup, unique};
use queue::Signature;
use queue::beat::Beat;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_runs_what_our_beat_sends() {
    let Some(setup) = setup("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let queue = unique("beat.rs2py");
    let app = rust_app(&setup, &queue).await;
    let worker = PythonWorker::start(&setup.python, &setup.broker, &setup.backend, &[&queue]);
    let beat = Beat::new(app.clone())
        .name(format!("{queue}.beat"))
        .lease_ttl(Duration::from_secs(3))
        .every(
            "add-every-second",
            Duration::from_secs(1),
            Signature::new("tasks.add").arg(1).arg(2).queue(&queue),
        )
        .cron(
            "add-by-cron",
            "*/2 * * * * *",
            queue::beat::chrono_tz::UTC,
            Signature::new("tasks.add")
                .kwarg("x", 20)
                .kwarg("y", 3)
                .queue(&queue)
                .expires_in(Duration::from_secs(60)),
        )
        .start()
        .await
        .expect("the beat starts");
    let mut sent = beat.sent();
    let mut by_entry: HashMap<String, Vec<String>> = HashMap::new();
    while by_entry.get("add-every-second").map_or(0, Vec::len) < 3
        || by_entry.get("add-by-cron").map_or(0, Vec::len) < 2
    {
        let tick = tokio::time::timeout(WAIT, sent.recv())
            .await
            .expect("the beat sends")
            .expect("open");
        by_entry.entry(tick.entry).or_default().push(tick.tick_id);
    }
    beat.shutdown().await;
    for (entry, expected) in [("add-every-second", 3), ("add-by-cron", 23)] {
        for id in &by_entry[entry] {
            let value: i64 = app
                .result(id.clone())
                .get(WAIT)
                .await
                .unwrap_or_else(|error| {
                    panic!("Python ran {entry}'s tick {id}: {error}\n{}", worker.log())
                });
            assert_eq!(value, expected, "{entry}");
        }
    }
    let log = worker.log();
    worker.stop();
    assert!(log.contains("tasks.add"), "{log}");
}
