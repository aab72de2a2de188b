//! Messages on AMQP as kombu/py-amqp put them (wire spec §3.3): protocol v2 headers in
//! `application_headers`, the standard properties, the body bytes untouched.
//!
//! Header tables follow py-amqp's encoding: str → `S`, bool → `t`, float → `d`, int → `I`
//! (signed 32) or `l` (signed 64; py-amqp writes `L` and reads both), dict → `F`, list →
//! `A`, `None` → `V` (void). So `timelimit: [null, null]` is an array of two voids.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use queue_core::broker::Undecodable;
use queue_core::protocol::{Headers, JSON_CONTENT_TYPE, Message, Properties, ProtocolError};
use serde_json::{Map, Number, Value};

/// Headers RabbitMQ adds when it dead-letters a message (also through our delay queues).
const DEATH_HEADERS: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// A JSON value as py-amqp would encode the equivalent Python value.
pub(crate) fn json_to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(flag) => AMQPValue::Boolean(*flag),
        Value::Number(number) => number_to_amqp(number),
        Value::String(text) => AMQPValue::LongString(LongString::from(text.as_bytes())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(json_to_amqp).collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(json_to_table(map)),
    }
}

fn number_to_amqp(number: &Number) -> AMQPValue {
    if let Some(integer) = number.as_i64() {
        // py-amqp's bounds: ±(2^31 - 1) as `I`, anything wider as 64-bit.
        match i32::try_from(integer) {
            Ok(small) if small != i32::MIN => AMQPValue::LongInt(small),
            _ => AMQPValue::LongLongInt(integer),
        }
    } else {
        // Floats, and integers beyond i64 (which AMQP tables cannot hold exactly).
        AMQPValue::Double(number.as_f64().unwrap_or(0.0))
    }
}

/// A JSON object as an AMQP field table.
pub(crate) fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        table.insert(ShortString::from(key.as_str()), json_to_amqp(value));
    }
    table
}

/// How deep header tables and arrays may nest. Celery's headers nest two or three levels;
/// the bound keeps a hostile message from exhausting the stack here or in serde.
const MAX_DEPTH: usize = 32;

/// Why a header value does not convert, and where (path segments, innermost first).
#[derive(Debug)]
struct ValueError {
    path: Vec<String>,
    reason: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            return formatter.write_str(&self.reason);
        }
        let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        write!(formatter, "header `{}`: {}", path.join(""), self.reason)
    }
}

fn refuse(reason: impl Into<String>) -> ValueError {
    ValueError {
        path: Vec::new(),
        reason: reason.into(),
    }
}

fn to_json(value: &AMQPValue, depth: usize) -> Result<Value, ValueError> {
    Ok(match value {
        AMQPValue::Boolean(flag) => Value::Bool(*flag),
        AMQPValue::ShortShortInt(number) => Value::from(*number),
        AMQPValue::ShortShortUInt(number) => Value::from(*number),
        AMQPValue::ShortInt(number) => Value::from(*number),
        AMQPValue::ShortUInt(number) => Value::from(*number),
        AMQPValue::LongInt(number) => Value::from(*number),
        AMQPValue::LongUInt(number) => Value::from(*number),
        AMQPValue::LongLongInt(number) => Value::from(*number),
        AMQPValue::Float(number) => float(f64::from(*number))?,
        AMQPValue::Double(number) => float(*number)?,
        AMQPValue::DecimalValue(decimal) => {
            float(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))?
        }
        AMQPValue::ShortString(text) => Value::String(text.as_str().to_owned()),
        AMQPValue::LongString(text) => utf8(text.as_bytes())?,
        AMQPValue::ByteArray(bytes) => utf8(bytes.as_slice())?,
        AMQPValue::Timestamp(seconds) => Value::from(*seconds),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(items) => {
            let depth = nested(depth)?;
            let items = items.as_slice().iter().enumerate().map(|(index, item)| {
                to_json(item, depth).map_err(|mut error| {
                    error.path.push(format!("[{index}]"));
                    error
                })
            });
            Value::Array(items.collect::<Result<_, _>>()?)
        }
        AMQPValue::FieldTable(table) => Value::Object(table_json(table, nested(depth)?, ".")?),
    })
}

