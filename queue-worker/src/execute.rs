//! One delivery's walk through the worker: decode, check (known task, expiry, eta, rate
//! limit), ack early if asked, run under the time limits, then store the outcome, send its
//! follow-ups, and only then ack; or retry, or dead-letter what cannot run.
//!
//! The rule that keeps messages safe: a message is acked only after its outcome is stored
//! and its callbacks sent; what cannot be stored is given back (it runs again); a message
//! whose code may still be running is never given to another worker.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use queue_core::broker::Publish;
use queue_core::protocol::{Embed, Message, time};
use queue_core::task::RegisteredTask;
use queue_core::{Arguments, Delivery, TaskContext, TaskError, TaskErrorKind, TaskMeta, TaskState};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use queue_core::events::TaskEvent;

use crate::events::exception_repr;
use crate::hooks::Outcome;
use crate::limits::{RunResult, guarded, panic_message, run_limited};
use crate::runtime::{Runtime, Unpersisted};
use crate::settle::Settlement;
pub use crate::unknown_task::UNKNOWN_TASK_REQUEUES_HEADER;

/// An eta closer than this is waited for in place; a later one goes back to the broker.
const ETA_HOLD: Duration = Duration::from_millis(50);
/// A rate-limit wait longer than this hands the message back to the broker.
const RATE_LIMIT_HOLD: Duration = Duration::from_secs(1);

/// Handles one delivery to the end. Every path acks, gives back, defers, replaces or
/// dead-letters the delivery (or leaves it unacked on a broker error, to be redelivered);
/// a panic anywhere in the handling dead-letters it with the panic's text.
pub(crate) async fn handle(runtime: Arc<Runtime>, delivery: Delivery) {
    let settlement = Settlement::new(&runtime, &delivery);
    let walk = std::panic::AssertUnwindSafe(walk(&runtime, &delivery, &settlement))
        .catch_unwind()
        .await;
    if let Err(payload) = walk {
        let reason = format!(
            "the worker panicked while handling this message: {}",
            panic_message(payload.as_ref())
        );
        let task_id = delivery.content.as_ref().map(|m| m.headers.id.as_str());
        error!(queue = %delivery.queue, task_id = task_id.unwrap_or("?"), %reason, "dead-lettering message");
        if !settlement.is_settled() {
            settlement.dead_letter(&reason).await;
        }
    }
}

async fn walk(runtime: &Runtime, delivery: &Delivery, settle: &Settlement<'_>) {
    let message = match &delivery.content {
        Ok(message) => message,
        Err(undecodable) => {
            let reason = format!("undecodable message: {}", undecodable.error);
            warn!(queue = %delivery.queue, %reason, "dead-lettering message");
            return settle.dead_letter(&reason).await;
        }
    };
    // ERROR level so that the span (and its fields) is enabled whenever any event of the
    // task is: a warning logged with `RUST_LOG=warn` still names the task.
    let span = tracing::error_span!(
        "task",
        task_id = %message.headers.id,
        task_name = %message.headers.task,
        queue = %delivery.queue,
        retries = message.headers.retries,
    );
    Execution {
        runtime,
        delivery,
        message,
        settle,
        acks_late: true,
    }
    .run()
    .instrument(span)
    .await
}

/// One decodable delivery being handled.
pub(crate) struct Execution<'a> {
    pub(crate) runtime: &'a Runtime,
    pub(crate) delivery: &'a Delivery,
    pub(crate) message: &'a Message,
    pub(crate) settle: &'a Settlement<'a>,
    /// Whether the delivery is acked at the end (false once acked before the start).
    pub(crate) acks_late: bool,
}

