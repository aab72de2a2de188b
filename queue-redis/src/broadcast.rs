//! [`Broadcast`] for [`RedisBroker`]: events and remote control on kombu's Redis layout, so
//! that Python Celery clients, workers and monitors take part.
//!
//! | kind | send | subscribe |
//! | --- | --- | --- |
//! | [`ExchangeKind::Fanout`], [`ExchangeKind::Topic`] | `PUBLISH <prefix>/<db>.<exchange>[/<routing key>] <envelope>` (kombu's `_get_publish_topic` with `fanout_prefix` and `fanout_patterns`, as Celery runs; no suffix for an empty key) | `PSUBSCRIBE` on a connection of the subscription's own (resubscribed after a reconnect), then filtered |
//! | [`ExchangeKind::Direct`] | `SMEMBERS <prefix>_kombu.binding.<exchange>`, then `LPUSH <prefix><queue>` for every member `<routing key>\x06\x16\x06\x16<queue>` whose key is the message's (kombu's `_lookup` and `_put`); nobody bound: dropped | kombu's `_queue_bind` of an expiring queue (Python's reply queues): its `REFRESH_BINDING` script adds the member and raises the exchange's deadline in `_kombu.binding_deadlines` by an hour (refreshed every 20 minutes), then `BRPOP` on the queue's lists, on a connection of its own |
//!
//! The envelope is kombu's (see `wire::encode_broadcast`): the body base64, the headers as
//! given, `delivery_info` naming the exchange and routing key, priority 0, a fresh
//! `delivery_tag`.
//!
//! Routing is exact, as on RabbitMQ: a fanout subscription takes every channel of its
//! exchange (`/<db>.<exchange>` and `/<db>.<exchange>/*`: the routing key is ignored), a
//! topic subscription a glob that covers its pattern, each message then checked with
//! [`topic_matches`]. kombu's own subscribers glob with `#` and `*` turned into `*`
//! (`worker.#` → `/0.celeryev/worker.*`), which misses `worker` itself and lets `*` match
//! several words; ours do not. Celery declares `celeryev` as fanout on Redis, so its
//! publishers and receivers use exactly these channels, whichever kind we are given.
//!
//! Dropping a [`Subscription`](queue_core::broadcast::Subscription) ends it within a poll
//! interval (pub/sub: 100 ms; direct: the current one-second `BRPOP`): `PUNSUBSCRIBE` and
//! the connection closed, or `SREM` of the member (from the table and the permanent set, as
//! kombu's `_delete`) and `DEL` of the queue's lists. A process killed meanwhile leaves at
//! most a binding member, which kombu's sweep deletes once the deadline passed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::{
    Client, ClientLike, EventInterface, KeysInterface, ListInterface, PubsubInterface,
    SetsInterface,
};
use fred::types::Value;
use fred::types::scripts::Script;
use queue_core::broadcast::{
    Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription, SubscriptionSender,
    subscription, topic_matches,
};
use queue_core::broker::BrokerError;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, trace, warn};

use crate::broker::RedisBroker;
use crate::connection;
use crate::error::{RedisError, broker_error};
use crate::keys::SEP;
use crate::scripts;
use crate::wire;

