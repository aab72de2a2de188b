//! [`RedisBackend`]: Celery's Redis result backend. `celery-task-meta-<id>` holds the JSON
//! meta, written with an expiry and published on the channel of the same name; waiting
//! subscribes first, then reads, then waits for the publication (no polling). Chords join
//! with Celery 5.7's counters and scripts (`crate::chord`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::{Client, ClientLike, EventInterface, KeysInterface, PubsubInterface};
use fred::types::Value;
use queue_core::backend::{BackendError, GroupMeta, ResultBackend, TaskMeta};
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use tokio::sync::broadcast;
use tracing::{debug, trace};

use crate::batch::Batcher;
use crate::chord::RedisChords;
use crate::config::RedisOptions;
use crate::connection;
use crate::error::{RedisError, backend_error};
use crate::scripts::{self, Scripts};

/// Most results stored by one script call.
const STORE_BATCH: usize = 256;
/// Most stores waiting to be written: past it, `store` waits for room.
const STORE_QUEUE: usize = 8 * STORE_BATCH;

/// A result backend on Redis that Python's `AsyncResult` reads too. Clones share the
/// connections.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    options: RedisOptions,
    client: Client,
    task_prefix: String,
    group_prefix: String,
    expires: Option<Duration>,
    /// Stores of all callers, coalesced into one script call.
    stores: Batcher<(String, Vec<u8>)>,
    /// The chord join, Celery 5.7's keys and scripts.
    chords: RedisChords,
    /// Connected on the first wait; whether it speaks RESP3.
    subscriber: tokio::sync::OnceCell<(SubscriberClient, bool)>,
    /// Subscriptions and how many waits use each; a tokio mutex so that subscribing and
    /// unsubscribing one channel happen in the order waits come and go.
    subscriptions: tokio::sync::Mutex<HashMap<String, usize>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // fred keeps connections open until told otherwise.
        let client = self.client.clone();
        let subscriber = self
            .subscriber
            .get()
            .map(|(subscriber, _)| subscriber.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
                if let Some(subscriber) = subscriber {
                    let _ = subscriber.quit().await;
                }
            });
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisBackend")
            .field("options", &self.inner.options)
            .field("expires", &self.inner.expires)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the server of a `redis://` or `rediss://` URL. `expires` overrides the
    /// URL's `result_expires` (default one day, Celery's).
    pub async fn connect(url: &str, expires: Option<Duration>) -> Result<Self, RedisError> {
        let mut options = RedisOptions::from_url(url)?;
        if let Some(expires) = expires {
            options.result_expires = Some(expires);
        }
        Self::with_options(options).await
    }

    /// Connects with parsed options.
    pub async fn with_options(options: RedisOptions) -> Result<Self, RedisError> {
        let client = connection::connect(&options, "result backend").await?;
        // Celery's rule: the prefix gets a `_` unless it already ends in a separator.
        let mut prefix = options.global_keyprefix.clone();
        if prefix
            .chars()
            .last()
            .is_some_and(|last| !":_-.".contains(last))
        {
            prefix.push('_');
        }
        let scripts = Scripts::new();
        let expiry_ms = options.result_expires.map_or(0, |expires| {
            i64::try_from(expires.as_millis())
                .unwrap_or(i64::MAX)
                .max(1)
        });
        let stores = {
            let (client, store) = (client.clone(), scripts.store.clone());
            Batcher::new(
                STORE_BATCH,
                STORE_QUEUE,
                move |entries: Vec<(String, Vec<u8>)>| {
                    let (client, store) = (client.clone(), store.clone());
                    async move {
                        let mut keys = Vec::with_capacity(entries.len());
                        let mut args = Vec::with_capacity(entries.len() + 1);
                        args.push(Value::from(expiry_ms));
                        for (key, value) in entries {
                            keys.push(key);
                            args.push(Value::Bytes(value.into()));
                        }
                        scripts::run(&client, &store, keys, args).await.map(drop)
                    }
                },
            )
        };
        debug!(url = %options, "Redis result backend connected");
        let group_prefix = format!("{prefix}celery-taskset-meta-");
        let chords = RedisChords::new(
            client.clone(),
            group_prefix.clone(),
            options.result_expires,
            scripts,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                task_prefix: format!("{prefix}celery-task-meta-"),
                group_prefix,
                chords,
                expires: options.result_expires,
                options,
                client,
                stores,
                subscriber: tokio::sync::OnceCell::new(),
                subscriptions: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The key of a task's meta: `celery-task-meta-<id>`.
    pub fn task_key(&self, task_id: &str) -> String {
        format!("{}{task_id}", self.inner.task_prefix)
    }

    /// The key of a group's record: `celery-taskset-meta-<id>`.
    pub fn group_key(&self, group_id: &str) -> String {
        format!("{}{group_id}", self.inner.group_prefix)
    }

    async fn store_values(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), BackendError> {
        let stores = entries
            .into_iter()
            .map(|entry| self.inner.stores.submit(entry));
        for result in futures::future::join_all(stores).await {
            result?;
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let value: Option<Value> = self.inner.client.get(key).await.map_err(backend_error)?;
        Ok(value.and_then(|value| value.as_bytes().map(<[u8]>::to_vec)))
    }

    async fn subscriber(&self) -> Result<&(SubscriberClient, bool), BackendError> {
        self.inner
            .subscriber
            .get_or_try_init(|| async {
                connection::connect_subscriber(&self.inner.options, "result subscriber").await
            })
            .await
            .map_err(BackendError::from)
    }

    /// Reads a key after the subscriptions made so far took effect: on the subscribed
    /// connection itself over RESP3 (one round trip); over RESP2, after a PING there
    /// answered (fred's `subscribe` returns once the command is written).
    async fn read_after_subscribe(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let (subscriber, resp3) = self.subscriber().await?;
        if *resp3 {
            let value: Option<Value> = subscriber.get(key).await.map_err(backend_error)?;
            return Ok(value.and_then(|value| value.as_bytes().map(<[u8]>::to_vec)));
        }
        let _: Value = subscriber.ping(None).await.map_err(backend_error)?;
        self.read(key).await
    }

    /// Subscribes one wait to `channel`. The subscription is shared by the waits on the
    /// channel and ends with the last of them, however it ends: the returned guard lets go
    /// of it when released or dropped (a wait that timed out or was cancelled).
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let (subscriber, _) = self.subscriber().await?;
        let mut subscriptions = self.inner.subscriptions.lock().await;
        let count = subscriptions.entry(channel.to_owned()).or_default();
        *count += 1;
        // Counted: from here on, whatever happens to this future, the guard counts it out.
        let subscription = Subscription {
            inner: Some(self.inner.clone()),
            channel: channel.to_owned(),
        };
        if *count == 1 {
            // Written, not yet confirmed: `read_after_subscribe` orders the first read after it.
            if let Err(error) = subscriber.subscribe(channel).await {
                drop(subscriptions);
                subscription.release().await;
                return Err(backend_error(error));
            }
        }
        Ok(subscription)
    }

    /// Waits on a subscribed channel: reads the key once the subscription took effect, then
    /// listens to the subscriber's publications directly (no task in between) until the
    /// state is READY or the time is up. A reconnect of the subscriber, or publications it
    /// fell behind on, mean reading the key again.
    async fn wait_subscribed(
        &self,
        key: &str,
        mut messages: broadcast::Receiver<fred::types::Message>,
        mut reconnects: broadcast::Receiver<fred::types::config::Server>,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError> {
        let deadline = queue_core::protocol::time::deadline_in(timeout);
        let mut latest = parse_meta(self.read_after_subscribe(key).await?)?;
        loop {
            if latest.as_ref().is_some_and(|meta| meta.status.is_ready()) {
                return Ok(latest);
            }
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) if &*message.channel == key => {
                        let value = message.value.as_bytes().map(<[u8]>::to_vec);
                        if let Some(meta) = parse_meta(value)? {
                            latest = Some(meta);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "result subscriber fell behind; reading again");
                        latest = parse_meta(self.read(key).await?)?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(latest),
                },
                reconnect = reconnects.recv() => match reconnect {
                    Err(broadcast::error::RecvError::Closed) => return Ok(latest),
                    _ => latest = parse_meta(self.read(key).await?)?,
                },
                () = tokio::time::sleep_until(deadline) => return Ok(latest),
            }
        }
    }
}

