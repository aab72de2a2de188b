//! Sending canvas: a [`Plan`] carried out — the chord joins started on the result backend,
//! then every message published in one batch.

use super::App;
use crate::canvas::plan::{Context, Frozen, Plan};
use crate::canvas::{CanvasError, GroupResult, Shape};
use crate::error::Error;
use crate::signature::Signature;

impl App {
    /// Sends a task or canvas as Celery would (see [`crate::canvas`]); returns the ids of
    /// what it produces.
    pub async fn send_canvas(&self, signature: Signature) -> Result<Frozen, Error> {
        self.apply(signature, Context::default()).await
    }

    /// Sends a [group](crate::canvas::group); returns its results, one per member.
    pub async fn send_group(&self, signature: Signature) -> Result<GroupResult, Error> {
        match self.send_canvas(signature).await? {
            Frozen::Group { id, members } => {
                let ids = members
                    .into_iter()
                    .map(|member| match member {
                        Frozen::Task(id) | Frozen::Group { id, .. } => id,
                    })
                    .collect();
                Ok(GroupResult::new(self.clone(), id, ids))
            }
            Frozen::Task(id) => Ok(GroupResult::new(self.clone(), id.clone(), vec![id])),
        }
    }

    /// Applies `signature` in `context` (a worker continuing a chain, dispatching a chord
    /// body or a callback): plans it, starts its chords, publishes its messages.
    pub async fn apply(&self, signature: Signature, context: Context) -> Result<Frozen, Error> {
        let signature = self.routed(signature)?;
        let (plan, frozen) = Plan::of(signature, context)?;
        self.run_plan(plan).await?;
        Ok(frozen)
    }

    /// `signature` with the queue this app routes each of its tasks to written into every
    /// task that names none: a later step is sent by whichever worker finishes the one
    /// before (a Python one too, whose own routes may differ), and must still go where this
    /// app meant it to.
    pub fn routed(&self, signature: Signature) -> Result<Signature, Error> {
        let rebuilt = |built: Signature, original: &Signature| Signature {
            options: original.options.clone(),
            immutable: original.immutable,
            ..built
        };
        Ok(match Shape::of(&signature)? {
            Shape::Task => {
                let mut signature = signature;
                if signature.options.queue.is_none() && signature.options.exchange.is_none() {
                    let declared = self
                        .inner
                        .registry
                        .get(&signature.name)
                        .and_then(|task| task.options.queue.clone());
                    let queue = self
                        .inner
                        .router
                        .route(&signature.name, None, declared.as_deref())
                        .to_owned();
                    signature.options.queue = Some(queue);
                }
                signature
            }
            Shape::Chain(tasks) => {
                let tasks = tasks
                    .into_iter()
                    .map(|task| self.routed(task))
                    .collect::<Result<Vec<_>, _>>()?;
                rebuilt(crate::canvas::chain(tasks), &signature)
            }
            Shape::Group(tasks) => {
                let tasks = tasks
                    .into_iter()
                    .map(|task| self.routed(task))
                    .collect::<Result<Vec<_>, _>>()?;
                rebuilt(crate::canvas::group(tasks), &signature)
            }
            Shape::Chord { header, body } => {
                let header = header
                    .into_iter()
                    .map(|task| self.routed(task))
                    .collect::<Result<Vec<_>, _>>()?;
                let body = self.routed(*body)?;
                rebuilt(crate::canvas::chord(header, body), &signature)
            }
        })
    }

    /// Carries out `plan`: every chord join started before any header task exists, then
    /// the messages published together.
    pub async fn run_plan(&self, plan: Plan) -> Result<(), Error> {
        if !plan.chords.is_empty() {
            let backend = self.backend().ok_or_else(|| {
                CanvasError::NoChordBackend("the app has no result backend".into())
            })?;
            for (group_id, size) in &plan.chords {
                backend
                    .chord_start(group_id, *size)
                    .await
                    .map_err(|error| match error {
                        crate::BackendError::Unsupported(_) => {
                            Error::Canvas(CanvasError::NoChordBackend(error.to_string()))
                        }
                        other => Error::Backend(other),
                    })?;
            }
        }
        let batch = plan
            .messages
            .into_iter()
            .map(|planned| self.prepare_step(planned.signature, planned.chain))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish_prepared(batch).await?;
        Ok(())
    }
}
