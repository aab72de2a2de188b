//! kombu's visibility-timeout restore: messages unacked for longer than the visibility
//! timeout belong to a consumer that died and go back to the head of their lists, whoever
//! took them (a Python worker's or ours). Any consumer may run it; kombu's `unacked_mutex`
//! keeps two from running it at once, Python's included.

use fred::prelude::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::types::sorted_sets::ZRange;
use fred::types::{Expiration, SetOptions, Value};
use serde_json::Value as Json;
use tracing::{debug, warn};

use crate::broker::{BrokerInner, now_seconds};
use crate::error::RedisError;
use crate::keys::SEP;
use crate::scripts;
use crate::wire;

/// Most overdue messages restored per sweep (kombu's `unacked_restore_limit`).
const RESTORE_LIMIT: i64 = 1000;
/// kombu's `unacked_mutex_expire`, in milliseconds.
const MUTEX_EXPIRE_MS: i64 = 300_000;

/// How long the restore lock lives: kombu's 300 s, but never longer than the visibility
/// timeout, so that a consumer that dies mid-sweep does not hold up restores for longer than
/// the timeout they enforce.
fn mutex_expire_ms(broker: &BrokerInner) -> i64 {
    let timeout_ms = broker.options.visibility_timeout.as_millis().max(1000);
    i64::try_from(timeout_ms)
        .unwrap_or(i64::MAX)
        .min(MUTEX_EXPIRE_MS)
}

/// Restores overdue messages; returns how many.
pub(crate) async fn sweep(broker: &BrokerInner) -> Result<usize, RedisError> {
    let client = &broker.client;
    let keys = &broker.keys;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let acquired: Option<String> = client
        .set(
            keys.unacked_mutex.as_str(),
            token.as_str(),
            Some(Expiration::PX(mutex_expire_ms(broker))),
            Some(SetOptions::NX),
            false,
        )
        .await?;
    if acquired.is_none() {
        return Ok(0);
    }
    let result = restore_overdue(broker).await;
    let released = scripts::run(
        client,
        &broker.scripts.release_mutex,
        vec![keys.unacked_mutex.clone()],
        vec![Value::from(token)],
    )
    .await;
    let restored = result?;
    released?;
    Ok(restored)
}

async fn restore_overdue(broker: &BrokerInner) -> Result<usize, RedisError> {
    let client = &broker.client;
    let keys = &broker.keys;
    let ceiling = now_seconds() - broker.options.visibility_timeout.as_secs_f64();
    let tags: Vec<String> = client
        .zrangebyscore(
            keys.unacked_index.as_str(),
            ZRange::try_from(f64::NEG_INFINITY)?,
            ZRange::try_from(ceiling)?,
            false,
            Some((0, RESTORE_LIMIT)),
        )
        .await?;
    if tags.is_empty() {
        return Ok(0);
    }
    let values: Vec<Option<Value>> = client.hmget(keys.unacked.as_str(), tags.clone()).await?;
    let mut args = vec![Value::from(format!("{ceiling:.6}"))];
    for (tag, value) in tags.into_iter().zip(values) {
        let stored = value.and_then(|value| value.as_bytes().map(<[u8]>::to_vec));
        let (expected, destination, payload) = match &stored {
            Some(stored) => {
                let (queue, raw) = unpack(broker, stored).await;
                let destination = if queue.is_empty() {
                    warn!(tag = %tag, "an overdue unacked entry names no queue; dropping it");
                    String::new()
                } else {
                    keys.list_for_wire(&queue, wire::raw_wire_priority(&raw))
                };
                (stored.clone(), destination, wire::mark_redelivered(&raw))
            }
            // An index entry without its message: the script drops the index entry.
            None => (Vec::new(), String::new(), Vec::new()),
        };
        debug!(tag = %tag, queue = %destination, "restoring an overdue message");
        args.extend([
            Value::from(tag),
            Value::Bytes(expected.into()),
            Value::from(destination),
            Value::Bytes(payload.into()),
        ]);
    }
    let keys = vec![keys.unacked.clone(), keys.unacked_index.clone()];
    let restored = scripts::run(client, &broker.scripts.restore_overdue, keys, args).await?;
    Ok(restored.as_u64().unwrap_or(0) as usize)
}

/// Reads kombu's `[envelope, exchange, routing_key]` value: the queue to restore to and the
/// envelope's bytes. A named exchange is looked up in kombu's bindings (direct match), as
/// kombu's restore does; the routing key names the queue otherwise.
async fn unpack(broker: &BrokerInner, stored: &[u8]) -> (String, Vec<u8>) {
    let Ok(Json::Array(mut triple)) = serde_json::from_slice::<Json>(stored) else {
        return (String::new(), stored.to_vec());
    };
    let routing_key = triple
        .get(2)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let exchange = triple
        .get(1)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let raw = match triple.first_mut().map(Json::take) {
        Some(Json::String(text)) => text.into_bytes(),
        Some(other) => serde_json::to_vec(&other).unwrap_or_default(),
        None => Vec::new(),
    };
    if exchange.is_empty() {
        return (routing_key, raw);
    }
    let members: Vec<String> = broker
        .client
        .smembers(broker.keys.binding(&exchange))
        .await
        .unwrap_or_default();
    let queue = members
        .iter()
        .filter_map(|member| {
            let mut parts = member.split(SEP);
            let key = parts.next()?;
            let _pattern = parts.next()?;
            let queue = parts.next()?;
            (key == routing_key).then(|| queue.to_owned())
        })
        .next()
        .unwrap_or(routing_key);
    (queue, raw)
}