impl Execution<'_> {
    fn id(&self) -> &str {
        &self.message.headers.id
    }

    async fn run(self) {
        let name = &self.message.headers.task;
        debug!(redelivered = self.delivery.redelivered, "task received");
        self.runtime.events.received(&self.message.headers);
        if self.runtime.revoked.contains(self.id()) {
            info!("task revoked: discarded");
            return self.revoked(false, "revoked").await;
        }
        // Celery's builtin canvas tasks (celery.map, …) run with the app's own tasks.
        let registered = self.runtime.app.registry().get(name).cloned();
        let Some(task) = registered.or_else(|| queue_core::canvas::builtin(name)) else {
            return self.unknown_task().await;
        };
        let body = match self.message.decode_body() {
            Ok(body) => body,
            Err(error) => {
                let error = TaskError::new("DecodeError", error.to_string());
                // The message survives in the dead-letter place even if this store fails.
                let _ = self.store_error(TaskState::Failure, &error).await;
                let reason = format!("undecodable body: {}", error.message());
                warn!(%reason, "dead-lettering message");
                return self.settle.dead_letter(&reason).await;
            }
        };
        let now = time::now();
        if let Some(expires) = self.message.headers.expires.filter(|at| *at <= now) {
            info!(%expires, "task expired: REVOKED");
            let stored = self
                .runtime
                .store_outcome(TaskMeta::revoked(self.id(), "expired"))
                .await;
            self.runtime.stats.revoked.increment();
            self.runtime.events.task(|| TaskEvent::Revoked {
                uuid: self.id().to_owned(),
                terminated: false,
                signum: None,
                expired: true,
            });
            return self.conclude(stored).await;
        }
        if let Some(eta) = self.message.headers.eta.filter(|eta| *eta > now) {
            let wait = time::between(now, eta);
            if wait > ETA_HOLD {
                return self.settle.defer(eta).await;
            }
            tokio::time::sleep(wait).await;
        }
        if let Some(limit) = self
            .runtime
            .overrides
            .rate_limit(name, task.options.rate_limit)
        {
            while let Some(wait) = self.runtime.rate_limits.check(name, limit) {
                if wait > RATE_LIMIT_HOLD {
                    debug!(?wait, "rate limited: deferring");
                    return self.settle.defer(time::after(wait)).await;
                }
                tokio::time::sleep(wait).await;
            }
        }
        self.execute(task, body.args, body.kwargs, body.embed.unwrap_or_default())
            .await
    }

    async fn execute(
        mut self,
        task: RegisteredTask,
        args: Vec<Value>,
        kwargs: serde_json::Map<String, Value>,
        embed: Embed,
    ) {
        let options = &task.options;
        if !options.acks_late {
            self.settle.ack().await;
            self.acks_late = false;
        }
        let headers = &self.message.headers;
        // The message's own limits first (as Celery), then remote control's, then the task's.
        let (soft_declared, hard_declared) = self
            .runtime
            .overrides
            .time_limits(&headers.task, (options.soft_time_limit, options.time_limit));
        let hard_limit = headers.timelimit.hard().or(hard_declared);
        let soft_limit = headers.timelimit.soft().or(soft_declared);
        let cancellation = self.runtime.cold.child_token();
        let context = TaskContext::new(
            self.runtime.app.clone(),
            headers.clone(),
            self.delivery.queue.clone(),
            cancellation.clone(),
        );
        let ignore_result = headers.ignore_result.unwrap_or(false)
            || options.ignore_result
            || self.runtime.app.ignores_results();
        if options.track_started && !ignore_result {
            let mut started = TaskMeta::new(
                self.id(),
                TaskState::Started,
                serde_json::json!({"pid": std::process::id(), "hostname": self.runtime.config.node_name}),
            );
            started.children = None;
            self.runtime.store_once(started).await;
        }
        for hooks in &self.runtime.hooks {
            guarded(hooks.before_task(&context), "before_task").await;
        }
        self.runtime.stats.started.increment();
        let terminate = CancellationToken::new();
        self.runtime.held.start(
            &self.delivery.tag,
            &self.message.headers.task,
            terminate.clone(),
        );
        self.runtime.events.task(|| TaskEvent::Started {
            uuid: self.id().to_owned(),
        });
        let started_at = tokio::time::Instant::now();
        let result = run_limited(
            task.task.run(context.clone(), Arguments { args, kwargs }),
            &context,
            &cancellation,
            soft_limit,
            hard_limit,
            &self.runtime.cold,
            &terminate,
        )
        .await;
        let runtime = started_at.elapsed();
        let ending = Ending {
            context: &context,
            embed: &embed,
            ignore_result,
            ran_for: runtime,
        };
        match result {
            RunResult::Interrupted { still_running } => self.interrupted(still_running).await,
            RunResult::Terminated { still_running } => {
                if still_running {
                    self.runtime.stats.abandoned.increment();
                }
                // Acked even if sync code still runs: revoked, it must not run elsewhere.
                self.revoked(true, "terminated").await
            }
            RunResult::TimedOut {
                limit,
                still_running,
            } => {
                if still_running {
                    self.runtime.stats.abandoned.increment();
                }
                // Never retried: its code may still run, and a second copy would run beside it.
                let error = TaskError::time_limit_exceeded(limit);
                self.fail(&ending, error, None).await
            }
            RunResult::Done(Ok(value)) => {
                info!(runtime = runtime.as_secs_f64(), "task succeeded");
                self.succeed(&ending, value).await
            }
            RunResult::Done(Err(error)) if error.is_retry() => {
                self.retry(&task, &ending, error).await
            }
            RunResult::Done(Err(error)) => self.fail(&ending, error, None).await,
        }
    }

    /// A revoked task: REVOKED stored, `task-revoked` sent, the message acked (when its
    /// store succeeded, as every outcome).
    async fn revoked(&self, terminated: bool, reason: &str) {
        let meta = TaskMeta::revoked(self.id(), reason);
        let exception = meta.result.clone();
        let mut stored = self.runtime.store_outcome(meta).await;
        // A revoked chord part fails its chord, as in Celery.
        if let (Ok(()), Ok(body)) = (&stored, self.message.decode_body()) {
            if let Some(embed) = &body.embed {
                stored = self
                    .after_failure(embed, TaskState::Revoked, &exception)
                    .await;
            }
        }
        self.runtime.stats.revoked.increment();
        self.runtime.events.task(|| TaskEvent::Revoked {
            uuid: self.id().to_owned(),
            terminated,
            signum: terminated.then_some(15),
            expired: false,
        });
        self.conclude(stored).await
    }

    /// Cold shutdown: the message goes back unless its code may still run.
    async fn interrupted(&self, still_running: bool) {
        if !self.acks_late {
            warn!("cold shutdown: task interrupted (acked before the start)");
        } else if still_running {
            self.runtime.stats.abandoned.increment();
            warn!(
                "cold shutdown: the task's sync code still runs; its message stays with the broker and comes back once this process has exited"
            );
            self.settle.abandon();
        } else {
            warn!("cold shutdown: task interrupted, message requeued");
            self.settle.requeue().await;
        }
    }

    async fn succeed(&self, ending: &Ending<'_>, value: Value) {
        // Counted before the store, so that a client that sees the result sees it counted.
        self.runtime.stats.succeeded.increment();
        self.runtime.events.task(|| TaskEvent::Succeeded {
            uuid: self.id().to_owned(),
            result: queue_core::protocol::repr::value_repr(&value),
            runtime: ending.ran_for.as_secs_f64(),
        });
        let persisted = async {
            if !ending.ignore_result {
                self.runtime
                    .store_outcome(self.meta(TaskState::Success, value.clone()))
                    .await?;
            }
            self.after_success(ending.embed, &value).await
        }
        .await;
        for hooks in &self.runtime.hooks {
            guarded(hooks.on_success(ending.context, &value), "on_success").await;
        }
        self.after_task(ending.context, Outcome::Success(value))
            .await;
        self.conclude(persisted).await
    }

    /// Final failure: store FAILURE, send errbacks, run hooks, then ack; or dead-letter when
    /// `dead_letter_reason` is set (retries exhausted).
    async fn fail(
        &self,
        ending: &Ending<'_>,
        error: TaskError,
        dead_letter_reason: Option<String>,
    ) {
        match error.kind() {
            TaskErrorKind::Panicked => error!(%error, "task failed: panicked"),
            _ => warn!(%error, "task failed"),
        }
        self.runtime.stats.failed.increment();
        self.runtime.events.task(|| TaskEvent::Failed {
            uuid: self.id().to_owned(),
            exception: exception_repr(&error),
            traceback: error.traceback_text().unwrap_or_default().to_owned(),
        });
        let persisted = async {
            if !ending.ignore_result {
                self.store_error(TaskState::Failure, &error).await?;
            }
            self.after_failure(
                ending.embed,
                TaskState::Failure,
                &error.to_exception_value(),
            )
            .await
        }
        .await;
        for hooks in &self.runtime.hooks {
            guarded(hooks.on_failure(ending.context, &error), "on_failure").await;
        }
        self.after_task(ending.context, Outcome::Failure(error))
            .await;
        match dead_letter_reason {
            Some(reason) if persisted.is_ok() && self.acks_late => {
                self.settle.dead_letter(&reason).await
            }
            _ => self.conclude(persisted).await,
        }
    }

    /// Acks when the outcome is stored and its follow-ups sent; gives the message back
    /// otherwise, so that it runs again rather than being lost.
    async fn conclude(&self, persisted: Result<(), Unpersisted>) {
        match (persisted, self.acks_late) {
            (Ok(()), true) => self.settle.ack().await,
            (Err(Unpersisted::Unavailable), true) => {
                warn!("the outcome was not stored: the message is given back and runs again");
                self.settle.give_back().await
            }
            (Err(Unpersisted::Refused(reason)), true) => {
                warn!(%reason, "dead-lettering message");
                self.settle.dead_letter(&reason).await
            }
            (Ok(()), false) => {}
            (Err(_), false) => {
                error!(
                    "the outcome was not stored, and the message was acked before the start (acks_late = false): it is lost"
                )
            }
        }
    }

    /// Sends the retry (same id and body, `retries + 1`, an eta) in place of this message.
    async fn retry(&self, task: &RegisteredTask, ending: &Ending<'_>, error: TaskError) {
        let retries = self.message.headers.retries;
        let policy = &task.options.retry;
        if policy.max_retries.is_some_and(|max| retries >= max) {
            let reason = format!("max retries ({retries}) exceeded: {error}");
            return self.fail(ending, error, Some(reason)).await;
        }
        let delay = match error.kind() {
            TaskErrorKind::Retry {
                countdown: Some(countdown),
            } => *countdown,
            _ => policy.delay_for(retries),
        };
        let mut message = self.message.clone();
        message.headers.retries = retries.saturating_add(1);
        message.headers.eta = Some(time::after(delay));
        // As Celery: the retry's parent is the task itself.
        message.headers.parent_id = Some(self.message.headers.id.clone());
        let replacement = Publish::new(self.delivery.queue.clone(), message);
        // Stored before the retry is sent, so that it never overwrites the retry's outcome.
        if !ending.ignore_result {
            let mut meta = self.meta(TaskState::Retry, error.to_exception_value());
            meta.traceback = error.traceback_text().map(str::to_owned);
            self.runtime.store_once(meta).await;
        }
        // Before the retry goes out: its own events (received, started, …) must come after
        // this one, or a monitor would leave the task in RETRY.
        self.runtime.events.task(|| TaskEvent::Retried {
            uuid: self.id().to_owned(),
            exception: exception_repr(&error),
            traceback: error.traceback_text().unwrap_or_default().to_owned(),
        });
        let span = queue_core::app::publish_span(&replacement);
        let sent = async {
            let sent = if self.acks_late {
                self.settle.replace(replacement).await
            } else {
                self.runtime.app.broker().publish(vec![replacement]).await
            };
            if sent.is_ok() {
                debug!("retry sent");
            }
            sent
        }
        .instrument(span)
        .await;
        if let Err(publish_error) = sent {
            if self.acks_late {
                warn!(%publish_error, "could not send the retry; the message is given back");
                self.settle.give_back().await;
            } else {
                error!(%publish_error, "could not send the retry of a task acked before its start: it is lost");
            }
            return;
        }
        info!(?delay, retry = retries.saturating_add(1), %error, "task will be retried");
        self.runtime.stats.retried.increment();
        for hooks in &self.runtime.hooks {
            guarded(hooks.on_retry(ending.context, &error, delay), "on_retry").await;
        }
        self.after_task(ending.context, Outcome::Retry(error)).await;
    }

    async fn after_task(&self, context: &TaskContext, outcome: Outcome) {
        for hooks in &self.runtime.hooks {
            guarded(hooks.after_task(context, &outcome), "after_task").await;
        }
    }

    fn meta(&self, status: TaskState, result: Value) -> TaskMeta {
        let headers = &self.message.headers;
        let mut meta = TaskMeta::new(self.id(), status, result);
        meta.group_id = headers.group.clone();
        meta.parent_id = headers.parent_id.clone();
        meta.name = Some(headers.task.clone());
        meta.worker = Some(self.runtime.config.node_name.clone());
        meta.retries = Some(headers.retries);
        meta.queue = Some(self.delivery.queue.clone());
        meta
    }

    pub(crate) async fn store_error(
        &self,
        status: TaskState,
        error: &TaskError,
    ) -> Result<(), Unpersisted> {
        let mut meta = self.meta(status, error.to_exception_value());
        meta.traceback = error.traceback_text().map(str::to_owned);
        self.runtime.store_outcome(meta).await
    }
}

/// What the outcome handlers of one execution share.
struct Ending<'a> {
    context: &'a TaskContext,
    embed: &'a Embed,
    ignore_result: bool,
    /// How long the task body ran.
    ran_for: Duration,
}
