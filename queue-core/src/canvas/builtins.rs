//! Celery's builtin canvas tasks that travel as messages of their own: `celery.map`
//! (a task over each item), `celery.starmap` (a task over each item's arguments) and
//! `celery.chunks` (a group of starmaps). A worker runs them with the tasks it has
//! registered, inline, one item after another, as Celery's workers do.

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::signature::Signature;
use crate::task::{Arguments, RegisteredTask, Task, TaskContext};
use crate::task_error::TaskError;

/// Celery's builtin task name of a map.
pub const MAP: &str = "celery.map";
/// Celery's builtin task name of a starmap.
pub const STARMAP: &str = "celery.starmap";
/// Celery's builtin task name of chunks.
pub const CHUNKS: &str = "celery.chunks";

/// The builtin canvas task named `name`, for a worker whose app does not register it.
pub fn builtin(name: &str) -> Option<RegisteredTask> {
    static BUILTINS: LazyLock<Vec<RegisteredTask>> = LazyLock::new(|| {
        [
            Arc::new(Map_ { star: false }) as Arc<dyn Task>,
            Arc::new(Map_ { star: true }),
            Arc::new(Chunks),
        ]
        .into_iter()
        .map(|task| RegisteredTask {
            options: Arc::new(task.options()),
            task,
        })
        .collect()
    });
    BUILTINS
        .iter()
        .find(|registered| registered.task.name() == name)
        .cloned()
}

/// A builtin's `task` and `it` (by name, or as the first two positional arguments).
fn task_and_items(arguments: &Arguments) -> Result<(Signature, Vec<Value>), TaskError> {
    let task = arguments
        .kwargs
        .get("task")
        .or_else(|| arguments.args.first())
        .ok_or_else(|| TaskError::invalid_arguments("no `task` to map"))?;
    let task: Signature = serde_json::from_value(task.clone()).map_err(|error| {
        TaskError::invalid_arguments(format!("`task` is not a signature: {error}"))
    })?;
    let items = match arguments.kwargs.get("it").or_else(|| arguments.args.get(1)) {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(TaskError::invalid_arguments(format!(
                "`it` is {}, not a list",
                crate::protocol::shown(other)
            )));
        }
        None => return Err(TaskError::invalid_arguments("no `it` to map over")),
    };
    Ok((task, items))
}

/// `celery.map` / `celery.starmap`.
struct Map_ {
    star: bool,
}

impl Task for Map_ {
    fn name(&self) -> &'static str {
        if self.star { STARMAP } else { MAP }
    }

    fn run(
        &self,
        context: TaskContext,
        arguments: Arguments,
    ) -> BoxFuture<'static, Result<Value, TaskError>> {
        let star = self.star;
        async move {
            let (task, items) = task_and_items(&arguments)?;
            let Some(inner) = context.app().registry().get(&task.name).cloned() else {
                return Err(
                    TaskError::new("NotRegistered", task.name.clone()).module("celery.exceptions")
                );
            };
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                let args = match (star, item) {
                    (true, Value::Array(args)) => args,
                    (true, other) => {
                        return Err(TaskError::invalid_arguments(format!(
                            "starmap needs a list of arguments per item, not {}",
                            crate::protocol::shown(&other)
                        )));
                    }
                    (false, item) => vec![item],
                };
                let call = Arguments {
                    args,
                    kwargs: Map::new(),
                };
                results.push(inner.task.run(context.clone(), call).await?);
            }
            Ok(Value::Array(results))
        }
        .boxed()
    }
}

/// `celery.chunks`: applies the group of starmaps the chunks make.
struct Chunks;

impl Task for Chunks {
    fn name(&self) -> &'static str {
        CHUNKS
    }

    fn run(
        &self,
        context: TaskContext,
        arguments: Arguments,
    ) -> BoxFuture<'static, Result<Value, TaskError>> {
        async move {
            let (task, items) = task_and_items(&arguments)?;
            let size = arguments
                .kwargs
                .get("n")
                .or_else(|| arguments.args.get(2))
                .and_then(Value::as_u64)
                .ok_or_else(|| TaskError::invalid_arguments("chunks need a size `n`"))?;
            let group = super::chunks(task, items, size);
            let frozen = context
                .app()
                .send_canvas(group)
                .await
                .map_err(|error| TaskError::new("ChunksError", error.to_string()))?;
            Ok(Value::String(frozen.id().to_owned()))
        }
        .boxed()
    }
}
