//! Chord join checks (the contract of [`crate::chord`]), run with the other backend checks
//! by [`backend_conformance_tests!`](crate::backend_conformance_tests). Each takes the
//! backend under test and a unique name prefix; its group and task ids start with it.
//!
//! What they hold a backend to:
//!
//! - after `chord_start(size)`, exactly the call that records the last missing part gets
//!   [`ChordJoin::Complete`], with every part in `group_index` order (`None` last); every
//!   other call gets [`ChordJoin::Pending`] with the parts counted so far;
//! - a part recorded twice (same task id and index) counts once, and keeps its first outcome;
//! - of many finishers racing on the last parts, exactly one completes the chord;
//! - failure parts keep their state and exception dict;
//! - a part recorded before the start counts once the size is known;
//! - after `chord_dispatched`, a late copy of a part gets [`ChordJoin::Done`], and starting
//!   the same group id again begins a new run.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::TaskState;
use crate::backend::ResultBackend;
use crate::chord::{ChordClaim, ChordJoin, ChordPart};

/// A part of task `<prefix>-t<index>` (`<prefix>-tnone` without an index).
fn part(prefix: &str, index: Option<u64>, state: TaskState, result: Value) -> ChordPart {
    let name = index.map_or_else(|| "none".to_owned(), |index| index.to_string());
    ChordPart {
        task_id: format!("{prefix}-t{name}"),
        group_index: index,
        state,
        result,
    }
}

fn success(prefix: &str, index: Option<u64>) -> ChordPart {
    let value = index.map_or(json!("last"), |index| json!(index * 10));
    part(prefix, index, TaskState::Success, value)
}

async fn start(backend: &Arc<dyn ResultBackend>, group_id: &str, size: u64) {
    backend
        .chord_start(group_id, size)
        .await
        .unwrap_or_else(|error| panic!("chord_start({group_id:?}, {size}) failed: {error}"));
}

async fn record(backend: &Arc<dyn ResultBackend>, group_id: &str, part: &ChordPart) -> ChordJoin {
    backend
        .chord_part(group_id, part.clone())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "chord_part({group_id:?}, {:?} #{:?}) failed: {error}",
                part.task_id, part.group_index
            )
        })
}

async fn dispatched(backend: &Arc<dyn ResultBackend>, claim: &ChordClaim) {
    backend
        .chord_dispatched(claim)
        .await
        .unwrap_or_else(|error| panic!("chord_dispatched({:?}) failed: {error}", claim.group_id));
}

fn pending(ready: u64, size: Option<u64>) -> ChordJoin {
    ChordJoin::Pending { ready, size }
}

/// The parts and claim of a [`ChordJoin::Complete`], or a panic naming what came instead.
fn completed(join: ChordJoin, group_id: &str, context: &str) -> (Vec<ChordPart>, ChordClaim) {
    match join {
        ChordJoin::Complete { parts, claim } => {
            assert_eq!(
                claim.group_id, group_id,
                "{context}: the claim names the group"
            );
            assert!(!claim.token.is_empty(), "{context}: the claim has a token");
            (parts, claim)
        }
        other => panic!("{context}: expected Complete, got {other:?}"),
    }
}

/// Parts recorded out of order: the first three calls are Pending (counting 1, 2, 3), the
/// one recording the fourth is Complete with the parts in index order; a copy recorded
/// before the dispatch is Pending (someone else holds the claim), after it Done.
pub async fn chord_completes_once_in_any_order(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    start(&backend, &group_id, 4).await;
    let parts: Vec<ChordPart> = (0..4).map(|index| success(prefix, Some(index))).collect();
    for (ready, index) in [(1, 2), (2, 0), (3, 3)] {
        let join = record(&backend, &group_id, &parts[index]).await;
        assert_eq!(join, pending(ready, Some(4)), "part {index} of 4");
    }
    let join = record(&backend, &group_id, &parts[1]).await;
    let (joined, claim) = completed(join, &group_id, "the last part");
    assert_eq!(joined, parts, "every part, in group_index order");

    let join = record(&backend, &group_id, &parts[2]).await;
    assert_eq!(
        join,
        pending(4, Some(4)),
        "a copy of a part while the claim is held"
    );
    dispatched(&backend, &claim).await;
    for index in [2, 1] {
        let join = record(&backend, &group_id, &parts[index]).await;
        assert_eq!(
            join,
            ChordJoin::Done,
            "a copy of part {index} after dispatch"
        );
    }
}

/// Size 2: part 0 twice (the second run with another result) counts once, part 1 completes
/// the chord with the first outcome of part 0.
pub async fn chord_duplicate_part_counts_once(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    start(&backend, &group_id, 2).await;
    let first = success(prefix, Some(0));
    let rerun = ChordPart {
        result: json!("second run"),
        ..first.clone()
    };
    assert_eq!(
        record(&backend, &group_id, &first).await,
        pending(1, Some(2)),
        "part 0"
    );
    assert_eq!(
        record(&backend, &group_id, &rerun).await,
        pending(1, Some(2)),
        "part 0 again: counted once"
    );
    let last = success(prefix, Some(1));
    let join = record(&backend, &group_id, &last).await;
    let (parts, claim) = completed(join, &group_id, "part 1");
    assert_eq!(parts, [first, last], "part 0 keeps its first outcome");
    dispatched(&backend, &claim).await;
}

