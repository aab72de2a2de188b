//! Hostile messages, written straight to the broker below our own encoders: raw LPUSH into
//! kombu's list on Redis, basic_publish on RabbitMQ. Every one of them must end in the
//! queue's dead-letter queue with a reason, and none may stop or pin a worker.
//!
//! Each message carries a marker that survives dead-lettering, so the checker can tell
//! the kinds apart: the task id `poison-<kind>-<n>` where the headers are readable, and the
//! text `poison:<kind>:<n>` in the raw bytes where they are not.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::worker::TASK;

/// The kinds of hostile message, in the order they are mixed.
pub const KINDS: &[&str] = &[
    "invalid-json",
    "wrong-body-shape",
    "unknown-task",
    "big-body",
    "huge-numbers",
    "nan-numbers",
    "invalid-utf8",
    "unknown-content-type",
    "missing-headers",
    "broken-envelope",
];

/// Size of the body of a `big-body` message.
const BIG: usize = 10 * 1024 * 1024;

/// Options of `queue-chaos poison`.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long)]
    broker: String,
    #[arg(long)]
    queue: String,
    /// Hostile messages in total.
    #[arg(long)]
    count: usize,
    /// How many of them are `big-body` (10 MB each); the rest spread over the other kinds.
    #[arg(long, default_value_t = 10)]
    big: usize,
    /// Messages per burst, and the pause between bursts (to mix them into the good ones).
    #[arg(long, default_value_t = 50)]
    burst: usize,
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
}

/// The kind of the `n`-th hostile message of `count`, `big` of them big.
fn kind_of(n: usize, count: usize, big: usize) -> &'static str {
    let big = big.min(count);
    if let Some(every) = count.checked_div(big)
        && n % every == 0
        && n / every < big
    {
        return "big-body";
    }
    let others: Vec<&str> = KINDS.iter().copied().filter(|k| *k != "big-body").collect();
    others[n % others.len()]
}

/// The kind named by a marker in `text` (`poison-<kind>-<n>` or `poison:<kind>:<n>`).
pub fn classify(text: &[u8]) -> Option<&'static str> {
    let mut rest = text;
    while let Some(at) = find(rest, b"poison") {
        let after = &rest[at + b"poison".len()..];
        if let [b'-' | b':', tail @ ..] = after {
            // Longest name first: none is a prefix of another, but be safe.
            if let Some(kind) = KINDS.iter().find(|k| tail.starts_with(k.as_bytes())) {
                return Some(kind);
            }
        }
        rest = after;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

pub async fn run(options: Options) -> crate::Result<()> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let plan: Vec<(usize, &str)> = (0..options.count)
        .map(|n| (n, kind_of(n, options.count, options.big)))
        .collect();
    let mut target = Target::connect(&options.broker, &options.queue).await?;
    for burst in plan.chunks(options.burst.max(1)) {
        for (n, kind) in burst {
            target.send(kind, *n).await?;
            *counts.entry(kind).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(options.pace_ms)).await;
    }
    for (kind, count) in &counts {
        println!("poison kind {kind} {count}");
    }
    println!("poison total {}", options.count);
    Ok(())
}

enum Target {
    Redis {
        connection: crate::resp::Connection,
        queue: String,
    },
    Amqp {
        channel: Box<lapin::Channel>,
        queue: String,
        _connection: Box<Connection>,
    },
}

impl Target {
    async fn connect(url: &str, queue: &str) -> crate::Result<Self> {
        // The queue exists as our broker declares it (bindings, dead-letter arguments).
        let app = crate::worker::client(url, "none", queue).await?;
        app.broker().declare_queue(queue).await?;
        if url.starts_with("redis") {
            return Ok(Target::Redis {
                connection: crate::resp::Connection::open(url)?,
                queue: queue.to_owned(),
            });
        }
        let handle = tokio::runtime::Handle::current();
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::default().with_handle(handle.clone()))
            .with_reactor(tokio_reactor_trait::Tokio::default().with_handle(handle));
        let base = url.split('?').next().unwrap_or(url);
        let connection = Connection::connect(base, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        Ok(Target::Amqp {
            channel: Box::new(channel),
            queue: queue.to_owned(),
            _connection: Box::new(connection),
        })
    }

