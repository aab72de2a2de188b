//! AMQP header fuzz (issue 9, fault suite row "decoder fuzz"): a delivery's basic properties
//! as they arrive in a content header frame, parsed by lapin's own parser (amq-protocol),
//! then decoded by `wire::decode` into our `Message` (protocol v2 headers from the field
//! table, properties), used as the worker uses it, and written back as the republish paths
//! do. Inputs are the captured py-amqp message and the wire vectors in AMQP form, mutated at
//! the JSON level (hostile numbers, dates, types, nesting), at the AMQP level (every field
//! type, NaN doubles, huge timestamps and decimals, invalid UTF-8) and at the byte level
//! (length fields, flags), plus random bytes.
//!
//! The summary line is `header-fuzz inputs=... panics=... max_alloc_bytes=... seconds=...`;
//! settings as in `queue-core/tests/fuzz_support` (`QUEUE_FUZZ_INPUTS`, `QUEUE_FUZZ_SEED`).

// The decoder is crate-private; the test compiles the same source file so that it fuzzes
// exactly what the consumer runs.
#[allow(dead_code)]
#[path = "../src/wire/mod.rs"]
mod wire;

#[path = "../../queue-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use amq_protocol::frame::WriteContext;
use fuzz_support::{Config, Rng, Target, exercise, mutate, seeds};
use lapin::BasicProperties;
use lapin::protocol::basic::{gen_properties, parse_properties};
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use serde_json::{Map, Value};

const DELAY_PREFIX: &str = "queue.delay";

/// Nesting of the fuzzed documents: past the decoder's own bound (32), within what lapin's
/// recursive parser takes on a 2 MiB stack in a debug build (about 250 levels).
const FUZZ_DEPTH: usize = 64;

/// Parses the properties of a content header frame (the rest is the body) and decodes them.
fn decode_delivery(input: &[u8]) -> bool {
    let Ok((body, properties)) = parse_properties(input) else {
        return false;
    };
    let _ = wire::republish_properties(&properties, Some(("x-fuzz", "reason")));
    match wire::decode(&properties, body, DELAY_PREFIX) {
        Ok(message) => {
            exercise::message(&message);
            let _ = wire::properties(&message, true);
            let _ = wire::properties(&message, false);
            true
        }
        Err(_) => false,
    }
}

/// Content header frame bytes (properties, then the body) for `properties` and `body`.
fn encode(properties: &BasicProperties, body: &[u8]) -> Vec<u8> {
    let context = WriteContext::from(Vec::new());
    let mut bytes = gen_properties(properties)(context).map_or_else(|_| Vec::new(), |c| c.write);
    bytes.extend_from_slice(body);
    bytes
}

fn short(text: &str) -> ShortString {
    // Short strings hold 255 bytes at most; longer ones are cut (at a character boundary).
    let mut cut = text.len().min(255);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    ShortString::from(&text[..cut])
}

