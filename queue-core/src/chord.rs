//! The chord join's contract with a result backend: header parts are recorded as they
//! finish, and exactly one finisher learns that the chord is complete and dispatches its
//! body (wire spec §5.3, §8.5).
//!
//! A chord's life on a backend:
//! 1. the producer calls [`ResultBackend::chord_start`](crate::ResultBackend::chord_start)
//!    with the header's size before it publishes the header tasks;
//! 2. every header task, once its outcome is stored, calls
//!    [`chord_part`](crate::ResultBackend::chord_part); the call that records the last part
//!    gets [`ChordJoin::Complete`] with every part in `group_index` order and a
//!    [`ChordClaim`]; every other call gets [`ChordJoin::Pending`], and a part that arrives
//!    after the body went out (a redelivery) gets [`ChordJoin::Done`];
//! 3. the claimer sends the body (or marks it failed) and calls
//!    [`chord_dispatched`](crate::ResultBackend::chord_dispatched), which drops the join's
//!    data and remembers that the chord is done.
//!
//! Recording a part is idempotent per `(task_id, group_index)`: a header task that runs
//! twice (redelivered after a crash) counts once.

use serde_json::Value;

use crate::TaskState;

/// One header task's outcome as the join records it (Celery's `[1, task_id, state,
/// result]`; for a failure, `result` is the exception dict).
#[derive(Clone, Debug, PartialEq)]
pub struct ChordPart {
    /// The header task's id.
    pub task_id: String,
    /// Its position in the header (`None` sorts last, as Celery's `+inf`).
    pub group_index: Option<u64>,
    /// Its final state (SUCCESS, FAILURE, REVOKED).
    pub state: TaskState,
    /// Its return value, or its exception dict.
    pub result: Value,
}

/// What recording a part says about the chord.
#[derive(Clone, Debug, PartialEq)]
pub enum ChordJoin {
    /// Parts are still missing (or the size is not known yet): someone else dispatches.
    Pending {
        /// Parts recorded so far.
        ready: u64,
        /// The header's size, when known.
        size: Option<u64>,
    },
    /// This call recorded the last part and holds the claim: dispatch the body.
    Complete {
        /// Every part, in `group_index` order.
        parts: Vec<ChordPart>,
        /// Hand back to [`chord_dispatched`](crate::ResultBackend::chord_dispatched).
        claim: ChordClaim,
    },
    /// The body was already dispatched: nothing to do.
    Done,
}

/// The right to dispatch a chord's body, held by the one finisher that completed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChordClaim {
    /// The header's group id.
    pub group_id: String,
    /// Proves the claim to the backend (Redis: the value of the `.c` key).
    pub token: String,
}
