//! Round trips, kombu's encodings and hostile headers.

use super::table::MAX_DEPTH;
use super::*;
use lapin::types::{FieldArray, LongString};
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
fn ttl_past_rabbitmqs_largest_is_not_sent() {
    // RabbitMQ closes the channel on a TTL above ten years (`value_too_large`).
    let largest = queue_core::app::MAX_MESSAGE_TTL_MS;
    let mut message = Message::new(
        Headers::new("t", "i"),
        Properties {
            expiration: Some(largest.to_string()),
            ..Properties::default()
        },
        &queue_core::TaskBody::default(),
    );
    assert!(properties(&message, true).unwrap().expiration().is_some());
    message.properties.expiration = Some((largest + 1).to_string());
    assert!(properties(&message, true).unwrap().expiration().is_none());
    message.properties.expiration = Some(u64::MAX.to_string());
    assert!(properties(&message, true).unwrap().expiration().is_none());
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
