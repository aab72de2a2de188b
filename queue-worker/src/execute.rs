//! One delivery's walk through the worker: decode, check (known task, expiry, eta, rate
//! limit), ack early if asked, run under the time limits, then store the result, retry or
//! fail, and ack — or dead-letter what cannot run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use queue_core::broker::Publish;
use queue_core::protocol::{Message, time};
use queue_core::task::RegisteredTask;
use queue_core::{
    Arguments, Delivery, Signature, TaskContext, TaskError, TaskErrorKind, TaskMeta, TaskState,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::hooks::Outcome;
use crate::runtime::Runtime;

/// An eta closer than this is waited for in place; a later one goes back to the broker.
const ETA_HOLD: Duration = Duration::from_millis(50);
/// A rate-limit wait longer than this hands the message back to the broker.
const RATE_LIMIT_HOLD: Duration = Duration::from_secs(1);

/// Handles one delivery to the end. Never panics; every path acks, rejects, defers or
/// dead-letters the delivery (or leaves it unacked on a broker error, to be redelivered).
pub(crate) async fn handle(runtime: Arc<Runtime>, delivery: Delivery) {
    let message = match &delivery.content {
        Ok(message) => message,
        Err(undecodable) => {
            let reason = format!("undecodable message: {}", undecodable.error);
            warn!(queue = %delivery.queue, %reason, "dead-lettering message");
            runtime.dead_letter(&delivery, &reason).await;
            return;
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
        acks_late: true,
    }
    .run()
    .instrument(span)
    .await
}

/// One decodable delivery being handled (its content is `Ok`: see [`handle`]).
struct Execution {
    runtime: Arc<Runtime>,
    delivery: Delivery,
    /// Whether the delivery is acked at the end (false once acked before the start).
    acks_late: bool,
}

impl Execution {
    /// The message, borrowed from the delivery (no copy on the hot path).
    fn message(&self) -> &Message {
        match &self.delivery.content {
            Ok(message) => message,
            Err(_) => unreachable!("handle() builds an Execution only for decoded messages"),
        }
    }

    fn id(&self) -> &str {
        &self.message().headers.id
    }

    async fn run(self) {
        let name = self.message().headers.task.clone();
        debug!(redelivered = self.delivery.redelivered, "task received");
        let Some(task) = self.runtime.app.registry().get(&name).cloned() else {
            return self.unknown_task().await;
        };
        let body = match self.message().decode_body() {
            Ok(body) => body,
            Err(error) => {
                let error = TaskError::new("DecodeError", error.to_string());
                self.store_error(TaskState::Failure, &error).await;
                let reason = format!("undecodable body: {}", error.message());
                warn!(%reason, "dead-lettering message");
                return self.runtime.dead_letter(&self.delivery, &reason).await;
            }
        };
        let now = time::now();
        if let Some(expires) = self
            .message()
            .headers
            .expires
            .filter(|expires| *expires <= now)
        {
            info!(%expires, "task expired: REVOKED");
            self.store_meta(TaskMeta::revoked(self.id(), "expired"))
                .await;
            self.runtime.stats.revoked.increment();
            return self.runtime.ack(&self.delivery).await;
        }
        if let Some(eta) = self.message().headers.eta.filter(|eta| *eta > now) {
            match (eta - now).to_std() {
                Ok(wait) if wait <= ETA_HOLD => tokio::time::sleep(wait).await,
                _ => return self.defer(eta).await,
            }
        }
        if let Some(limit) = task.options.rate_limit {
            while let Some(wait) = self.runtime.rate_limits.check(&name, limit) {
                if wait > RATE_LIMIT_HOLD {
                    let until = time::now()
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    debug!(?wait, "rate limited: deferring");
                    return self.defer(until).await;
                }
                tokio::time::sleep(wait).await;
            }
        }
        self.execute(task, body.args, body.kwargs, body.embed.unwrap_or_default())
            .await
    }

    async fn unknown_task(self) {
        let name = self.message().headers.task.clone();
        let error = TaskError::new("NotRegistered", name.clone()).module("celery.exceptions");
        self.store_error(TaskState::Failure, &error).await;
        if self.runtime.config.requeue_unknown_tasks {
            warn!("unknown task: requeued for another worker");
            self.runtime.reject(&self.delivery, true).await;
        } else {
            let reason = format!("unknown task {name:?}");
            warn!(%reason, "dead-lettering message");
            self.runtime.dead_letter(&self.delivery, &reason).await;
        }
    }

    async fn defer(self, until: DateTime<FixedOffset>) {
        debug!(%until, "handing the message back to the broker until it is due");
        if let Err(error) = self.runtime.consumer.defer(&self.delivery, until).await {
            warn!(%error, "could not defer; the message will be redelivered");
        }
    }

    async fn execute(
        mut self,
        task: RegisteredTask,
        args: Vec<Value>,
        kwargs: serde_json::Map<String, Value>,
        embed: queue_core::protocol::Embed,
    ) {
        let options = task.options.clone();
        let acks_late = options.acks_late;
        if !acks_late {
            self.runtime.ack(&self.delivery).await;
            self.acks_late = false;
        }
        let headers = &self.message().headers;
        let hard_limit = headers.timelimit.hard().or(options.time_limit);
        let soft_limit = headers.timelimit.soft().or(options.soft_time_limit);
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
            self.store_meta(started).await;
        }
        for hooks in &self.runtime.hooks {
            guarded(hooks.before_task(&context), "before_task").await;
        }
        self.runtime.stats.started.increment();
        let arguments = Arguments { args, kwargs };
        let started_at = tokio::time::Instant::now();
        let result = run_limited(
            task.task.run(context.clone(), arguments),
            &cancellation,
            soft_limit,
            hard_limit,
            &self.runtime.cold,
        )
        .await;
        let runtime = started_at.elapsed();

        let outcome = match result {
            RunResult::Interrupted => {
                // Cold shutdown: give the message back unless it was acked before the start.
                warn!("cold shutdown: task interrupted");
                if acks_late {
                    self.runtime.reject(&self.delivery, true).await;
                }
                return;
            }
            RunResult::Done(Ok(value)) => {
                info!(runtime = runtime.as_secs_f64(), "task succeeded");
                self.runtime.stats.succeeded.increment();
                if !ignore_result {
                    self.store_meta(self.meta(TaskState::Success, value.clone()))
                        .await;
                }
                self.apply_callbacks(&embed, &value).await;
                for hooks in &self.runtime.hooks {
                    guarded(hooks.on_success(&context, &value), "on_success").await;
                }
                Outcome::Success(value)
            }
            RunResult::Done(Err(error)) if error.is_retry() => {
                match self.retry(&task, &error).await {
                    Retry::NotPublished => {
                        // Not acked: the broker delivers the original again and it reruns.
                        if self.acks_late {
                            self.runtime.reject(&self.delivery, true).await;
                        }
                        return;
                    }
                    Retry::Published(delay) => {
                        self.runtime.stats.retried.increment();
                        if !ignore_result {
                            self.store_error(TaskState::Retry, &error).await;
                        }
                        for hooks in &self.runtime.hooks {
                            guarded(hooks.on_retry(&context, &error, delay), "on_retry").await;
                        }
                        Outcome::Retry(error)
                    }
                    Retry::Exhausted => {
                        let reason = format!(
                            "max retries ({}) exceeded: {error}",
                            self.message().headers.retries
                        );
                        return self
                            .fail(&context, &embed, error, ignore_result, Some(reason))
                            .await;
                    }
                }
            }
            RunResult::Done(Err(error)) => {
                return self
                    .fail(&context, &embed, error, ignore_result, None)
                    .await;
            }
        };
        for hooks in &self.runtime.hooks {
            guarded(hooks.after_task(&context, &outcome), "after_task").await;
        }
        if acks_late {
            self.runtime.ack(&self.delivery).await;
        }
    }

    /// Final failure: store FAILURE, apply errbacks, run hooks, then ack — or dead-letter
    /// when `dead_letter_reason` is set (retries exhausted).
    async fn fail(
        self,
        context: &TaskContext,
        embed: &queue_core::protocol::Embed,
        error: TaskError,
        ignore_result: bool,
        dead_letter_reason: Option<String>,
    ) {
        match error.kind() {
            TaskErrorKind::Panicked => error!(%error, "task panicked"),
            _ => warn!(%error, "task failed"),
        }
        self.runtime.stats.failed.increment();
        if !ignore_result {
            self.store_error(TaskState::Failure, &error).await;
        }
        self.apply_errbacks(embed).await;
        for hooks in &self.runtime.hooks {
            guarded(hooks.on_failure(context, &error), "on_failure").await;
        }
        let outcome = Outcome::Failure(error);
        for hooks in &self.runtime.hooks {
            guarded(hooks.after_task(context, &outcome), "after_task").await;
        }
        match dead_letter_reason {
            Some(reason) => self.runtime.dead_letter(&self.delivery, &reason).await,
            None if self.acks_late => self.runtime.ack(&self.delivery).await,
            None => {}
        }
    }

    /// Publishes the retry (same id and body, `retries + 1`, an eta).
    async fn retry(&self, task: &RegisteredTask, error: &TaskError) -> Retry {
        let retries = self.message().headers.retries;
        let policy = &task.options.retry;
        if policy.max_retries.is_some_and(|max| retries >= max) {
            return Retry::Exhausted;
        }
        let delay = match error.kind() {
            TaskErrorKind::Retry {
                countdown: Some(countdown),
            } => *countdown,
            _ => policy.delay_for(retries),
        };
        let mut message = self.message().clone();
        message.headers.retries = retries + 1;
        message.headers.eta =
            Some(time::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX));
        // As Celery: the retry's parent is the task itself.
        message.headers.parent_id = Some(self.message().headers.id.clone());
        let publish = Publish::new(self.delivery.queue.clone(), message);
        let span = queue_core::app::publish_span(&publish);
        let broker = self.runtime.app.broker();
        let published = async {
            let published = broker.publish(vec![publish]).await;
            if published.is_ok() {
                debug!("retry sent");
            }
            published
        }
        .instrument(span)
        .await;
        match published {
            Ok(()) => {
                info!(?delay, retry = retries + 1, %error, "task will be retried");
                Retry::Published(delay)
            }
            Err(publish_error) => {
                warn!(%publish_error, "could not publish the retry; the message is requeued");
                Retry::NotPublished
            }
        }
    }

    fn meta(&self, status: TaskState, result: Value) -> TaskMeta {
        let headers = &self.message().headers;
        let mut meta = TaskMeta::new(self.id(), status, result);
        meta.group_id = headers.group.clone();
        meta.parent_id = headers.parent_id.clone();
        meta.name = Some(headers.task.clone());
        meta.worker = Some(self.runtime.config.node_name.clone());
        meta.retries = Some(headers.retries);
        meta.queue = Some(self.delivery.queue.clone());
        meta
    }

    async fn store_error(&self, status: TaskState, error: &TaskError) {
        let mut meta = self.meta(status, error.to_exception_value());
        meta.traceback = error.traceback_text().map(str::to_owned);
        self.store_meta(meta).await;
    }

    async fn store_meta(&self, meta: TaskMeta) {
        self.runtime.store(meta).await;
    }

    async fn apply_callbacks(&self, embed: &queue_core::protocol::Embed, value: &Value) {
        let Some(callbacks) = &embed.callbacks else {
            return;
        };
        let linked = callbacks.iter().cloned().map(|mut callback| {
            if !callback.immutable {
                callback.args.insert(0, value.clone());
            }
            callback
        });
        self.send_linked(linked.collect()).await;
    }

    async fn apply_errbacks(&self, embed: &queue_core::protocol::Embed) {
        let Some(errbacks) = &embed.errbacks else {
            return;
        };
        let id = Value::String(self.id().to_owned());
        let linked = errbacks.iter().cloned().map(|mut errback| {
            if !errback.immutable {
                errback.args.insert(0, id.clone());
            }
            errback
        });
        self.send_linked(linked.collect()).await;
    }

    async fn send_linked(&self, signatures: Vec<Signature>) {
        let headers = &self.message().headers;
        let root = headers
            .root_id
            .clone()
            .unwrap_or_else(|| headers.id.clone());
        let prepared: Vec<Signature> = signatures
            .into_iter()
            .map(|mut signature| {
                signature.options.parent_id = Some(headers.id.clone());
                signature.options.root_id = Some(root.clone());
                signature
            })
            .collect();
        if let Err(error) = self.runtime.app.send_many(prepared).await {
            warn!(%error, "could not send linked tasks");
        }
    }
}

