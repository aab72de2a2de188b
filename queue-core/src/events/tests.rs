//! Events against Celery's captured ones (wire spec §6, celery-wire-samples.txt).

use serde_json::{Value, json};

use super::*;
use crate::protocol::Headers;

/// A heartbeat of Celery 5.7, as published on `/2.celeryev/worker.heartbeat`.
const PYTHON_HEARTBEAT: &str = r#"{"hostname": "wire@vm", "utcoffset": 0.0, "pid": 12250,
    "clock": 2, "freq": 2.0, "active": 0, "processed": 1, "loadavg": [0.17, 0.38, 0.23],
    "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux",
    "timestamp": 1795534424.9053555, "type": "worker-heartbeat"}"#;

#[test]
fn a_python_heartbeat_decodes_with_its_fields() {
    let events = Event::decode(PYTHON_HEARTBEAT.as_bytes()).unwrap();
    let event = events[0].as_ref().unwrap();
    assert_eq!(event.kind, "worker-heartbeat");
    assert_eq!(event.hostname, "wire@vm");
    assert_eq!((event.pid, event.clock), (12250, 2));
    assert_eq!(event.field("freq"), Some(&json!(2.0)));
    assert_eq!(event.routing_key(), "worker.heartbeat");
    assert!(!event.is_task_event());
    // Re-encoded, every field is still there (an event is forwarded unchanged).
    // (serde_json may read a long float one unit in the last place off: compare it apart.)
    let mut again: Value =
        serde_json::from_slice(&Event::encode(std::slice::from_ref(event))).unwrap();
    let mut original: Value = serde_json::from_str(PYTHON_HEARTBEAT).unwrap();
    let timestamps = [&mut again, &mut original].map(|value| {
        value
            .as_object_mut()
            .unwrap()
            .remove("timestamp")
            .unwrap()
            .as_f64()
            .unwrap()
    });
    assert!(
        (timestamps[0] - timestamps[1]).abs() < 1e-6,
        "{timestamps:?}"
    );
    assert_eq!(again, original);
}

#[test]
fn integer_offsets_and_timestamps_of_older_celery_decode() {
    // Celery ≤ 5.6 sends `utcoffset` as an int; `clock` and `pid` may be missing.
    let body =
        br#"{"type": "worker-online", "hostname": "old@vm", "timestamp": 17, "utcoffset": -5}"#;
    let event = Event::decode(body).unwrap().remove(0).unwrap();
    assert_eq!((event.timestamp, event.utcoffset), (17.0, -5.0));
    assert_eq!((event.pid, event.clock), (0, 0));
}

#[test]
fn a_batch_is_an_array_and_a_bad_element_does_not_hide_the_others() {
    let source = EventSource::new("celery@w1");
    let started = source.task(TaskEvent::Started { uuid: "t1".into() });
    let succeeded = source.task(TaskEvent::Succeeded {
        uuid: "t1".into(),
        result: "4".into(),
        runtime: 0.25,
    });
    let mut batch = [started.clone(), succeeded.clone()];
    // Exactly representable, so that the round trip compares equal.
    for event in &mut batch {
        event.timestamp = 1_795_534_258.5;
    }
    assert_eq!(body_routing_key(&batch), BATCH_ROUTING_KEY);
    assert_eq!(body_routing_key(&batch[..1]), "task.started");
    let body = Event::encode(&batch);
    assert!(body.starts_with(b"["));
    let decoded: Vec<Event> = Event::decode(&body)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decoded, batch);
    assert!(started.clock < succeeded.clock);

    let mixed = br#"[{"type": "task-started", "hostname": "h", "timestamp": 1.0, "uuid": "a"},
        {"type": "task-started"}, 7]"#;
    let decoded = Event::decode(mixed).unwrap();
    assert!(decoded[0].is_ok());
    assert!(decoded[1].is_err() && decoded[2].is_err());
    for body in [&b"not json"[..], b"42", b"null", b"\"text\""] {
        assert!(Event::decode(body).is_err(), "{body:?}");
    }
}

