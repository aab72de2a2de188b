//! Hostile numbers in messages (issue 9, defect 1): huge, negative, NaN, infinite or
//! out-of-range values in `eta`, `expires`, `timelimit`, `retries` and in the options of
//! embedded callback signatures decode to a clean error that names the field, or to a
//! saturated value; never to a panic. The same for options given to `App::send`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use queue_core::protocol::{Message, TaskBody, envelope, time};
use queue_core::signature::Signature;
use queue_core::{App, Error};

/// The headers of a captured Celery 5.7 message, with `field` set to the raw JSON `value`
/// (raw text, so that literals JSON forbids but Python's `json.dumps` writes, such as `NaN`
/// and `Infinity`, or numbers past f64 such as `1e309`, reach the decoder as sent).
fn envelope_with(field: &str, value: &str) -> Vec<u8> {
    let mut headers = json!({
        "lang": "py", "task": "tasks.add", "id": "8e03ab14-2c16-43f8-afeb-b28bca2f5a3e",
        "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null,
        "retries": 0, "timelimit": [null, null],
        "root_id": "8e03ab14-2c16-43f8-afeb-b28bca2f5a3e", "parent_id": null,
        "argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen12240@vm",
        "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null,
        "stamps": {}
    });
    headers[field] = json!("@VALUE@");
    let body = STANDARD.encode(
        br#"[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
    );
    let text = json!({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": headers,
        "properties": {"correlation_id": "8e03ab14-2c16-43f8-afeb-b28bca2f5a3e",
                       "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "celery"},
                       "delivery_tag": "b1e029a3-3f76-4293-9c40-1f246f555ca6"}
    })
    .to_string()
    .replace("\"@VALUE@\"", value);
    text.into_bytes()
}

fn decode_with(field: &str, value: &str) -> Result<Message, String> {
    envelope::decode(&envelope_with(field, value)).map_err(|error| error.to_string())
}

