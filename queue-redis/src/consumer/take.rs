//! Taking messages: the fetch script, the wait for a watcher when the queues are empty,
//! and reading ahead up to the prefetch limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::types::Value;
use queue_core::broker::{BrokerError, Delivery, DeliveryTag, QueueOrder};
use queue_core::protocol::time;
use tokio::time::Instant;
use tracing::debug;

use super::{Held, MAX_BATCH, MAX_BLOCK, Shared, lock};
use crate::broker::{index_score, now_ms};
use crate::error::RedisError;
use crate::scripts;
use crate::wire;

impl Shared {
    /// Takes more messages in the background while the caller works on the last ones, up
    /// to the prefetch limit of messages held (AMQP's `basic.qos`, as kombu's prefetch does
    /// on Redis): the next fetch then finds them here. What is taken ahead is recorded in
    /// `unacked` like any fetched message.
    pub(super) fn read_ahead(self: Arc<Self>) {
        let room = self
            .prefetch
            .load(Ordering::Acquire)
            .saturating_sub(lock(&self.held).len())
            .min(MAX_BATCH);
        // Nothing to read ahead from queues the last take emptied.
        if room == 0
            || self.drained.load(Ordering::Acquire)
            || self.reading_ahead.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(async move {
            let guard = self.fetching.lock().await;
            let room = self
                .prefetch
                .load(Ordering::Acquire)
                .saturating_sub(lock(&self.held).len())
                .min(MAX_BATCH);
            if room > 0 && !self.closed.load(Ordering::Acquire) {
                match self.claim(room).await {
                    Ok(deliveries) => lock(&self.stash).extend(deliveries),
                    Err(error) => debug!(%error, "reading ahead failed"),
                }
            }
            drop(guard);
            self.reading_ahead.store(false, Ordering::Release);
        });
    }

    pub(super) fn take_stash(&self, max: usize) -> Vec<Delivery> {
        let mut stash = lock(&self.stash);
        let count = stash.len().min(max);
        stash.drain(..count).collect()
    }

    pub(super) async fn fetch_locked(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = time::deadline_in(wait);
        // When the last take left the queues empty and no delayed message is due, wait for
        // a watcher straight away: it sees at once what arrived since (one round trip less
        // per message on a quiet queue). After each wait the script runs again (it also
        // promotes delayed messages).
        let mut take_first = wait.is_zero()
            || !self.drained.load(Ordering::Acquire)
            || self.next_due.load(Ordering::Acquire) <= now_ms();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(BrokerError::Closed);
            }
            if take_first {
                let deliveries = self.claim(max).await?;
                if !deliveries.is_empty() {
                    return self.unless_closed(deliveries);
                }
            }
            take_first = true;
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut block = (deadline - now).min(MAX_BLOCK);
            let due = self.next_due.load(Ordering::Acquire);
            if due != i64::MAX {
                let until = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
                block = block.min(until);
            }
            self.wait_for_messages(block).await;
        }
    }

    /// Waits until a watcher of our lists sees a message, `close` is called, or `block`
    /// passed. A wake-up left over from an earlier wait only means one take more.
    async fn wait_for_messages(&self, block: Duration) {
        let lanes = self.lanes();
        for watcher in &lanes.watchers {
            watcher.register(&self.wake);
        }
        if !self.closed.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(block, self.wake.notified()).await;
        }
        for watcher in &lanes.watchers {
            watcher.deregister(&self.wake);
        }
    }

    /// Deliveries taken while the consumer was closing stay held: the close gives them back.
    pub(super) fn unless_closed(
        &self,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<Delivery>, BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        Ok(deliveries)
    }

    /// Runs the fetch script: takes up to `max` messages and records them as unacked, in
    /// one step. Returns them, and notes when the next delayed message is due (ms).
    pub(super) async fn claim(&self, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        let broker = &self.broker;
        let lanes = self.lanes();
        let queue_count = lanes.queues.len();
        if queue_count == 0 {
            // Every queue cancelled: nothing to take until one is added.
            self.drained.store(true, Ordering::Release);
            self.next_due.store(i64::MAX, Ordering::Release);
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(2 + lanes.lists.len());
        keys.push(broker.keys.unacked.clone());
        keys.push(broker.keys.unacked_index.clone());
        keys.extend(lanes.lists.iter().cloned());
        let mut args: Vec<Value> = Vec::with_capacity(8 + 2 * queue_count);
        args.push(Value::from(max as i64));
        args.push(Value::from(index_score()));
        args.push(Value::from(uuid::Uuid::new_v4().simple().to_string()));
        args.push(Value::from(self.per as i64));
        args.push(Value::from(queue_count as i64));
        args.push(Value::from(now_ms()));
        args.extend(lanes.queues.iter().map(|queue| Value::from(queue.as_str())));
        args.extend(lanes.delayed.iter().map(|key| Value::from(key.as_str())));
        let sequences: Vec<Vec<usize>> = match &lanes.order {
            QueueOrder::Strict => vec![(0..queue_count).collect()],
            // A fresh weighted order per message, so one fetch does not drain one queue.
            order @ QueueOrder::Weighted(_) => {
                (0..max).map(|_| order.sequence(queue_count)).collect()
            }
        };
        args.push(Value::from(sequences.len() as i64));
        for sequence in sequences {
            args.extend(
                sequence
                    .into_iter()
                    .map(|queue| Value::from(queue as i64 + 1)),
            );
        }
        let reply = scripts::run(&broker.client, &broker.scripts.fetch, keys, args).await?;
        let Value::Array(mut items) = reply else {
            return Err(RedisError::Reply(format!("fetch reply {reply:?}")).into());
        };
        let next_due = items
            .pop()
            .and_then(|value| value.as_str().and_then(|text| text.parse::<f64>().ok()))
            .map_or(i64::MAX, |ms| ms as i64);
        self.next_due.store(next_due, Ordering::Release);
        self.drained.store(items.len() / 3 < max, Ordering::Release);
        let mut deliveries = Vec::with_capacity(items.len() / 3);
        for triple in items.chunks_exact(3) {
            let list = triple[0].as_u64().unwrap_or(1).max(1) as usize - 1;
            let tag = triple[1]
                .as_str()
                .map(|tag| tag.into_owned())
                .unwrap_or_default();
            let raw = triple[2].as_bytes().unwrap_or_default().to_vec();
            let list = list.min(lanes.lists.len() - 1);
            let queue: Arc<str> = lanes.queues[list / self.per].as_str().into();
            deliveries.push(self.deliver(queue, list % self.per, tag, raw));
        }
        Ok(deliveries)
    }

    /// Makes a delivery of a taken element and holds it. An empty tag means the element is
    /// not recorded in `unacked`; it gets a tag of this process.
    pub(super) fn deliver(
        &self,
        queue: Arc<str>,
        lane: usize,
        tag: String,
        raw: Vec<u8>,
    ) -> Delivery {
        let recorded = !tag.is_empty();
        let tag = if recorded {
            tag
        } else {
            format!("local:{}", uuid::Uuid::new_v4())
        };
        let (content, redelivered) = wire::decode(&raw);
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        lock(&self.held).insert(
            tag.clone(),
            Held {
                queue: queue.clone(),
                lane,
                raw,
                recorded,
                sequence,
            },
        );
        Delivery {
            tag: DeliveryTag::Text(tag),
            queue: queue.to_string(),
            redelivered,
            content,
        }
    }
}
