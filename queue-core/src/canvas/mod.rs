//! Canvas: [`chain`], [`group`] and [`chord`] of signatures, as Celery's `celery.canvas`
//! builds them and as they travel (wire spec §8).
//!
//! A canvas is a [`Signature`] of one of Celery's builtin canvas types, so that it nests,
//! serializes and crosses to Python as Celery's own dicts do:
//!
//! | built by | `task` | `subtask_type` | parts in `kwargs` |
//! | --- | --- | --- | --- |
//! | [`chain`] | `celery.chain` | `chain` | `{"tasks": [sig, …]}` |
//! | [`group`] | `celery.group` | `group` | `{"tasks": [sig, …]}` |
//! | [`chord`] | `celery.chord` | `chord` | `{"header": [sig, …], "body": sig, "kwargs": {}}` |
//!
//! Sending one ([`App::send`](crate::App::send) or [`App::send_canvas`](crate::App::send_canvas))
//! publishes only what Celery publishes ([`plan`]): a chain's first task, the rest riding in
//! its message's `chain` field (next task last); each group member with `group` and
//! `group_index`; a chord's header tasks, each carrying the body in `chord`, after the
//! result backend was told the header's size. Workers do the rest as each task finishes.
//!
//! ```
//! use queue_core::Signature;
//! use queue_core::canvas::{chain, chord, group};
//! let add = |x: i64, y: i64| Signature::new("tasks.add").arg(x).arg(y);
//! // (2 + 2) * 8, then + 1
//! let pipeline = chain([add(2, 2), Signature::new("tasks.mul").arg(8), Signature::new("tasks.add").arg(1)]);
//! // sum of 0+0, 1+1, …, 9+9
//! let total = chord((0..10).map(|i| add(i, i)), Signature::new("tasks.xsum"));
//! let both = group([pipeline, total]);
//! assert_eq!(both.subtask_type.as_deref(), Some("group"));
//! ```

pub mod builtins;
pub mod plan;
pub mod result;
mod typed;

use serde_json::{Map, Value, json};

use crate::signature::Signature;

pub use builtins::builtin;
pub use plan::{Context, Frozen, Plan, Planned};
pub use result::GroupResult;
pub use typed::Group;

/// Celery's builtin task name of a chain.
pub const CHAIN: &str = "celery.chain";
/// Celery's builtin task name of a group.
pub const GROUP: &str = "celery.group";
/// Celery's builtin task name of a chord.
pub const CHORD: &str = "celery.chord";

/// Why a canvas cannot be sent or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanvasError {
    /// A canvas signature whose parts are missing or malformed (e.g. sent by another
    /// program).
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// `chain`, `group` or `chord`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A canvas type this library does not run.
    #[error("canvas type {0:?} is not supported")]
    Unsupported(String),
    /// A chord needs a result backend that joins chords.
    #[error("a chord needs a result backend that supports chords: {0}")]
    NoChordBackend(String),
}

/// What a signature is, its parts read out of Celery's dict.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A plain task.
    Task,
    /// Tasks run one after another, each given the previous result.
    Chain(Vec<Signature>),
    /// Tasks run in parallel.
    Group(Vec<Signature>),
    /// A group whose results, once all are in, go to `body` as one list.
    Chord {
        /// The tasks run in parallel.
        header: Vec<Signature>,
        /// The task given the header's results.
        body: Box<Signature>,
    },
}