/// The binding deadline a subscription sets, in ms: kombu's `MIN_BINDING_TTL`, what Python's
/// pidbox reply queues (`x-expires` 10 s) set.
const BINDING_TTL_MS: i64 = 60 * 60 * 1000;
/// How often a live direct subscription raises its deadline again (kombu: a third of it).
const REFRESH_EVERY: Duration = Duration::from_secs(20 * 60);
/// Longest single `BRPOP` (seconds, kombu's `brpop_timeout`): how soon a dropped direct
/// subscription is noticed.
const BLOCK_SECONDS: f64 = 1.0;
/// How often a pub/sub subscription checks whether its receiver was dropped.
const CLOSE_POLL: Duration = Duration::from_millis(100);
/// Longest pause after a failed `BRPOP` (the server is away; the client reconnects).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[async_trait]
impl Broadcast for RedisBroker {
    async fn send(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        message: BroadcastMessage,
    ) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let raw = wire::encode_broadcast(exchange, &message);
        match kind {
            ExchangeKind::Fanout | ExchangeKind::Topic => {
                let channel = inner.keys.fanout_channel(
                    inner.options.database,
                    exchange,
                    &message.routing_key,
                );
                let receivers: i64 = inner
                    .client
                    .publish(channel.as_str(), Value::Bytes(raw.into()))
                    .await
                    .map_err(broker_error)?;
                trace!(%channel, receivers, "broadcast published");
            }
            ExchangeKind::Direct => {
                let members: Vec<Value> = inner
                    .client
                    .smembers(inner.keys.binding(exchange))
                    .await
                    .map_err(broker_error)?;
                let queues = bound_queues(&members, &message.routing_key);
                if queues.is_empty() {
                    debug!(
                        exchange,
                        routing_key = %message.routing_key,
                        "no queue bound: the message is dropped"
                    );
                    return Ok(());
                }
                let pipeline = inner.client.pipeline();
                for queue in &queues {
                    let key = inner.keys.list(queue, 0);
                    let _: () = pipeline
                        .lpush(key, Value::Bytes(raw.clone().into()))
                        .await
                        .map_err(broker_error)?;
                }
                pipeline.all::<Vec<Value>>().await.map_err(broker_error)?;
                trace!(exchange, queues = queues.len(), "direct broadcast pushed");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, binding: Binding) -> Result<Subscription, BrokerError> {
        if binding.exchange.is_empty() {
            return Err(BrokerError::Refused(
                "broadcast on the default exchange".into(),
            ));
        }
        match binding.kind {
            ExchangeKind::Fanout | ExchangeKind::Topic => self.subscribe_channels(binding).await,
            ExchangeKind::Direct => self.subscribe_queue(binding).await,
        }
    }
}

/// The queues of a binding table (`SMEMBERS` reply) bound with exactly `routing_key`, each
/// once, in table order. Members that are not `<key>\x06\x16<pattern>\x06\x16<queue>` are
/// skipped (kombu's lookup would fail on them).
fn bound_queues(members: &[Value], routing_key: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut queues = Vec::new();
    for member in members {
        let Some(text) = member
            .as_bytes()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
        else {
            continue;
        };
        let parts: Vec<&str> = text.split(SEP).collect();
        match parts.as_slice() {
            [key, _pattern, queue] if *key == routing_key && !queue.is_empty() => {
                if seen.insert(*queue) {
                    queues.push((*queue).to_owned());
                }
            }
            [_, _, _] => {}
            _ => debug!(member = %text.escape_debug(), "binding member not in kombu's layout"),
        }
    }
    queues
}

/// Escapes Redis glob characters so that `text` matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// The `PSUBSCRIBE` patterns covering every channel a topic `pattern` on the exchange whose
/// channel is `base` can match: the literal words before the first wildcard, then `*`
/// (a superset, filtered with [`topic_matches`]); the bare `base` when the empty key
/// matches.
fn topic_patterns(base: &str, pattern: &str) -> Vec<String> {
    if pattern.is_empty() {
        return vec![glob_escape(base)];
    }
    let words: Vec<&str> = pattern.split('.').collect();
    let literal = words
        .iter()
        .take_while(|word| !matches!(**word, "*" | "#"))
        .count();
    let mut patterns = Vec::new();
    if topic_matches(pattern, "") {
        patterns.push(glob_escape(base));
    }
    if literal == words.len() {
        patterns.push(glob_escape(&format!("{base}/{pattern}")));
    } else {
        let prefix = words[..literal].join(".");
        patterns.push(format!("{}*", glob_escape(&format!("{base}/{prefix}"))));
    }
    patterns
}

/// Which received messages a pub/sub subscription takes.
struct ChannelFilter {
    /// `<prefix>/<db>.<exchange>`.
    base: String,
    /// The topic pattern; `None` for fanout (every routing key).
    pattern: Option<String>,
}

impl ChannelFilter {
    /// The message of a publication on `channel`, if it is for this subscription. An
    /// envelope that does not decode is logged and skipped.
    fn accept(&self, channel: &str, value: &Value) -> Option<BroadcastMessage> {
        let channel_key = match channel.strip_prefix(self.base.as_str())? {
            "" => "",
            rest => rest.strip_prefix('/')?,
        };
        let Some(raw) = value.as_bytes() else {
            warn!(%channel, "broadcast publication that is not a string; skipped");
            return None;
        };
        let decoded = match wire::decode_broadcast(raw) {
            Ok(decoded) => decoded,
            Err(error) => {
                warn!(%channel, %error, "broadcast message that does not decode; skipped");
                return None;
            }
        };
        let routing_key = decoded
            .routing_key
            .unwrap_or_else(|| channel_key.to_owned());
        if let Some(pattern) = &self.pattern {
            if *pattern != routing_key && !topic_matches(pattern, &routing_key) {
                return None;
            }
        }
        Some(BroadcastMessage {
            routing_key,
            headers: decoded.headers,
            body: decoded.body,
        })
    }
}

impl RedisBroker {
    async fn subscribe_channels(&self, binding: Binding) -> Result<Subscription, BrokerError> {
        let inner = &self.inner;
        let base = inner
            .keys
            .fanout_channel(inner.options.database, &binding.exchange, "");
        let (patterns, pattern) = match binding.kind {
            ExchangeKind::Topic => (
                topic_patterns(&base, &binding.routing_key),
                Some(binding.routing_key.clone()),
            ),
            _ => {
                let exact = glob_escape(&base);
                (vec![exact.clone(), format!("{exact}/*")], None)
            }
        };
        let (client, _) =
            connection::connect_subscriber(&inner.options, "broadcast subscriber").await?;
        // Listening before subscribing: nothing published after the PSUBSCRIBE is missed.
        let messages = client.message_rx();
        let subscribed = async {
            client.psubscribe(patterns.clone()).await?;
            // Answered on the subscribed connection after the PSUBSCRIBE took effect (fred
            // may return from it once written).
            client.ping::<Value>(None).await.map(drop)
        };
        if let Err(error) = subscribed.await {
            let _ = client.quit().await;
            return Err(broker_error(error));
        }
        debug!(exchange = %binding.exchange, ?patterns, "broadcast subscribed");
        let (sender, subscription) = subscription();
        let filter = ChannelFilter { base, pattern };
        tokio::spawn(listen(client, patterns, messages, filter, sender));
        Ok(subscription)
    }