/// One wait's share of a channel's subscription (see [`RedisBackend::subscribe`]).
struct Subscription {
    /// `None` once released.
    inner: Option<Arc<Inner>>,
    channel: String,
}

impl Subscription {
    /// Lets go of the subscription now.
    async fn release(mut self) {
        if let Some(inner) = self.inner.take() {
            unsubscribe(&inner, &self.channel).await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // A wait dropped while waiting: its share is given up from a task of its own, in
        // turn with the other subscribes and unsubscribes of the channel (the mutex).
        let Some(inner) = self.inner.take() else {
            return;
        };
        let channel = std::mem::take(&mut self.channel);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { unsubscribe(&inner, &channel).await });
        }
    }
}

/// Counts one wait out of `channel`; the last one unsubscribes.
async fn unsubscribe(inner: &Inner, channel: &str) {
    let mut subscriptions = inner.subscriptions.lock().await;
    let Some(count) = subscriptions.get_mut(channel) else {
        return;
    };
    *count -= 1;
    if *count > 0 {
        return;
    }
    subscriptions.remove(channel);
    if let Some((subscriber, _)) = inner.subscriber.get() {
        if let Err(error) = subscriber.unsubscribe(channel).await {
            debug!(%error, channel, "unsubscribe failed");
        }
    }
}