/// An exotic AMQP value: field types py-amqp never writes, and edge values of each.
fn exotic(rng: &mut Rng) -> AMQPValue {
    let invalid_utf8: &[u8] = b"\xff\xfe\xc3(\xed\xa0\x80";
    match rng.random_range(0..20) {
        0 => AMQPValue::Timestamp(
            *[0, u64::MAX, 253_402_300_800, 1 << 63]
                .choose(rng)
                .unwrap_or(&0),
        ),
        1 => AMQPValue::DecimalValue(DecimalValue {
            scale: *[0, 1, 255].choose(rng).unwrap_or(&0),
            value: *[0, 1, u32::MAX].choose(rng).unwrap_or(&0),
        }),
        2 => AMQPValue::Float(
            *[f32::NAN, f32::INFINITY, f32::MIN, -0.0]
                .choose(rng)
                .unwrap_or(&0.0),
        ),
        3 => AMQPValue::Double(
            *[
                f64::NAN,
                f64::NEG_INFINITY,
                f64::MAX,
                1e300,
                -1.0,
                -0.0,
                5e-324,
            ]
            .choose(rng)
            .unwrap_or(&0.0),
        ),
        4 => AMQPValue::LongLongInt(*[i64::MIN, i64::MAX, -1].choose(rng).unwrap_or(&0)),
        5 => AMQPValue::LongUInt(u32::MAX),
        6 => AMQPValue::LongInt(*[i32::MIN, -1].choose(rng).unwrap_or(&0)),
        7 => AMQPValue::ShortShortInt(-128),
        8 => AMQPValue::ShortShortUInt(255),
        9 => AMQPValue::ShortInt(i16::MIN),
        10 => AMQPValue::ShortUInt(u16::MAX),
        11 => AMQPValue::ByteArray(ByteArray::from(invalid_utf8)),
        12 => AMQPValue::LongString(LongString::from(invalid_utf8)),
        13 => AMQPValue::ShortString(short("2024-01-02T03:04:05+00:00")),
        14 => AMQPValue::Boolean(true),
        15 => AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void; 2])),
        16 => AMQPValue::FieldTable(FieldTable::default()),
        _ => AMQPValue::Void,
    }
}

/// A JSON value as an AMQP value, placeholders (`mutate::RAW`) as the numbers they stand
/// for; with `noise`, some nodes become exotic AMQP values instead.
fn to_amqp(rng: &mut Rng, value: &Value, noise: u32) -> AMQPValue {
    if noise > 0 && rng.random_ratio(1, noise) {
        return exotic(rng);
    }
    match value {
        Value::String(text) if text.starts_with(mutate::RAW) => {
            let token = &text[mutate::RAW.len()..];
            if let Ok(integer) = token.parse::<i64>() {
                AMQPValue::LongLongInt(integer)
            } else if let Ok(number) = token.parse::<f64>() {
                AMQPValue::Double(number)
            } else {
                AMQPValue::LongString(LongString::from(token.as_bytes()))
            }
        }
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(|item| to_amqp(rng, item, noise))
                .collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(to_table(rng, map, noise)),
        other => wire::json_to_amqp(other),
    }
}

fn to_table(rng: &mut Rng, map: &Map<String, Value>, noise: u32) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        table.insert(short(mutate::plain_key(key)), to_amqp(rng, value, noise));
    }
    table
}

fn text(value: &Value) -> Option<ShortString> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(short(mutate::plain_key(text))),
        other => Some(short(&other.to_string())),
    }
}

fn octet(value: &Value) -> Option<u8> {
    match value {
        Value::Number(number) => number.as_u64().map(|n| n as u8),
        Value::String(text) => text
            .strip_prefix(mutate::RAW)?
            .parse::<i64>()
            .ok()
            .map(|n| n as u8),
        _ => None,
    }
}

/// `{"properties": {...}, "body": "..."}` as content header frame bytes.
fn encode_document(rng: &mut Rng, document: &Value, noise: u32) -> Vec<u8> {
    let fields = &document["properties"];
    let mut properties = BasicProperties::default();
    if let Some(value) = text(&fields["content_type"]) {
        properties = properties.with_content_type(value);
    }
    if let Some(value) = text(&fields["content_encoding"]) {
        properties = properties.with_content_encoding(value);
    }
    match &fields["application_headers"] {
        Value::Object(map) => properties = properties.with_headers(to_table(rng, map, noise)),
        Value::Null => {}
        other => {
            let mut table = FieldTable::default();
            table.insert(short("task"), to_amqp(rng, other, noise));
            properties = properties.with_headers(table);
        }
    }
    if let Some(value) = octet(&fields["delivery_mode"]) {
        properties = properties.with_delivery_mode(value);
    }
    if let Some(value) = octet(&fields["priority"]) {
        properties = properties.with_priority(value);
    }
    if let Some(value) = text(&fields["correlation_id"]) {
        properties = properties.with_correlation_id(value);
    }
    if let Some(value) = text(&fields["reply_to"]) {
        properties = properties.with_reply_to(value);
    }
    if let Some(value) = text(&fields["expiration"]) {
        properties = properties.with_expiration(value);
    }
    if let Some(value) = text(&fields["message_id"]) {
        properties = properties.with_message_id(value);
    }
    if let Some(value) = fields["timestamp"].as_u64() {
        properties = properties.with_timestamp(value);
    }
    let body = match &document["body"] {
        Value::String(text) => text.as_bytes().to_vec(),
        other => mutate::to_bytes(other),
    };
    encode(&properties, &body)
}