    async fn subscribe_queue(&self, binding: Binding) -> Result<Subscription, BrokerError> {
        let inner = &self.inner;
        let Binding {
            exchange,
            routing_key,
            queue,
            ..
        } = binding;
        if queue.is_empty() || queue.contains(SEP) || routing_key.contains(SEP) {
            return Err(BrokerError::Refused(
                "a direct subscription needs a queue name, and neither it nor the routing key \
                 may contain kombu's separator"
                    .into(),
            ));
        }
        let bound = Bound {
            table: inner.keys.binding(&exchange),
            permanent: inner.keys.binding_permanent(&exchange),
            deadlines: inner.keys.binding_deadlines.clone(),
            member: format!("{routing_key}{SEP}{SEP}{queue}"),
            exchange,
            lists: inner.keys.lists(&queue),
            script: inner.scripts.refresh_binding.clone(),
        };
        bound.declare(&inner.client).await?;
        let popper = match connection::connect(&inner.options, "broadcast queue").await {
            Ok(popper) => popper,
            Err(error) => {
                bound.remove(&inner.client).await;
                return Err(error.into());
            }
        };
        debug!(exchange = %bound.exchange, queue, "direct broadcast subscribed");
        let (sender, subscription) = subscription();
        tokio::spawn(pop(popper, bound, routing_key, sender));
        Ok(subscription)
    }
}

/// Feeds a pub/sub subscription until its receiver is dropped or the client ends, then
/// unsubscribes and closes the connection.
async fn listen(
    client: SubscriberClient,
    patterns: Vec<String>,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    filter: ChannelFilter,
    sender: SubscriptionSender,
) {
    let mut poll = tokio::time::interval(CLOSE_POLL);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if let Some(message) = filter.accept(&message.channel, &message.value) {
                        if !sender.deliver(message) {
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, base = %filter.base, "broadcast subscriber fell behind; messages lost");
                }
                Err(RecvError::Closed) => break,
            },
            _ = poll.tick() => {
                if sender.is_closed() {
                    break;
                }
            }
        }
    }
    if let Err(error) = client.punsubscribe(patterns).await {
        debug!(%error, "PUNSUBSCRIBE failed; closing the connection ends the subscription");
    }
    let _ = client.quit().await;
    debug!(base = %filter.base, "broadcast subscription ended");
}