#[test]
fn out_of_range_header_values_are_clean_errors_naming_the_field() {
    let cases = [
        ("eta", r#""99999-01-01T00:00:00""#),
        ("eta", r#""+99999-01-01T00:00:00""#),
        ("eta", r#""+262144-01-01T00:00:00""#),
        ("eta", r#""0000-01-01T00:00:00""#),
        ("eta", r#""-0001-01-01T00:00:00""#),
        ("eta", "1700000000"),
        ("eta", "-1.5"),
        ("eta", r#""NaN""#),
        ("expires", r#""+99999-12-31T23:59:59+00:00""#),
        ("expires", "-1"),
        ("expires", r#""tomorrow""#),
        ("timelimit", "[-5, null]"),
        ("timelimit", "[null, -0.5]"),
        ("timelimit", r#"["NaN", null]"#),
        ("timelimit", r#"[null, "inf"]"#),
        ("timelimit", "[30]"),
        ("timelimit", "30"),
        ("retries", "-1"),
        ("retries", "1e+30"),
        ("retries", "2.5"),
        ("retries", "4294967296"),
        ("retries", r#""3""#),
    ];
    for (field, value) in cases {
        let error = decode_with(field, value)
            .err()
            .unwrap_or_else(|| panic!("{field} = {value} decoded"));
        assert!(
            error.contains(&format!("`{field}`")),
            "{field} = {value}: the error does not name the field: {error}"
        );
        let compact = |text: &str| text.replace(' ', "");
        assert!(
            compact(&error).contains(&compact(value.trim_matches('"'))),
            "{field} = {value}: the error does not show the value: {error}"
        );
    }
}

#[test]
fn numbers_json_cannot_hold_are_clean_errors() {
    // Python's json.dumps writes NaN and Infinity by default; 1e309 is past f64.
    for (field, value) in [
        ("timelimit", "[1e309, -5]"),
        ("timelimit", "[NaN, null]"),
        ("timelimit", "[null, Infinity]"),
        ("retries", "NaN"),
        ("group_index", "-Infinity"),
        ("expires", "1e400"),
    ] {
        assert!(
            decode_with(field, value).is_err(),
            "{field} = {value} decoded"
        );
    }
}

#[test]
fn large_but_valid_header_values_saturate() {
    let message = decode_with("timelimit", "[1e300, 18446744073709551615]").unwrap();
    assert_eq!(message.headers.timelimit.hard(), Some(Duration::MAX));
    assert!(message.headers.timelimit.soft() >= Some(Duration::from_secs(u64::MAX / 2)));

    let last = "9999-12-31T23:59:59.999999+00:00";
    let message = decode_with("eta", &format!("{last:?}")).unwrap();
    let eta = message.headers.eta.unwrap();
    assert_eq!(eta, time::far_future());
    assert!(time::until(eta) > Duration::from_secs(100 * 365 * 24 * 3600));
    // An offset that puts the last Python day past the year 9999 in UTC still reads.
    let message = decode_with("expires", r#""9999-12-31T23:59:59-12:00""#).unwrap();
    assert!(time::until(message.headers.expires.unwrap()) > Duration::ZERO);
}

#[test]
fn what_celery_tolerates_is_still_tolerated() {
    for (field, value) in [
        ("timelimit", "null"),
        ("timelimit", "[null, null]"),
        ("timelimit", "[0, null]"),
        ("retries", "null"),
        ("eta", "null"),
        ("eta", r#""""#),
        ("expires", "null"),
    ] {
        let message =
            decode_with(field, value).unwrap_or_else(|error| panic!("{field} = {value}: {error}"));
        assert_eq!(message.headers.timelimit.hard(), None, "{field} = {value}");
        assert_eq!(message.headers.timelimit.soft(), None, "{field} = {value}");
        assert_eq!(message.headers.eta, None, "{field} = {value}");
        assert_eq!(message.headers.retries, 0, "{field} = {value}");
    }
    let message = decode_with("timelimit", "[30, 20.5]").unwrap();
    assert_eq!(
        message.headers.timelimit.hard(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        message.headers.timelimit.soft(),
        Some(Duration::from_millis(20_500))
    );
    let message = decode_with("eta", r#""2026-11-24T15:25:28.564043+00:00""#).unwrap();
    assert!(message.headers.eta.is_some());
    let message = decode_with("eta", r#""2026-11-24T15:25:28""#).unwrap();
    assert!(message.headers.eta.is_some());
}

fn body_with_callback_options(options: &str) -> Vec<u8> {
    format!(
        r#"[[1], {{}}, {{"callbacks": [{{"task": "tasks.next", "args": [], "kwargs": {{}},
            "options": {options}, "subtask_type": null, "immutable": false}}],
            "errbacks": null, "chain": null, "chord": null}}]"#
    )
    .into_bytes()
}

#[test]
fn callback_options_with_bad_numbers_make_the_body_undecodable() {
    for (options, option) in [
        (r#"{"time_limit": -5}"#, "time_limit"),
        (r#"{"soft_time_limit": -0.001}"#, "soft_time_limit"),
        (r#"{"eta": "99999-01-01T00:00:00"}"#, "eta"),
        (r#"{"eta": 12}"#, "eta"),
        (r#"{"expires": "+99999-01-01T00:00:00"}"#, "expires"),
        (r#"{"expires": [1]}"#, "expires"),
    ] {
        let error = TaskBody::from_json(&body_with_callback_options(options))
            .err()
            .unwrap_or_else(|| panic!("{options} decoded"))
            .to_string();
        assert!(error.contains(&format!("`{option}`")), "{options}: {error}");
    }
    for options in [
        r#"{"countdown": NaN}"#,
        r#"{"expires": Infinity}"#,
        r#"{"time_limit": 1e309}"#,
        r#"{"priority": 300}"#,
        r#"{"retries": -1}"#,
        r#"{"group_index": 1e30}"#,
    ] {
        assert!(
            TaskBody::from_json(&body_with_callback_options(options)).is_err(),
            "{options} decoded"
        );
    }
    // The errbacks and the chain carry signatures too.
    let errback = br#"[[], {}, {"errbacks": [{"task": "e", "options": {"time_limit": -1}}]}]"#;
    assert!(TaskBody::from_json(errback).is_err());
    let chain =
        br#"[[], {}, {"chain": [{"task": "c", "options": {"expires": "+99999-01-01T00:00:00"}}]}]"#;
    assert!(TaskBody::from_json(chain).is_err());
}

fn callback(options: &str) -> Signature {
    let body = TaskBody::from_json(&body_with_callback_options(options))
        .unwrap_or_else(|error| panic!("{options}: {error}"));
    body.embed.unwrap().callbacks.unwrap().remove(0)
}

#[tokio::test]
async fn huge_callback_options_decode_and_send_saturated() {
    let app = App::builder().build().await.unwrap();
    let far = time::far_future();

    // A countdown of 10^30 s, or an expiry of 10^308 s: the deadline is Python's last instant.
    let publish = app.prepare(callback(r#"{"countdown": 1e30}"#)).unwrap();
    assert_eq!(publish.message.headers.eta, Some(far));
    let publish = app.prepare(callback(r#"{"expires": 1e308}"#)).unwrap();
    assert_eq!(publish.message.headers.expires, Some(far));
    // Past RabbitMQ's longest TTL the `expiration` property is left out, not refused.
    assert_eq!(publish.message.properties.expiration, None);
    let publish = app
        .prepare(callback(r#"{"countdown": 1e12, "expires": 1e12}"#))
        .unwrap();
    assert_eq!(publish.message.headers.eta, Some(far));
    assert_eq!(publish.message.headers.expires, Some(far));

    // Huge time limits saturate; a negative expiry expires at once, as in Celery.
    let publish = app
        .prepare(callback(
            r#"{"time_limit": 1e300, "soft_time_limit": 1e20, "expires": -1}"#,
        ))
        .unwrap();
    assert_eq!(
        publish.message.headers.timelimit.hard(),
        Some(Duration::MAX)
    );
    assert!(publish.message.headers.timelimit.soft().is_some());
    let expires = publish.message.headers.expires.unwrap();
    assert_eq!(time::until(expires), Duration::ZERO);
    assert_eq!(publish.message.properties.expiration.as_deref(), Some("0"));

    // A negative countdown runs at once (no eta), as Celery's eta in the past does.
    let publish = app.prepare(callback(r#"{"countdown": -5}"#)).unwrap();
    assert_eq!(publish.message.headers.eta, None);

    // What was sent reads back: the saturated deadlines are within every decoder's range.
    for options in [
        r#"{"countdown": 1e30, "expires": 1e308}"#,
        r#"{"time_limit": 1e300}"#,
    ] {
        let result = app.send(callback(options)).await;
        assert!(result.is_ok(), "{options}: {result:?}");
        let publish = app.prepare(callback(options)).unwrap();
        let read = envelope::decode(&envelope::encode(&publish.message)).unwrap();
        assert_eq!(read.headers, publish.message.headers, "{options}");
    }
}

#[tokio::test]
async fn send_with_extreme_builder_options_does_not_panic() {
    let app = App::builder().build().await.unwrap();
    let far = time::far_future();
    let extreme = Signature::new("tasks.add")
        .countdown(Duration::MAX)
        .expires_in(Duration::MAX)
        .time_limit(Duration::MAX)
        .soft_time_limit(Duration::MAX);
    let publish = app.prepare(extreme.clone()).unwrap();
    assert_eq!(publish.message.headers.eta, Some(far));
    assert_eq!(publish.message.headers.expires, Some(far));
    assert_eq!(
        publish.message.headers.timelimit.hard(),
        Some(Duration::MAX)
    );
    app.send(extreme).await.unwrap();

    // Timestamps past Python's range are brought into it.
    let publish = app
        .prepare(
            Signature::new("tasks.add")
                .eta(DateTime::<Utc>::MAX_UTC)
                .expires_at(DateTime::<Utc>::MIN_UTC),
        )
        .unwrap();
    assert_eq!(publish.message.headers.eta, Some(far));
    let read = envelope::decode(&envelope::encode(&publish.message)).unwrap();
    assert_eq!(read.headers, publish.message.headers);
    app.send(Signature::new("tasks.add").eta(DateTime::<Utc>::MAX_UTC))
        .await
        .unwrap();

    // Options set directly to numbers no duration holds are configuration errors.
    type Set = fn(&mut Signature);
    let cases: [(&str, Set); 6] = [
        ("countdown", |s| s.options.countdown = Some(f64::NAN)),
        ("countdown", |s| s.options.countdown = Some(f64::INFINITY)),
        ("countdown", |s| {
            s.options.countdown = Some(f64::NEG_INFINITY)
        }),
        ("time_limit", |s| s.options.time_limit = Some(-1.0)),
        ("time_limit", |s| s.options.time_limit = Some(f64::NAN)),
        ("soft_time_limit", |s| {
            s.options.soft_time_limit = Some(f64::INFINITY)
        }),
    ];
    for (option, set) in cases {
        let mut signature = Signature::new("tasks.add");
        set(&mut signature);
        let error = app.send(signature).await.unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{option}: {error}");
        assert!(error.to_string().contains(option), "{option}: {error}");
    }
}

#[test]
fn deadline_helpers_never_panic() {
    let far = time::far_future();
    assert_eq!(far.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
    assert_eq!(time::after(Duration::MAX), far);
    assert_eq!(time::after(Duration::from_secs(10u64.pow(12))), far);
    let soon = time::after(Duration::from_secs(60));
    assert!(soon < far && soon > time::now());
    assert_eq!(
        time::until(time::now() - chrono::Duration::seconds(5)),
        Duration::ZERO
    );
    let min = DateTime::<Utc>::MIN_UTC.fixed_offset();
    let max = DateTime::<Utc>::MAX_UTC.fixed_offset();
    assert_eq!(time::until(min), Duration::ZERO);
    assert!(time::until(max) > Duration::from_secs(200_000 * 365 * 24 * 3600));
    assert!(time::between(min, max) > time::until(max));
    assert_eq!(time::add(max, Duration::MAX), max);
    for seconds in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -1e-300] {
        assert_eq!(time::seconds_duration(seconds), None, "{seconds}");
    }
    assert_eq!(time::seconds_duration(1e300), Some(Duration::MAX));
    assert_eq!(
        time::seconds_duration(0.5),
        Some(Duration::from_millis(500))
    );
    assert_eq!(time::clamp(max), far);
}

#[test]
fn body_numbers_do_not_reach_a_panic_anywhere_else() {
    // Huge numbers in the args are the task's business: they decode as they are.
    let body = TaskBody::from_json(b"[[1e308, -1e308, 18446744073709551615], {}, null]").unwrap();
    assert_eq!(body.args[2], Value::from(u64::MAX));
}