/// What became of a retry request.
enum Retry {
    /// Sent again; runs after this delay.
    Published(Duration),
    /// `max_retries` reached: the task fails.
    Exhausted,
    /// The broker refused the new message: the original is given back instead.
    NotPublished,
}

enum RunResult {
    Done(Result<Value, TaskError>),
    Interrupted,
}

/// Runs the task future on its own tokio task (a panic fails that task only), fires the
/// cancellation signal at the soft limit, stops the task at the hard limit, and gives up on
/// it at a cold shutdown.
async fn run_limited(
    future: futures::future::BoxFuture<'static, Result<Value, TaskError>>,
    cancellation: &CancellationToken,
    soft_limit: Option<Duration>,
    hard_limit: Option<Duration>,
    cold: &CancellationToken,
) -> RunResult {
    let mut join = tokio::spawn(future);
    let soft_timer = soft_limit.map(|limit| {
        let cancellation = cancellation.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            warn!(?limit, "soft time limit exceeded: cancellation signalled");
            cancellation.cancel();
        })
    });
    let hard_deadline = async {
        match hard_limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => futures::future::pending().await,
        }
    };
    let result = tokio::select! {
        joined = &mut join => RunResult::Done(match joined {
            Ok(result) => result,
            Err(join_error) => Err(panic_error(join_error)),
        }),
        () = hard_deadline => {
            join.abort();
            let limit = hard_limit.unwrap_or_default();
            error!(?limit, "hard time limit exceeded: task stopped");
            RunResult::Done(Err(TaskError::time_limit_exceeded(limit)))
        }
        () = cold.cancelled() => {
            join.abort();
            RunResult::Interrupted
        }
    };
    if let Some(timer) = soft_timer {
        timer.abort();
    }
    result
}

/// Runs a hook; a panicking hook is logged and does not take the execution down with it.
async fn guarded(hook: impl std::future::Future<Output = ()>, name: &'static str) {
    use futures::FutureExt;
    if let Err(payload) = std::panic::AssertUnwindSafe(hook).catch_unwind().await {
        error!(hook = name, panic = %panic_message(payload.as_ref()), "a hook panicked");
    }
}

fn panic_error(join_error: tokio::task::JoinError) -> TaskError {
    match join_error.try_into_panic() {
        Ok(payload) => TaskError::panicked(panic_message(payload.as_ref())),
        Err(other) => TaskError::panicked(other.to_string()),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}
