//! Wire test vectors: Celery 5.7 messages, task metas, exception dicts, signatures and kombu
//! typed values as Python produced them (copied into `tests/vectors/` from the wire spec and
//! the captured samples), and what this library makes of them.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{Map, Value, json};

use queue_core::backend::{GroupMeta, TaskMeta};
use queue_core::protocol::{Headers, Message, Properties, TaskBody, envelope, kombu, time};
use queue_core::signature::{Expires, Signature};
use queue_core::{App, TaskError, TaskState};

const ENVELOPES: &str = include_str!("vectors/envelopes.json");
const MALFORMED: &str = include_str!("vectors/malformed.json");
const AMQP_MESSAGE: &str = include_str!("vectors/amqp_message.json");
const TASK_META: &str = include_str!("vectors/task_meta.json");
const EXCEPTIONS: &str = include_str!("vectors/exceptions.json");
const SIGNATURES: &str = include_str!("vectors/signatures.json");
const KOMBU_TYPES: &str = include_str!("vectors/kombu_types.json");

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector files are JSON")
}

fn vectors(file: &Value) -> &Vec<Value> {
    file["vectors"].as_array().expect("a vectors array")
}

fn name(vector: &Value) -> &str {
    vector["name"].as_str().unwrap_or("?")
}

fn envelope_vector(wanted: &str) -> Value {
    let file = load(ENVELOPES);
    vectors(&file)
        .iter()
        .find(|vector| name(vector) == wanted)
        .unwrap_or_else(|| panic!("no envelope vector {wanted:?}"))
        .clone()
}

fn decode_envelope(envelope: &Value, context: &str) -> Message {
    let bytes = serde_json::to_vec(envelope).expect("serializes");
    envelope::decode(&bytes).unwrap_or_else(|error| panic!("{context}: does not decode: {error}"))
}

fn timestamp(text: &str) -> DateTime<FixedOffset> {
    time::parse_timestamp(text).unwrap_or_else(|| panic!("{text:?} is a timestamp"))
}