fn nested(depth: usize) -> Result<usize, ValueError> {
    if depth >= MAX_DEPTH {
        return Err(refuse(format!(
            "tables and arrays nest deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

fn float(number: f64) -> Result<Value, ValueError> {
    Number::from_f64(number)
        .map(Value::Number)
        .ok_or_else(|| refuse(format!("{number} is not a finite number")))
}

fn utf8(bytes: &[u8]) -> Result<Value, ValueError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Value::String(text.to_owned())),
        Err(error) => Err(refuse(format!("the bytes are not UTF-8 text ({error})"))),
    }
}

/// An AMQP field table as a JSON object. Timestamps become seconds; decimals become floats;
/// long strings and byte arrays become strings.
///
/// Refuses what a Celery header cannot mean and JSON cannot hold faithfully: NaN and
/// infinite numbers, bytes that are not UTF-8 (a lossy conversion would silently change a
/// task name or id), nesting deeper than [`MAX_DEPTH`]. The error names the header's path,
/// e.g. ``header `timelimit[0]`: NaN is not a finite number``.
pub(crate) fn table_to_json(table: &FieldTable) -> Result<Map<String, Value>, String> {
    table_json(table, 0, "").map_err(|error| error.to_string())
}

fn table_json(
    table: &FieldTable,
    depth: usize,
    separator: &str,
) -> Result<Map<String, Value>, ValueError> {
    table
        .inner()
        .iter()
        .map(|(key, value)| match to_json(value, depth) {
            Ok(value) => Ok((key.as_str().to_owned(), value)),
            Err(mut error) => {
                error.path.push(format!("{separator}{}", key.as_str()));
                Err(error)
            }
        })
        .collect()
}

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
            if expiration.parse::<u64>().is_ok_and(|millis| millis > 0) {
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
mod tests {
    use super::*;
    use queue_core::protocol::TimeLimit;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_field_tables() {
        let value = json!({
            "timelimit": [null, null],
            "numbers": [1, -2147483647, 2147483648i64, -2147483648i64, 2.5, 1.0],
            "nested": {"list": [1, 2.5, null, true, "s"], "empty": {}},
            "text": "é ✓",
        });
        let Value::Object(map) = &value else {
            unreachable!()
        };
        let table = json_to_table(map);
        let Some(AMQPValue::FieldArray(limits)) = table.inner().get("timelimit") else {
            panic!("timelimit is not an array")
        };
        assert_eq!(limits.as_slice(), &[AMQPValue::Void, AMQPValue::Void]);
        let Some(AMQPValue::FieldArray(numbers)) = table.inner().get("numbers") else {
            panic!("numbers is not an array")
        };
        assert_eq!(numbers.as_slice()[0], AMQPValue::LongInt(1));
        assert_eq!(numbers.as_slice()[2], AMQPValue::LongLongInt(2147483648));
        assert_eq!(numbers.as_slice()[3], AMQPValue::LongLongInt(-2147483648));
        assert_eq!(numbers.as_slice()[5], AMQPValue::Double(1.0));
        assert_eq!(Value::Object(table_to_json(&table).unwrap()), value);
    }

    #[test]
    fn message_round_trips_and_garbage_is_undecodable() {
        let mut headers = Headers::new("tasks.add", "id-1");
        headers.timelimit = TimeLimit(Some(30.into()), serde_json::Number::from_f64(20.5));
        let message = Message {
            headers,
            properties: Properties {
                correlation_id: Some("id-1".into()),
                reply_to: Some("reply".into()),
                delivery_mode: Some(2),
                priority: Some(5),
                expiration: Some("60000".into()),
                extra: Map::new(),
            },
            content_type: JSON_CONTENT_TYPE.into(),
            content_encoding: "utf-8".into(),
            body: br#"[[1, 2], {}, null]"#.to_vec(),
        };
        let amqp = properties(&message, true).unwrap();
        let back = decode(&amqp, &message.body, "queue.delay").unwrap();
        assert_eq!(back, message);
        let delayed = properties(&message, false).unwrap();
        assert!(delayed.expiration().is_none());

        let empty = decode(&BasicProperties::default(), b"\xff\x00", "queue.delay");
        let undecodable = empty.unwrap_err();
        assert_eq!(undecodable.raw, b"\xff\x00");
        assert!(
            undecodable.error.contains("headers"),
            "{}",
            undecodable.error
        );
    }

    #[test]
    fn zero_ttl_is_not_sent() {
        let mut message = Message::new(
            Headers::new("t", "i"),
            Properties {
                expiration: Some("0".into()),
                ..Properties::default()
            },
            &queue_core::TaskBody::default(),
        );
        assert!(properties(&message, true).unwrap().expiration().is_none());
        message.properties.expiration = Some("1".into());
        assert!(properties(&message, true).unwrap().expiration().is_some());
    }

    #[test]
    fn delay_deaths_are_stripped_others_kept() {
        let mut headers = json!({
            "task": "t", "id": "i",
            "x-death": [{"queue": "queue.delay.3", "reason": "expired"}],
            "x-first-death-queue": "queue.delay.3",
            "x-first-death-reason": "expired",
        });
        let Value::Object(map) = &mut headers else {
            unreachable!()
        };
        strip_delay_deaths(map, "queue.delay");
        assert_eq!(map.len(), 2);
        let mut mixed = json!({
            "x-death": [{"queue": "queue.delay.3"}, {"queue": "celery", "reason": "rejected"}],
            "x-first-death-queue": "celery",
        });
        let Value::Object(map) = &mut mixed else {
            unreachable!()
        };
        strip_delay_deaths(map, "queue.delay");
        assert_eq!(
            map["x-death"],
            json!([{"queue": "celery", "reason": "rejected"}])
        );
        assert_eq!(map["x-first-death-queue"], "celery");
    }

    /// A received message's properties with the headers of a minimal Celery message plus
    /// `extra` (which may override them).
    fn received(extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut table = FieldTable::default();
        let text = |value: &str| AMQPValue::LongString(LongString::from(value.as_bytes()));
        table.insert("task".into(), text("tasks.add"));
        table.insert("id".into(), text("id-1"));
        for (key, value) in extra {
            table.insert(ShortString::from(key), value);
        }
        BasicProperties::default().with_headers(table)
    }

    fn decode_error(extra: Vec<(&str, AMQPValue)>) -> String {
        let properties = received(extra);
        match decode(&properties, b"[[], {}, {}]", "queue.delay") {
            Ok(message) => panic!("decoded {:?}", message.headers),
            Err(undecodable) => {
                assert_eq!(undecodable.raw, b"[[], {}, {}]");
                undecodable.error
            }
        }
    }

    fn limits(hard: AMQPValue, soft: AMQPValue) -> AMQPValue {
        AMQPValue::FieldArray(FieldArray::from(vec![hard, soft]))
    }

    #[test]
    fn hostile_numbers_in_headers_are_undecodable_not_panics() {
        let cases: Vec<(&str, AMQPValue, &str)> = vec![
            (
                "timelimit",
                limits(AMQPValue::Double(f64::NAN), AMQPValue::Void),
                "timelimit[0]",
            ),
            (
                "timelimit",
                limits(AMQPValue::Void, AMQPValue::Double(f64::INFINITY)),
                "timelimit[1]",
            ),
            (
                "timelimit",
                limits(AMQPValue::Float(f32::NEG_INFINITY), AMQPValue::Void),
                "timelimit[0]",
            ),
            (
                "timelimit",
                limits(AMQPValue::LongLongInt(-5), AMQPValue::Void),
                "timelimit",
            ),
            (
                "timelimit",
                limits(AMQPValue::Void, AMQPValue::Double(-0.5)),
                "timelimit",
            ),
            ("retries", AMQPValue::LongInt(-1), "retries"),
            ("retries", AMQPValue::LongLongInt(1 << 40), "retries"),
            ("retries", AMQPValue::Double(1.5), "retries"),
            ("retries", AMQPValue::Double(f64::NAN), "retries"),
            ("eta", AMQPValue::Double(f64::NAN), "eta"),
            ("eta", AMQPValue::LongLongInt(i64::MAX), "eta"),
            ("eta", AMQPValue::Timestamp(u64::MAX), "eta"),
            ("expires", AMQPValue::LongLongInt(i64::MIN), "expires"),
            ("expires", AMQPValue::Double(-1e308), "expires"),
            ("x-custom", AMQPValue::Double(f64::NAN), "x-custom"),
        ];
        for (key, value, named) in cases {
            let shown = format!("{key}={value:?}");
            let error = decode_error(vec![(key, value)]);
            assert!(error.contains(named), "{shown}: {error}");
        }
    }

    #[test]
    fn wrong_types_in_headers_are_undecodable() {
        let text = |value: &str| AMQPValue::LongString(LongString::from(value.as_bytes()));
        let cases: Vec<(&str, AMQPValue)> = vec![
            ("timelimit", text("30")),
            ("timelimit", AMQPValue::LongInt(30)),
            ("timelimit", limits(text("a"), AMQPValue::Void)),
            ("timelimit", AMQPValue::FieldTable(FieldTable::default())),
            ("eta", AMQPValue::Boolean(true)),
            ("eta", text("not a time")),
            ("eta", text("99999-01-01T00:00:00")),
            ("expires", AMQPValue::FieldArray(FieldArray::default())),
            ("expires", text("2024-13-45T99:00:00")),
            ("retries", text("three")),
            ("retries", AMQPValue::Boolean(true)),
            ("task", AMQPValue::LongInt(1)),
            ("id", AMQPValue::Void),
        ];
        for (key, value) in cases {
            let shown = format!("{key}={value:?}");
            let error = decode_error(vec![(key, value)]);
            assert!(error.contains(key), "{shown}: {error}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_undecodable_not_mangled() {
        for key in ["id", "task", "x-custom"] {
            let error = decode_error(vec![(
                key,
                AMQPValue::LongString(LongString::from(b"id-\xff\xfe".to_vec())),
            )]);
            assert!(error.contains(key) && error.contains("UTF-8"), "{error}");
        }
        let nested = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::ByteArray(
            lapin::types::ByteArray::from(vec![0xc3_u8, 0x28]),
        )]));
        let error = decode_error(vec![("stamped_headers", nested)]);
        assert!(error.contains("stamped_headers[0]"), "{error}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut value = AMQPValue::Void;
        for _ in 0..10_000 {
            value = AMQPValue::FieldArray(FieldArray::from(vec![value]));
        }
        let error = decode_error(vec![("x-deep", value)]);
        assert!(error.contains("nest deeper"), "{error}");
        let mut table = AMQPValue::Void;
        for _ in 0..MAX_DEPTH {
            let mut inner = FieldTable::default();
            inner.insert("k".into(), table);
            table = AMQPValue::FieldTable(inner);
        }
        // As deep as allowed: decodes.
        let properties = received(vec![("x-deep", table)]);
        assert!(decode(&properties, b"[[], {}, {}]", "queue.delay").is_ok());
    }

    #[test]
    fn any_priority_octet_decodes_and_survives_republish() {
        // RabbitMQ takes priorities up to 255 (`x-max-priority`), capping them at the
        // queue's maximum; Python may send any of them. They decode as they are (nothing
        // indexes by them) and a republish keeps them.
        for priority in [0_u8, 9, 10, 255] {
            let properties = received(Vec::new()).with_priority(priority);
            let message = decode(&properties, b"[[], {}, {}]", "queue.delay").unwrap();
            assert_eq!(message.properties.priority, Some(priority));
            assert_eq!(message.priority(), priority);
            let again = republish_properties(&properties, None);
            assert_eq!(*again.priority(), Some(priority));
            let out = super::properties(&message, true).unwrap();
            assert_eq!(*out.priority(), Some(priority));
        }
    }

    #[test]
    fn huge_time_limits_saturate() {
        let properties = received(vec![(
            "timelimit",
            limits(AMQPValue::Double(1e300), AMQPValue::LongLongInt(i64::MAX)),
        )]);
        let message = decode(&properties, b"[[], {}, {}]", "queue.delay").unwrap();
        assert_eq!(
            message.headers.timelimit.hard(),
            Some(std::time::Duration::MAX)
        );
        assert!(message.headers.timelimit.soft().is_some());
    }

    #[test]
    fn celery_headers_with_valid_edge_values_decode() {
        let properties = received(vec![
            (
                "timelimit",
                limits(AMQPValue::LongInt(0), AMQPValue::Double(0.5)),
            ),
            ("retries", AMQPValue::LongLongInt(i64::from(u32::MAX))),
            (
                "eta",
                AMQPValue::LongString(LongString::from(b"2024-05-01T12:00:00+00:00".to_vec())),
            ),
            ("expires", AMQPValue::Void),
            (
                "x-decimal",
                AMQPValue::DecimalValue(lapin::types::DecimalValue {
                    scale: 255,
                    value: u32::MAX,
                }),
            ),
        ]);
        let message = decode(&properties, b"[[], {}, {}]", "queue.delay").unwrap();
        assert_eq!(message.headers.retries, u32::MAX);
        assert_eq!(message.headers.timelimit.hard(), None);
        assert_eq!(
            message.headers.timelimit.soft(),
            Some(std::time::Duration::from_millis(500))
        );
        assert!(message.headers.eta.is_some());
    }
}
