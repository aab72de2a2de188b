//! The backlog a monitor reads ([`queue_core::backlog`]), on kombu's layout.
//!
//! - **Stats**: one script promotes due delayed messages (as `queue_length`), then reads
//!   each list's length and the element served next, the size of the delayed set
//!   `_queue.delayed.<queue>` and the length of `<queue>.dead_letter`. The oldest ready
//!   message is read from those elements: its task id, and when it entered, from the
//!   `timestamp` property our publishes write (or its eta, when later and past). A
//!   message a Python producer sent without an eta has no time: the first list's element
//!   (the one a consumer gets next) is then given, with its task id.
//! - **Delayed messages** are the parked `unacked` entries the delayed set indexes (see
//!   `crate::delay`), listed by due time. Running one now rewrites its envelope without its
//!   eta and moves it to the tail of its list in one script, only if it is still parked as
//!   listed (a promotion or restore meanwhile makes it `false`, never a second copy).
//! - **Dead letters** (`<queue>.dead_letter`, newest at the head): requeueing all takes
//!   them from the oldest end, each in a script that pops it only while it is still the
//!   oldest; requeueing by task id removes each chosen entry (`LREM`) and pushes it in the
//!   same script. A requeued envelope loses its reason header and redelivered marks and
//!   gets a new `timestamp`; an undecodable dead letter goes back as its raw bytes.
//! - **Known queues**: see `queues`.

mod lua;
mod queues;

use chrono::{DateTime, FixedOffset};
use fred::prelude::ListInterface;
use fred::types::Value;
use queue_core::backlog::{DelayedMessage, OldestMessage, QueueStats};
use queue_core::broker::{BrokerError, DEAD_LETTER_REASON_HEADER};
use queue_core::protocol::time;
use serde_json::{Map, Value as Json};
use tracing::debug;

use self::lua::SCRIPTS;
use crate::broker::{BrokerInner, now_ms, now_seconds};
use crate::error::{RedisError, broker_error};
use crate::scripts;
use crate::wire;

/// Delayed-set members read per script (the script holds the server meanwhile).
const DELAYED_PAGE: usize = 500;
/// Dead letters moved per script.
const REQUEUE_BATCH: usize = 200;
/// Dead-letter entries read per `LRANGE` when looking for task ids.
const DEAD_LETTER_PAGE: i64 = 1000;

/// A delayed message as the delayed set lists it.
struct Parked {
    due_ms: i64,
    member: Vec<u8>,
    envelope: Vec<u8>,
}

/// The parts of a delayed-set member `RUN_NOW` checks: tag, index score and envelope
/// length; empty for a member of the older layout, which holds its envelope.
fn member_parts(member: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(member);
    let mut parts = text.splitn(4, '|');
    let _lane = parts.next();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(score), Some(length), Some(tag)) if !score.starts_with('{') => {
            (tag.to_owned(), score.to_owned(), length.to_owned())
        }
        _ => (String::new(), String::new(), "0".to_owned()),
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    value.as_bytes().map(<[u8]>::to_vec).unwrap_or_default()
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn array(reply: Value, what: &str) -> Result<Vec<Value>, BrokerError> {
    match reply {
        Value::Array(values) => Ok(values),
        other => Err(RedisError::Reply(format!("{what} reply {other:?}")).into()),
    }
}

fn seconds_to_time(seconds: f64) -> Option<DateTime<FixedOffset>> {
    if !seconds.is_finite() {
        return None;
    }
    DateTime::from_timestamp_micros((seconds * 1e6) as i64).map(|utc| utc.fixed_offset())
}

/// What a ready envelope tells of itself: its task id, and when it became ready — the later
/// of its publication (`timestamp`) and its eta, an eta counting only once past.
fn oldest_of(raw: &[u8], now: DateTime<FixedOffset>) -> OldestMessage {
    let envelope: Json = serde_json::from_slice(raw).unwrap_or(Json::Null);
    let task_id = envelope
        .pointer("/headers/id")
        .and_then(Json::as_str)
        .map(str::to_owned);
    let published = envelope
        .pointer(&format!("/properties/{}", wire::TIMESTAMP))
        .and_then(Json::as_f64)
        .and_then(seconds_to_time);
    let eta = envelope
        .pointer("/headers/eta")
        .and_then(Json::as_str)
        .and_then(time::parse_timestamp)
        .filter(|eta| *eta <= now);
    OldestMessage {
        task_id,
        enqueued_at: published.max(eta),
    }
}