fn generator(seeds: Vec<Value>) -> impl Fn(&mut Rng, usize) -> Vec<u8> + Send + Sync {
    let encoded: Vec<Vec<u8>> = {
        let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(0);
        seeds
            .iter()
            .map(|seed| encode_document(&mut rng, seed, 0))
            .collect()
    };
    move |rng, max| match rng.random_range(0..100) {
        0..5 => mutate::random_bytes(rng, max),
        5..35 => {
            let mut data = encoded.choose(rng).cloned().unwrap_or_default();
            for _ in 0..mutate::stack_depth(rng) {
                mutate::mutate_bytes(rng, &mut data, &encoded, max);
            }
            data
        }
        35..45 => {
            // Headers generated from scratch.
            let mut headers = Map::new();
            for _ in 0..rng.random_range(0..12) {
                let key = (*mutate::KEYS.choose(rng).unwrap_or(&"task")).to_owned();
                headers.insert(key, mutate::random_value(rng, 3));
            }
            let document = serde_json::json!({
                "properties": {"application_headers": headers},
                "body": mutate::random_value(rng, 3),
            });
            encode_document(rng, &document, 8)
        }
        _ => {
            let mut document = seeds.choose(rng).cloned().unwrap_or_default();
            if rng.random() {
                // The body as JSON, so that mutations reach `[args, kwargs, embed]` too.
                if let Some(body) = document["body"]
                    .as_str()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                {
                    document["body"] = body;
                }
            }
            for _ in 0..mutate::stack_depth(rng) {
                mutate::mutate_value(rng, &mut document, &seeds, max);
            }
            // Deeper nesting overflows lapin's own parser (see the nesting test below).
            mutate::clip_depth(&mut document, FUZZ_DEPTH);
            let noise = if rng.random_ratio(1, 4) { 6 } else { 0 };
            let mut data = encode_document(rng, &document, noise);
            if rng.random_ratio(1, 8) {
                mutate::mutate_bytes(rng, &mut data, &encoded, max);
            }
            data
        }
    }
}

