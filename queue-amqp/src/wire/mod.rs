//! Messages on AMQP as kombu/py-amqp put them (wire spec §3.3): protocol v2 headers in
//! `application_headers`, the standard properties, the body bytes untouched.
//!
//! Header tables follow py-amqp's encoding ([`table`]): `timelimit: [null, null]` is an
//! array of two voids.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use queue_core::broker::Undecodable;
use queue_core::protocol::{Headers, JSON_CONTENT_TYPE, Message, Properties, ProtocolError};
use serde_json::{Map, Value};

mod table;

pub(crate) use table::{json_to_table, table_to_json};
// The header fuzz test builds deliveries from JSON; it includes this module.
#[allow(unused_imports)]
pub(crate) use table::json_to_amqp;

/// Headers RabbitMQ adds when it dead-letters a message (also through our delay queues).
const DEATH_HEADERS: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// The AMQP properties of `message`, as kombu sets them: persistent unless the message
/// says otherwise. `keep_expiration` is false for messages routed through the delay queues,
/// where a per-message TTL would move them on early (the `expires` header still holds).
pub(crate) fn properties(
    message: &Message,
    keep_expiration: bool,
) -> Result<BasicProperties, ProtocolError> {
    let headers = match serde_json::to_value(&message.headers) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(ProtocolError::Malformed("headers are not an object".into())),
        Err(source) => {
            return Err(ProtocolError::Json {
                what: "message headers",
                source,
            });
        }
    };
    let props = &message.properties;
    let mut amqp = BasicProperties::default()
        .with_content_type(ShortString::from(message.content_type.as_str()))
        .with_content_encoding(ShortString::from(message.content_encoding.as_str()))
        .with_headers(json_to_table(&headers))
        .with_delivery_mode(props.delivery_mode.unwrap_or(2))
        // As kombu's `Producer.publish(priority=0)`: always present, 0 when unset.
        .with_priority(props.priority.unwrap_or(0));
    if let Some(id) = &props.correlation_id {
        amqp = amqp.with_correlation_id(ShortString::from(id.as_str()));
    }
    if let Some(reply_to) = &props.reply_to {
        amqp = amqp.with_reply_to(ShortString::from(reply_to.as_str()));
    }
    if keep_expiration {
        if let Some(expiration) = props.expiration.as_deref() {
            // A TTL of 0 makes RabbitMQ drop the message unless a consumer is waiting: the
            // worker would never see it to record it as revoked. Leave it to the worker.
            // Past RabbitMQ's largest TTL the publish would close the channel; the `expires`
            // header still bounds the task (another producer may have set either).
            let accepted = 1..=queue_core::app::MAX_MESSAGE_TTL_MS.unsigned_abs();
            if expiration
                .parse::<u64>()
                .is_ok_and(|millis| accepted.contains(&millis))
            {
                amqp = amqp.with_expiration(ShortString::from(expiration));
            }
        }
    }
    // The other AMQP properties, when a message carries them (py-amqp drops unknown ones).
    let text = |key: &str| props.extra.get(key).and_then(Value::as_str);
    if let Some(id) = text("message_id") {
        amqp = amqp.with_message_id(ShortString::from(id));
    }
    if let Some(kind) = text("type") {
        amqp = amqp.with_type(ShortString::from(kind));
    }
    if let Some(app) = text("app_id") {
        amqp = amqp.with_app_id(ShortString::from(app));
    }
    if let Some(timestamp) = props.extra.get("timestamp").and_then(Value::as_u64) {
        amqp = amqp.with_timestamp(timestamp);
    }
    Ok(amqp)
}