fn seconds(value: &Value) -> Option<Duration> {
    value.as_f64().map(Duration::from_secs_f64)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn full_envelopes_decode_and_re_encode_unchanged() {
    let file = load(ENVELOPES);
    let mut count = 0;
    for vector in vectors(&file)
        .iter()
        .filter(|vector| vector["full"] == json!(true))
    {
        let context = name(vector);
        let original = &vector["envelope"];
        let message = decode_envelope(original, context);
        let raw_body = STANDARD
            .decode(original["body"].as_str().expect("a base64 body"))
            .expect("base64");
        assert_eq!(message.body, raw_body, "{context}: raw body bytes kept");
        let encoded = envelope::encode(&message);
        let re_encoded: Value = serde_json::from_slice(&encoded).expect("encode writes JSON");
        assert_eq!(
            &re_encoded, original,
            "{context}: decode + encode changes the envelope"
        );
        assert_eq!(
            envelope::decode(&encoded).expect("re-encoded decodes"),
            message,
            "{context}: decoding the re-encoded envelope"
        );
        count += 1;
    }
    assert_eq!(count, 5, "full envelope vectors");
}

#[test]
fn envelope_bodies_decode_to_args_kwargs_embed() {
    let file = load(ENVELOPES);
    for vector in vectors(&file) {
        let context = name(vector);
        let message = decode_envelope(&vector["envelope"], context);
        let body = message
            .decode_body()
            .unwrap_or_else(|error| panic!("{context}: body does not decode: {error}"));
        let expected = &vector["body"];
        assert_eq!(
            Value::Array(body.args.clone()),
            expected[0],
            "{context}: args"
        );
        assert_eq!(
            Value::Object(body.kwargs.clone()),
            expected[1],
            "{context}: kwargs"
        );
        assert_eq!(
            serde_json::to_value(&body.embed).expect("serializes"),
            expected[2],
            "{context}: embed"
        );
        let re_encoded: Value = serde_json::from_slice(&body.to_json()).expect("JSON");
        assert_eq!(&re_encoded, expected, "{context}: body re-encoded");
    }
}

#[test]
fn callbacks_and_errbacks_of_apply_async_are_signatures() {
    let vector = envelope_vector("spec-2.5b-apply_async-options");
    let message = decode_envelope(&vector["envelope"], "2.5 (b)");
    let body = message.decode_body().expect("body decodes");
    assert_eq!(body.args, vec![json!(2), json!(3)]);
    assert!(body.kwargs.is_empty());
    let embed = body.embed.expect("embed");
    let callbacks = embed.callbacks.expect("callbacks");
    assert_eq!(callbacks.len(), 1);
    assert_eq!(callbacks[0].name, "tasks.mul");
    assert_eq!(callbacks[0].args, vec![json!(10)]);
    assert!(!callbacks[0].immutable);
    assert_eq!(callbacks[0].subtask_type, None);
    let errbacks = embed.errbacks.expect("errbacks");
    assert_eq!(errbacks.len(), 1);
    assert_eq!(errbacks[0].name, "tasks.on_err");
    assert!(errbacks[0].args.is_empty());
    assert!(errbacks[0].immutable);
    assert_eq!(embed.chain, None);
    assert_eq!(embed.chord, None);
}

/// Checks the parsed headers against a vector's `expect` object.
fn check_headers(headers: &Headers, priority: u8, expect: &Value, context: &str) {
    let expect = expect.as_object().expect("expect is an object");
    for (key, want) in expect {
        let text = || want.as_str().map(str::to_owned);
        match key.as_str() {
            "task" => assert_eq!(Some(headers.task.clone()), text(), "{context}: task"),
            "id" => assert_eq!(Some(headers.id.clone()), text(), "{context}: id"),
            "shadow" => assert_eq!(headers.shadow, text(), "{context}: shadow"),
            "eta" => assert_eq!(headers.eta, want.as_str().map(timestamp), "{context}: eta"),
            "expires" => assert_eq!(
                headers.expires,
                want.as_str().map(timestamp),
                "{context}: expires"
            ),
            "group" => assert_eq!(headers.group, text(), "{context}: group"),
            "group_index" => {
                assert_eq!(headers.group_index, want.as_u64(), "{context}: group_index")
            }
            "retries" => assert_eq!(
                u64::from(headers.retries),
                want.as_u64().unwrap(),
                "{context}: retries"
            ),
            "timelimit" => {
                assert_eq!(
                    headers.timelimit.hard(),
                    seconds(&want[0]),
                    "{context}: hard limit"
                );
                assert_eq!(
                    headers.timelimit.soft(),
                    seconds(&want[1]),
                    "{context}: soft limit"
                );
            }
            "root_id" => assert_eq!(headers.root_id, text(), "{context}: root_id"),
            "parent_id" => assert_eq!(headers.parent_id, text(), "{context}: parent_id"),
            "argsrepr" => assert_eq!(headers.argsrepr, text(), "{context}: argsrepr"),
            "kwargsrepr" => assert_eq!(headers.kwargsrepr, text(), "{context}: kwargsrepr"),
            "origin" => assert_eq!(headers.origin, text(), "{context}: origin"),
            "ignore_result" => assert_eq!(
                headers.ignore_result,
                want.as_bool(),
                "{context}: ignore_result"
            ),
            "replaced_task_nesting" => assert_eq!(
                headers.replaced_task_nesting,
                want.as_u64(),
                "{context}: replaced_task_nesting"
            ),
            "stamped_headers" => assert_eq!(
                headers.stamped_headers.clone().map(|names| json!(names)),
                (!want.is_null()).then(|| want.clone()),
                "{context}: stamped_headers"
            ),
            "stamps" => assert_eq!(
                headers.stamps.clone().map(Value::Object),
                (!want.is_null()).then(|| want.clone()),
                "{context}: stamps"
            ),
            "extra" => assert_eq!(
                &Value::Object(headers.extra.clone()),
                want,
                "{context}: extra headers"
            ),
            "priority" => assert_eq!(
                u64::from(priority),
                want.as_u64().unwrap_or(0),
                "{context}: priority"
            ),
            other => panic!("{context}: unknown expectation {other:?}"),
        }
    }
}

#[test]
fn envelope_headers_are_parsed() {
    let file = load(ENVELOPES);
    for vector in vectors(&file) {
        let context = name(vector);
        let message = decode_envelope(&vector["envelope"], context);
        check_headers(
            &message.headers,
            message.priority(),
            &vector["expect"],
            context,
        );
        let properties = &vector["envelope"]["properties"];
        assert_eq!(
            message.properties.correlation_id.as_deref(),
            properties["correlation_id"].as_str(),
            "{context}: correlation_id"
        );
        assert_eq!(
            message.properties.reply_to.as_deref(),
            properties["reply_to"].as_str(),
            "{context}: reply_to"
        );
        assert_eq!(
            message.properties.expiration.as_deref(),
            properties["expiration"].as_str(),
            "{context}: expiration"
        );
        for transport in ["delivery_tag", "delivery_info", "body_encoding"] {
            assert_eq!(
                message.properties.extra.get(transport),
                properties.get(transport),
                "{context}: kombu property {transport} kept"
            );
        }
    }
}

#[test]
fn apply_async_headers_have_eta_expires_and_time_limits() {
    let vector = envelope_vector("spec-2.5b-apply_async-options");
    let message = decode_envelope(&vector["envelope"], "2.5 (b)");
    let headers = &message.headers;
    let eta = headers.eta.expect("eta");
    let expected_eta = Utc
        .with_ymd_and_hms(2026, 11, 24, 15, 25, 28)
        .unwrap()
        .checked_add_signed(chrono::Duration::microseconds(564_043))
        .unwrap();
    assert_eq!(eta, expected_eta, "eta as a timestamp");
    assert_eq!(eta.offset().local_minus_utc(), 0);
    let expires = headers.expires.expect("expires");
    assert_eq!(
        expires - eta,
        chrono::Duration::seconds(50),
        "countdown 10, expires 60"
    );
    assert_eq!(
        headers.timelimit.hard(),
        Some(Duration::from_secs(30)),
        "[hard, soft] order"
    );
    assert_eq!(
        headers.timelimit.soft(),
        Some(Duration::from_secs(20)),
        "[hard, soft] order"
    );
    assert_eq!(headers.ignore_result, Some(false));
    assert_eq!(message.priority(), 5);
    assert_eq!(message.properties.expiration.as_deref(), Some("60000"));
    assert_eq!(message.properties.delivery_mode, Some(2));
}

#[test]
fn stamped_message_keeps_stamps_shadow_and_custom_headers() {
    let vector = envelope_vector("spec-2.5c-stamped-custom-shadow");
    let message = decode_envelope(&vector["envelope"], "2.5 (c)");
    let headers = &message.headers;
    assert_eq!(headers.shadow.as_deref(), Some("shadowname"));
    assert_eq!(headers.stamped_headers, Some(vec!["mystamp".to_owned()]));
    assert_eq!(
        headers.stamps.clone().map(Value::Object),
        Some(json!({"mystamp": "blue"}))
    );
    assert_eq!(
        Value::Object(headers.extra.clone()),
        json!({"custom_hdr": "x"})
    );
    assert_eq!(headers.timelimit.hard(), None);
    assert_eq!(headers.timelimit.soft(), Some(Duration::from_secs(5)));
    assert_eq!(message.properties.expiration.as_deref(), Some("3600000"));
    assert_eq!(headers.root_id.as_deref(), Some(headers.id.as_str()));
}

#[test]
fn minimal_message_decodes() {
    let vector = envelope_vector("spec-2.6-minimal");
    assert_eq!(vector["full"], json!(false));
    let message = decode_envelope(&vector["envelope"], "2.6");
    assert_eq!(message.task_name(), "tasks.add");
    assert_eq!(message.id(), "min-1");
    assert_eq!(message.headers.retries, 0);
    assert_eq!(message.headers.eta, None);
    assert_eq!(message.headers.expires, None);
    assert_eq!(message.headers.timelimit.hard(), None);
    assert_eq!(message.headers.root_id, None);
    assert!(message.headers.extra.is_empty());
    assert_eq!(message.priority(), 0);
    assert_eq!(message.content_type, "application/json");
    assert_eq!(message.body, b"[[2,3],{},null]");
    assert_eq!(
        message.properties.extra.get("delivery_tag"),
        Some(&json!("tag-1"))
    );
    let body = message.decode_body().expect("body decodes");
    assert_eq!(body.args, vec![json!(2), json!(3)]);
    assert!(body.kwargs.is_empty());
    assert_eq!(body.embed, None);
    // Re-encoding writes every header key; what was there stays.
    let encoded = envelope::encode(&message);
    assert_eq!(envelope::decode(&encoded).expect("decodes"), message);
    let value: Value = serde_json::from_slice(&encoded).expect("JSON");
    assert_eq!(value["headers"]["task"], json!("tasks.add"));
    assert_eq!(value["body"], vector["envelope"]["body"]);
}

fn apply_patch(mut envelope: Value, patch: &Value) -> Value {
    let object = envelope.as_object_mut().expect("envelope object");
    for section in ["headers", "properties"] {
        if let Some(set) = patch.get(section).and_then(Value::as_object) {
            let target = object[section].as_object_mut().expect("section object");
            for (key, value) in set {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    for path in patch
        .get("remove")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = path.as_str().expect("path");
        match path.strip_prefix("headers.") {
            Some(key) => {
                object["headers"]
                    .as_object_mut()
                    .expect("headers")
                    .remove(key);
            }
            None => {
                object.remove(path);
            }
        }
    }
    if let Some(text) = patch.get("body_text").and_then(Value::as_str) {
        object.insert("body".into(), Value::String(STANDARD.encode(text)));
    }
    if let Some(set) = patch.get("set").and_then(Value::as_object) {
        for (key, value) in set {
            object.insert(key.clone(), value.clone());
        }
    }
    envelope
}

#[test]
fn malformed_inputs_are_errors() {
    let file = load(MALFORMED);
    let base = envelope_vector(file["base"].as_str().expect("base"))["envelope"].clone();
    let mut count = 0;
    for vector in vectors(&file) {
        let context = name(vector);
        let bytes = if let Some(raw) = vector.get("raw").and_then(Value::as_str) {
            raw.as_bytes().to_vec()
        } else if let Some(envelope) = vector.get("envelope") {
            serde_json::to_vec(envelope).expect("serializes")
        } else {
            let patched = apply_patch(base.clone(), &vector["patch"]);
            serde_json::to_vec(&patched).expect("serializes")
        };
        let decoded = envelope::decode(&bytes);
        match vector["stage"].as_str() {
            Some("envelope") => {
                let error = decoded
                    .err()
                    .unwrap_or_else(|| panic!("{context}: decoded"));
                assert!(
                    !error.to_string().is_empty(),
                    "{context}: error says what is wrong"
                );
            }
            Some("body") => {
                let message = decoded.unwrap_or_else(|error| {
                    panic!("{context}: the envelope should decode, got {error}")
                });
                let error = message
                    .decode_body()
                    .err()
                    .unwrap_or_else(|| panic!("{context}: body decoded"));
                assert!(
                    !error.to_string().is_empty(),
                    "{context}: error says what is wrong"
                );
            }
            other => panic!("{context}: unknown stage {other:?}"),
        }
        count += 1;
    }
    assert!(count >= 40, "malformed vectors: {count}");
}

#[test]
fn python_nulls_and_date_forms_are_accepted() {
    let base = envelope_vector("spec-2.5a-send_task")["envelope"].clone();
    // §10: headers with nulls. Every header but task and id may be null.
    let nulls: Map<String, Value> = [
        "lang",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    ]
    .into_iter()
    .map(|key| (key.to_owned(), Value::Null))
    .collect();
    let patched = apply_patch(base.clone(), &json!({"headers": nulls}));
    let message = decode_envelope(&patched, "all-null headers");
    assert_eq!(message.headers.retries, 0);
    assert_eq!(message.headers.timelimit.hard(), None);
    assert_eq!(message.headers.timelimit.soft(), None);
    assert_eq!(message.headers.stamps, None);
    assert!(message.decode_body().is_ok());

    // §2.6 and §9: `Z`, naive (UTC) and other offsets.
    for (eta, expires) in [
        ("2000-01-01T00:00:00", "2000-01-01T00:00:00Z"),
        (
            "2026-11-24T10:33:11.772779-05:00",
            "2026-11-24T16:33:11.772779+01:00",
        ),
    ] {
        let patched = apply_patch(
            base.clone(),
            &json!({"headers": {"eta": eta, "expires": expires}}),
        );
        let message = decode_envelope(&patched, eta);
        assert_eq!(message.headers.eta, Some(timestamp(eta)));
        assert_eq!(message.headers.expires, Some(timestamp(expires)));
    }
    let naive = time::parse_timestamp("2000-01-01T00:00:00").unwrap();
    assert_eq!(
        naive,
        time::parse_timestamp("2000-01-01T00:00:00+00:00").unwrap()
    );
    let new_york = time::parse_timestamp("2026-11-24T10:33:11.772779-05:00").unwrap();
    let berlin = time::parse_timestamp("2026-11-24T16:33:11.772779+01:00").unwrap();
    assert_eq!(new_york, berlin, "the same instant in two time zones");
    assert_eq!(
        time::format_timestamp(&new_york),
        "2026-11-24T10:33:11.772779-05:00"
    );

    // Fractional time limits.
    let patched = apply_patch(base, &json!({"headers": {"timelimit": [null, 5.5]}}));
    let message = decode_envelope(&patched, "fractional soft limit");
    assert_eq!(
        message.headers.timelimit.soft(),
        Some(Duration::from_millis(5500))
    );
}

#[test]
fn missing_task_header_error_names_it() {
    let base = envelope_vector("spec-2.5a-send_task")["envelope"].clone();
    let patched = apply_patch(base, &json!({"remove": ["headers.task"]}));
    let error = envelope::decode(&serde_json::to_vec(&patched).unwrap()).unwrap_err();
    assert!(error.to_string().contains("task"), "error: {error}");
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let base = envelope_vector("spec-2.5a-send_task")["envelope"].clone();
    let patched = apply_patch(base.clone(), &json!({"body_text": nested}));
    let message = envelope::decode(&serde_json::to_vec(&patched).unwrap()).expect("envelope ok");
    assert!(message.decode_body().is_err());

    let nested_header = format!(
        r#"{{"body": "", "headers": {{"task": "t", "id": "i", "stamps": {}{}}}}}"#,
        r#"{"a": "#.repeat(depth),
        "}".repeat(depth)
    );
    assert!(envelope::decode(nested_header.as_bytes()).is_err());
    assert!(TaskBody::from_json(nested.as_bytes()).is_err());
}

/// A small deterministic generator for corruptions.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn truncated_and_corrupted_envelopes_never_panic() {
    let file = load(ENVELOPES);
    let mut random = Lcg(0x5eed);
    let mut decoded = 0usize;
    for vector in vectors(&file) {
        let bytes = serde_json::to_vec(&vector["envelope"]).unwrap();
        for end in 0..bytes.len() {
            if let Ok(message) = envelope::decode(&bytes[..end]) {
                let _ = message.decode_body();
                decoded += 1;
            }
        }
        for _ in 0..2000 {
            let mut corrupted = bytes.clone();
            for _ in 0..=(random.next() % 3) {
                let position = (random.next() as usize) % corrupted.len();
                corrupted[position] = (random.next() % 256) as u8;
            }
            if let Ok(message) = envelope::decode(&corrupted) {
                let _ = message.decode_body();
                let _ = envelope::encode(&message);
                decoded += 1;
            }
        }
    }
    // Some corruptions (inside strings) still decode; none panics.
    assert!(decoded > 0);
}

#[test]
fn amqp_message_headers_and_body_decode() {
    let vector = load(AMQP_MESSAGE);
    let properties = &vector["properties"];
    let application_headers = &properties["application_headers"];
    let headers: Headers =
        serde_json::from_value(application_headers.clone()).expect("application_headers decode");
    assert_eq!(
        &serde_json::to_value(&headers).unwrap(),
        application_headers,
        "headers re-encode unchanged"
    );
    assert_eq!(headers.task, "tasks.add");
    assert_eq!(headers.id, "17b2afd2-4fbc-4048-b727-97d319896fe6");
    assert_eq!(headers.ignore_result, Some(false));
    let message = Message {
        headers,
        properties: Properties {
            correlation_id: properties["correlation_id"].as_str().map(str::to_owned),
            reply_to: properties["reply_to"].as_str().map(str::to_owned),
            delivery_mode: Some(2),
            priority: Some(0),
            expiration: None,
            extra: Map::new(),
        },
        content_type: properties["content_type"].as_str().unwrap().to_owned(),
        content_encoding: properties["content_encoding"].as_str().unwrap().to_owned(),
        body: vector["body"].as_str().unwrap().as_bytes().to_vec(),
    };
    let body = message.decode_body().expect("body decodes");
    assert_eq!(body.args, vec![json!(1), json!(2)]);
    assert_eq!(
        serde_json::to_value(&body.embed).unwrap(),
        json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null})
    );
    let raw: Value = serde_json::from_slice(&message.body).unwrap();
    let re_encoded: Value = serde_json::from_slice(&body.to_json()).unwrap();
    assert_eq!(re_encoded, raw, "the body re-encodes");
}

