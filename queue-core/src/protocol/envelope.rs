//! kombu's virtual-transport envelope: the JSON document that Redis (and kombu's memory
//! transport) store per message (wire spec §4.2).
//!
//! ```json
//! {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
//!  "headers": {...}, "properties": {"body_encoding": "base64", "delivery_tag": "...",
//!  "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, ...}}
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Headers, Message, Properties, ProtocolError};

#[derive(Serialize, Deserialize)]
struct Wire {
    body: Value,
    #[serde(rename = "content-encoding", default)]
    content_encoding: Option<String>,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    headers: Headers,
    #[serde(default)]
    properties: Properties,
}

/// Encodes `message` as a kombu envelope. The body is base64-encoded and
/// `properties.body_encoding` set to `base64`; other properties are written as they are, so a
/// transport sets `delivery_tag` and `delivery_info` on the message before encoding.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut properties = message.properties.clone();
    properties
        .extra
        .insert("body_encoding".to_owned(), Value::from("base64"));
    let wire = Wire {
        body: Value::String(STANDARD.encode(&message.body)),
        content_encoding: Some(message.content_encoding.clone()),
        content_type: Some(message.content_type.clone()),
        headers: message.headers.clone(),
        properties,
    };
    serde_json::to_vec(&wire).expect("envelopes always serialize")
}

/// Decodes a kombu envelope. The body is base64-decoded when `body_encoding` says so and kept
/// as the raw string otherwise. Never panics on bad input.
pub fn decode(bytes: &[u8]) -> Result<Message, ProtocolError> {
    let wire: Wire = serde_json::from_slice(bytes).map_err(|source| ProtocolError::Json {
        what: "kombu envelope",
        source,
    })?;
    let body_encoding = wire
        .properties
        .extra
        .get("body_encoding")
        .and_then(Value::as_str);
    let body = match (&wire.body, body_encoding) {
        (Value::String(text), Some("base64")) => STANDARD.decode(text.as_bytes())?,
        (Value::String(text), _) => text.as_bytes().to_vec(),
        (other, _) => serde_json::to_vec(other).expect("JSON values always serialize"),
    };
    Ok(Message {
        headers: wire.headers,
        properties: wire.properties,
        content_type: wire
            .content_type
            .unwrap_or_else(|| super::JSON_CONTENT_TYPE.to_owned()),
        content_encoding: wire.content_encoding.unwrap_or_else(|| "utf-8".to_owned()),
        body,
    })
}

/// The `delivery_info` property kombu needs on Redis: `{"exchange": "", "routing_key": queue}`.
pub fn delivery_info(exchange: &str, routing_key: &str) -> Value {
    let mut info = Map::new();
    info.insert("exchange".to_owned(), Value::from(exchange));
    info.insert("routing_key".to_owned(), Value::from(routing_key));
    Value::Object(info)
}
