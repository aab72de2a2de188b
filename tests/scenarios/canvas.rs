//! Canvas end to end: chains pass each result on, groups return every result in order, a
//! chord's body gets its header's results, and failures stop a chain and fail a chord as in
//! Celery.

use std::time::Duration;

use queue::canvas::{Group, GroupResult, chain, chord, chunks, group, map, starmap};
use queue::{ResultError, Signature, TaskState, TypedSignature, Worker, task};

use super::{Gate, Urls, WAIT, add, app, fail, flaky, hold, unique_queue};

#[task(name = "e2e.mul")]
pub fn mul(x: i64, y: i64) -> i64 {
    x * y
}

#[task(name = "e2e.xsum")]
pub fn xsum(numbers: Vec<i64>) -> i64 {
    numbers.iter().sum()
}

pub async fn chains_pass_each_result_on(urls: Urls) {
    let queue = unique_queue("chain");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    // (2 + 2) * 8 + 1
    let result = app
        .send(chain([add::new(2, 2), mul::partial(8), add::partial(1)]))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(result.get(WAIT).await.unwrap(), 33);
    // The same with `then`, and an immutable step that ignores what comes before.
    let result = app
        .send(
            Signature::from(add::new(1, 1))
                .then(mul::partial(10))
                .then(add::new(5, 5).immutable()),
        )
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), serde_json::json!(10));
    worker.shutdown().await.unwrap();
}

pub async fn groups_return_every_result_in_order(urls: Urls) {
    let queue = unique_queue("group");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();
    let sums = app
        .send_group(group((0..20).map(|i| add::new(i, i))))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(sums.len(), 20);
    let expected: Vec<i64> = (0..20).map(|i| i * 2).collect();
    assert_eq!(sums.get(WAIT).await.unwrap(), expected);
    assert_eq!(sums.completed_count().await.unwrap(), 20);
    assert!(sums.ready().await.unwrap());
    // Saved, it is found again by id (as Python's GroupResult.restore finds it).
    sums.save().await.unwrap();
    let restored = GroupResult::<i64>::restore(&app, sums.id())
        .await
        .unwrap()
        .expect("the saved group");
    assert_eq!(restored.task_ids(), sums.task_ids());
    assert_eq!(restored.get(WAIT).await.unwrap(), expected);
    worker.shutdown().await.unwrap();
}

pub async fn chords_join_their_header(urls: Urls) {
    let queue = unique_queue("chord");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();
    let total = app
        .send(chord((0..10).map(|i| add::new(i, i)), xsum::partial()))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(total.get(WAIT).await.unwrap(), 90);
    // In a chain: 1 + 1, then 2 * 2 and 2 * 3 in parallel, then their sum.
    let total = app
        .send(chain([
            add::new(1, 1).into(),
            group([mul::partial(2), mul::partial(3)]),
            xsum::partial().into(),
        ]))
        .await
        .unwrap()
        .typed::<i64>();
    assert_eq!(total.get(WAIT).await.unwrap(), 10);
    worker.shutdown().await.unwrap();
}

pub async fn failures_stop_a_chain_and_fail_a_chord(urls: Urls) {
    let queue = unique_queue("canvas_failures");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(2)
        .spawn();
    let body = app
        .send(chord(
            [
                add::new(1, 1).into(),
                Signature::from(fail::new("boom".into())),
            ],
            xsum::partial(),
        ))
        .await
        .unwrap();
    match body.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.exc_type(), "ChordError");
            assert!(error.message().contains("boom"), "{}", error.message());
        }
        other => panic!("the chord's body should fail: {other:?}"),
    }
    // The body's errbacks are called with its id.
    let body_errback = format!("{queue}-body-errback");
    let failed_body = app
        .send(
            chord(
                [Signature::from(fail::new("again".into()))],
                xsum::partial(),
            )
            .link_error(Signature::new("e2e.record").task_id(body_errback.as_str())),
        )
        .await
        .unwrap();
    let called_with = app.result::<String>(body_errback).get(WAIT).await.unwrap();
    assert_eq!(called_with, failed_body.id());
    // A failing step: the chain's errback is called with its id, and the steps after it
    // never go out.
    let chain_errback = format!("{queue}-chain-errback");
    let first = fail::new("stop".into()).task_id(format!("{queue}-first"));
    let last = app
        .send(
            chain([Signature::from(first), add::partial(1).into()])
                .link_error(Signature::new("e2e.record").task_id(chain_errback.as_str())),
        )
        .await
        .unwrap();
    let called_with = app.result::<String>(chain_errback).get(WAIT).await.unwrap();
    assert_eq!(called_with, format!("{queue}-first"));
    let failed = app.result::<serde_json::Value>(format!("{queue}-first"));
    assert!(matches!(
        failed.get(WAIT).await,
        Err(ResultError::Failed { .. })
    ));
    worker.shutdown().await.unwrap();
    assert_eq!(last.state().await.unwrap(), TaskState::Pending);
    let left = app.broker().queue_length(&queue).await.unwrap();
    assert_eq!(left.total, 0, "nothing was sent after the failed step");
}