fn parse_meta(value: Option<Vec<u8>>) -> Result<Option<TaskMeta>, BackendError> {
    value
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|error| BackendError::Encoding(format!("stored task meta: {error}")))
        })
        .transpose()
}

fn encode_meta(meta: &TaskMeta) -> Result<Vec<u8>, BackendError> {
    serde_json::to_vec(meta).map_err(|error| BackendError::Encoding(error.to_string()))
}

#[async_trait]
impl ResultBackend for RedisBackend {
    async fn store(&self, meta: TaskMeta) -> Result<(), BackendError> {
        trace!(task_id = %meta.task_id, status = %meta.status, "store result");
        let value = encode_meta(&meta)?;
        self.store_values(vec![(self.task_key(&meta.task_id), value)])
            .await
    }

    async fn store_many(&self, metas: Vec<TaskMeta>) -> Result<(), BackendError> {
        let entries = metas
            .iter()
            .map(|meta| Ok((self.task_key(&meta.task_id), encode_meta(meta)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        self.store_values(entries).await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskMeta>, BackendError> {
        parse_meta(self.read(&self.task_key(task_id)).await?)
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError> {
        let key = self.task_key(task_id);
        // Listen before subscribing, subscribe before reading: a result stored in between is
        // either read or heard.
        let (subscriber, _) = self.subscriber().await?;
        let (messages, reconnects) = (subscriber.message_rx(), subscriber.reconnect_rx());
        let subscription = self.subscribe(&key).await?;
        let result = self
            .wait_subscribed(&key, messages, reconnects, timeout)
            .await;
        subscription.release().await;
        result
    }

    async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        let _: i64 = self
            .inner
            .client
            .del(self.task_key(task_id))
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError> {
        let value = serde_json::to_vec(&group.to_value())
            .map_err(|error| BackendError::Encoding(error.to_string()))?;
        self.store_values(vec![(self.group_key(&group.group_id), value)])
            .await
    }

    async fn get_group(&self, group_id: &str) -> Result<Option<GroupMeta>, BackendError> {
        let Some(bytes) = self.read(&self.group_key(group_id)).await? else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|error| BackendError::Encoding(format!("stored group: {error}")))?;
        GroupMeta::from_value(&value).map(Some).ok_or_else(|| {
            BackendError::Encoding("stored group is not a Celery group result".into())
        })
    }

    async fn chord_start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        self.inner.chords.start(group_id, size).await
    }

    async fn chord_part(&self, group_id: &str, part: ChordPart) -> Result<ChordJoin, BackendError> {
        self.inner.chords.part(group_id, part).await
    }

    async fn chord_dispatched(&self, claim: &ChordClaim) -> Result<(), BackendError> {
        self.inner.chords.dispatched(claim).await
    }
}