    async fn send(&mut self, kind: &str, n: usize) -> crate::Result<()> {
        match self {
            Target::Redis { connection, queue } => {
                let raw = redis_message(kind, n, queue);
                // kombu's list for priority 0, the plain queue name; BRPOP takes the tail.
                connection.command(&[b"LPUSH", queue.as_bytes(), &raw])?;
            }
            Target::Amqp { channel, queue, .. } => {
                let (properties, body) = amqp_message(kind, n);
                channel
                    .basic_publish(
                        "",
                        queue.as_str(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await?
                    .await?;
            }
        }
        Ok(())
    }
}

fn id(kind: &str, n: usize) -> String {
    format!("poison-{kind}-{n}")
}

fn marker(kind: &str, n: usize) -> String {
    format!("poison:{kind}:{n}")
}

/// Protocol v2 headers as Celery writes them, for task `task`.
fn headers(task: &str, id: &str) -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "lang": "py", "task": task, "id": id, "shadow": null, "eta": null, "expires": null,
        "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
        "root_id": id, "parent_id": null, "argsrepr": "(0,)", "kwargsrepr": "{}",
        "origin": "chaos@poison", "ignore_result": true,
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// A body `chaos.record` runs with, the marker in the embed (unknown embed keys are kept
/// out of the way), so a message that runs instead of being dead-lettered shows in the sink.
fn good_body(kind: &str, n: usize) -> Vec<u8> {
    format!(
        r#"[[0], {{}}, {{"callbacks": null, "errbacks": null, "chain": null, "chord": null, "chaos_marker": "{}"}}]"#,
        marker(kind, n)
    )
    .into_bytes()
}

/// A kombu envelope as kombu writes it on Redis.
fn envelope(
    headers: serde_json::Map<String, Value>,
    body: &[u8],
    content_type: &str,
    id: &str,
    queue: &str,
) -> Value {
    // The marker also at the top (kombu ignores unknown keys): readable in the raw bytes
    // whatever else is broken.
    let marker = id.replacen("poison-", "poison:", 1);
    json!({
        "chaos_marker": marker,
        "body": STANDARD.encode(body),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {
            "correlation_id": id, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": format!("tag-{id}"),
        },
    })
}

/// The raw bytes of the `n`-th message of `kind` on Redis.
fn redis_message(kind: &str, n: usize, queue: &str) -> Vec<u8> {
    let id = id(kind, n);
    let body = good_body(kind, n);
    let plain = |headers| envelope(headers, &body, "application/json", &id, queue);
    let bytes = |value: Value| serde_json::to_vec(&value).expect("JSON values serialize");
    match kind {
        "invalid-json" => format!(
            r#"{{"body": "{}", "content-type": "application/json", "headers": {{"task": "#,
            marker(kind, n)
        )
        .into_bytes(),
        "wrong-body-shape" => bytes(envelope(
            headers(TASK, &id),
            format!(r#"{{"poison": "{}"}}"#, marker(kind, n)).as_bytes(),
            "application/json",
            &id,
            queue,
        )),
        "unknown-task" => bytes(plain(headers("chaos.no_such_task", &id))),
        "big-body" => bytes(envelope(
            headers(TASK, &id),
            &vec![b'['; BIG],
            "application/json",
            &id,
            queue,
        )),
        "huge-numbers" => {
            let mut headers = headers(TASK, &id);
            // Values outside what the fields can mean (large but valid ones, such as a
            // time limit of 1e300 s, saturate by contract and are not hostile).
            match n % 5 {
                0 => headers.insert("timelimit".into(), json!([-5, null])),
                1 => headers.insert("eta".into(), json!("+262144-01-01T00:00:00")),
                2 => headers.insert("eta".into(), json!(1e308)),
                3 => headers.insert("expires".into(), json!(-1e308)),
                _ => headers.insert("retries".into(), json!(1e30)),
            };
            bytes(plain(headers))
        }
        "nan-numbers" => {
            // JSON has no NaN, but Python's json writes it: the text a Python producer sends.
            let mut headers = headers(TASK, &id);
            let field = ["timelimit", "eta", "expires"][n % 3];
            let placeholder = "__chaos_not_a_number__";
            let value = if field == "timelimit" {
                json!([placeholder, null])
            } else {
                json!(placeholder)
            };
            headers.insert(field.into(), value);
            let text = serde_json::to_string(&plain(headers)).expect("serializes");
            let nan = ["NaN", "Infinity", "-Infinity"][n % 3];
            text.replace(&format!("\"{placeholder}\""), nan)
                .into_bytes()
        }
        "invalid-utf8" => {
            if n % 2 == 0 {
                let mut raw = b"\xff\xfe".to_vec();
                raw.extend_from_slice(marker(kind, n).as_bytes());
                raw.extend_from_slice(b"\xc3\x28");
                raw
            } else {
                // A well-formed envelope but for one invalid byte inside a string.
                let text = serde_json::to_vec(&plain(headers("chaos.record~", &id))).unwrap();
                let at = find(&text, b"~").expect("the placeholder");
                let mut raw = text;
                raw[at] = 0xff;
                raw
            }
        }
        "unknown-content-type" => bytes(envelope(
            headers(TASK, &id),
            b"\x80\x04\x95poison pickle",
            "application/x-python-serialize",
            &id,
            queue,
        )),
        "missing-headers" => {
            let mut value = plain(headers(TASK, &id));
            if n % 2 == 0 {
                value.as_object_mut().unwrap().remove("headers");
            } else {
                let headers = value["headers"].as_object_mut().unwrap();
                headers.remove("task");
                headers.remove("id");
            }
            bytes(value)
        }
        "broken-envelope" => match n % 3 {
            0 => {
                let mut value = plain(headers(TASK, &id));
                value["body"] = json!("!!! not base64 !!!");
                bytes(value)
            }
            1 => bytes(json!([marker(kind, n), {"headers": "none"}])),
            _ => {
                let mut value = plain(headers(TASK, &id));
                value["properties"] = json!(7);
                bytes(value)
            }
        },
        other => unreachable!("unknown kind {other}"),
    }
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes()))
}

/// Headers as py-amqp encodes Celery's.
fn amqp_headers(task: &str, id: &str) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in [
        ("lang", long("py")),
        ("task", long(task)),
        ("id", long(id)),
        ("root_id", long(id)),
        ("retries", AMQPValue::LongInt(0)),
        (
            "timelimit",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void, AMQPValue::Void])),
        ),
        ("eta", AMQPValue::Void),
        ("expires", AMQPValue::Void),
        ("origin", long("chaos@poison")),
        ("ignore_result", AMQPValue::Boolean(true)),
    ] {
        table.insert(ShortString::from(key), value);
    }
    table
}