/// A direct subscription's binding, as kombu declares an expiring queue's.
struct Bound {
    table: String,
    permanent: String,
    deadlines: String,
    member: String,
    exchange: String,
    lists: Vec<String>,
    script: Script,
}

impl Bound {
    /// kombu's `REFRESH_BINDING`: the member into the table, the exchange's deadline raised.
    async fn declare(&self, client: &Client) -> Result<(), RedisError> {
        let keys = vec![self.table.clone(), self.deadlines.clone()];
        let args = vec![
            Value::from(self.member.as_str()),
            Value::from(self.exchange.as_str()),
            Value::from(BINDING_TTL_MS),
        ];
        scripts::run(client, &self.script, keys, args)
            .await
            .map(drop)
    }

    /// kombu's `_delete`: the member out of the table and the permanent set, the lists gone.
    async fn remove(&self, client: &Client) {
        let removed = async {
            let pipeline = client.pipeline();
            let _: () = pipeline
                .srem(self.table.as_str(), self.member.as_str())
                .await?;
            let _: () = pipeline
                .srem(self.permanent.as_str(), self.member.as_str())
                .await?;
            let _: () = pipeline.del(self.lists.clone()).await?;
            pipeline.all::<Vec<Value>>().await.map(drop)
        };
        if let Err(error) = removed.await {
            warn!(%error, table = %self.table, "removing a broadcast binding failed; kombu's sweep removes it after its deadline");
        }
    }
}