/// An AMQP value in brief: strings as text, numbers with their field type.
fn show(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => format!("{:?}", String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::ShortString(text) => format!("short {:?}", text.as_str()),
        AMQPValue::ByteArray(bytes) => format!("bytes {:?}", bytes.as_slice()),
        AMQPValue::FieldArray(items) => {
            let items: Vec<String> = items.as_slice().iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        AMQPValue::FieldTable(table) => show_table(table),
        AMQPValue::Void => "void".to_owned(),
        other => format!("{other:?}"),
    }
}

fn show_table(table: &FieldTable) -> String {
    let entries: Vec<String> = table
        .inner()
        .iter()
        .map(|(key, value)| format!("{}: {}", key.as_str(), show(value)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn describe(input: &[u8]) -> String {
    match parse_properties(input) {
        Ok((body, properties)) => {
            let headers = properties.headers().as_ref().map(show_table);
            let rest = properties.clone().with_headers(FieldTable::default());
            format!(
                "headers {}; other properties {rest:?}; body {}",
                headers.unwrap_or_else(|| "none".to_owned()),
                fuzz_support::escape(body, 2_000)
            )
        }
        Err(error) => format!("(does not parse: {error})"),
    }
}

/// The `n`-th one-step reduction of a delivery: a header removed, or the body reduced as JSON
/// (see `mutate::json_reduction`).
fn reduce_delivery(input: &[u8], n: usize) -> Option<Vec<u8>> {
    let (body, properties) = parse_properties(input).ok()?;
    let headers = properties.headers().clone().unwrap_or_default();
    let keys: Vec<ShortString> = headers.inner().keys().cloned().collect();
    if let Some(key) = keys.get(n) {
        let mut fewer = FieldTable::default();
        for (other, value) in headers.inner() {
            if other != key {
                fewer.insert(other.clone(), value.clone());
            }
        }
        return Some(encode(&properties.clone().with_headers(fewer), body));
    }
    let n = n - keys.len();
    let reduced = mutate::json_reduction(body, n)?;
    Some(encode(&properties, &reduced))
}

fn targets() -> Vec<Target> {
    vec![Target {
        name: "amqp-delivery",
        generate: Box::new(generator(seeds::amqp_messages())),
        run: decode_delivery,
        reduce: Some(reduce_delivery),
        describe: Some(describe),
    }]
}

#[test]
fn amqp_header_decoder_survives_generated_and_mutated_deliveries() {
    let config = Config::from_env();
    let report = fuzz_support::run(
        "header-fuzz",
        "amqp_header_decoder_survives_generated_and_mutated_deliveries",
        &targets(),
        &config,
    );
    fuzz_support::assert_clean("header-fuzz", &report);
    assert_eq!(report.inputs, config.only.map_or(config.inputs, |_| 1));
}

/// The fuzzer starts from deliveries that decode: the captured py-amqp message and the
/// wire vectors, encoded as lapin would receive them.
#[test]
fn every_seed_decodes() {
    exercise::init();
    let seeds = seeds::amqp_messages();
    assert!(seeds.len() >= 5, "only {} seeds", seeds.len());
    let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(0);
    for seed in &seeds {
        let input = encode_document(&mut rng, seed, 0);
        let (body, properties) = parse_properties(input.as_slice()).expect("seeds parse");
        let message = wire::decode(&properties, body, DELAY_PREFIX)
            .unwrap_or_else(|error| panic!("{seed}: {}", error.error));
        assert_eq!(
            message.task_name(),
            seed["properties"]["application_headers"]["task"]
                .as_str()
                .unwrap_or_default()
        );
    }
}

/// Set in the child process of the nesting test.
const NESTING_CHILD: &str = "QUEUE_FUZZ_NESTING_CHILD";

/// Headers `{"task", "id", "deep": [[[...]]]}` nested `depth` levels (arrays or tables).
fn nested_properties(tables: bool, depth: usize) -> BasicProperties {
    let mut value = AMQPValue::Void;
    for _ in 0..depth {
        value = if tables {
            let mut table = FieldTable::default();
            table.insert(short("k"), value);
            AMQPValue::FieldTable(table)
        } else {
            AMQPValue::FieldArray(FieldArray::from(vec![value]))
        };
    }
    let mut headers = FieldTable::default();
    headers.insert(
        short("task"),
        AMQPValue::LongString(LongString::from(&b"t"[..])),
    );
    headers.insert(
        short("id"),
        AMQPValue::LongString(LongString::from(&b"i"[..])),
    );
    headers.insert(short("deep"), value);
    BasicProperties::default().with_headers(headers)
}

/// Runs `f` on a thread with a stack large enough for lapin's recursive types (building,
/// encoding and dropping them recurses once per level).
fn on_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn_scoped(scope, f)
            .expect("a thread")
            .join()
            .expect("no panic")
    })
}

fn decode_deep_deliveries() {
    // 26,000 levels of arrays (5 bytes each) and 21,000 of tables fit one 128 KiB frame,
    // RabbitMQ's default frame_max.
    for (tables, depth) in [(false, 40), (false, 1_000), (false, 26_000), (true, 21_000)] {
        let properties = on_large_stack(|| nested_properties(tables, depth));
        let (result, properties) = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(fuzz_support::WORKER_STACK)
                .spawn_scoped(scope, move || {
                    let result = wire::decode(&properties, b"[[], {}, null]", DELAY_PREFIX)
                        .map(|message| message.task_name().to_owned())
                        .map_err(|undecodable| undecodable.error);
                    (result, properties)
                })
                .expect("a thread")
                .join()
                .expect("decoding does not panic")
        });
        eprintln!("depth {depth} (tables: {tables}): {result:?}");
        assert!(result.is_err(), "nesting {depth} deep was accepted");
        on_large_stack(move || drop(properties));
    }
}