/// The envelope as it goes back into a queue: headers edited by `edit`, kombu's
/// redelivered marks removed, a new `timestamp`. Bytes that are not an envelope are
/// returned as they are.
fn ready_again(envelope: &[u8], edit: impl FnOnce(&mut Map<String, Json>)) -> Vec<u8> {
    let Ok(Json::Object(mut map)) = serde_json::from_slice::<Json>(envelope) else {
        return envelope.to_vec();
    };
    if let Some(Json::Object(headers)) = map.get_mut("headers") {
        headers.remove("redelivered");
        edit(headers);
    }
    if let Some(Json::Object(properties)) = map.get_mut("properties") {
        properties.insert(wire::TIMESTAMP.to_owned(), Json::from(now_seconds()));
        if let Some(Json::Object(info)) = properties.get_mut("delivery_info") {
            info.remove("redelivered");
        }
    }
    serde_json::to_vec(&Json::Object(map)).unwrap_or_else(|_| envelope.to_vec())
}

/// A dead-letter entry as it goes back into its queue.
fn requeued(entry: &[u8]) -> Vec<u8> {
    wire::unwrap_dead_letter(entry).unwrap_or_else(|| {
        ready_again(entry, |headers| {
            headers.remove(DEAD_LETTER_REASON_HEADER);
        })
    })
}

fn dead_letter_id(entry: &[u8]) -> Option<String> {
    let (_, content) = wire::read_dead_letter(entry);
    content.ok().map(|message| message.id().to_owned())
}

impl BrokerInner {
    /// The list a message goes to in `queue`, by its kombu priority.
    fn list_of(&self, queue: &str, envelope: &[u8]) -> String {
        self.keys
            .list_for_wire(queue, wire::raw_wire_priority(envelope))
    }