impl Shape {
    /// Reads the shape of `signature` (by `subtask_type`, else by builtin task name).
    pub fn of(signature: &Signature) -> Result<Self, CanvasError> {
        let kind = signature
            .subtask_type
            .as_deref()
            .or(match signature.name.as_str() {
                CHAIN => Some("chain"),
                GROUP => Some("group"),
                CHORD => Some("chord"),
                _ => None,
            });
        match kind {
            None => Ok(Self::Task),
            Some("chain") => Ok(Self::Chain(tasks(signature, "chain", "tasks")?)),
            Some("group") => Ok(Self::Group(tasks(signature, "group", "tasks")?)),
            Some("chord") => {
                let header = match signature.kwargs.get("header") {
                    // Celery writes the header as a list, or as a group signature.
                    Some(Value::Object(_)) => {
                        let group = part(signature.kwargs.get("header"), "chord", "header")?;
                        match Self::of(&group)? {
                            Self::Group(members) => members,
                            _ => vec![group],
                        }
                    }
                    _ => tasks(signature, "chord", "header")?,
                };
                let body = part(signature.kwargs.get("body"), "chord", "body")?;
                Ok(Self::Chord {
                    header,
                    body: Box::new(body),
                })
            }
            // A single message of Celery's builtin `celery.map` / `celery.starmap`.
            Some("xmap" | "xstarmap") => Ok(Self::Task),
            // Celery's `chunks.apply_async()` sends the group of starmaps it stands for.
            Some("chunks") => {
                let task = part(signature.kwargs.get("task"), "chunks", "task")?;
                let items = match signature.kwargs.get("it") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => {
                        return Err(CanvasError::Malformed {
                            kind: "chunks",
                            reason: "`it` is not a list".into(),
                        });
                    }
                };
                let size = signature
                    .kwargs
                    .get("n")
                    .and_then(Value::as_u64)
                    .filter(|size| *size > 0)
                    .ok_or_else(|| CanvasError::Malformed {
                        kind: "chunks",
                        reason: "`n` is not a positive count".into(),
                    })?;
                match Self::of(&chunks(task, items, size))? {
                    Self::Group(members) => Ok(Self::Group(members)),
                    _ => unreachable_group(),
                }
            }
            Some(other) => Err(CanvasError::Unsupported(other.to_owned())),
        }
    }
}

fn tasks(
    signature: &Signature,
    kind: &'static str,
    key: &str,
) -> Result<Vec<Signature>, CanvasError> {
    let value = signature.kwargs.get(key).or_else(|| {
        // `celery.chain` / `celery.group` may also carry the tasks as the first argument.
        signature.args.first()
    });
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| part(Some(item), kind, key))
            .collect(),
        Some(other) => Err(CanvasError::Malformed {
            kind,
            reason: format!(
                "`{key}` is {}, not a list of signatures",
                crate::protocol::shown(other)
            ),
        }),
        None => Err(CanvasError::Malformed {
            kind,
            reason: format!("no `{key}`"),
        }),
    }
}

fn part(value: Option<&Value>, kind: &'static str, key: &str) -> Result<Signature, CanvasError> {
    let value = value.ok_or_else(|| CanvasError::Malformed {
        kind,
        reason: format!("no `{key}`"),
    })?;
    serde_json::from_value(value.clone()).map_err(|error| CanvasError::Malformed {
        kind,
        reason: format!("`{key}` holds something that is not a signature: {error}"),
    })
}

fn canvas(name: &str, kind: &str, kwargs: Map<String, Value>) -> Signature {
    Signature {
        name: name.to_owned(),
        kwargs,
        subtask_type: Some(kind.to_owned()),
        ..Signature::default()
    }
}

fn list(signatures: impl IntoIterator<Item = impl Into<Signature>>) -> Value {
    Value::Array(
        signatures
            .into_iter()
            .map(|signature| json!(signature.into()))
            .collect(),
    )
}

/// Tasks run one after another, each given the previous one's result as its first
/// argument (unless [immutable](Signature::immutable)). Nested chains are flattened; a
/// group followed by a task becomes a chord, as in Celery.
pub fn chain(tasks: impl IntoIterator<Item = impl Into<Signature>>) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("tasks".into(), list(tasks));
    canvas(CHAIN, "chain", kwargs)
}

/// Tasks run in parallel; their results are read together through a
/// [`GroupResult`].
pub fn group(tasks: impl IntoIterator<Item = impl Into<Signature>>) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("tasks".into(), list(tasks));
    canvas(GROUP, "group", kwargs)
}

/// `header` runs in parallel; once every part finished, `body` is sent with the list of
/// their results (in header order) as its first argument. A failed part makes the body
/// FAILURE with a `ChordError` naming it.
pub fn chord(
    header: impl IntoIterator<Item = impl Into<Signature>>,
    body: impl Into<Signature>,
) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("header".into(), list(header));
    kwargs.insert("body".into(), json!(body.into()));
    kwargs.insert("kwargs".into(), Value::Object(Map::new()));
    canvas(CHORD, "chord", kwargs)
}

fn unreachable_group() -> Result<Shape, CanvasError> {
    Err(CanvasError::Malformed {
        kind: "chunks",
        reason: "not a group".into(),
    })
}

fn items(items: impl IntoIterator<Item = impl serde::Serialize>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
            .collect(),
    )
}

