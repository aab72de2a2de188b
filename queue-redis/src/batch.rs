//! Coalescing of concurrent small writes (acks, result stores) into one round trip: when
//! nothing is in flight an item goes out at once from its caller (no extra latency); what
//! arrives while writes are in flight goes out together next, from a task of its own, so
//! many concurrent callers share round trips and the server's per-command cost.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::RedisError;

type Job<T> = (T, oneshot::Sender<Result<(), RedisError>>);

/// Sends items to a task that runs them in batches of at most `max`.
pub(crate) struct Batcher<T> {
    sender: mpsc::UnboundedSender<Job<T>>,
    run: Arc<dyn Fn(Vec<T>) -> BoxedRun + Send + Sync>,
    /// Items queued or being written: 0 means a new item may go out directly, in order.
    pending: Arc<AtomicUsize>,
}

type BoxedRun = std::pin::Pin<Box<dyn Future<Output = Result<(), RedisError>> + Send>>;

impl<T: Send + 'static> Batcher<T> {
    /// Starts the batching task. `run` must not hold what owns the batcher, or neither is
    /// ever dropped: the task ends when the batcher is dropped.
    pub(crate) fn new<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RedisError>> + Send + 'static,
    {
        let run: Arc<dyn Fn(Vec<T>) -> BoxedRun + Send + Sync> =
            Arc::new(move |items| Box::pin(run(items)) as BoxedRun);
        let pending = Arc::new(AtomicUsize::new(0));
        let (sender, mut receiver) = mpsc::unbounded_channel::<Job<T>>();
        let (task_run, task_pending) = (run.clone(), pending.clone());
        tokio::spawn(async move {
            let (run, pending) = (task_run, task_pending);
            let mut items = Vec::with_capacity(max);
            let mut replies = Vec::with_capacity(max);
            while let Some((item, reply)) = receiver.recv().await {
                items.push(item);
                replies.push(reply);
                while items.len() < max {
                    match receiver.try_recv() {
                        Ok((item, reply)) => {
                            items.push(item);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let count = items.len();
                let result = run(std::mem::take(&mut items)).await;
                if let Err(error) = &result {
                    if replies.iter().any(oneshot::Sender::is_closed) {
                        warn!(%error, count, "a batched write failed");
                    }
                }
                pending.fetch_sub(count, Ordering::AcqRel);
                for reply in replies.drain(..) {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self {
            sender,
            run,
            pending,
        }
    }

    /// Queues `item` without waiting for the write; a failure is only logged.
    pub(crate) fn send(&self, item: T) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let (reply, answer) = oneshot::channel();
        drop(answer);
        // The task is gone only when the client is; the item is lost with it.
        let _ = self.sender.send((item, reply));
    }

    /// Queues `item` and waits until its batch was written.
    pub(crate) async fn submit(&self, item: T) -> Result<(), RedisError> {
        if self
            .pending
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Counted out however the write ends, a dropped caller included.
            let _direct = Direct(&self.pending);
            return (self.run)(vec![item]).await;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, reply))
            .map_err(|_| RedisError::Unavailable("connection closed".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(RedisError::Unavailable("connection closed".into())))
    }
}

struct Direct<'a>(&'a AtomicUsize);

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