    pub(crate) async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let mut keys = vec![self.keys.unacked.clone(), self.keys.unacked_index.clone()];
        keys.extend(self.keys.lists(queue));
        keys.push(self.keys.dead_letters(queue));
        let reply = scripts::run(
            &self.client,
            &SCRIPTS.stats,
            keys,
            vec![
                Value::from(self.keys.delayed(queue)),
                Value::from(now_ms().to_string()),
            ],
        )
        .await?;
        let values = array(reply, "queue stats")?;
        let lists = self.keys.steps().len();
        if values.len() != 2 * lists + 2 {
            return Err(RedisError::Reply(format!("queue stats reply of {}", values.len())).into());
        }
        let lengths: Vec<u64> = (0..lists).map(|list| number(&values[2 * list])).collect();
        let now = time::now();
        let heads: Vec<OldestMessage> = (0..lists)
            .filter(|list| lengths[*list] > 0)
            .map(|list| oldest_of(&bytes(&values[2 * list + 1]), now))
            .collect();
        // The earliest entry when every time is known; else the one served next.
        let oldest_ready = if heads.iter().all(|head| head.enqueued_at.is_some()) {
            heads.into_iter().min_by_key(|head| head.enqueued_at)
        } else {
            heads.into_iter().next()
        };
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready: self.length_from(&lengths),
            oldest_ready,
            delayed: number(&values[2 * lists]),
            dead_letters: number(&values[2 * lists + 1]),
        })
    }

    /// Reads the delayed set of `queue` from rank 0, soonest first, until `keep` says stop
    /// (returns `false`) or the set ends.
    async fn each_parked(
        &self,
        queue: &str,
        mut keep: impl FnMut(Parked) -> bool,
    ) -> Result<(), BrokerError> {
        let delayed = self.keys.delayed(queue);
        let mut start = 0usize;
        loop {
            let reply = scripts::run(
                &self.client,
                &SCRIPTS.delayed_page,
                vec![self.keys.unacked.clone(), self.keys.unacked_index.clone()],
                vec![
                    Value::from(delayed.as_str()),
                    Value::from(start as i64),
                    Value::from(DELAYED_PAGE as i64),
                ],
            )
            .await?;
            let values = array(reply, "delayed page")?;
            let Some((read, parked)) = values.split_first() else {
                return Err(RedisError::Reply("empty delayed page reply".into()).into());
            };
            for triple in parked.chunks_exact(3) {
                let due_ms = triple[0]
                    .as_str()
                    .and_then(|due| due.parse::<f64>().ok())
                    .unwrap_or(0.0) as i64;
                let parked = Parked {
                    due_ms,
                    member: bytes(&triple[1]),
                    envelope: bytes(&triple[2]),
                };
                if !keep(parked) {
                    return Ok(());
                }
            }
            let read = number(read) as usize;
            if read < DELAYED_PAGE {
                return Ok(());
            }
            start += read;
        }
    }

    pub(crate) async fn delayed(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DelayedMessage>, BrokerError> {
        let mut listed = Vec::new();
        if limit == 0 {
            return Ok(listed);
        }
        self.each_parked(queue, |parked| {
            listed.push(DelayedMessage {
                queue: queue.to_owned(),
                eta: DateTime::from_timestamp_millis(parked.due_ms)
                    .map_or_else(time::now, |utc| utc.fixed_offset()),
                content: wire::decode(&parked.envelope).0,
            });
            listed.len() < limit
        })
        .await?;
        Ok(listed)
    }

    pub(crate) async fn run_delayed_now(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<bool, BrokerError> {
        let mut found = None;
        self.each_parked(queue, |parked| {
            let envelope: Json = serde_json::from_slice(&parked.envelope).unwrap_or(Json::Null);
            if envelope.pointer("/headers/id").and_then(Json::as_str) == Some(task_id) {
                found = Some(parked);
                return false;
            }
            true
        })
        .await?;
        let Some(parked) = found else {
            return Ok(false);
        };
        let (tag, index_score, length) = member_parts(&parked.member);
        let envelope = ready_again(&parked.envelope, |headers| {
            headers.insert("eta".to_owned(), Json::Null);
        });
        let keys = vec![
            self.keys.unacked.clone(),
            self.keys.unacked_index.clone(),
            self.keys.delayed(queue),
            self.list_of(queue, &parked.envelope),
        ];
        let moved = scripts::run(
            &self.client,
            &SCRIPTS.run_now,
            keys,
            vec![
                Value::Bytes(parked.member.into()),
                Value::from(tag),
                Value::from(index_score),
                Value::from(length),
                Value::Bytes(envelope.into()),
            ],
        )
        .await?;
        let ran = number(&moved) == 1;
        debug!(queue, task_id, ran, "delayed message run now");
        Ok(ran)
    }

    /// `(entry, destination list, envelope)` groups of a requeue script.
    fn requeue_arguments<'a>(
        &self,
        queue: &str,
        entries: impl Iterator<Item = &'a Vec<u8>>,
    ) -> Vec<Value> {
        let mut arguments = Vec::new();
        for entry in entries {
            let envelope = requeued(entry);
            arguments.push(Value::Bytes(entry.clone().into()));
            arguments.push(Value::from(self.list_of(queue, &envelope)));
            arguments.push(Value::Bytes(envelope.into()));
        }
        arguments
    }

    pub(crate) async fn requeue_dead_letters(
        &self,
        queue: &str,
        task_ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let moved = match task_ids {
            None => self.requeue_all(queue).await?,
            Some(ids) => self.requeue_chosen(queue, ids).await?,
        };
        debug!(queue, moved, "dead letters requeued");
        Ok(moved)
    }

    /// Requeues from the oldest end, at most as many as the list held at the start (a
    /// requeued task that fails again at once is not requeued twice).
    async fn requeue_all(&self, queue: &str) -> Result<u64, BrokerError> {
        let dead = self.keys.dead_letters(queue);
        let total: u64 = self
            .client
            .llen(dead.as_str())
            .await
            .map_err(broker_error)?;
        let mut moved = 0u64;
        let mut stalled = 0;
        while moved < total && stalled < 3 {
            let batch = (total - moved).min(REQUEUE_BATCH as u64) as i64;
            let entries: Vec<Value> = self
                .client
                .lrange(dead.as_str(), -batch, -1)
                .await
                .map_err(broker_error)?;
            if entries.is_empty() {
                break;
            }
            // LRANGE gives them newest first; the oldest is moved first.
            let entries: Vec<Vec<u8>> = entries.iter().rev().map(bytes).collect();
            let reply = scripts::run(
                &self.client,
                &SCRIPTS.requeue_oldest,
                vec![dead.clone()],
                self.requeue_arguments(queue, entries.iter()),
            )
            .await?;
            let step = number(&reply);
            // Another client took the oldest meanwhile: read again, a few times at most.
            stalled = if step == 0 { stalled + 1 } else { 0 };
            moved += step;
        }
        Ok(moved)
    }

    async fn requeue_chosen(&self, queue: &str, ids: &[String]) -> Result<u64, BrokerError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let dead = self.keys.dead_letters(queue);
        let mut chosen = Vec::new();
        let mut start = 0i64;
        loop {
            let page: Vec<Value> = self
                .client
                .lrange(dead.as_str(), start, start + DEAD_LETTER_PAGE - 1)
                .await
                .map_err(broker_error)?;
            for entry in &page {
                let entry = bytes(entry);
                if dead_letter_id(&entry).is_some_and(|id| ids.contains(&id)) {
                    chosen.push(entry);
                }
            }
            if (page.len() as i64) < DEAD_LETTER_PAGE {
                break;
            }
            start += DEAD_LETTER_PAGE;
        }
        // Read newest first: the oldest goes back first.
        chosen.reverse();
        let mut moved = 0;
        for batch in chosen.chunks(REQUEUE_BATCH) {
            let reply = scripts::run(
                &self.client,
                &SCRIPTS.requeue_chosen,
                vec![dead.clone()],
                self.requeue_arguments(queue, batch.iter()),
            )
            .await?;
            moved += number(&reply);
        }
        Ok(moved)
    }

    pub(crate) async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let reply = scripts::run(
            &self.client,
            &SCRIPTS.purge_dead,
            vec![self.keys.dead_letters(queue)],
            Vec::<Value>::new(),
        )
        .await?;
        Ok(number(&reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_what_the_run_now_script_checks() {
        assert_eq!(
            member_parts(b"2|1699996400.250|812|t-1"),
            ("t-1".into(), "1699996400.250".into(), "812".into())
        );
        // The older layout holds its envelope: nothing to check but the member itself.
        assert_eq!(
            member_parts(br#"1|{"headers": {"id": "x|y"}}"#),
            (String::new(), String::new(), "0".into())
        );
    }

    #[test]
    fn the_oldest_message_entered_when_published_or_when_its_eta_passed() {
        let now = time::parse_timestamp("2024-05-01T12:00:00+00:00").expect("time");
        let published = r#"{"headers": {"id": "a", "eta": null},
            "properties": {"timestamp": 1714564800.5}}"#;
        let oldest = oldest_of(published.as_bytes(), now);
        assert_eq!(oldest.task_id.as_deref(), Some("a"));
        assert_eq!(
            oldest.enqueued_at,
            time::parse_timestamp("2024-05-01T12:00:00.500+00:00")
        );
        let waited = r#"{"headers": {"id": "b", "eta": "2024-05-01T11:59:00+00:00"},
            "properties": {"timestamp": 1714564000}}"#;
        assert_eq!(
            oldest_of(waited.as_bytes(), now).enqueued_at,
            time::parse_timestamp("2024-05-01T11:59:00+00:00"),
            "ready from its eta on"
        );
        let python = r#"{"headers": {"id": "c"}, "properties": {}}"#;
        let oldest = oldest_of(python.as_bytes(), now);
        assert_eq!(oldest.task_id.as_deref(), Some("c"));
        assert_eq!(oldest.enqueued_at, None, "a Python message has no time");
        assert_eq!(oldest_of(b"garbage", now).task_id, None);
    }

    #[test]
    fn requeued_dead_letters_lose_their_reason_and_marks() {
        let entry = br#"{"body": "e30=", "headers": {"id": "a", "redelivered": true,
            "x-dead-letter-reason": "bad"}, "properties": {"delivery_info":
            {"routing_key": "q", "redelivered": true}, "priority": 0}}"#;
        let back: Json = serde_json::from_slice(&requeued(entry)).expect("json");
        assert_eq!(back["headers"], serde_json::json!({"id": "a"}));
        assert_eq!(
            back["properties"]["delivery_info"],
            serde_json::json!({"routing_key": "q"})
        );
        assert!(back["properties"]["timestamp"].as_f64().is_some());
        let wrapped = wire::dead_letter_entry(b"\xffnot json", "undecodable");
        assert_eq!(
            requeued(&wrapped),
            b"\xffnot json",
            "raw bytes go back as they were"
        );
    }
}