/// Nesting as deep as one frame holds reaches the decoder as lapin hands it over; on a
/// worker's 2 MiB stack the decoder refuses it (dead letter) instead of overflowing the stack,
/// which would abort the whole worker process. Runs in a child process, which an overflow
/// kills without taking the test harness down.
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    if std::env::var_os(NESTING_CHILD).is_some() {
        decode_deep_deliveries();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "deep_nesting_is_refused_without_overflowing_the_stack",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NESTING_CHILD, "1")
        .output()
        .expect("the test binary runs itself");
    assert!(
        output.status.success(),
        "decoding deeply nested headers failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A delivery with the protocol v2 `task` and `id` headers, `extra` headers and `body`.
fn delivery(extra: Vec<(&str, AMQPValue)>, body: &str) -> Vec<u8> {
    let mut headers = FieldTable::default();
    headers.insert(
        short("task"),
        AMQPValue::LongString(LongString::from(&b"tasks.add"[..])),
    );
    headers.insert(
        short("id"),
        AMQPValue::LongString(LongString::from(&b"id-1"[..])),
    );
    for (key, value) in extra {
        headers.insert(short(key), value);
    }
    let properties = BasicProperties::default()
        .with_content_type(short("application/json"))
        .with_headers(headers);
    encode(&properties, body.as_bytes())
}

/// Deliveries the fuzzer found panicking (minimised) before hostile numbers were handled:
/// a time limit header (`protocol/mod.rs`), callback options applied by the worker
/// (`signature.rs`, `app.rs`); and field types py-amqp never writes.
#[test]
fn deliveries_found_panicking_are_decoded_or_rejected() {
    let limits = |hard: AMQPValue, soft: AMQPValue| {
        vec![(
            "timelimit",
            AMQPValue::FieldArray(FieldArray::from(vec![hard, soft])),
        )]
    };
    let empty = "[[], {}, null]";
    let inputs = [
        delivery(
            limits(AMQPValue::LongInt(30), AMQPValue::Double(1e308)),
            empty,
        ),
        delivery(
            limits(AMQPValue::Double(f64::NAN), AMQPValue::Float(f32::INFINITY)),
            empty,
        ),
        delivery(
            limits(AMQPValue::Timestamp(u64::MAX), AMQPValue::LongLongInt(-1)),
            empty,
        ),
        delivery(vec![("eta", AMQPValue::Timestamp(u64::MAX))], empty),
        delivery(vec![("expires", AMQPValue::Double(1e300))], empty),
        delivery(vec![("retries", AMQPValue::LongLongInt(i64::MIN))], empty),
        delivery(
            vec![],
            r#"[[],null,{"chain":[{"task":"","options":{"time_limit":3e22}}]}]"#,
        ),
        delivery(
            vec![],
            r#"[[],null,{"errbacks":[{"options":{"expires":2e19}}]}]"#,
        ),
        delivery(
            vec![],
            r#"[[],null,{"chord":{"task":"","options":{"link":{"task":"","options":{"countdown":1e30}}}}}]"#,
        ),
    ];
    let targets = targets();
    let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let failures = fuzz_support::replay(&targets[0], &inputs);
    assert!(failures.is_empty(), "still failing: {failures:#?}");
}