fn mapping(name: &str, kind: &str, task: Signature, it: Value) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("task".into(), json!(task));
    kwargs.insert("it".into(), it);
    canvas(name, kind, kwargs)
}

/// One message that runs `task` over each item (`task(item)`), one after another, in the
/// worker that takes it (Celery's `task.map(it)`); its result is the list of results.
pub fn map(
    task: impl Into<Signature>,
    it: impl IntoIterator<Item = impl serde::Serialize>,
) -> Signature {
    mapping(builtins::MAP, "xmap", task.into(), items(it))
}

/// As [`map`], each item being the list of the task's arguments (`task(*item)`, Celery's
/// `task.starmap(it)`).
pub fn starmap(
    task: impl Into<Signature>,
    it: impl IntoIterator<Item = impl serde::Serialize>,
) -> Signature {
    mapping(builtins::STARMAP, "xstarmap", task.into(), items(it))
}

/// `it` (lists of arguments) cut in parts of `size`, each a [`starmap`], all in one
/// [`group`] (Celery's `task.chunks(it, n)`): many small tasks sent as few messages.
pub fn chunks(
    task: impl Into<Signature>,
    it: impl IntoIterator<Item = impl serde::Serialize>,
    size: u64,
) -> Signature {
    let task = task.into();
    let Value::Array(all) = items(it) else {
        return group(Vec::<Signature>::new());
    };
    let size = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
    group(all.chunks(size).map(|part| {
        mapping(
            builtins::STARMAP,
            "xstarmap",
            task.clone(),
            Value::Array(part.to_vec()),
        )
    }))
}

impl Signature {
    /// This, then `next` with this one's result: a [`chain`] (flattened when this is one).
    pub fn then(self, next: impl Into<Signature>) -> Signature {
        let next = next.into();
        match Shape::of(&self) {
            Ok(Shape::Chain(mut tasks)) if self.options == Default::default() => {
                tasks.push(next);
                chain(tasks)
            }
            _ => chain([self, next]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvas_signatures_are_celerys_dicts() {
        let add = Signature::new("tasks.add").arg(1).arg(2);
        let value = json!(chain([add.clone(), Signature::new("tasks.mul").arg(3)]));
        assert_eq!(value["task"], "celery.chain");
        assert_eq!(value["subtask_type"], "chain");
        assert_eq!(value["kwargs"]["tasks"][1]["task"], "tasks.mul");
        let value = json!(chord([add.clone()], Signature::new("tasks.xsum")));
        assert_eq!(value["kwargs"]["header"][0]["args"], json!([1, 2]));
        assert_eq!(value["kwargs"]["body"]["task"], "tasks.xsum");
        assert_eq!(value["kwargs"]["kwargs"], json!({}));
    }

    #[test]
    fn shapes_read_back_including_pythons_group_header() {
        let add = Signature::new("tasks.add").arg(1);
        let round: Signature = serde_json::from_value(json!(group([add.clone()]))).unwrap();
        assert_eq!(Shape::of(&round).unwrap(), Shape::Group(vec![add.clone()]));
        let python = json!({"task": "celery.chord", "args": [], "options": {},
            "subtask_type": "chord", "immutable": false,
            "kwargs": {"kwargs": {}, "body": {"task": "tasks.xsum"},
                "header": {"task": "celery.group", "subtask_type": "group",
                    "kwargs": {"tasks": [{"task": "tasks.add", "args": [1]}]}}}});
        let chord: Signature = serde_json::from_value(python).unwrap();
        match Shape::of(&chord).unwrap() {
            Shape::Chord { header, body } => {
                assert_eq!(header, vec![add]);
                assert_eq!(body.name, "tasks.xsum");
            }
            other => panic!("{other:?}"),
        }
        let broken = Signature {
            subtask_type: Some("group".into()),
            ..Signature::new("celery.group")
        };
        assert!(matches!(
            Shape::of(&broken),
            Err(CanvasError::Malformed { .. })
        ));
    }

    #[test]
    fn then_extends_a_chain() {
        let chained = Signature::new("a")
            .then(Signature::new("b"))
            .then(Signature::new("c"));
        match Shape::of(&chained).unwrap() {
            Shape::Chain(tasks) => assert_eq!(tasks.len(), 3),
            other => panic!("{other:?}"),
        }
    }
}
