//! What a worker and a transport do with a message that decoded: read its numbers (time
//! limits, eta, expiry), decode the body and untag its kombu values, apply its callbacks
//! (`App::prepare`, the path of `link`/`link_error`/chain/chord), write it back (restore,
//! retry, dead letter) and read that back. A panic anywhere here is a panic on network input.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_core::App;
use queue_core::protocol::{Headers, Message, TaskBody, envelope, kombu, repr, time};
use queue_core::signature::Signature;
use serde_json::Value;

/// Canvas nesting followed when applying callbacks (a link of a link of ...).
const MAX_CANVAS_DEPTH: usize = 8;

static APP: OnceLock<App> = OnceLock::new();

/// Messages that decoded but whose re-encoding does not decode again (not a failure of the
/// fuzz run: a restored or retried copy of such a message becomes undecodable).
pub static REENCODE_REJECTED: AtomicU64 = AtomicU64::new(0);
static REENCODE_EXAMPLE: Mutex<Option<String>> = Mutex::new(None);

/// Builds the app used to apply callbacks (outside any counted input).
pub fn init() {
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime
            .block_on(App::builder().broker("memory://").build())
            .expect("an app on the memory broker")
    });
}

fn app() -> &'static App {
    APP.get().expect("exercise::init ran before the fuzz loop")
}

/// The first message seen whose re-encoding was rejected, with the error.
pub fn reencode_example() -> Option<String> {
    REENCODE_EXAMPLE
        .lock()
        .map_or(None, |example| example.clone())
}

fn note_reencode(what: &str, error: &dyn std::fmt::Display, encoded: &[u8]) {
    REENCODE_REJECTED.fetch_add(1, Ordering::Relaxed);
    super::alloc::untracked(|| {
        if let Ok(mut example) = REENCODE_EXAMPLE.lock() {
            example.get_or_insert_with(|| {
                format!(
                    "{what}: {error}; re-encoded: {}",
                    super::escape(encoded, 600)
                )
            });
        }
    });
}

/// Everything done with a decoded message.
pub fn message(message: &Message) {
    let _ = (message.id(), message.task_name(), message.priority());
    headers(&message.headers);
    if let Ok(decoded) = message.decode_body() {
        body(&decoded);
    }
    let encoded = envelope::encode(message);
    match envelope::decode(&encoded) {
        Ok(again) => headers(&again.headers),
        Err(error) => note_reencode("kombu envelope", &error, &encoded),
    }
}

/// The numbers of the headers, as the worker reads them.
pub fn headers(headers: &Headers) {
    let _ = (headers.timelimit.hard(), headers.timelimit.soft());
    let now = time::now();
    for when in [headers.eta, headers.expires].into_iter().flatten() {
        let _ = (when <= now, time::until(when), time::between(when, now));
        let _ = time::format_timestamp(&when);
        let _ = time::add(when, Duration::from_secs(1));
    }
}

/// The decoded body: kombu values untagged, reprs, re-encoding, callbacks applied.
pub fn body(body: &TaskBody) {
    let _ = kombu::untag(Value::Array(body.args.clone()));
    let _ = kombu::untag(Value::Object(body.kwargs.clone()));
    let _ = (repr::args_repr(&body.args), repr::kwargs_repr(&body.kwargs));
    let encoded = body.to_json();
    if let Err(error) = TaskBody::from_json(&encoded) {
        note_reencode("task body", &error, &encoded);
    }
    let Some(embed) = &body.embed else {
        return;
    };
    let lists = [&embed.callbacks, &embed.errbacks, &embed.chain];
    for signatures in lists.into_iter().flatten() {
        for each in signatures {
            signature(each, 0);
        }
    }
    if let Some(chord) = &embed.chord {
        signature(chord, 0);
    }
}

/// A signature from a message, applied as the worker applies a callback.
pub fn signature(signature: &Signature, depth: usize) {
    let options = &signature.options;
    if let Some(expires) = &options.expires {
        let _ = expires.resolve(time::now());
    }
    if let Some(countdown) = options.countdown {
        let _ = time::after_seconds(countdown);
    }
    let _ = kombu::untag(Value::Array(signature.args.clone()));
    if let Ok(publish) = app().prepare(signature.clone()) {
        headers(&publish.message.headers);
        let _ = envelope::encode(&publish.message);
    }
    if depth < MAX_CANVAS_DEPTH {
        for next in options.link.iter().chain(&options.link_error) {
            self::signature(next, depth + 1);
        }
    }
}