#[test]
fn task_received_carries_the_fields_celery_sends() {
    let mut headers = Headers::new("tasks.add", "aaaaaaaa-0000-4000-8000-000000000001");
    headers.argsrepr = Some("(2, 2)".into());
    headers.kwargsrepr = Some("{}".into());
    headers.root_id = Some(headers.id.clone());
    let event = EventSource::new("celery@testhost").task(TaskEvent::received(&headers));
    let value = serde_json::to_value(&event).unwrap();
    // The captured `task-received` of §6.4, key for key.
    let captured = json!({"hostname": "celery@testhost", "utcoffset": 0.0, "pid": 8204,
        "clock": 5, "uuid": "aaaaaaaa-0000-4000-8000-000000000001", "name": "tasks.add",
        "args": "(2, 2)", "kwargs": "{}", "root_id": "aaaaaaaa-0000-4000-8000-000000000001",
        "parent_id": null, "retries": 0, "eta": null, "expires": null,
        "timestamp": 1795534046.002656, "type": "task-received"});
    let keys = |value: &Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&value), keys(&captured));
    for key in [
        "uuid",
        "name",
        "args",
        "kwargs",
        "root_id",
        "parent_id",
        "retries",
        "eta",
    ] {
        assert_eq!(value[key], captured[key], "{key}");
    }
    assert_eq!(event.uuid(), Some("aaaaaaaa-0000-4000-8000-000000000001"));
}

#[test]
fn worker_events_carry_liveness_and_software() {
    let status = WorkerStatus {
        freq: 2.0,
        active: 1,
        processed: 3,
        loadavg: [0.531, 0.3, 0.0],
        version: "0.1.0".into(),
    };
    let source = EventSource::new("celery@rust");
    let event = source.worker(WorkerEventKind::Heartbeat, &status);
    assert_eq!(event.kind, "worker-heartbeat");
    // Rounded up to two decimals, as Celery does.
    assert_eq!(event.field("loadavg"), Some(&json!([0.54, 0.3, 0.0])));
    assert_eq!(event.field("sw_ident"), Some(&json!(SOFTWARE_IDENTITY)));
    assert_eq!(event.field("freq"), Some(&json!(2.0)));
    assert_eq!(u64::from(std::process::id()), event.pid);
    assert!(event.timestamp > 1.7e9);
}

#[test]
fn revoked_and_rejected_fields() {
    let source = EventSource::new("celery@rust");
    let revoked = source.task(TaskEvent::Revoked {
        uuid: "r".into(),
        terminated: true,
        signum: Some(15),
        expired: false,
    });
    assert_eq!(revoked.field("signum"), Some(&json!(15)));
    assert_eq!(revoked.field("terminated"), Some(&json!(true)));
    let rejected = source.task(TaskEvent::Rejected {
        uuid: "r".into(),
        requeue: false,
    });
    assert_eq!(rejected.routing_key(), "task.rejected");
}

#[test]
fn non_finite_numbers_do_not_break_the_body() {
    let mut event = EventSource::new("h").task(TaskEvent::Succeeded {
        uuid: "u".into(),
        result: "None".into(),
        runtime: f64::NAN,
    });
    event.timestamp = f64::INFINITY;
    let decoded = Event::decode(&Event::encode(&[event]))
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(decoded.timestamp, 0.0);
    assert_eq!(decoded.field("runtime"), Some(&json!(0.0)));
}

#[test]
fn the_clock_moves_past_what_it_hears() {
    let clock = LamportClock::default();
    assert_eq!(clock.forward(), 1);
    assert_eq!(clock.adjust(41), 42);
    assert_eq!(clock.forward(), 43);
    assert_eq!(clock.adjust(u64::MAX), u64::MAX);
}

/// One of each task event, with every optional field set.
fn every_task_event() -> Vec<TaskEvent> {
    let mut headers = Headers::new("tasks.add", "aaaaaaaa-0000-4000-8000-000000000002");
    headers.argsrepr = Some("(2, 2)".into());
    headers.kwargsrepr = Some("{'x': \"y\"}".into());
    headers.root_id = Some("root".into());
    headers.parent_id = Some("parent".into());
    headers.retries = 3;
    headers.eta = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456+01:00").ok();
    headers.expires = chrono::DateTime::parse_from_rfc3339("2026-01-02T04:00:00+00:00").ok();
    let uuid = || headers.id.clone();
    vec![
        TaskEvent::Sent {
            headers: Box::new(headers.clone()),
            queue: "celery".into(),
            exchange: String::new(),
            routing_key: "celery".into(),
        },
        TaskEvent::received(&headers),
        TaskEvent::Started { uuid: uuid() },
        TaskEvent::Succeeded {
            uuid: uuid(),
            result: "{'a': [1, 2]}".into(),
            runtime: 0.125,
        },
        TaskEvent::Failed {
            uuid: uuid(),
            exception: "ValueError('boom')".into(),
            traceback: "Traceback (most recent call last):\n  ...".into(),
        },
        TaskEvent::Retried {
            uuid: uuid(),
            exception: "Retry()".into(),
            traceback: String::new(),
        },
        TaskEvent::Revoked {
            uuid: uuid(),
            terminated: true,
            signum: Some(15),
            expired: false,
        },
        TaskEvent::Rejected {
            uuid: uuid(),
            requeue: true,
        },
    ]
}