/// Decodes a received message. `delay_prefix` names our delay queues, whose dead-letter
/// traces are removed (they are an implementation detail of eta, not the message's story).
/// Never panics: what does not decode comes back as [`Undecodable`] with the body.
pub(crate) fn decode(
    properties: &BasicProperties,
    body: &[u8],
    delay_prefix: &str,
) -> Result<Message, Undecodable> {
    let undecodable = |error: String| Undecodable {
        raw: body.to_vec(),
        error: format!("invalid protocol v2 headers: {error}"),
    };
    let mut headers = match properties.headers() {
        Some(table) => table_to_json(table).map_err(undecodable)?,
        None => Map::new(),
    };
    strip_delay_deaths(&mut headers, delay_prefix);
    // The path names the header a type mismatch is in (serde_json's own message does not).
    let headers: Headers = serde_path_to_error::deserialize(Value::Object(headers))
        .map_err(|error| undecodable(error.to_string()))?;
    let mut extra = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            extra.insert(key.to_owned(), value);
        }
    };
    let text = |value: &Option<ShortString>| value.as_ref().map(|s| Value::from(s.as_str()));
    put("message_id", text(properties.message_id()));
    put("type", text(properties.kind()));
    put("app_id", text(properties.app_id()));
    put("user_id", text(properties.user_id()));
    put("timestamp", properties.timestamp().map(Value::from));
    let string = |value: &Option<ShortString>| value.as_ref().map(|s| s.as_str().to_owned());
    Ok(Message {
        headers,
        properties: Properties {
            correlation_id: string(properties.correlation_id()),
            reply_to: string(properties.reply_to()),
            delivery_mode: *properties.delivery_mode(),
            priority: *properties.priority(),
            expiration: string(properties.expiration()),
            extra,
        },
        content_type: string(properties.content_type())
            .unwrap_or_else(|| JSON_CONTENT_TYPE.to_owned()),
        content_encoding: string(properties.content_encoding())
            .unwrap_or_else(|| "utf-8".to_owned()),
        body: body.to_vec(),
    })
}

/// Removes the `x-death` entries of our delay queues; when none is left, the other
/// dead-letter headers go too.
fn strip_delay_deaths(headers: &mut Map<String, Value>, delay_prefix: &str) {
    let Some(Value::Array(deaths)) = headers.get_mut("x-death") else {
        return;
    };
    let ours = |death: &Value| {
        death
            .get("queue")
            .and_then(Value::as_str)
            .is_some_and(|queue| queue.starts_with(delay_prefix))
    };
    let before = deaths.len();
    deaths.retain(|death| !ours(death));
    if deaths.len() == before {
        return;
    }
    if deaths.is_empty() {
        headers.retain(|key, _| !is_death_header(key));
    }
}

fn is_death_header(key: &str) -> bool {
    key == "x-death" || DEATH_HEADERS.iter().any(|prefix| key.starts_with(prefix))
}

/// Properties for re-publishing a received message (defer, dead letter): RabbitMQ's
/// dead-letter headers removed, so that its cycle detection never drops a message that
/// passes a delay queue twice, and no TTL, which would cut a delay or a dead letter short.
pub(crate) fn republish_properties(
    received: &BasicProperties,
    extra_header: Option<(&str, &str)>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(table) = received.headers() {
        for (key, value) in table.inner() {
            if !is_death_header(key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some((key, value)) = extra_header {
        headers.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    // Every property but the TTL (the builder cannot unset one, so copy field by field).
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(received.delivery_mode().unwrap_or(2));
    let copy = |value: &Option<ShortString>| value.clone();
    if let Some(value) = copy(received.content_type()) {
        properties = properties.with_content_type(value);
    }
    if let Some(value) = copy(received.content_encoding()) {
        properties = properties.with_content_encoding(value);
    }
    if let Some(value) = *received.priority() {
        properties = properties.with_priority(value);
    }
    if let Some(value) = copy(received.correlation_id()) {
        properties = properties.with_correlation_id(value);
    }
    if let Some(value) = copy(received.reply_to()) {
        properties = properties.with_reply_to(value);
    }
    if let Some(value) = copy(received.message_id()) {
        properties = properties.with_message_id(value);
    }
    if let Some(value) = *received.timestamp() {
        properties = properties.with_timestamp(value);
    }
    if let Some(value) = copy(received.kind()) {
        properties = properties.with_type(value);
    }
    if let Some(value) = copy(received.app_id()) {
        properties = properties.with_app_id(value);
    }
    properties
}

#[cfg(test)]
mod tests;
