//! A broker and a result backend that fail on demand, around the memory ones: outages and
//! refusals as a test needs them. Included by the tests that need it with `#[path]`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use queue::{
    BackendError, Broker, BrokerError, ConsumeOptions, Consumer, DeadLetter, Delivery, DeliveryTag,
    GroupMeta, MemoryBackend, MemoryBroker, Publish, QueueLength, ResultBackend, TaskMeta,
};

/// A memory broker whose publishes (and its consumers' atomic republishes) fail while
/// `down` is set.
#[derive(Debug, Default)]
pub struct OutageBroker {
    pub inner: MemoryBroker,
    pub down: Arc<AtomicBool>,
}

impl OutageBroker {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(down: &AtomicBool) -> Result<(), BrokerError> {
        if down.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable("outage".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Broker for OutageBroker {
    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.inner.declare_queue(queue).await
    }
    async fn publish(&self, messages: Vec<Publish>) -> Result<(), BrokerError> {
        Self::check(&self.down)?;
        self.inner.publish(messages).await
    }
    async fn consume(&self, options: ConsumeOptions) -> Result<Arc<dyn Consumer>, BrokerError> {
        Ok(Arc::new(OutageConsumer {
            inner: self.inner.consume(options).await?,
            down: self.down.clone(),
        }))
    }
    async fn queue_length(&self, queue: &str) -> Result<QueueLength, BrokerError> {
        self.inner.queue_length(queue).await
    }
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.purge(queue).await
    }
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.inner.dead_letters(queue, limit).await
    }
}

struct OutageConsumer {
    inner: Arc<dyn Consumer>,
    down: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Consumer for OutageConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        self.inner.fetch(max, wait).await
    }
    async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        self.inner.ack(delivery).await
    }
    async fn reject(&self, delivery: &Delivery, requeue: bool) -> Result<(), BrokerError> {
        self.inner.reject(delivery, requeue).await
    }
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        self.inner.dead_letter(delivery, reason).await
    }
    async fn defer(
        &self,
        delivery: &Delivery,
        until: DateTime<FixedOffset>,
    ) -> Result<(), BrokerError> {
        self.inner.defer(delivery, until).await
    }
    async fn republish_and_ack(
        &self,
        delivery: &Delivery,
        replacement: Publish,
    ) -> Result<(), BrokerError> {
        OutageBroker::check(&self.down)?;
        self.inner.republish_and_ack(delivery, replacement).await
    }
    async fn renew(&self, deliveries: &[DeliveryTag]) -> Result<(), BrokerError> {
        self.inner.renew(deliveries).await
    }
    async fn close(&self) -> Result<(), BrokerError> {
        self.inner.close().await
    }
}

/// A memory backend whose stores fail while `down` is set, refuse values for good when
/// `refuse` is set, and panic for the task id in `panic_for`; failed stores are counted in
/// `failures`, which a test can wait on.
#[derive(Debug)]
pub struct FaultyBackend {
    pub inner: MemoryBackend,
    pub down: AtomicBool,
    pub refuse: AtomicBool,
    pub failures: tokio::sync::watch::Sender<u64>,
    pub panic_for: Mutex<Option<String>>,
}

impl FaultyBackend {
    pub fn new() -> Self {
        Self {
            inner: MemoryBackend::new(),
            down: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            failures: tokio::sync::watch::Sender::new(0),
            panic_for: Mutex::new(None),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Waits until at least `count` stores have failed.
    pub async fn failed_stores(&self, count: u64) {
        let mut failures = self.failures.subscribe();
        failures.wait_for(|failed| *failed >= count).await.unwrap();
    }

    fn failed(&self) {
        self.failures.send_modify(|failed| *failed += 1);
    }
}

#[async_trait::async_trait]
impl ResultBackend for FaultyBackend {
    async fn store(&self, meta: TaskMeta) -> Result<(), BackendError> {
        if self.panic_for.lock().unwrap().as_deref() == Some(meta.task_id.as_str()) {
            panic!("the backend's client panicked");
        }
        if self.refuse.load(Ordering::SeqCst) {
            self.failed();
            return Err(BackendError::Encoding("value cannot be encoded".into()));
        }
        if self.down.load(Ordering::SeqCst) {
            self.failed();
            return Err(BackendError::Unavailable("outage".into()));
        }
        self.inner.store(meta).await
    }
    async fn get(&self, task_id: &str) -> Result<Option<TaskMeta>, BackendError> {
        self.inner.get(task_id).await
    }
    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError> {
        self.inner.wait(task_id, timeout).await
    }
    async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        self.inner.forget(task_id).await
    }
    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError> {
        self.inner.save_group(group).await
    }
    async fn get_group(&self, group_id: &str) -> Result<Option<GroupMeta>, BackendError> {
        self.inner.get_group(group_id).await
    }
    async fn chord_start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        self.inner.chord_start(group_id, size).await
    }
    async fn chord_part(
        &self,
        group_id: &str,
        part: queue::chord::ChordPart,
    ) -> Result<queue::chord::ChordJoin, BackendError> {
        self.inner.chord_part(group_id, part).await
    }
    async fn chord_dispatched(&self, claim: &queue::chord::ChordClaim) -> Result<(), BackendError> {
        self.inner.chord_dispatched(claim).await
    }
}
