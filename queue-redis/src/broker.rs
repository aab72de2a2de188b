//! [`RedisBroker`]: publishing, queue lengths, purge and dead-letter listing on kombu's
//! layout. Consuming is in [`crate::consumer`], the monitor's backlog in [`crate::backlog`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fred::prelude::{
    Client, ClientLike, HashesInterface, ListInterface, SetsInterface, SortedSetsInterface,
};
use fred::types::Value;
use queue_core::backlog::{DelayedMessage, KnownQueues, QueueStats};
use queue_core::broadcast::Broadcast;
use queue_core::broker::{
    Broker, BrokerError, ConsumeOptions, Consumer, DeadLetter, Publish, QueueLength,
};
use queue_core::protocol::time;
use tracing::{debug, trace};

use crate::batch::Batcher;
use crate::config::RedisOptions;
use crate::connection;
use crate::consumer::RedisConsumer;
use crate::delay::Parked;
use crate::error::{RedisError, broker_error};
use crate::keys::{Keys, SEP};
use crate::promote::{self, Promoter};
use crate::scripts::{self, Scripts};
use crate::wake::Watchers;
use crate::wire;

/// Most values per `LPUSH`: a large batch becomes several commands of one pipeline.
const PUSH_CHUNK: usize = 1000;
/// Most writes coalesced into one pipeline.
const WRITE_BATCH: usize = 512;

/// Most queue names remembered as declared (a producer may name queues without end).
const MAX_DECLARED: usize = 10_000;
/// Most writes waiting to be written: past it, `ack` waits (back-pressure, never a drop).
const WRITE_QUEUE: usize = 8 * WRITE_BATCH;

/// A write to the `unacked` bookkeeping that need not be waited for, in order.
pub(crate) enum Write {
    /// Forget an acknowledged message.
    Ack(String),
    /// Nothing: waiting for it waits for the writes sent before it.
    Mark,
}

/// Writes a batch of acks in one pipeline: one `HDEL` and one `ZREM`. As kombu's ack, without MULTI: the hash entry goes first, so that an interruption
/// leaves at most an index entry, which the restore drops.
async fn write(
    client: &Client,
    unacked: &str,
    index: &str,
    writes: Vec<Write>,
) -> Result<(), RedisError> {
    let acks: Vec<String> = writes
        .into_iter()
        .filter_map(|write| match write {
            Write::Ack(tag) => Some(tag),
            Write::Mark => None,
        })
        .collect();
    if acks.is_empty() {
        return Ok(());
    }
    let pipeline = client.pipeline();
    let _: () = pipeline.hdel(unacked, acks.clone()).await?;
    let _: () = pipeline.zrem(index, acks).await?;
    pipeline.all::<Vec<Value>>().await?;
    Ok(())
}

/// A broker on Redis that shares queues with Python Celery/kombu (see the crate docs).
/// Clones share the connection.
#[derive(Clone)]
pub struct RedisBroker {
    pub(crate) inner: Arc<BrokerInner>,
}