#[test]
fn task_metas_decode_and_re_encode_unchanged() {
    let file = load(TASK_META);
    for vector in vectors(&file) {
        let context = name(vector);
        let original = &vector["meta"];
        let meta: TaskMeta = serde_json::from_value(original.clone())
            .unwrap_or_else(|error| panic!("{context}: does not decode: {error}"));
        assert_eq!(
            meta.status.as_str(),
            original["status"].as_str().unwrap(),
            "{context}"
        );
        assert_eq!(
            meta.task_id,
            original["task_id"].as_str().unwrap(),
            "{context}"
        );
        assert_eq!(
            meta.date_done,
            original["date_done"].as_str().map(timestamp),
            "{context}: date_done"
        );
        assert_eq!(
            &serde_json::to_value(&meta).unwrap(),
            original,
            "{context}: re-encoded meta differs"
        );
        let bytes = serde_json::to_vec(original).unwrap();
        assert_eq!(
            serde_json::from_slice::<TaskMeta>(&bytes).unwrap(),
            meta,
            "{context}"
        );
        match vector.get("error") {
            Some(expected) => {
                let error = meta
                    .error_value()
                    .unwrap_or_else(|| panic!("{context}: no error"));
                assert_eq!(
                    error.exc_type(),
                    expected["exc_type"].as_str().unwrap(),
                    "{context}"
                );
                assert_eq!(
                    error.exc_module(),
                    expected["exc_module"].as_str().unwrap(),
                    "{context}"
                );
                assert_eq!(
                    error.message(),
                    expected["message"].as_str().unwrap(),
                    "{context}"
                );
                assert_eq!(
                    error.traceback_text(),
                    expected["traceback"].as_str(),
                    "{context}"
                );
            }
            None => assert!(
                !meta.status.is_exception(),
                "{context}: exception state without an expected error"
            ),
        }
    }
    let success: TaskMeta = serde_json::from_value(vectors(&file)[0]["meta"].clone()).unwrap();
    assert_eq!(success.status, TaskState::Success);
    assert!(success.status.is_ready());
    assert_eq!(success.result, json!(4));
    assert_eq!(success.children, Some(Vec::new()));
    let progress = vectors(&file)
        .iter()
        .find(|vector| name(vector) == "spec-5.2-progress")
        .unwrap();
    let progress: TaskMeta = serde_json::from_value(progress["meta"].clone()).unwrap();
    assert_eq!(progress.status, TaskState::Custom("PROGRESS".into()));
    assert!(!progress.status.is_ready());
    assert_eq!(progress.children, None);

    for group in file["groups"].as_array().unwrap() {
        let parsed = GroupMeta::from_value(&group["value"]).expect("group record decodes");
        assert_eq!(parsed.group_id, group["group_id"].as_str().unwrap());
        assert_eq!(json!(parsed.task_ids), group["task_ids"]);
        assert_eq!(
            parsed.to_value(),
            group["value"],
            "group record re-encodes unchanged"
        );
    }
}