fn amqp_properties(headers: Option<FieldTable>, content_type: &str, id: &str) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from(content_type))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(2)
        .with_priority(0)
        .with_correlation_id(ShortString::from(id));
    match headers {
        Some(headers) => properties.with_headers(headers),
        None => properties,
    }
}

/// The properties and body of the `n`-th message of `kind` on RabbitMQ.
fn amqp_message(kind: &str, n: usize) -> (BasicProperties, Vec<u8>) {
    let id = id(kind, n);
    let json = "application/json";
    let with = |headers: FieldTable| amqp_properties(Some(headers), json, &id);
    let set = |mut headers: FieldTable, key: &str, value: AMQPValue| {
        headers.insert(ShortString::from(key), value);
        headers
    };
    let pair = |hard: AMQPValue, soft: AMQPValue| {
        AMQPValue::FieldArray(FieldArray::from(vec![hard, soft]))
    };
    match kind {
        "invalid-json" => (
            with(amqp_headers(TASK, &id)),
            format!(r#"[[0], {{"{}": "#, marker(kind, n)).into_bytes(),
        ),
        "wrong-body-shape" => (
            with(amqp_headers(TASK, &id)),
            format!(r#"{{"poison": "{}"}}"#, marker(kind, n)).into_bytes(),
        ),
        "unknown-task" => (
            with(amqp_headers("chaos.no_such_task", &id)),
            good_body(kind, n),
        ),
        "big-body" => (with(amqp_headers(TASK, &id)), vec![b'['; BIG]),
        "huge-numbers" => {
            let headers = amqp_headers(TASK, &id);
            let headers = match n % 5 {
                0 => set(
                    headers,
                    "timelimit",
                    pair(AMQPValue::LongInt(-5), AMQPValue::Void),
                ),
                1 => set(headers, "eta", long("+262144-01-01T00:00:00")),
                2 => set(headers, "eta", AMQPValue::Double(1e308)),
                3 => set(headers, "expires", AMQPValue::Double(-1e308)),
                _ => set(headers, "retries", AMQPValue::LongLongInt(1 << 32)),
            };
            (with(headers), good_body(kind, n))
        }
        "nan-numbers" => {
            // RabbitMQ cannot hold a NaN or infinite double in a header table (the channel
            // process crashes and closes the connection with INTERNAL_ERROR, so no worker
            // ever sees one): what arrives is Python's spelling of them, as text.
            let headers = amqp_headers(TASK, &id);
            let nan = ["NaN", "Infinity", "-Infinity"][n % 3];
            let headers = match n % 3 {
                0 => set(headers, "timelimit", pair(long(nan), AMQPValue::Void)),
                1 => set(headers, "timelimit", pair(AMQPValue::Void, long(nan))),
                _ => set(headers, "eta", long(nan)),
            };
            (with(headers), good_body(kind, n))
        }
        "invalid-utf8" => {
            if n % 2 == 0 {
                let mut body = b"[[0], {\"\xff\xfe".to_vec();
                body.extend_from_slice(marker(kind, n).as_bytes());
                body.extend_from_slice(b"\xc3\x28\": 1}, {}]");
                (with(amqp_headers(TASK, &id)), body)
            } else {
                let headers = set(
                    amqp_headers(TASK, &id),
                    "task",
                    AMQPValue::LongString(LongString::from(&b"chaos.record\xff\xfe"[..])),
                );
                (with(headers), good_body(kind, n))
            }
        }
        "unknown-content-type" => (
            amqp_properties(
                Some(amqp_headers(TASK, &id)),
                "application/x-python-serialize",
                &id,
            ),
            b"\x80\x04\x95poison pickle".to_vec(),
        ),
        "missing-headers" => {
            let body = format!(r#"[[0], {{"marker": "{}"}}, {{}}]"#, marker(kind, n));
            if n % 2 == 0 {
                (amqp_properties(None, json, &id), body.into_bytes())
            } else {
                let mut headers = FieldTable::default();
                headers.insert(ShortString::from("lang"), long("py"));
                (with(headers), body.into_bytes())
            }
        }
        "broken-envelope" => {
            let headers = amqp_headers(TASK, &id);
            let headers = match n % 3 {
                0 => set(headers, "timelimit", long("soon")),
                1 => set(headers, "retries", long("many")),
                _ => set(headers, "compression", long("application/x-rot13")),
            };
            (with(headers), good_body(kind, n))
        }
        other => unreachable!("unknown kind {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_mixed_in_and_big_ones_are_capped() {
        let kinds: Vec<&str> = (0..1000).map(|n| kind_of(n, 1000, 3)).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "big-body").count(), 3);
        for kind in KINDS {
            assert!(kinds.contains(kind), "{kind} never sent");
        }
    }

    #[test]
    fn every_message_carries_a_marker_of_its_kind() {
        for kind in KINDS.iter().filter(|k| **k != "big-body") {
            for n in 0..6 {
                let raw = redis_message(kind, n, "q");
                assert_eq!(classify(&raw), Some(*kind), "redis {kind} {n}");
                let (properties, body) = amqp_message(kind, n);
                // Where the headers do not decode, the body is all a dead letter shows.
                let marked = if ["unknown-content-type"].contains(kind) {
                    properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|id| classify(id.as_str().as_bytes()))
                } else {
                    classify(&body)
                };
                assert_eq!(marked, Some(*kind), "amqp {kind} {n}");
            }
        }
    }

    #[test]
    fn nan_messages_hold_the_literal_python_writes() {
        let raw = redis_message("nan-numbers", 0, "q");
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("[NaN,null]"), "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
}