/// Pops a direct subscription's queue until its receiver is dropped, declaring the binding
/// again after a connection error (the server may have restarted empty) and every
/// [`REFRESH_EVERY`]; then removes the binding and the lists and closes the connection.
async fn pop(client: Client, bound: Bound, routing_key: String, sender: SubscriptionSender) {
    let mut declared = Instant::now();
    let mut declare = false;
    let mut backoff = Duration::from_millis(50);
    while !sender.is_closed() {
        if declare || declared.elapsed() >= REFRESH_EVERY {
            if let Err(error) = bound.declare(&client).await {
                debug!(%error, table = %bound.table, "declaring a broadcast binding failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            (declare, declared) = (false, Instant::now());
        }
        let reply: Result<Value, _> = client.brpop(bound.lists.clone(), BLOCK_SECONDS).await;
        match reply {
            Ok(Value::Null) => {}
            Ok(Value::Array(mut pair)) if pair.len() == 2 => {
                backoff = Duration::from_millis(50);
                let value = pair.pop().unwrap_or(Value::Null);
                let Some(raw) = value.as_bytes() else {
                    warn!(table = %bound.table, "direct broadcast element that is not a string; skipped");
                    continue;
                };
                match wire::decode_broadcast(raw) {
                    Ok(decoded) => {
                        let message = BroadcastMessage {
                            routing_key: decoded.routing_key.unwrap_or_else(|| routing_key.clone()),
                            headers: decoded.headers,
                            body: decoded.body,
                        };
                        if !sender.deliver(message) {
                            break;
                        }
                    }
                    Err(error) => {
                        warn!(%error, table = %bound.table, "direct broadcast message that does not decode; skipped");
                    }
                }
            }
            Ok(other) => warn!(?other, "unexpected BRPOP reply; ignored"),
            // Nobody listens any more (a control call's reply window closed while its
            // BRPOP was in flight): the error is moot, the loop ends and cleans up.
            Err(error) if sender.is_closed() => {
                debug!(%error, table = %bound.table, "broadcast queue pop ended after its receiver left");
            }
            Err(error) => {
                warn!(%error, table = %bound.table, "popping a broadcast queue failed; retrying after the reconnect");
                declare = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    bound.remove(&client).await;
    let _ = client.quit().await;
    debug!(table = %bound.table, "direct broadcast subscription ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_binding_is_kombus_script() {
        // The SHA-1 of kombu 5.7's REFRESH_BINDING, as captured (`EVALSHA ef7a9e20…`).
        let script = Script::from_lua(scripts::REFRESH_BINDING);
        assert_eq!(&**script.sha1(), "ef7a9e205fbaf46bf959e1522ff796622fc676c7");
    }

    #[test]
    fn topic_globs_cover_their_patterns() {
        let base = "/0.celeryev";
        assert_eq!(topic_patterns(base, "#"), ["/0.celeryev", "/0.celeryev/*"]);
        assert_eq!(topic_patterns(base, "worker.#"), ["/0.celeryev/worker*"]);
        assert_eq!(topic_patterns(base, "task.*"), ["/0.celeryev/task*"]);
        assert_eq!(topic_patterns(base, "*.sent"), ["/0.celeryev/*"]);
        assert_eq!(
            topic_patterns(base, "task.multi"),
            ["/0.celeryev/task.multi"]
        );
        assert_eq!(topic_patterns(base, ""), ["/0.celeryev"]);
        assert_eq!(topic_patterns("/0.a*b", "k?"), ["/0.a\\*b/k\\?"]);
    }

    #[test]
    fn filters_route_exactly_and_skip_what_does_not_decode() {
        let message = |key: &str| {
            let raw =
                wire::encode_broadcast("celeryev", &BroadcastMessage::new(key, b"{}".to_vec()));
            Value::Bytes(raw.into())
        };
        let topic = ChannelFilter {
            base: "/0.celeryev".into(),
            pattern: Some("worker.#".into()),
        };
        for (channel, key, taken) in [
            ("/0.celeryev/worker.heartbeat", "worker.heartbeat", true),
            ("/0.celeryev/worker", "worker", true),
            ("/0.celeryev/workers.x", "workers.x", false),
            ("/0.celeryevx/worker.online", "worker.online", false),
        ] {
            let accepted = topic.accept(channel, &message(key));
            assert_eq!(accepted.is_some(), taken, "{channel}");
        }
        let fanout = ChannelFilter {
            base: "/0.celery.pidbox".into(),
            pattern: None,
        };
        assert!(fanout.accept("/0.celery.pidbox", &message("")).is_some());
        assert!(fanout.accept("/0.celery.pidbox/x", &message("x")).is_some());
        assert!(
            fanout
                .accept("/0.celery.pidbox", &Value::from("garbage"))
                .is_none()
        );
        assert!(
            fanout
                .accept("/0.celery.pidbox", &Value::Integer(3))
                .is_none()
        );
    }

    #[test]
    fn bound_queues_follow_kombus_direct_lookup() {
        let members: Vec<Value> = [
            "a\x06\x16\x06\x16a.reply",
            "b\x06\x16\x06\x16b.reply",
            "a\x06\x16\x06\x16a.reply",
            "a\x06\x16\x06\x16other",
            "malformed",
        ]
        .into_iter()
        .map(Value::from)
        .collect();
        assert_eq!(bound_queues(&members, "a"), ["a.reply", "other"]);
        assert!(bound_queues(&members, "c").is_empty());
    }
}