pub(crate) struct BrokerInner {
    pub(crate) options: RedisOptions,
    pub(crate) keys: Keys,
    pub(crate) client: Client,
    pub(crate) scripts: Scripts,
    declared: Mutex<HashSet<String>>,
    /// Acks of all consumers, coalesced, in order.
    pub(crate) writes: Batcher<Write>,
    /// The watchers of the lists that consumers wait on (see `wake`).
    pub(crate) watchers: Watchers,
    /// Delayed messages published here, promoted on time while this process runs.
    pub(crate) promoter: Arc<Promoter>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisBroker")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to the server of a `redis://` or `rediss://` URL (options: see
    /// [`RedisOptions`]).
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Self::with_options(RedisOptions::from_url(url)?).await
    }

    /// Connects with parsed options.
    pub async fn with_options(options: RedisOptions) -> Result<Self, RedisError> {
        let client = connection::connect(&options, "broker").await?;
        let keys = Keys::new(&options.global_keyprefix, &options.priority_steps);
        let writes = {
            let client = client.clone();
            let (unacked, index) = (keys.unacked.clone(), keys.unacked_index.clone());
            Batcher::new(WRITE_BATCH, WRITE_QUEUE, move |writes: Vec<Write>| {
                let (client, unacked, index) = (client.clone(), unacked.clone(), index.clone());
                async move { write(&client, &unacked, &index, writes).await }
            })
        };
        debug!(url = %options, "Redis broker connected");
        let inner = Arc::new(BrokerInner {
            options,
            keys,
            client,
            scripts: Scripts::new(),
            declared: Mutex::new(HashSet::new()),
            writes,
            watchers: Watchers::default(),
            promoter: Arc::new(Promoter::default()),
        });
        tokio::spawn(promote::run(inner.promoter.clone(), Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The kombu list keys of `queue`, served first to last (for tools and tests).
    pub fn list_keys(&self, queue: &str) -> Vec<String> {
        self.inner.keys.lists(queue)
    }

    /// The underlying fred client (for tools and tests that look at the raw layout).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

impl Drop for BrokerInner {
    fn drop(&mut self) {
        // fred keeps a connection open until told otherwise.
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

impl BrokerInner {
    /// kombu's binding of a queue to the exchange of its name, as Celery declares it; a
    /// Python producer that publishes through that exchange looks it up.
    fn bindings_to_add(&self, queue: &str) -> Option<(String, String, String)> {
        let mut declared = self
            .declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if declared.contains(queue) {
            return None;
        }
        if declared.len() >= MAX_DECLARED {
            // Declaring again is harmless (SADD): forget rather than grow without bound.
            declared.clear();
        }
        declared.insert(queue.to_owned());
        let member = format!("{queue}{SEP}{SEP}{queue}");
        Some((
            self.keys.binding(queue),
            self.keys.binding_permanent(queue),
            member,
        ))
    }

    fn forget_declared(&self, queues: &[String]) {
        let mut declared = self
            .declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for queue in queues {
            declared.remove(queue);
        }
    }

    /// `unacked`, `unacked_index`, then the lists of `queue`: the keys of the length and
    /// purge scripts.
    fn script_keys(&self, queue: &str) -> Vec<String> {
        let mut keys = vec![self.keys.unacked.clone(), self.keys.unacked_index.clone()];
        keys.extend(self.keys.lists(queue));
        keys
    }

    /// Declares `queue` as Celery does (kombu's binding), once per broker.
    pub(crate) async fn declare(&self, queue: &str) -> Result<(), BrokerError> {
        let Some((binding, permanent, member)) = self.bindings_to_add(queue) else {
            return Ok(());
        };
        let pipeline = self.client.pipeline();
        let _: () = pipeline
            .sadd(binding, member.clone())
            .await
            .map_err(broker_error)?;
        let _: () = pipeline
            .sadd(permanent, member)
            .await
            .map_err(broker_error)?;
        if let Err(error) = pipeline.all::<Vec<Value>>().await {
            self.forget_declared(&[queue.to_owned()]);
            return Err(broker_error(error));
        }
        Ok(())
    }

    /// A queue's length from the lengths of its lists, served first to last.
    pub(crate) fn length_from(&self, lengths: &[u64]) -> QueueLength {
        let mut length = QueueLength::default();
        for (step, count) in self.keys.steps().iter().zip(lengths) {
            if *count > 0 {
                // A list holds kombu priorities from its step up: report it under the highest
                // of our priorities it holds (exact with one list per priority).
                let ours = crate::keys::our_priority(Some(i64::from(*step)));
                *length.by_priority.entry(ours).or_default() += count;
                length.total += count;
            }
        }
        length
    }

    /// The position (1-based) of the list of kombu priority `wire` among a queue's lists.
    pub(crate) fn lane_of_wire(&self, wire: u8) -> usize {
        let step = self.keys.step_for_wire(wire);
        self.keys
            .steps()
            .iter()
            .position(|s| *s == step)
            .unwrap_or(0)
            + 1
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.inner.declare(queue).await
    }

    async fn publish(&self, messages: Vec<Publish>) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = time::now();
        let inner = &self.inner;
        // Lists in first-use order, each with its elements in publication order: FIFO per list.
        let mut lists: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let mut list_index: HashMap<String, usize> = HashMap::new();
        let mut delayed: Vec<Value> = Vec::new();
        let mut due_times: Vec<(&str, i64)> = Vec::new();
        let mut new_queues = Vec::new();
        for publish in &messages {
            let queue = publish.queue.as_str();
            let message = &publish.message;
            trace!(
                task_id = message.id(),
                task_name = message.task_name(),
                queue,
                "publish"
            );
            let encoded = wire::encode(message, queue);
            if let Some(bindings) = inner.bindings_to_add(queue) {
                new_queues.push((queue.to_owned(), bindings));
            }
            match message.headers.eta.filter(|eta| *eta > now) {
                Some(eta) => {
                    // Parked in `unacked` until due, where any restore finds it (see `delay`).
                    let lane = inner.lane_of_wire(encoded.wire_priority);
                    let parked = Parked::new(
                        &encoded.raw,
                        encoded.tag,
                        queue,
                        lane,
                        eta.timestamp_millis(),
                        inner.options.visibility_timeout,
                    );
                    due_times.push((queue, parked.due_ms));
                    delayed.extend([
                        Value::from(parked.tag),
                        Value::Bytes(parked.value.into()),
                        Value::from(parked.index_score),
                        Value::from(inner.keys.delayed(queue)),
                        Value::from(parked.due_ms.to_string()),
                        Value::from(parked.member),
                    ]);
                }
                None => {
                    let key = inner.keys.list_for_wire(queue, encoded.wire_priority);
                    let position = *list_index.entry(key.clone()).or_insert_with(|| {
                        lists.push((key, Vec::new()));
                        lists.len() - 1
                    });
                    lists[position].1.push(encoded.raw);
                }
            }
        }
        let pipeline = inner.client.pipeline();
        for (_, (binding, permanent, member)) in &new_queues {
            let _: () = pipeline
                .sadd(binding.as_str(), member.as_str())
                .await
                .map_err(broker_error)?;
            let _: () = pipeline
                .sadd(permanent.as_str(), member.as_str())
                .await
                .map_err(broker_error)?;
        }
        for (key, elements) in lists {
            for chunk in elements.chunks(PUSH_CHUNK) {
                let values: Vec<Value> = chunk
                    .iter()
                    .map(|raw| Value::Bytes(raw.clone().into()))
                    .collect();
                let _: () = pipeline
                    .lpush(key.as_str(), values)
                    .await
                    .map_err(broker_error)?;
            }
        }
        let parked = async {
            if delayed.is_empty() {
                return Ok(());
            }
            let keys = vec![inner.keys.unacked.clone(), inner.keys.unacked_index.clone()];
            scripts::run(&inner.client, &inner.scripts.park, keys, delayed)
                .await
                .map(drop)
        };
        let (pushed, parked) = futures::join!(pipeline.all::<Vec<Value>>(), parked);
        if let Err(error) = pushed {
            let queues: Vec<String> = new_queues.into_iter().map(|(queue, _)| queue).collect();
            inner.forget_declared(&queues);
            return Err(broker_error(error));
        }
        parked?;
        for (queue, due) in due_times {
            inner.promoter.add(queue, due);
        }
        Ok(())
    }

    async fn consume(&self, options: ConsumeOptions) -> Result<Arc<dyn Consumer>, BrokerError> {
        if options.queues.is_empty() {
            return Err(BrokerError::Refused("no queue to consume".into()));
        }
        let consumer = RedisConsumer::start(self.inner.clone(), options).await?;
        Ok(Arc::new(consumer))
    }

    async fn queue_length(&self, queue: &str) -> Result<QueueLength, BrokerError> {
        let inner = &self.inner;
        let reply = scripts::run(
            &inner.client,
            &inner.scripts.length,
            inner.script_keys(queue),
            vec![
                Value::from(inner.keys.delayed(queue)),
                Value::from(now_ms().to_string()),
            ],
        )
        .await?;
        let lengths: Vec<u64> = match reply {
            Value::Array(values) => values
                .iter()
                .map(|value| value.as_u64().unwrap_or(0))
                .collect(),
            other => return Err(RedisError::Reply(format!("queue length reply {other:?}")).into()),
        };
        Ok(inner.length_from(&lengths))
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let inner = &self.inner;
        let reply = scripts::run(
            &inner.client,
            &inner.scripts.purge,
            inner.script_keys(queue),
            vec![
                Value::from(inner.keys.delayed(queue)),
                Value::from(now_ms().to_string()),
            ],
        )
        .await?;
        let purged = reply.as_u64().unwrap_or(0);
        debug!(queue, purged, "purged");
        Ok(purged)
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.dead_letters(queue);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Newest at the head (LPUSH): the `limit` oldest are at the tail, oldest last.
        let entries: Vec<Value> = self
            .inner
            .client
            .lrange(key, -limit, -1)
            .await
            .map_err(broker_error)?;
        Ok(entries
            .iter()
            .rev()
            .map(|entry| {
                let (reason, content) =
                    wire::read_dead_letter(entry.as_bytes().unwrap_or_default());
                DeadLetter {
                    queue: queue.to_owned(),
                    reason,
                    content,
                }
            })
            .collect())
    }

    /// Events and remote control on kombu's layout (see `crate::broadcast`).
    fn broadcast(self: Arc<Self>) -> Option<Arc<dyn Broadcast>> {
        Some(self)
    }

    /// See `crate::backlog` for this and the other backlog methods.
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        self.inner.queue_stats(queue).await
    }

    async fn delayed(&self, queue: &str, limit: usize) -> Result<Vec<DelayedMessage>, BrokerError> {
        self.inner.delayed(queue, limit).await
    }

    async fn run_delayed_now(&self, queue: &str, task_id: &str) -> Result<bool, BrokerError> {
        self.inner.run_delayed_now(queue, task_id).await
    }

    async fn requeue_dead_letters(
        &self,
        queue: &str,
        task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        self.inner.requeue_dead_letters(queue, task_ids).await
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.purge_dead_letters(queue).await
    }

    async fn known_queues(&self) -> Result<KnownQueues, BrokerError> {
        self.inner.known_queues().await
    }
}

/// The wall clock in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The wall clock in seconds since the epoch.
pub(crate) fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

/// The `unacked_index` score of a message taken or renewed now: whole seconds, rounded up.
/// kombu writes fractional seconds; whole ones keep Redis's compact sorted sets (fewer than
/// 128 members) from parsing every score as text on each insert, and rounding up never
/// makes a message look overdue early.
pub(crate) fn index_score() -> i64 {
    now_seconds().ceil() as i64
}