#[test]
fn exception_dicts_read_back() {
    let file = load(EXCEPTIONS);
    for vector in vectors(&file) {
        let value = &vector["value"];
        let error = TaskError::from_exception_value(value, None);
        assert_eq!(
            error.exc_type(),
            vector["exc_type"].as_str().unwrap(),
            "{value}"
        );
        assert_eq!(
            error.exc_module(),
            vector["exc_module"].as_str().unwrap(),
            "{value}"
        );
        assert_eq!(
            error.message(),
            vector["message"].as_str().unwrap(),
            "{value}"
        );
        assert_eq!(error.traceback_text(), None);
        let single_message = value["exc_message"]
            .as_array()
            .is_some_and(|parts| parts.len() == 1 && parts[0].is_string());
        if single_message {
            assert_eq!(
                &error.to_exception_value(),
                value,
                "re-encoded exception dict"
            );
        }
    }
}

#[test]
fn signature_dicts_decode() {
    let file = load(SIGNATURES);
    for vector in vectors(&file) {
        let context = name(vector);
        let original = &vector["signature"];
        let signature: Signature = serde_json::from_value(original.clone())
            .unwrap_or_else(|error| panic!("{context}: does not decode: {error}"));
        assert_eq!(
            signature.name,
            original["task"].as_str().unwrap(),
            "{context}"
        );
        assert_eq!(
            Value::Array(signature.args.clone()),
            original["args"],
            "{context}: args"
        );
        assert_eq!(
            Value::Object(signature.kwargs.clone()),
            original["kwargs"],
            "{context}: kwargs"
        );
        assert_eq!(
            signature.immutable,
            original["immutable"].as_bool().unwrap()
        );
        assert_eq!(
            signature.subtask_type.as_deref(),
            original["subtask_type"].as_str()
        );
        if vector["round_trip"] == json!(true) {
            assert_eq!(
                &serde_json::to_value(&signature).unwrap(),
                original,
                "{context}: re-encoded signature differs"
            );
        }
        if let Some(expect) = vector.get("expect") {
            let options = &signature.options;
            assert_eq!(options.task_id.as_deref(), expect["task_id"].as_str());
            assert_eq!(options.queue.as_deref(), expect["queue"].as_str());
            assert_eq!(options.priority.map(u64::from), expect["priority"].as_u64());
            assert_eq!(options.countdown, expect["countdown"].as_f64());
            assert_eq!(
                options.expires,
                Some(Expires::After(
                    seconds(&expect["expires_after_secs"]).unwrap()
                ))
            );
            assert_eq!(options.time_limit, expect["time_limit"].as_f64());
            assert_eq!(options.soft_time_limit, expect["soft_time_limit"].as_f64());
            let link: Vec<&str> = options.link.iter().map(|sig| sig.name.as_str()).collect();
            assert_eq!(
                json!(link),
                expect["link"],
                "{context}: link (one dict or a list)"
            );
            let link_error: Vec<&str> = options
                .link_error
                .iter()
                .map(|sig| sig.name.as_str())
                .collect();
            assert_eq!(json!(link_error), expect["link_error"]);
            assert_eq!(options.headers.get("custom_hdr"), Some(&json!("x")));
            assert_eq!(options.shadow.as_deref(), Some("shadowname"));
            for key in expect["extra_keys"].as_array().unwrap() {
                let key = key.as_str().unwrap();
                if key == "chord" {
                    // Interpreted since the canvas: the chord body a header part carries.
                    assert_eq!(
                        options.chord.as_ref().map(|body| json!(body)),
                        original["options"]["chord"]
                            .as_object()
                            .map(|_| original["options"]["chord"].clone()),
                        "{context}: option chord"
                    );
                    continue;
                }
                assert_eq!(
                    options.extra.get(key),
                    original["options"].get(key),
                    "{context}: option {key} kept"
                );
            }
            // Re-encoded, the options keep their meaning.
            let again: Signature =
                serde_json::from_value(serde_json::to_value(&signature).unwrap()).unwrap();
            assert_eq!(again, signature, "{context}: decode(encode(signature))");
        }
    }
}