/// Size 50, the 50 parts recorded at once from 50 tasks: exactly one call completes the
/// chord, with all 50 parts in order; the other 49 are Pending.
pub async fn chord_concurrent_parts_complete_once(backend: Arc<dyn ResultBackend>, prefix: &str) {
    const SIZE: u64 = 50;
    let group_id = format!("{prefix}-g");
    start(&backend, &group_id, SIZE).await;
    let barrier = Arc::new(Barrier::new(SIZE as usize));
    let finishers: Vec<_> = (0..SIZE)
        .map(|index| {
            let (backend, barrier, group_id) = (backend.clone(), barrier.clone(), group_id.clone());
            let part = success(prefix, Some(index));
            tokio::spawn(async move {
                barrier.wait().await;
                record(&backend, &group_id, &part).await
            })
        })
        .collect();
    let mut completions = Vec::new();
    let mut pendings = 0;
    for finisher in futures::future::join_all(finishers).await {
        match finisher.expect("a finisher panicked") {
            ChordJoin::Complete { parts, claim } => completions.push((parts, claim)),
            ChordJoin::Pending { size, .. } => {
                assert_eq!(size, Some(SIZE), "Pending knows the size");
                pendings += 1;
            }
            ChordJoin::Done => panic!("Done before anyone dispatched"),
        }
    }
    assert_eq!(
        completions.len(),
        1,
        "exactly one of {SIZE} concurrent finishers completes the chord"
    );
    assert_eq!(pendings, SIZE - 1, "every other finisher is Pending");
    let (parts, claim) = completions.remove(0);
    let expected: Vec<ChordPart> = (0..SIZE)
        .map(|index| success(prefix, Some(index)))
        .collect();
    assert_eq!(parts, expected, "all parts, in group_index order");
    dispatched(&backend, &claim).await;
}

/// FAILURE and REVOKED parts come back with their state and exception dict.
pub async fn chord_failure_parts_keep_state(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    start(&backend, &group_id, 3).await;
    let failure = part(
        prefix,
        Some(1),
        TaskState::Failure,
        json!({"exc_type": "ValueError", "exc_message": ["boom", 42], "exc_module": "builtins"}),
    );
    let revoked = part(
        prefix,
        Some(2),
        TaskState::Revoked,
        json!({"exc_type": "TaskRevokedError", "exc_message": ["revoked"],
               "exc_module": "celery.exceptions"}),
    );
    let value = part(
        prefix,
        Some(0),
        TaskState::Success,
        json!({"nested": [1, null, "é"]}),
    );
    assert_eq!(
        record(&backend, &group_id, &failure).await,
        pending(1, Some(3))
    );
    assert_eq!(
        record(&backend, &group_id, &revoked).await,
        pending(2, Some(3))
    );
    let (parts, claim) = completed(
        record(&backend, &group_id, &value).await,
        &group_id,
        "the last part",
    );
    assert_eq!(parts, [value, failure, revoked], "states and results kept");
    dispatched(&backend, &claim).await;
}

/// A part without a group index (Celery's `+inf`) sorts after the indexed ones, whenever it
/// was recorded.
pub async fn chord_unindexed_part_sorts_last(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    start(&backend, &group_id, 3).await;
    let (unindexed, one, zero) = (
        success(prefix, None),
        success(prefix, Some(1)),
        success(prefix, Some(0)),
    );
    assert_eq!(
        record(&backend, &group_id, &unindexed).await,
        pending(1, Some(3))
    );
    assert_eq!(record(&backend, &group_id, &one).await, pending(2, Some(3)));
    let (parts, claim) = completed(
        record(&backend, &group_id, &zero).await,
        &group_id,
        "the last part",
    );
    assert_eq!(parts, [zero, one, unindexed], "None sorts last");
    dispatched(&backend, &claim).await;
}

/// A part recorded before `chord_start` is kept (Pending without a size) and counted once
/// the size is known: the next part, recorded after the start, completes the chord.
pub async fn chord_part_before_start_counts(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    let (early, late) = (success(prefix, Some(0)), success(prefix, Some(1)));
    assert_eq!(
        record(&backend, &group_id, &early).await,
        pending(1, None),
        "a part before the start: the size is not known"
    );
    start(&backend, &group_id, 2).await;
    let (parts, claim) = completed(
        record(&backend, &group_id, &late).await,
        &group_id,
        "the part after the start",
    );
    assert_eq!(parts, [early, late]);
    dispatched(&backend, &claim).await;
}

/// Starting a dispatched chord's group id again (a frozen chord applied twice) begins a new
/// run: its parts join afresh.
pub async fn chord_restarts_after_done(backend: Arc<dyn ResultBackend>, prefix: &str) {
    let group_id = format!("{prefix}-g");
    for run in ["first", "second"] {
        start(&backend, &group_id, 1).await;
        let only = part(prefix, Some(0), TaskState::Success, json!(run));
        let (parts, claim) = completed(
            record(&backend, &group_id, &only).await,
            &group_id,
            &format!("the {run} run"),
        );
        assert_eq!(parts, std::slice::from_ref(&only), "the {run} run's part");
        dispatched(&backend, &claim).await;
        assert_eq!(
            record(&backend, &group_id, &only).await,
            ChordJoin::Done,
            "a copy after the {run} run's dispatch"
        );
    }
}
