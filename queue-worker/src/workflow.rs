//! What a finished task sets off in a workflow (wire spec §8): its part of a chord (and,
//! when it is the last part, the chord's body), the next step of its chain, its callbacks
//! or errbacks. All of it is sent before the message is acked, retried within the persist
//! timeout; the next steps carry the ids frozen when the workflow was sent, so a step sent
//! again after a redelivery is the same task.

use queue_core::canvas::Context;
use queue_core::protocol::Embed;
use queue_core::{ChordJoin, ChordPart, Signature, TaskError, TaskMeta, TaskState};
use serde_json::Value;
use tracing::{debug, warn};

use crate::execute::Execution;
use crate::runtime::Unpersisted;

impl Execution<'_> {
    /// After a SUCCESS is stored: the chord part, the chain's next step, the callbacks.
    pub(crate) async fn after_success(
        &self,
        embed: &Embed,
        value: &Value,
    ) -> Result<(), Unpersisted> {
        self.chord_part(embed, TaskState::Success, value).await?;
        self.chain_next(embed, value).await?;
        self.apply_callbacks(embed, value).await
    }

    /// After a FAILURE or REVOKED is stored: the chord part (which fails the chord once
    /// complete) and the errbacks; the chain stops here.
    pub(crate) async fn after_failure(
        &self,
        embed: &Embed,
        state: TaskState,
        exception: &Value,
    ) -> Result<(), Unpersisted> {
        self.chord_part(embed, state, exception).await?;
        self.apply_errbacks(embed).await
    }

    fn root_id(&self) -> String {
        let headers = &self.message.headers;
        headers
            .root_id
            .clone()
            .unwrap_or_else(|| headers.id.clone())
    }

    /// Pops the chain's next task (the last element) and applies it with `value`, the
    /// remaining steps riding along.
    async fn chain_next(&self, embed: &Embed, value: &Value) -> Result<(), Unpersisted> {
        let Some(mut rest) = embed.chain.clone() else {
            return Ok(());
        };
        let Some(next) = rest.pop() else {
            return Ok(());
        };
        rest.reverse();
        let context = Context::with_result(value.clone())
            .from_parent(self.message.headers.id.clone(), self.root_id())
            .followed_by(rest);
        debug!(next = %next.name, "sending the chain's next task");
        self.runtime
            .persist("send the chain's next task", || async {
                self.runtime
                    .app
                    .apply(next.clone(), context.clone())
                    .await
                    .map(drop)
            })
            .await
    }

    /// Records this task's outcome in its chord's join; the part that completes the chord
    /// sends the body with every part's result (or fails it, naming the failed part).
    async fn chord_part(
        &self,
        embed: &Embed,
        state: TaskState,
        result: &Value,
    ) -> Result<(), Unpersisted> {
        let Some(body) = &embed.chord else {
            return Ok(());
        };
        let headers = &self.message.headers;
        let (Some(group_id), Some(backend)) = (&headers.group, self.runtime.app.backend()) else {
            warn!(
                "a chord part without a group id or without a result backend: the chord cannot complete"
            );
            return Ok(());
        };
        let part = ChordPart {
            task_id: headers.id.clone(),
            group_index: headers.group_index,
            state,
            result: result.clone(),
        };
        let joined = std::sync::Mutex::new(None);
        self.runtime
            .persist("record the chord part", || async {
                let join = backend.chord_part(group_id, part.clone()).await?;
                if let Ok(mut slot) = joined.lock() {
                    *slot = Some(join);
                }
                Ok::<_, queue_core::BackendError>(())
            })
            .await?;
        let join = joined.into_inner().ok().flatten();
        let Some(ChordJoin::Complete { parts, claim }) = join else {
            return Ok(());
        };
        match parts.iter().find(|part| part.state.is_exception()) {
            Some(failed) => self.fail_chord(body, failed).await?,
            None => {
                let results = parts.into_iter().map(|part| part.result).collect();
                let context = Context::with_result(Value::Array(results))
                    .from_parent(headers.id.clone(), self.root_id());
                debug!(group_id, body = %body.name, "chord complete: sending its body");
                self.runtime
                    .persist("send the chord's body", || async {
                        self.runtime
                            .app
                            .apply(body.clone(), context.clone())
                            .await
                            .map(drop)
                    })
                    .await?;
            }
        }
        self.runtime
            .persist("close the chord", || backend.chord_dispatched(&claim))
            .await
    }

    /// Celery's `chord_error_from_stack`: the body is marked FAILURE with a `ChordError`
    /// naming the failed part, and its errbacks are sent.
    async fn fail_chord(&self, body: &Signature, failed: &ChordPart) -> Result<(), Unpersisted> {
        let cause = TaskError::from_exception_value(&failed.result, None);
        let error = TaskError::new(
            "ChordError",
            format!(
                "Dependency {} raised {}({:?})",
                failed.task_id,
                cause.exc_type(),
                cause.message()
            ),
        )
        .module("celery.exceptions");
        warn!(failed = %failed.task_id, "a chord part failed: its body fails");
        let Some(body_id) = body.options.task_id.clone() else {
            return Ok(());
        };
        let mut meta = TaskMeta::error(body_id.clone(), TaskState::Failure, &error);
        meta.name = Some(body.name.clone());
        meta.group_id = body.options.group_id.clone();
        self.runtime.store_outcome(meta).await?;
        let errbacks: Vec<Signature> = body
            .options
            .link_error
            .iter()
            .cloned()
            .map(|mut errback| {
                if !errback.immutable {
                    errback.args.insert(0, Value::String(body_id.clone()));
                }
                errback
            })
            .collect();
        self.send_linked(errbacks).await
    }

    pub(crate) async fn apply_callbacks(
        &self,
        embed: &Embed,
        value: &Value,
    ) -> Result<(), Unpersisted> {
        let Some(callbacks) = &embed.callbacks else {
            return Ok(());
        };
        let linked = callbacks.iter().cloned().map(|mut callback| {
            if !callback.immutable {
                callback.args.insert(0, value.clone());
            }
            callback
        });
        self.send_linked(linked.collect()).await
    }

    pub(crate) async fn apply_errbacks(&self, embed: &Embed) -> Result<(), Unpersisted> {
        let Some(errbacks) = &embed.errbacks else {
            return Ok(());
        };
        let id = Value::String(self.message.headers.id.clone());
        let linked = errbacks.iter().cloned().map(|mut errback| {
            if !errback.immutable {
                errback.args.insert(0, id.clone());
            }
            errback
        });
        self.send_linked(linked.collect()).await
    }

    /// Sends linked tasks, retrying within the persist timeout: the message is acked only
    /// once they are sent.
    pub(crate) async fn send_linked(&self, signatures: Vec<Signature>) -> Result<(), Unpersisted> {
        if signatures.is_empty() {
            return Ok(());
        }
        let headers = &self.message.headers;
        let root = self.root_id();
        let prepared: Vec<Signature> = signatures
            .into_iter()
            .map(|mut signature| {
                signature.options.parent_id = Some(headers.id.clone());
                signature.options.root_id = Some(root.clone());
                // Fixed before the attempts, so that a retried send repeats the same tasks.
                signature
                    .options
                    .task_id
                    .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
                signature
            })
            .collect();
        self.runtime
            .persist("send linked tasks", || async {
                self.runtime.app.send_many(prepared.clone()).await.map(drop)
            })
            .await
    }
}
