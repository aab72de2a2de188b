//! kombu's typed JSON envelopes: `{"__type__": "datetime", "__value__": "..."}` and friends
//! (wire spec §1), which Python producers put into args, kwargs and results.
//!
//! Task arguments are first deserialized as they arrive (so a `serde_json::Value` parameter
//! sees the envelope unchanged and can echo it back); when that fails, [`untag`] turns the
//! envelopes into plain JSON (`datetime` → its ISO string, `uuid` → hyphenated string,
//! `base64` → byte array) and deserialization is tried again.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeZone};
use serde_json::{Map, Value};

use super::time::format_timestamp;

/// Whether `value` is a kombu typed envelope (exactly the keys `__type__` and `__value__`).
pub fn is_envelope(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.len() == 2
        && map.contains_key("__type__") && map.contains_key("__value__"))
}

/// Replaces every kombu envelope inside `value` by plain JSON. An unknown `__type__` is an
/// error, as it is for kombu's decoder.
pub fn untag(value: Value) -> Result<Value, String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(untag)
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) if is_envelope(&Value::Object(map.clone())) => untag_envelope(map),
        Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| untag(value).map(|value| (key, value)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other),
    }
}

fn untag_envelope(mut map: Map<String, Value>) -> Result<Value, String> {
    let kind = map.remove("__type__").unwrap_or_default();
    let value = map.remove("__value__").unwrap_or_default();
    match (kind.as_str().unwrap_or_default(), value) {
        ("datetime" | "date" | "time" | "decimal" | "bytes", Value::String(text)) => {
            Ok(Value::String(text))
        }
        ("uuid", Value::Object(fields)) => {
            let hex = fields
                .get("hex")
                .and_then(Value::as_str)
                .unwrap_or_default();
            uuid::Uuid::parse_str(hex)
                .map(|id| Value::String(id.hyphenated().to_string()))
                .map_err(|error| format!("invalid kombu uuid {hex:?}: {error}"))
        }
        ("uuid", Value::String(text)) => Ok(Value::String(text)),
        ("base64", Value::String(text)) => STANDARD
            .decode(text.as_bytes())
            .map(|bytes| Value::Array(bytes.into_iter().map(Value::from).collect()))
            .map_err(|error| format!("invalid kombu base64 value: {error}")),
        (kind, value) => Err(format!(
            "unsupported kombu type {kind:?} with value {value}"
        )),
    }
}

fn envelope(kind: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert("__type__".to_owned(), Value::from(kind));
    map.insert("__value__".to_owned(), value);
    Value::Object(map)
}

/// A datetime as Python's kombu writes it, read back by Python as a `datetime`.
pub fn datetime<Tz: TimeZone>(value: &DateTime<Tz>) -> Value {
    envelope(
        "datetime",
        Value::String(format_timestamp(&value.fixed_offset())),
    )
}

/// A UUID as kombu writes it, read back by Python as a `uuid.UUID`.
pub fn uuid(value: &uuid::Uuid) -> Value {
    let mut fields = Map::new();
    fields.insert("hex".to_owned(), Value::String(value.simple().to_string()));
    envelope("uuid", Value::Object(fields))
}

/// A decimal number (given as its exact text), read back by Python as a `Decimal`.
pub fn decimal(text: &str) -> Value {
    envelope("decimal", Value::String(text.to_owned()))
}

/// Binary data, read back by Python as `bytes`.
pub fn bytes(data: &[u8]) -> Value {
    envelope("base64", Value::String(STANDARD.encode(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untags_the_captured_envelopes() {
        let captured = json!([
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"},
            {"__type__": "date", "__value__": "2024-01-02"},
            {"__type__": "time", "__value__": "01:02:03"},
            {"__type__": "decimal", "__value__": "1.50"},
            {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            {"__type__": "bytes", "__value__": "abc"},
            {"__type__": "base64", "__value__": "/wA="}
        ]);
        assert_eq!(
            untag(captured).unwrap(),
            json!([
                "2024-01-02T03:04:05+00:00",
                "2024-01-02",
                "01:02:03",
                "1.50",
                "12345678-1234-5678-1234-567812345678",
                "abc",
                [255, 0]
            ])
        );
    }

    #[test]
    fn unknown_type_is_an_error_and_lookalikes_are_left_alone() {
        assert!(untag(json!({"__type__": "pickle", "__value__": "x"})).is_err());
        let three_keys = json!({"__type__": "datetime", "__value__": "x", "other": 1});
        assert_eq!(untag(three_keys.clone()).unwrap(), three_keys);
    }

    #[test]
    fn builders_write_what_untag_reads() {
        let id = uuid::Uuid::parse_str("12345678-1234-5678-1234-567812345678").unwrap();
        assert_eq!(untag(uuid(&id)).unwrap(), json!(id.to_string()));
        assert_eq!(untag(bytes(&[255, 0])).unwrap(), json!([255, 0]));
        let when = chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            untag(datetime(&when)).unwrap(),
            json!("2024-01-02T03:04:05+00:00")
        );
        assert_eq!(untag(decimal("1.50")).unwrap(), json!("1.50"));
    }
}
