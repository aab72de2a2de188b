//! Waking idle consumers when a list gets a message, without taking it.
//!
//! `BRPOP` takes the message it wakes on: its reply is the only copy until the consumer
//! records it, and a crash in between loses it. Instead, a watcher blocks in
//! `BLMOVE <list> <list> RIGHT RIGHT`, which returns as soon as the list holds something and
//! leaves the list as it was (a rotation onto itself), and wakes the consumers waiting on
//! that list; they take with the fetch script, which records what it takes in the same step.
//! The command is level-triggered: a message pushed before the watcher blocks is seen at
//! once, so a consumer that registers after its last take found nothing misses nothing.
//! A `BRPOP` of a Python worker on the same list is served as before (Redis serves blocked
//! clients in turn while the list is not empty).
//!
//! One watcher per list per broker, shared by its consumers, each on a connection of its own
//! (a blocked connection serves nothing else); it blocks only while someone waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fred::prelude::{Client, ClientLike};
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::sync::Notify;
use tracing::debug;

use crate::config::RedisOptions;
use crate::connection;
use crate::error::RedisError;

/// Longest single `BLMOVE` (seconds): how soon a watcher notices it is no longer needed.
const BLOCK_SECONDS: &str = "1";
/// Longest pause after a failed `BLMOVE` (consumers take every second meanwhile anyway).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The watchers of one broker, by list key.
#[derive(Default)]
pub(crate) struct Watchers {
    by_key: Mutex<HashMap<String, Weak<Watcher>>>,
}

impl Watchers {
    /// The watcher of `key`, started (with its connection) if none runs.
    pub(crate) async fn get(
        &self,
        options: &RedisOptions,
        key: &str,
    ) -> Result<Arc<Watcher>, RedisError> {
        if let Some(watcher) = lock(&self.by_key).get(key).and_then(Weak::upgrade) {
            return Ok(watcher);
        }
        let client = connection::connect(options, "list watcher").await?;
        let watcher = {
            let mut by_key = lock(&self.by_key);
            if let Some(watcher) = by_key.get(key).and_then(Weak::upgrade) {
                drop(by_key);
                tokio::spawn(async move {
                    let _ = client.quit().await;
                });
                return Ok(watcher);
            }
            by_key.retain(|_, watcher| watcher.strong_count() > 0);
            let watcher = Arc::new(Watcher {
                key: key.to_owned(),
                waiters: Mutex::new(Vec::new()),
                wanted: Notify::new(),
            });
            by_key.insert(key.to_owned(), Arc::downgrade(&watcher));
            watcher
        };
        tokio::spawn(watch(Arc::downgrade(&watcher), client));
        Ok(watcher)
    }
}

/// Wakes the consumers waiting on one list.
pub(crate) struct Watcher {
    key: String,
    /// Consumers waiting for this list; each is woken once and then forgotten.
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Someone registered: start blocking.
    wanted: Notify,
}

impl Watcher {
    /// `wake` is notified the next time the list is seen not empty (at once, if it is now).
    pub(crate) fn register(&self, wake: &Arc<Notify>) {
        let mut waiters = lock(&self.waiters);
        if !waiters.iter().any(|waiter| Arc::ptr_eq(waiter, wake)) {
            waiters.push(wake.clone());
            if waiters.len() == 1 {
                self.wanted.notify_one();
            }
        }
    }

    /// Forgets `wake` (its consumer stopped waiting).
    pub(crate) fn deregister(&self, wake: &Arc<Notify>) {
        lock(&self.waiters).retain(|waiter| !Arc::ptr_eq(waiter, wake));
    }

    fn wanted(&self) -> bool {
        !lock(&self.waiters).is_empty()
    }

    fn fire(&self) {
        // notify_one keeps a permit for a consumer not yet awaiting: no wake-up is lost.
        for waiter in std::mem::take(&mut *lock(&self.waiters)) {
            waiter.notify_one();
        }
    }
}

/// Blocks on the list while someone waits, and wakes them when it holds something. Ends
/// (and closes its connection) when the last consumer that uses the watcher is gone.
async fn watch(watcher: Weak<Watcher>, client: Client) {
    let command = CustomCommand::new_static("BLMOVE", ClusterHash::FirstKey, true);
    let mut backoff = Duration::from_millis(50);
    while let Some(strong) = watcher.upgrade() {
        if !strong.wanted() {
            // Wake up now and then to notice that the watcher is no longer used.
            let _ = tokio::time::timeout(Duration::from_secs(1), strong.wanted.notified()).await;
            continue;
        }
        let key = strong.key.clone();
        // Not kept alive while blocked: the consumers' going away ends the watcher.
        drop(strong);
        let args = vec![
            Value::from(key.as_str()),
            Value::from(key.as_str()),
            Value::from("RIGHT"),
            Value::from("RIGHT"),
            Value::from(BLOCK_SECONDS),
        ];
        let reply: Result<Value, _> = client.custom(command.clone(), args).await;
        let Some(strong) = watcher.upgrade() else {
            break;
        };
        match reply {
            Ok(Value::Null) => {}
            Ok(_) => {
                backoff = Duration::from_millis(50);
                strong.fire();
            }
            Err(error) => {
                debug!(%error, list = %key, "watching a list failed; consumers take every second meanwhile");
                drop(strong);
                // A pause before trying again, not a synchronisation: the server is away.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    let _ = client.quit().await;
}
