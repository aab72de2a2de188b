//! Coalescing of concurrent small writes (acks, result stores) into one round trip: when
//! nothing is in flight an item goes out at once from its caller (no extra latency); what
//! arrives while writes are in flight goes out together next, from a task of its own, so
//! many concurrent callers share round trips and the server's per-command cost. The queue
//! of items waiting is bounded: a caller finding it full waits for room (back-pressure,
//! never a drop), so a server slower than its callers cannot make the process grow.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::RedisError;

type Job<T> = (T, oneshot::Sender<Result<(), RedisError>>);

/// Sends items to a task that runs them in batches of at most `max`.
pub(crate) struct Batcher<T> {
    sender: mpsc::Sender<Job<T>>,
    run: Arc<dyn Fn(Vec<T>) -> BoxedRun + Send + Sync>,
    /// Items queued or being written: 0 means a new item may go out directly, in order.
    pending: Arc<AtomicUsize>,
}

type BoxedRun = std::pin::Pin<Box<dyn Future<Output = Result<(), RedisError>> + Send>>;

impl<T: Send + 'static> Batcher<T> {
    /// Starts the batching task, with room for `capacity` items waiting. `run` must not hold
    /// what owns the batcher, or neither is ever dropped: the task ends when the batcher is
    /// dropped.
    pub(crate) fn new<F, Fut>(max: usize, capacity: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RedisError>> + Send + 'static,
    {
        let run: Arc<dyn Fn(Vec<T>) -> BoxedRun + Send + Sync> =
            Arc::new(move |items| Box::pin(run(items)) as BoxedRun);
        let pending = Arc::new(AtomicUsize::new(0));
        let (sender, mut receiver) = mpsc::channel::<Job<T>>(capacity.max(1));
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

    /// Queues `item` without waiting for the write (only for room in the queue); a failure
    /// is only logged.
    pub(crate) async fn send(&self, item: T) {
        let (reply, answer) = oneshot::channel();
        drop(answer);
        // Counted while it waits for room, so that a direct write cannot overtake it.
        let counted = Counted::new(&self.pending);
        // The task is gone only when the client is; the item is lost with it.
        if self.sender.send((item, reply)).await.is_ok() {
            counted.handed_over();
        }
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
        let (reply, answer) = oneshot::channel();
        let counted = Counted::new(&self.pending);
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| RedisError::Unavailable("connection closed".into()))?;
        counted.handed_over();
        answer
            .await
            .unwrap_or_else(|_| Err(RedisError::Unavailable("connection closed".into())))
    }
}

/// An item counted in `pending` until the batching task owns it (and counts it out), or
/// counted out again when its caller went away before.
struct Counted<'a>(Option<&'a AtomicUsize>);

impl<'a> Counted<'a> {
    fn new(pending: &'a AtomicUsize) -> Self {
        pending.fetch_add(1, Ordering::AcqRel);
        Self(Some(pending))
    }

    fn handed_over(mut self) {
        self.0 = None;
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.0 {
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Direct<'a>(&'a AtomicUsize);

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn a_full_queue_makes_senders_wait_and_drops_nothing() {
        // Writes that do not finish until the test lets them: the server is slow.
        let gate = Arc::new(Semaphore::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let batcher = {
            let (gate, written) = (gate.clone(), written.clone());
            Batcher::new(2, 3, move |items: Vec<u32>| {
                let (gate, written) = (gate.clone(), written.clone());
                async move {
                    gate.acquire().await.expect("open").forget();
                    written.fetch_add(items.len(), Ordering::AcqRel);
                    Ok(())
                }
            })
        };
        // One batch in the task's hands (2 items), then the queue's room (3 items) ...
        let mut sent = 0;
        while batcher.send(sent).now_or_never().is_some() {
            sent += 1;
            tokio::task::yield_now().await;
            assert!(sent <= 6, "the queue took {sent} items without bound");
        }
        assert!(sent >= 3, "room for the queue's capacity: {sent}");
        // ... and the next sender waits for room instead of growing the queue.
        let waiting = batcher.send(sent);
        gate.add_permits(100);
        waiting.await;
        batcher.submit(sent + 1).await.unwrap();
        assert_eq!(
            written.load(Ordering::Acquire),
            sent as usize + 2,
            "nothing dropped"
        );
    }
}
