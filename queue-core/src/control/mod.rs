//! Celery's remote control, the pidbox (wire spec §7): requests broadcast to workers on the
//! `celery.pidbox` fanout exchange, replies sent back to the asking client's queue on the
//! `reply.celery.pidbox` direct exchange. Protocol values here, and the client side
//! ([`Control`], from [`App::control`](crate::App::control)); a worker answers with
//! `queue-worker`'s control module.
//!
//! ```
//! use queue_core::control::Request;
//!
//! let request = Request::new("ping").destination(["celery@a"]);
//! assert!(request.is_for("celery@a"));
//! assert!(!request.is_for("celery@b"));
//! ```

mod client;

use globset::GlobBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::broadcast::BroadcastMessage;

pub use client::{Control, ControlError, Inspect, Replies};

/// The exchange requests are broadcast on (fanout).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";

/// The exchange replies are sent on (direct, routed by the client's id).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// The queue a worker named `node` receives requests on (`<node>.celery.pidbox`).
pub fn node_queue(node: &str) -> String {
    format!("{node}.{PIDBOX_EXCHANGE}")
}

/// The queue a client with id `client_id` receives replies on.
pub fn reply_queue(client_id: &str) -> String {
    format!("{client_id}.{REPLY_EXCHANGE}")
}

/// Where a reply goes: the client's exchange and id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The reply exchange (`reply.celery.pidbox`).
    pub exchange: String,
    /// The client's id: the routing key of its reply queue.
    pub routing_key: String,
}

/// One control request, as `celery.app.control` and kombu's `Mailbox` send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The command (`ping`, `stats`, `revoke`, …).
    pub method: String,
    /// Its keyword arguments.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// The nodes that should run it; `None` (or empty) for every node.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    /// A node name pattern, used with `matcher` when there is no destination.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `glob` (the default) or `pcre`.
    #[serde(default)]
    pub matcher: Option<String>,
    /// Present when a reply is expected: it marks the replies to this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Present when a reply is expected: where it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
}

impl Request {
    /// A request for `method` to every node, without arguments or reply.
    pub fn new(method: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            arguments: Map::new(),
            destination: None,
            pattern: None,
            matcher: None,
            ticket: None,
            reply_to: None,
        }
    }

    /// Adds an argument.
    pub fn argument(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments.insert(name.into(), value.into());
        self
    }

    /// Limits the request to these nodes.
    pub fn destination<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.destination = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Limits the request to nodes whose name matches `pattern` (`glob` or `pcre`).
    pub fn pattern(mut self, pattern: impl Into<String>, matcher: impl Into<String>) -> Self {
        self.pattern = Some(pattern.into());
        self.matcher = Some(matcher.into());
        self
    }

    /// Whether node `node` should run this request, as kombu's `Node.handle_message`
    /// decides: listed in the destination; else matching pattern and matcher when both are
    /// set; else every node. A pattern that does not compile matches nothing.
    pub fn is_for(&self, node: &str) -> bool {
        if let Some(destination) = self.destination.as_ref().filter(|nodes| !nodes.is_empty()) {
            return destination.iter().any(|name| name == node);
        }
        match (self.pattern.as_deref(), self.matcher.as_deref()) {
            (Some(pattern), Some(matcher)) if !pattern.is_empty() && !matcher.is_empty() => {
                name_matches(node, pattern, matcher)
            }
            _ => true,
        }
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.ticket.is_some() && self.reply_to.is_some()
    }

    /// Decodes a request body (what does not decode is logged and dropped by the worker,
    /// never fatal).
    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The body of this request.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// kombu's matchers: `glob` is `fnmatch(node, pattern)`; `pcre` is `re.match(pattern,
/// node)` (anchored at the start only).
fn name_matches(node: &str, pattern: &str, matcher: &str) -> bool {
    // Bounded: node names are short; a huge pattern is refused rather than compiled.
    if pattern.len() > 1024 {
        return false;
    }
    match matcher {
        "glob" => GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .is_ok_and(|glob| glob.compile_matcher().is_match(node)),
        "pcre" => regex::RegexBuilder::new(&format!("^(?:{pattern})"))
            .size_limit(1 << 20)
            .build()
            .is_ok_and(|regex| regex.is_match(node)),
        _ => false,
    }
}

/// `{"ok": value}`: Celery's reply for a command that did what was asked.
pub fn ok(value: impl Into<Value>) -> Value {
    let mut map = Map::new();
    map.insert("ok".into(), value.into());
    Value::Object(map)
}

/// `{"error": value}`: Celery's reply for a command that failed (unknown command, bad
/// arguments).
pub fn error(value: impl Into<Value>) -> Value {
    let mut map = Map::new();
    map.insert("error".into(), value.into());
    Value::Object(map)
}

/// The reply message of node `node` to `request` (which must expect one): body
/// `{node: reply}`, headers `ticket` and `clock`, routed to the client's id.
pub fn reply_message(
    node: &str,
    request: &Request,
    reply: Value,
    clock: u64,
) -> Option<BroadcastMessage> {
    let (Some(ticket), Some(reply_to)) = (&request.ticket, &request.reply_to) else {
        return None;
    };
    let mut body = Map::new();
    body.insert(node.to_owned(), reply);
    let body = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    Some(
        BroadcastMessage::new(reply_to.routing_key.clone(), body)
            .header("ticket", ticket.as_str())
            .header("clock", clock),
    )
}

#[cfg(test)]
mod tests;
