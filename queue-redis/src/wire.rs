//! What goes into Redis: kombu envelopes with our priority translated, the redelivered marks
//! kombu's restore sets, dead-letter entries, and the envelopes of broadcast messages.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use queue_core::broadcast::BroadcastMessage;
use queue_core::broker::{DEAD_LETTER_REASON_HEADER, Undecodable};
use queue_core::protocol::{JSON_CONTENT_TYPE, Message, envelope};
use serde_json::{Map, Value, json};

use crate::keys::{our_priority, wire_priority};

/// A message as published on Redis: the kombu envelope, its delivery tag, and kombu's
/// priority number (which decides the list).
pub(crate) struct Encoded {
    pub(crate) raw: Vec<u8>,
    /// Its fresh `properties.delivery_tag`.
    pub(crate) tag: String,
    pub(crate) wire_priority: u8,
}

/// Encodes `message` for `queue`: a fresh `delivery_tag` (kombu keys unacked messages by
/// it, so every publish needs its own), `delivery_info` naming the queue through the
/// default exchange, the priority as kombu's number (`9 - ours`; none: kombu's default
/// 0, which reads back as our 9), and `timestamp`, the time of publication in seconds
/// (kombu keeps it and ignores it; the backlog reads it for the age of a message).
pub(crate) fn encode(message: &Message, queue: &str) -> Encoded {
    // No priority at all is kombu's default, 0: the plain list, with Python's own defaults.
    let wire = message.properties.priority.map_or(0, wire_priority);
    let mut message = message.clone();
    let properties = &mut message.properties;
    properties.priority = Some(wire);
    let tag = uuid::Uuid::new_v4().to_string();
    properties
        .extra
        .insert("delivery_tag".to_owned(), Value::String(tag.clone()));
    // Always the default exchange and the queue itself: a Python restore then puts the
    // message back into this queue without consulting bindings.
    properties.extra.insert(
        "delivery_info".to_owned(),
        envelope::delivery_info("", queue),
    );
    properties.extra.insert(
        TIMESTAMP.to_owned(),
        Value::from(crate::broker::now_seconds()),
    );
    message.headers.extra.remove("redelivered");
    Encoded {
        raw: envelope::encode(&message),
        tag,
        wire_priority: wire,
    }
}

/// The envelope property holding the time of publication (seconds since the epoch).
pub(crate) const TIMESTAMP: &str = "timestamp";

/// A fetched element decoded: the message with our priority and without kombu's
/// redelivered marks, and whether it carried them.
pub(crate) fn decode(raw: &[u8]) -> (Result<Message, Undecodable>, bool) {
    match envelope::decode(raw) {
        Ok(mut message) => {
            let mut redelivered = is_true(message.headers.extra.remove("redelivered"));
            if let Some(Value::Object(info)) = message.properties.extra.get_mut("delivery_info") {
                redelivered |= is_true(info.remove("redelivered"));
            }
            let wire = message.properties.priority.map(i64::from);
            message.properties.priority = Some(our_priority(wire));
            (Ok(message), redelivered)
        }
        Err(error) => (
            Err(Undecodable {
                raw: raw.to_vec(),
                error: error.to_string(),
            }),
            false,
        ),
    }
}

fn is_true(value: Option<Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
}

/// kombu's `unacked` value of a taken envelope: `[envelope, "", "<queue>"]`, the envelope
/// exactly as taken.
pub(crate) fn unacked_value(raw: &[u8], queue: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(raw.len() + queue.len() + 10);
    value.push(b'[');
    value.extend_from_slice(raw);
    value.extend_from_slice(b", \"\", ");
    value.extend_from_slice(&serde_json::to_vec(queue).expect("strings serialize"));
    value.push(b']');
    value
}

/// kombu's priority number of a raw envelope, as kombu reads it (missing or not a number: 0).
pub(crate) fn raw_wire_priority(raw: &[u8]) -> u8 {
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(raw) else {
        return 0;
    };
    envelope
        .get("properties")
        .and_then(|properties| properties.get("priority"))
        .and_then(|priority| {
            priority
                .as_i64()
                .or_else(|| priority.as_f64().map(|number| number as i64))
        })
        .unwrap_or(0)
        .clamp(0, 9) as u8
}