#[test]
fn kombu_typed_envelopes() {
    let file = load(KOMBU_TYPES);
    let mut args = Vec::new();
    let mut plain = Vec::new();
    for vector in vectors(&file) {
        assert!(kombu::is_envelope(&vector["tagged"]));
        assert_eq!(
            kombu::untag(vector["tagged"].clone()).unwrap(),
            vector["plain"],
            "{}",
            vector["tagged"]
        );
        args.push(vector["tagged"].clone());
        plain.push(vector["plain"].clone());
    }
    for error in file["errors"].as_array().unwrap() {
        assert!(kombu::untag(error.clone()).is_err(), "{error} untags");
    }
    // In a body, the envelopes arrive unchanged in args and kwargs.
    let body = json!([args, {"when": args[0]}, null]);
    let decoded = TaskBody::from_json(&serde_json::to_vec(&body).unwrap()).expect("decodes");
    assert_eq!(json!(decoded.args), body[0]);
    assert_eq!(kombu::untag(json!(decoded.args)).unwrap(), json!(plain));
    assert_eq!(
        kombu::untag(json!(decoded.kwargs)).unwrap(),
        json!({"when": plain[0]})
    );
}

/// A message as `App::prepare` builds it, encoded as a kombu envelope.
async fn prepared(signature: Signature) -> (Value, Message, String) {
    let app = App::builder().build().await.expect("app builds");
    let publish = app.prepare(signature).expect("prepares");
    let encoded = envelope::encode(&publish.message);
    (
        serde_json::from_slice(&encoded).expect("JSON"),
        publish.message,
        publish.queue,
    )
}

