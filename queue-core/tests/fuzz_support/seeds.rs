//! Valid seeds: the wire vectors of `queue-core/tests/vectors/` (Celery 5.7 messages as
//! Python produced them, copied from the wire spec and `celery-wire-samples.txt`), plus a
//! few documents that set every numeric option, so that mutations reach each of them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const ENVELOPES: &str = include_str!("../vectors/envelopes.json");
const MALFORMED: &str = include_str!("../vectors/malformed.json");
const AMQP_MESSAGE: &str = include_str!("../vectors/amqp_message.json");
const SIGNATURES: &str = include_str!("../vectors/signatures.json");
const KOMBU_TYPES: &str = include_str!("../vectors/kombu_types.json");

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector files are JSON")
}

fn vectors(text: &str) -> Vec<Value> {
    load(text)["vectors"]
        .as_array()
        .expect("a vectors array")
        .clone()
}

/// Options of a callback with every number and time set.
fn full_options() -> Value {
    json!({
        "task_id": "c-1", "queue": "celery", "priority": 5, "countdown": 10,
        "eta": "2026-11-24T15:25:28.564043+00:00", "expires": 60, "retries": 1,
        "ignore_result": false, "time_limit": 30, "soft_time_limit": 20.5,
        "link": {"task": "tasks.next", "args": [], "kwargs": {}, "options": {"countdown": 1}},
        "link_error": [{"task": "tasks.on_err", "options": {"expires": "2026-11-24T15:26:18+00:00"}}],
        "group_id": "g-1", "group_index": 0, "headers": {"x": 1}
    })
}

/// Signatures: the vectors and one with every option.
pub fn signatures() -> Vec<Value> {
    let mut seeds: Vec<Value> = vectors(SIGNATURES)
        .iter()
        .map(|vector| vector["signature"].clone())
        .collect();
    seeds.push(
        json!({"task": "tasks.mul", "args": [10], "kwargs": {"k": 1},
        "options": full_options(), "subtask_type": null, "immutable": false}),
    );
    seeds
}

/// kombu typed values (and their plain forms).
pub fn kombu_values() -> Vec<Value> {
    let file = load(KOMBU_TYPES);
    let mut seeds = Vec::new();
    for vector in file["vectors"].as_array().into_iter().flatten() {
        seeds.push(vector["tagged"].clone());
        seeds.push(vector["plain"].clone());
    }
    seeds.push(Value::Array(seeds.clone()));
    seeds
}

/// Bodies `[args, kwargs, embed]`: the vectors' bodies, and bodies carrying kombu values and
/// each signature as callback, errback, chain and chord.
pub fn bodies() -> Vec<Value> {
    let mut seeds: Vec<Value> = vectors(ENVELOPES)
        .iter()
        .map(|vector| vector["body"].clone())
        .filter(|body| !body.is_null())
        .collect();
    let values = kombu_values();
    for signature in signatures() {
        seeds.push(json!([values.clone(), {"when": values[0].clone()},
            {"callbacks": [signature.clone()], "errbacks": [signature.clone()],
             "chain": [signature.clone()], "chord": signature}]));
    }
    seeds
}

/// Kombu envelopes: the vectors (full and partial), the malformed ones, and envelopes whose
/// bodies are the body seeds.
pub fn envelopes() -> Vec<Value> {
    let mut seeds: Vec<Value> = vectors(ENVELOPES)
        .iter()
        .map(|vector| vector["envelope"].clone())
        .collect();
    let template = seeds[0].clone();
    for body in bodies() {
        let mut envelope = template.clone();
        envelope["body"] = Value::from(STANDARD.encode(body.to_string()));
        seeds.push(envelope);
    }
    let mut timed = template;
    timed["headers"]["eta"] = json!("2026-11-24T15:25:28.564043+00:00");
    timed["headers"]["expires"] = json!("2026-11-24T15:26:18.564043+00:00");
    timed["headers"]["timelimit"] = json!([30, 20.5]);
    timed["headers"]["group_index"] = json!(1);
    timed["headers"]["retries"] = json!(2);
    seeds.push(timed);
    for vector in vectors(MALFORMED) {
        if vector["envelope"].is_object() {
            seeds.push(vector["envelope"].clone());
        }
    }
    seeds
}

/// Raw malformed envelopes (not JSON documents), for byte mutation.
pub fn malformed_raw() -> Vec<Vec<u8>> {
    vectors(MALFORMED)
        .iter()
        .filter_map(|vector| vector["raw"].as_str())
        .map(|raw| raw.as_bytes().to_vec())
        .collect()
}

/// Protocol v2 headers (as JSON objects).
pub fn headers() -> Vec<Value> {
    let mut seeds: Vec<Value> = envelopes()
        .iter()
        .map(|envelope| envelope["headers"].clone())
        .filter(Value::is_object)
        .collect();
    seeds.push(load(AMQP_MESSAGE)["properties"]["application_headers"].clone());
    seeds
}

/// AMQP messages as `{"properties": {...}, "body": "..."}`: the captured py-amqp message,
/// and the envelope vectors' headers and properties in AMQP form.
pub fn amqp_messages() -> Vec<Value> {
    let captured = load(AMQP_MESSAGE);
    let mut seeds = vec![json!({"properties": captured["properties"], "body": captured["body"]})];
    for envelope in envelopes() {
        let Some(body) = envelope["body"]
            .as_str()
            .and_then(|text| STANDARD.decode(text).ok())
            .filter(|_| envelope["headers"]["task"].is_string())
        else {
            continue;
        };
        let properties = &envelope["properties"];
        let mut amqp = json!({
            "content_type": envelope["content-type"],
            "content_encoding": envelope["content-encoding"],
            "application_headers": envelope["headers"],
            "delivery_mode": properties["delivery_mode"],
            "priority": properties["priority"],
            "correlation_id": properties["correlation_id"],
            "reply_to": properties["reply_to"],
            "expiration": properties["expiration"],
        });
        if let Value::Object(map) = &mut amqp {
            map.retain(|_, value| !value.is_null());
        }
        seeds.push(json!({
            "properties": amqp,
            "body": String::from_utf8_lossy(&body),
        }));
    }
    seeds
}