/// The envelope marked as kombu's restore marks it: `headers.redelivered` and
/// `properties.delivery_info.redelivered`. Bytes that are not an envelope are returned as
/// they are.
pub(crate) fn mark_redelivered(raw: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(raw) else {
        return raw.to_vec();
    };
    if let Some(Value::Object(headers)) = envelope.get_mut("headers") {
        headers.insert("redelivered".to_owned(), Value::Bool(true));
    }
    if let Some(Value::Object(properties)) = envelope.get_mut("properties") {
        if let Some(Value::Object(info)) = properties.get_mut("delivery_info") {
            info.insert("redelivered".to_owned(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&Value::Object(envelope)).unwrap_or_else(|_| raw.to_vec())
}

/// Key of the wrapper that holds an undecodable dead letter.
const WRAPPER_KEY: &str = "x-dead-letter";

/// The dead-letter entry of a raw element: the envelope itself with the reason header added
/// (so that it can be consumed or moved back as it is), or, for bytes that are not an
/// envelope, a wrapper keeping the raw text and the reason:
/// `{"x-dead-letter": {"reason": ..., "raw": ..., "raw_encoding": "utf-8" | "base64"}}`.
pub(crate) fn dead_letter_entry(raw: &[u8], reason: &str) -> Vec<u8> {
    if let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(raw) {
        if let Some(Value::Object(headers)) = envelope.get_mut("headers") {
            headers.insert(DEAD_LETTER_REASON_HEADER.to_owned(), Value::from(reason));
            if let Ok(bytes) = serde_json::to_vec(&Value::Object(envelope)) {
                return bytes;
            }
        }
    }
    let (text, encoding) = match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (STANDARD.encode(raw), "base64"),
    };
    let mut inner = Map::new();
    inner.insert("reason".to_owned(), Value::from(reason));
    inner.insert("raw".to_owned(), Value::from(text));
    inner.insert("raw_encoding".to_owned(), Value::from(encoding));
    let mut wrapper = Map::new();
    wrapper.insert(WRAPPER_KEY.to_owned(), Value::Object(inner));
    serde_json::to_vec(&Value::Object(wrapper)).expect("JSON values always serialize")
}

/// The raw bytes kept in the wrapper of an undecodable dead letter; `None` for an entry
/// that is an envelope (or anything else).
pub(crate) fn unwrap_dead_letter(entry: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(wrapper)) = serde_json::from_slice::<Value>(entry) else {
        return None;
    };
    let inner = match (wrapper.len(), wrapper.get(WRAPPER_KEY)) {
        (1, Some(Value::Object(inner))) => inner,
        _ => return None,
    };
    let text = |key: &str| inner.get(key).and_then(Value::as_str).unwrap_or_default();
    Some(match text("raw_encoding") {
        "base64" => STANDARD.decode(text("raw")).unwrap_or_default(),
        _ => text("raw").as_bytes().to_vec(),
    })
}

/// Reads a dead-letter entry back: the reason and the message or raw bytes.
pub(crate) fn read_dead_letter(entry: &[u8]) -> (String, Result<Message, Undecodable>) {
    if let Ok(Value::Object(mut wrapper)) = serde_json::from_slice::<Value>(entry) {
        if wrapper.len() == 1 {
            if let Some(Value::Object(inner)) = wrapper.remove(WRAPPER_KEY) {
                let text = |key: &str| inner.get(key).and_then(Value::as_str).unwrap_or_default();
                let raw = match text("raw_encoding") {
                    "base64" => STANDARD.decode(text("raw")).unwrap_or_default(),
                    _ => text("raw").as_bytes().to_vec(),
                };
                let error = envelope::decode(&raw).err().map_or_else(
                    || "not a task message".to_owned(),
                    |error| error.to_string(),
                );
                return (text("reason").to_owned(), Err(Undecodable { raw, error }));
            }
        }
    }
    let (content, _) = decode(entry);
    let reason = match &content {
        Ok(message) => message
            .headers
            .extra
            .get(DEAD_LETTER_REASON_HEADER)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        // An envelope whose headers do not decode (which is often why it was dead-lettered)
        // still carries the reason that was written into them.
        Err(_) => reason_in_raw_headers(entry).unwrap_or_default(),
    };
    (reason, content)
}

/// The reason header of an envelope read as plain JSON, without decoding the message.
fn reason_in_raw_headers(entry: &[u8]) -> Option<String> {
    let envelope = serde_json::from_slice::<Value>(entry).ok()?;
    let reason = envelope.get("headers")?.get(DEAD_LETTER_REASON_HEADER)?;
    reason.as_str().map(str::to_owned)
}

/// kombu's `delivery_mode` for transient messages: what Celery's events and control replies
/// carry (Redis stores nothing by it; kombu ignores it there).
const TRANSIENT: u8 = 1;

/// A broadcast message as kombu's virtual transport sends it on Redis, in kombu's field
/// order: the body base64-encoded, the headers as given, `delivery_info` naming the exchange
/// and routing key, priority 0 (the plain list of a direct queue), a fresh delivery tag.
pub(crate) fn encode_broadcast(exchange: &str, message: &BroadcastMessage) -> Vec<u8> {
    let envelope = json!({
        "body": STANDARD.encode(&message.body),
        "content-encoding": "utf-8",
        "content-type": JSON_CONTENT_TYPE,
        "headers": message.headers,
        "properties": {
            "delivery_mode": TRANSIENT,
            "delivery_info": envelope::delivery_info(exchange, &message.routing_key),
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    });
    serde_json::to_vec(&envelope).expect("JSON values always serialize")
}

/// Reads a broadcast envelope (ours or kombu's): the routing key of its `delivery_info`
/// (`None` when absent), its headers (none: empty) and its body, base64-decoded when
/// `body_encoding` says so, taken as JSON text when it is a JSON value (as some writers
/// embed it). An envelope whose content type is not JSON is refused: a broadcast body is
/// JSON (Celery accepts only JSON on its control and event exchanges).
pub(crate) fn decode_broadcast(raw: &[u8]) -> Result<DecodedBroadcast, String> {
    let Value::Object(mut envelope) =
        serde_json::from_slice::<Value>(raw).map_err(|error| format!("not JSON: {error}"))?
    else {
        return Err("not a JSON object".to_owned());
    };
    if let Some(content_type) = envelope.get("content-type").and_then(Value::as_str) {
        if !content_type.contains("json") {
            return Err(format!("content type {content_type:?} is not JSON"));
        }
    }
    let properties = match envelope.remove("properties") {
        Some(Value::Object(properties)) => properties,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("properties are not an object".to_owned()),
    };
    let routing_key = properties
        .get("delivery_info")
        .and_then(|info| info.get("routing_key"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let headers = match envelope.remove("headers") {
        Some(Value::Object(headers)) => headers,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("headers are not an object".to_owned()),
    };
    let base64 = properties.get("body_encoding").and_then(Value::as_str) == Some("base64");
    let body = match envelope.remove("body") {
        Some(Value::String(text)) if base64 => STANDARD
            .decode(text.as_bytes())
            .map_err(|error| format!("body is not base64: {error}"))?,
        Some(Value::String(text)) => text.into_bytes(),
        None | Some(Value::Null) => return Err("no body".to_owned()),
        Some(other) => serde_json::to_vec(&other).expect("JSON values always serialize"),
    };
    Ok(DecodedBroadcast {
        routing_key,
        headers,
        body,
    })
}

/// A decoded broadcast envelope (see [`decode_broadcast`]).
pub(crate) struct DecodedBroadcast {
    /// `properties.delivery_info.routing_key`, when present.
    pub(crate) routing_key: Option<String>,
    pub(crate) headers: Map<String, Value>,
    pub(crate) body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::protocol::{Headers, Properties, TaskBody};

    fn message(priority: u8) -> Message {
        let properties = Properties {
            priority: Some(priority),
            ..Properties::default()
        };
        Message::new(Headers::new("t", "id-1"), properties, &TaskBody::default())
    }

    #[test]
    fn priority_is_kombus_number_on_the_wire_and_ours_in_memory() {
        let encoded = encode(&message(8), "celery");
        assert_eq!(encoded.wire_priority, 1);
        let value: Value = serde_json::from_slice(&encoded.raw).unwrap();
        assert_eq!(value["properties"]["priority"], 1);
        assert_eq!(
            value["properties"]["delivery_info"]["routing_key"],
            "celery"
        );
        assert_eq!(value["properties"]["body_encoding"], "base64");
        assert_eq!(value["properties"]["delivery_tag"], encoded.tag.as_str());
        assert_eq!(encoded.tag.len(), 36);
        let (decoded, redelivered) = decode(&encoded.raw);
        assert_eq!(decoded.unwrap().properties.priority, Some(8));
        assert!(!redelivered);
        assert_eq!(raw_wire_priority(&encoded.raw), 1);
    }

    #[test]
    fn unacked_value_is_kombus_triple() {
        let encoded = encode(&message(1), "q\"1");
        let tag = encoded.tag.clone();
        let triple: Value = serde_json::from_slice(&unacked_value(&encoded.raw, "q\"1")).unwrap();
        assert_eq!(triple[0]["properties"]["delivery_tag"], tag.as_str());
        assert_eq!(
            (&triple[1], &triple[2]),
            (&Value::from(""), &Value::from("q\"1"))
        );
    }

    #[test]
    fn no_priority_is_kombus_default() {
        let mut unset = message(0);
        unset.properties.priority = None;
        let encoded = encode(&unset, "celery");
        assert_eq!(encoded.wire_priority, 0);
        assert_eq!(decode(&encoded.raw).0.unwrap().properties.priority, Some(9));
    }

    #[test]
    fn redelivered_marks_are_read_and_removed() {
        let encoded = encode(&message(0), "q");
        let marked = mark_redelivered(&encoded.raw);
        let value: Value = serde_json::from_slice(&marked).unwrap();
        assert_eq!(value["headers"]["redelivered"], true);
        let (decoded, redelivered) = decode(&marked);
        let decoded = decoded.unwrap();
        assert!(redelivered);
        assert!(!decoded.headers.extra.contains_key("redelivered"));
        assert_eq!(decoded.headers, message(0).headers);
    }

    #[test]
    fn dead_letters_keep_reason_and_raw_bytes() {
        let encoded = encode(&message(3), "q");
        let (reason, content) = read_dead_letter(&dead_letter_entry(&encoded.raw, "bad args"));
        assert_eq!(reason, "bad args");
        assert_eq!(content.unwrap().id(), "id-1");
        for raw in [
            &b"not json at all"[..],
            &[0xff, 0xfe, 0x00][..],
            &b"{\"x\": 1}"[..],
        ] {
            let (reason, content) = read_dead_letter(&dead_letter_entry(raw, "undecodable"));
            assert_eq!(reason, "undecodable");
            assert_eq!(content.unwrap_err().raw, raw);
        }
    }

    #[test]
    fn dead_letters_whose_headers_do_not_decode_keep_their_reason() {
        // Headers present but missing `task` and `id`: the envelope cannot be decoded, and
        // the reason written into its headers must still be read back.
        let raw = br#"{"body": "W10=", "content-type": "application/json",
            "content-encoding": "utf-8", "headers": {"lang": "py"},
            "properties": {"delivery_tag": "t", "body_encoding": "base64"}}"#;
        let (reason, content) = read_dead_letter(&dead_letter_entry(raw, "missing field `task`"));
        assert_eq!(reason, "missing field `task`");
        assert!(content.is_err());
    }

    #[test]
    fn broadcast_envelopes_are_kombus() {
        let message = BroadcastMessage::new("worker.heartbeat", br#"{"type": "x"}"#.to_vec())
            .header("hostname", "celery@a");
        let raw = encode_broadcast("celeryev", &message);
        let value: Value = serde_json::from_slice(&raw).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "body",
                "content-encoding",
                "content-type",
                "headers",
                "properties"
            ]
        );
        assert_eq!(value["body"], STANDARD.encode(br#"{"type": "x"}"#));
        assert_eq!(value["content-type"], "application/json");
        assert_eq!(value["headers"], json!({"hostname": "celery@a"}));
        let properties = &value["properties"];
        assert_eq!(
            properties["delivery_info"],
            json!({"exchange": "celeryev", "routing_key": "worker.heartbeat"})
        );
        assert_eq!(
            (&properties["priority"], &properties["body_encoding"]),
            (&json!(0), &json!("base64"))
        );
        assert_eq!(properties["delivery_tag"].as_str().unwrap().len(), 36);
        let decoded = decode_broadcast(&raw).unwrap();
        assert_eq!(decoded.routing_key.as_deref(), Some("worker.heartbeat"));
        assert_eq!(
            (decoded.headers, decoded.body),
            (message.headers, message.body)
        );
    }

    #[test]
    fn captured_pidbox_request_decodes_and_bad_ones_are_errors() {
        // From celery-wire-samples.txt: `PUBLISH /2.celery.pidbox`, the body base64.
        let raw = br#"{"body": "eyJtZXRob2QiOiAicGluZyJ9", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 1, "expires": 1795534423.904896}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "body_encoding": "base64", "delivery_tag": "1401b743-2b58-4262-9e9e-d554c9bed499"}}"#;
        let decoded = decode_broadcast(raw).unwrap();
        assert_eq!(decoded.routing_key.as_deref(), Some(""));
        assert_eq!(decoded.headers["clock"], json!(1));
        assert_eq!(decoded.body, br#"{"method": "ping"}"#);
        // The spec's rendering, with the body as a JSON object, reads too.
        let embedded = br#"{"body": {"method": "ping"}, "headers": null}"#;
        assert_eq!(
            decode_broadcast(embedded).unwrap().body,
            br#"{"method":"ping"}"#
        );
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"headers": {}}"#,
            br#"{"body": "!!", "properties": {"body_encoding": "base64"}}"#,
            br#"{"body": "x", "headers": [1]}"#,
            br#"{"body": "x", "content-type": "application/x-python-serialize"}"#,
        ] {
            assert!(
                decode_broadcast(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
