//! Decoder fuzz (issue 9, fault suite row "decoder fuzz"): the kombu envelope decoder
//! (`protocol::envelope`, the message as Redis stores it), the body `[args, kwargs, embed]`,
//! the protocol v2 headers, embedded signatures (callbacks applied through `App::prepare`)
//! and kombu's typed values (`protocol::kombu`), driven by inputs generated from the wire
//! vectors and mutated, plus random bytes.
//!
//! Asserts, per input: no panic, no allocation past the cap, termination (see
//! `fuzz_support`). `QUEUE_FUZZ_INPUTS` sets the count (default 20000; the long profile
//! runs 10 M); the summary line `decoder-fuzz inputs=... panics=... max_alloc_bytes=...
//! seconds=...` is printed to stdout (`--nocapture`).

mod fuzz_support;

use fuzz_support::{Config, Target, exercise, mutate, seeds};
use queue_core::protocol::{Headers, Properties, TaskBody, envelope, kombu};
use queue_core::signature::Signature;
use serde_json::Value;

fn decode_envelope(input: &[u8]) -> bool {
    envelope::decode(input)
        .map(|message| exercise::message(&message))
        .is_ok()
}

fn decode_body(input: &[u8]) -> bool {
    TaskBody::from_json(input)
        .map(|body| exercise::body(&body))
        .is_ok()
}

fn decode_headers(input: &[u8]) -> bool {
    let properties = serde_json::from_slice::<Properties>(input).is_ok();
    serde_json::from_slice::<Headers>(input)
        .map(|headers| exercise::headers(&headers))
        .is_ok()
        || properties
}

fn decode_signature(input: &[u8]) -> bool {
    serde_json::from_slice::<Signature>(input)
        .map(|signature| exercise::signature(&signature, 0))
        .is_ok()
}

fn decode_kombu(input: &[u8]) -> bool {
    serde_json::from_slice::<Value>(input)
        .map(|value| {
            let _ = kombu::is_envelope(&value);
            kombu::untag(value).is_ok()
        })
        .unwrap_or(false)
}

fn target(name: &'static str, seeds: Vec<Value>, run: fn(&[u8]) -> bool) -> Target {
    Target {
        name,
        generate: Box::new(mutate::json_generator(seeds)),
        run,
        reduce: Some(mutate::json_reduction),
        describe: None,
    }
}

fn targets() -> Vec<Target> {
    vec![
        target("envelope", seeds::envelopes(), decode_envelope),
        target("body", seeds::bodies(), decode_body),
        target("headers", seeds::headers(), decode_headers),
        target("signature", seeds::signatures(), decode_signature),
        target("kombu", seeds::kombu_values(), decode_kombu),
    ]
}

#[test]
fn decoders_survive_generated_and_mutated_inputs() {
    let config = Config::from_env();
    let report = fuzz_support::run(
        "decoder-fuzz",
        "decoders_survive_generated_and_mutated_inputs",
        &targets(),
        &config,
    );
    fuzz_support::assert_clean("decoder-fuzz", &report);
    assert_eq!(report.inputs, config.only.map_or(config.inputs, |_| 1));
}

/// The fuzzer starts from valid messages: every seed decodes with its decoder, so that
/// mutations start deep inside the decoders rather than at their first check.
#[test]
fn every_seed_decodes() {
    exercise::init();
    let cases = [
        ("envelope", seeds::envelopes()),
        ("body", seeds::bodies()),
        ("headers", seeds::headers()),
        ("signature", seeds::signatures()),
        ("kombu", seeds::kombu_values()),
    ];
    let targets = targets();
    for (name, seeds) in cases {
        let run = targets
            .iter()
            .find(|target| target.name == name)
            .expect("a target per seed list")
            .run;
        assert!(seeds.len() >= 5, "{name}: only {} seeds", seeds.len());
        let rejected: Vec<String> = seeds
            .iter()
            .map(mutate::to_bytes)
            .filter(|input| !run(input))
            .map(|input| String::from_utf8_lossy(&input).into_owned())
            .collect();
        // The malformed vectors are seeds too; every other envelope must decode.
        let allowed = if name == "envelope" { 1 } else { 0 };
        assert!(
            rejected.len() <= allowed,
            "{name}: seeds rejected: {rejected:#?}"
        );
    }
}

/// Inputs the fuzzer found panicking (minimised), each a message a Python producer or a
/// hostile client can send. Panic sites before the fix: `protocol/mod.rs` (`TimeLimit`
/// to `Duration`), `signature.rs` (`Expires` from seconds, `Expires::resolve`), `app.rs`
/// (`App::prepare` of a callback: countdown, time limits).
const FOUND_PANICKING: &[(&str, &str)] = &[
    ("headers", r#"{"task":"","id":"","timelimit":[2e19,null]}"#),
    (
        "envelope",
        r#"{"body":null,"headers":{"task":"","id":"","timelimit":[0,2e31]}}"#,
    ),
    (
        "signature",
        r#"{"task":"","options":{"soft_time_limit":2e19}}"#,
    ),
    (
        "body",
        r#"[[],null,{"errbacks":[{"task":"","options":{"soft_time_limit":-5}}]}]"#,
    ),
    (
        "signature",
        r#"{"task":"","options":{"link":{"task":"","options":{"countdown":44073709551615}}}}"#,
    ),
    (
        "signature",
        r#"{"task":"","options":{"expires":9223372036875}}"#,
    ),
    (
        "body",
        r#"[[],null,{"callbacks":[{"task":"","options":{"expires":6e22}}]}]"#,
    ),
    ("signature", r#"{"task":"","options":{"expires":1e30}}"#),
];

#[test]
fn inputs_found_panicking_are_decoded_or_rejected() {
    let targets = targets();
    let mut failures = Vec::new();
    for (name, input) in FOUND_PANICKING {
        let target = targets
            .iter()
            .find(|target| target.name == *name)
            .expect("a known target");
        failures.extend(fuzz_support::replay(target, &[input.as_bytes()]));
    }
    assert!(failures.is_empty(), "still failing: {failures:#?}");
}