/// The JSON text of `body` with `timestamp` and `clock` (which differ between two
/// events made one after the other) set to fixed values, keys in their order.
fn text_without_stamps(body: &[u8]) -> String {
    let mut value: Value = serde_json::from_slice(body).unwrap();
    let object = value.as_object_mut().unwrap();
    object.insert("timestamp".into(), json!(1.5));
    object.insert("clock".into(), json!(1));
    value.to_string()
}

#[test]
fn encoded_task_events_are_the_events_key_for_key_in_order() {
    const STANDARD: [&str; 6] = ["type", "hostname", "timestamp", "utcoffset", "pid", "clock"];
    const MESSAGE: [&str; 9] = [
        "uuid",
        "name",
        "args",
        "kwargs",
        "root_id",
        "parent_id",
        "retries",
        "eta",
        "expires",
    ];
    let failure = &["uuid", "exception", "traceback"][..];
    let expected: [&[&str]; 8] = [
        &[&MESSAGE[..], &["queue", "exchange", "routing_key"]].concat(),
        &MESSAGE,
        &["uuid"],
        &["uuid", "result", "runtime"],
        failure,
        failure,
        &["uuid", "terminated", "signum", "expired"],
        &["uuid", "requeue"],
    ];
    let source = EventSource::new("celery@rust");
    for (event, fields) in every_task_event().into_iter().zip(expected) {
        let encoded = source.encode(&event);
        let value: Value = serde_json::from_slice(encoded.json()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, [&STANDARD[..], fields].concat(), "{}", encoded.kind());
        let made = source.task(event);
        assert_eq!(encoded.kind(), made.kind);
        assert_eq!(encoded.routing_key(), made.routing_key());
        assert!(encoded.is_task_event());
        assert_eq!(
            text_without_stamps(encoded.json()),
            text_without_stamps(&Event::encode(std::slice::from_ref(&made))),
            "{}",
            made.kind
        );
    }
}

#[test]
fn received_and_sent_read_in_place_match_the_copied_ones() {
    let source = EventSource::new("celery@rust");
    let events = every_task_event();
    let TaskEvent::Sent { headers, .. } = &events[0] else {
        unreachable!()
    };
    let received = source.encode_received(headers);
    assert_eq!(
        text_without_stamps(received.json()),
        text_without_stamps(source.encode(&events[1]).json())
    );
    let message = crate::protocol::Message::new(
        (**headers).clone(),
        crate::protocol::Properties::default(),
        &crate::protocol::TaskBody::new(vec![], serde_json::Map::new()),
    );
    let publish = crate::broker::Publish::new("celery", message);
    let sent = source.encode_sent(&publish);
    assert_eq!(sent.kind(), "task-sent");
    assert_eq!(
        text_without_stamps(sent.json()),
        text_without_stamps(source.encode(&TaskEvent::sent(&publish)).json())
    );
    let value: Value = serde_json::from_slice(sent.json()).unwrap();
    assert_eq!(value["eta"], json!("2026-01-02T03:04:05.123456+01:00"));
    assert_eq!(value["expires"], json!("2026-01-02T04:00:00+00:00"));
    assert_eq!(value["routing_key"], json!("celery"));
    assert_eq!(value["exchange"], json!(""));
}

#[test]
fn an_encoded_batch_is_an_array_of_the_events_in_order() {
    let source = EventSource::new("celery@rust");
    let batch: Vec<EncodedEvent> = every_task_event()
        .iter()
        .map(|e| source.encode(e))
        .collect();
    assert_eq!(EncodedEvent::body_routing_key(&batch), BATCH_ROUTING_KEY);
    let decoded: Vec<Event> = Event::decode(&EncodedEvent::body(&batch))
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let kinds: Vec<&str> = decoded.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task-sent",
            "task-received",
            "task-started",
            "task-succeeded",
            "task-failed",
            "task-retried",
            "task-revoked",
            "task-rejected"
        ]
    );
    assert!(decoded.windows(2).all(|pair| pair[0].clock < pair[1].clock));
    let single = &batch[2..3];
    assert_eq!(EncodedEvent::body_routing_key(single), "task.started");
    assert_eq!(EncodedEvent::body(single), single[0].json());
}