pub async fn typed_canvas_retried_parts_and_revoked_groups(urls: Urls) {
    let queue = unique_queue("canvas_typed");
    let app = app(&urls, &queue).await;
    let node = format!("typed@{queue}");
    let worker = Worker::new(app.clone())
        .node_name(node.as_str())
        .queues([queue.as_str()])
        .concurrency(1)
        .spawn();
    // Typed all the way: the chain's result is its last task's, the chord's its body's.
    let product: i64 = add::new(2, 2)
        .then(mul::partial(8))
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(product, 32);
    let doubled: Vec<i64> = Group::of((0..5).map(|i| add::new(i, i)))
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(doubled, [0, 2, 4, 6, 8]);
    // Parts that retry count once, with their final result.
    let retried: i64 = Group::of([flaky::new(2), flaky::new(3)])
        .then(TypedSignature::<i64>::from_signature(
            xsum::partial().into(),
        ))
        .send(&app)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(retried, 5);
    // Revoking a group revokes its members: queued behind a held task, none of them runs.
    let held = hold::new().send(&app).await.unwrap();
    let gate = app.state::<Gate>().unwrap();
    gate.started_signal.notified().await;
    let members = Group::of((0..3).map(|i| add::new(i, 1)))
        .send(&app)
        .await
        .unwrap();
    // Once the worker answers a ping, it listens; its control requests run in order, so
    // the revocation is in effect once it answers the next one.
    let answers = || async {
        let control = app.control().destination([node.as_str()]);
        control
            .timeout(Duration::from_millis(200))
            .ping()
            .await
            .unwrap()
            .0
            .len()
    };
    while answers().await == 0 {}
    members.revoke(false).await.unwrap();
    assert_eq!(answers().await, 1);
    gate.release.add_permits(1);
    held.get(WAIT).await.unwrap();
    for member in members.results() {
        assert!(matches!(
            member.get(WAIT).await,
            Err(ResultError::Revoked { .. })
        ));
    }
    worker.shutdown().await.unwrap();
}

/// Members in the scale scenario: Celery users send groups and chords this large.
const LARGE: i64 = 10_000;

pub async fn ten_thousand_in_a_group_and_in_a_chord(urls: Urls) {
    let queue = unique_queue("canvas_large");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(16)
        .spawn();
    let wait = WAIT * 4;
    let sums = Group::of((0..LARGE).map(|i| add::new(i, 1)))
        .send(&app)
        .await
        .unwrap();
    let values = sums.get(wait).await.unwrap();
    assert_eq!(values.len(), LARGE as usize);
    assert_eq!(values.iter().sum::<i64>(), (1..=LARGE).sum::<i64>());
    let total = Group::of((0..LARGE).map(|i| add::new(i, 1)))
        .then(xsum::partial())
        .send(&app)
        .await
        .unwrap();
    assert_eq!(total.get(wait).await.unwrap(), (1..=LARGE).sum::<i64>());
    worker.shutdown().await.unwrap();
}

pub async fn map_starmap_and_chunks(urls: Urls) {
    let queue = unique_queue("canvas_map");
    let app = app(&urls, &queue).await;
    let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
    let sums = app
        .send(map(xsum::partial(), [vec![1, 2], vec![3, 4, 5]]))
        .await
        .unwrap();
    assert_eq!(sums.get(WAIT).await.unwrap(), serde_json::json!([3, 12]));
    let products = app
        .send(starmap(mul::partial(0), [[2, 3], [4, 5]]))
        .await
        .unwrap();
    assert_eq!(
        products.get(WAIT).await.unwrap(),
        serde_json::json!([6, 20])
    );
    let pairs: Vec<[i64; 2]> = (0..10).map(|i| [i, i]).collect();
    let parts = app
        .send_group(chunks(add::partial(0), pairs, 4))
        .await
        .unwrap()
        .typed::<Vec<i64>>();
    assert_eq!(parts.len(), 3);
    let flat: Vec<i64> = parts.get(WAIT).await.unwrap().concat();
    assert_eq!(flat, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    worker.shutdown().await.unwrap();
}