/// Properties a Python producer sets (§2.3); the others of the Redis captures are kombu's.
const KOMBU_PROPERTIES: [&str; 3] = ["delivery_info", "delivery_tag", "body_encoding"];

fn producer_properties(envelope: &Value) -> BTreeSet<String> {
    keys(&envelope["properties"])
        .into_iter()
        .filter(|key| !KOMBU_PROPERTIES.contains(&key.as_str()))
        .collect()
}

#[tokio::test]
async fn prepared_message_matches_python_apply_async() {
    let python = envelope_vector("spec-2.5b-apply_async-options");
    let python_envelope = &python["envelope"];
    let before = time::now();
    let (ours, message, queue) = prepared(
        Signature::new("tasks.add")
            .arg(2)
            .arg(3)
            .countdown(Duration::from_secs(10))
            .expires_in(Duration::from_secs(60))
            .priority(5)
            .time_limit(Duration::from_secs(30))
            .soft_time_limit(Duration::from_secs(20))
            .link(Signature::new("tasks.mul").arg(10))
            .link_error(Signature::new("tasks.on_err").immutable()),
    )
    .await;
    let after = time::now();
    assert_eq!(queue, "celery");

    // Same header keys as Python, same producer properties, same top-level keys.
    assert_eq!(
        keys(&ours["headers"]),
        keys(&python_envelope["headers"]),
        "header keys"
    );
    assert_eq!(
        producer_properties(&ours),
        producer_properties(python_envelope),
        "property keys"
    );
    assert_eq!(keys(&ours), keys(python_envelope), "envelope keys");
    assert_eq!(ours["content-type"], json!("application/json"));
    assert_eq!(ours["content-encoding"], json!("utf-8"));
    assert_eq!(ours["properties"]["body_encoding"], json!("base64"));

    let headers = &ours["headers"];
    let id = headers["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id is a UUID: {id}");
    assert_eq!(headers["task"], json!("tasks.add"));
    assert_eq!(headers["root_id"], json!(id));
    assert_eq!(headers["parent_id"], Value::Null);
    assert_eq!(headers["retries"], json!(0));
    assert_eq!(
        headers["timelimit"],
        json!([30, 20]),
        "[hard, soft] as Python writes it"
    );
    assert_eq!(headers["argsrepr"], json!("(2, 3)"));
    assert_eq!(headers["kwargsrepr"], json!("{}"));
    assert_eq!(headers["ignore_result"], json!(false));
    assert_eq!(headers["replaced_task_nesting"], json!(0));
    assert_eq!(headers["stamps"], json!({}));
    assert_eq!(headers["stamped_headers"], Value::Null);
    assert_eq!(headers["group"], Value::Null);
    let origin = headers["origin"].as_str().expect("origin");
    assert!(
        origin.starts_with("gen") && origin.contains('@'),
        "origin {origin:?}"
    );

    let eta = message.headers.eta.expect("eta from countdown");
    let ten = chrono::Duration::seconds(10);
    assert!(
        eta >= before + ten && eta <= after + ten,
        "eta {eta} is now + 10 s"
    );
    let expires = message.headers.expires.expect("absolute expires");
    assert_eq!(
        expires - eta,
        chrono::Duration::seconds(50),
        "expires is now + 60 s"
    );
    assert_eq!(headers["eta"], json!(time::format_timestamp(&eta)));
    assert!(headers["eta"].as_str().unwrap().ends_with("+00:00"));

    let properties = &ours["properties"];
    assert_eq!(
        properties["correlation_id"],
        json!(id),
        "correlation_id = id"
    );
    assert!(
        properties["reply_to"]
            .as_str()
            .is_some_and(|reply| !reply.is_empty()),
        "reply_to set"
    );
    assert_eq!(properties["delivery_mode"], json!(2));
    assert_eq!(properties["priority"], json!(5));
    assert_eq!(
        properties["expiration"],
        json!("60000"),
        "expiration in ms, as a string"
    );

    // The body is the one Python wrote, callbacks and errbacks included.
    let python_body: Value = serde_json::from_slice(
        &STANDARD
            .decode(python_envelope["body"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let our_body: Value = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(our_body, python_body, "body");
    let mut decoded = envelope::decode(&envelope::encode(&message)).expect("decodes");
    assert_eq!(
        decoded.properties.extra.remove("body_encoding"),
        Some(json!("base64")),
        "encode sets body_encoding"
    );
    assert_eq!(
        decoded, message,
        "our envelope decodes to the prepared message"
    );
}

#[tokio::test]
async fn prepared_plain_send_matches_python_send_task() {
    let python = envelope_vector("spec-2.5a-send_task");
    let python_envelope = &python["envelope"];
    let (ours, message, _) =
        prepared(Signature::new("tasks.add").arg(2).arg(2).kwarg("z", 1)).await;
    assert_eq!(
        keys(&ours["headers"]),
        keys(&python_envelope["headers"]),
        "header keys"
    );
    // Without an explicit priority we leave the property unset: each transport writes its
    // own default (kombu's `priority: 0` on Redis, none on RabbitMQ).
    let mut python_keys = producer_properties(python_envelope);
    python_keys.remove("priority");
    assert_eq!(
        producer_properties(&ours),
        python_keys,
        "property keys (no expiration without expires, no priority unless given)"
    );
    let headers = &ours["headers"];
    for key in [
        "eta",
        "expires",
        "shadow",
        "group",
        "group_index",
        "parent_id",
    ] {
        assert_eq!(headers[key], Value::Null, "{key} is null");
    }
    assert_eq!(headers["timelimit"], json!([null, null]));
    assert_eq!(headers["argsrepr"], json!("(2, 2)"));
    assert_eq!(headers["kwargsrepr"], json!("{'z': 1}"));
    assert_eq!(
        ours["properties"]["priority"],
        Value::Null,
        "unset unless given"
    );
    let body: Value = serde_json::from_slice(&message.body).unwrap();
    let python_body: Value = serde_json::from_slice(
        &STANDARD
            .decode(python_envelope["body"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body, python_body, "body");
}

#[tokio::test]
async fn prepared_custom_headers_are_top_level() {
    let (ours, message, _) = prepared(Signature::new("tasks.add").header("custom_hdr", "x")).await;
    assert_eq!(ours["headers"]["custom_hdr"], json!("x"));
    assert_eq!(message.headers.extra.get("custom_hdr"), Some(&json!("x")));
    let python = envelope_vector("spec-2.5a-send_task");
    let mut expected = keys(&python["envelope"]["headers"]);
    expected.insert("custom_hdr".into());
    assert_eq!(keys(&ours["headers"]), expected);
}
