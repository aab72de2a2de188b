//! Control requests as Python's `app.control` sends them (wire spec §7), and the client
//! against a responder on the memory broker.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::broadcast::{Binding, ExchangeKind};
use crate::{App, Broker, MemoryBroker};

/// The body of a ping from Celery 5.7's `app.control.ping()` (captured).
const PYTHON_PING: &str = r#"{"method": "ping", "arguments": {}, "destination": null,
    "pattern": null, "matcher": null, "ticket": "ticket-123",
    "reply_to": {"exchange": "reply.celery.pidbox",
                 "routing_key": "7772f75b-deca-32be-91fe-ecf3f87e8513"}}"#;

#[test]
fn a_python_ping_decodes_and_is_for_every_node() {
    let request = Request::decode(PYTHON_PING.as_bytes()).unwrap();
    assert_eq!(request.method, "ping");
    assert!(request.expects_reply());
    assert!(request.is_for("celery@anyone"));
    let reply = reply_message("celery@w1", &request, ok("pong"), 3).unwrap();
    assert_eq!(reply.routing_key, "7772f75b-deca-32be-91fe-ecf3f87e8513");
    assert_eq!(reply.headers["ticket"], json!("ticket-123"));
    assert_eq!(reply.headers["clock"], json!(3));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body, json!({"celery@w1": {"ok": "pong"}}));
}

#[test]
fn a_cast_expects_no_reply() {
    // `revoke` is sent without ticket and reply_to.
    let body = br#"{"method": "revoke", "arguments": {"task_id": "t"}, "destination": null,
        "pattern": null, "matcher": null}"#;
    let request = Request::decode(body).unwrap();
    assert!(!request.expects_reply());
    assert!(reply_message("n", &request, ok("x"), 1).is_none());
    assert_eq!(request.arguments["task_id"], json!("t"));
}

#[test]
fn nodes_are_selected_as_kombu_selects_them() {
    let listed = Request::new("ping").destination(["celery@a", "celery@b"]);
    assert!(listed.is_for("celery@b") && !listed.is_for("celery@c"));
    // An empty destination list means every node, as in Python.
    assert!(
        Request::new("ping")
            .destination(Vec::<String>::new())
            .is_for("x")
    );
    let glob = Request::new("ping").pattern("celery@web-*", "glob");
    assert!(glob.is_for("celery@web-1") && !glob.is_for("celery@db-1"));
    // pcre is `re.match`: anchored at the start only.
    let pcre = Request::new("ping").pattern("celery@(web|api)", "pcre");
    assert!(pcre.is_for("celery@api-3") && !pcre.is_for("x-celery@api"));
    // What does not compile, or an unknown matcher, matches nothing.
    assert!(!Request::new("ping").pattern("(", "pcre").is_for("("));
    assert!(!Request::new("ping").pattern("*", "nosuch").is_for("a"));
    // A pattern without a matcher is ignored: every node.
    let mut half = Request::new("ping");
    half.pattern = Some("nobody".into());
    assert!(half.is_for("celery@a"));
}

#[test]
fn bodies_that_are_not_requests_are_errors() {
    for body in [&b"[]"[..], b"{}", b"not json", br#"{"method": 5}"#] {
        assert!(Request::decode(body).is_err(), "{body:?}");
    }
}

#[tokio::test]
async fn the_client_collects_replies_with_its_ticket_only() {
    let broker = Arc::new(MemoryBroker::new());
    let broadcast = (broker.clone() as Arc<dyn Broker>).broadcast().unwrap();
    let app = App::builder()
        .broker_instance(broker)
        .build()
        .await
        .unwrap();
    let mut requests = broadcast
        .subscribe(Binding {
            exchange: PIDBOX_EXCHANGE.into(),
            kind: ExchangeKind::Fanout,
            routing_key: String::new(),
            queue: node_queue("celery@fake"),
        })
        .await
        .unwrap();
    // A responder that answers twice: once with another ticket (not ours), once for real.
    let responder = tokio::spawn(async move {
        let message = requests.next().await.unwrap();
        assert!(message.headers.contains_key("clock"));
        let request = Request::decode(&message.body).unwrap();
        let mut stranger = request.clone();
        stranger.ticket = Some("someone-else".into());
        for (request, node) in [(&stranger, "celery@stranger"), (&request, "celery@fake")] {
            let reply = reply_message(node, request, ok("pong"), 9).unwrap();
            broadcast
                .send(REPLY_EXCHANGE, ExchangeKind::Direct, reply)
                .await
                .unwrap();
        }
    });
    let replies = app
        .control()
        .destination(["celery@fake"])
        .timeout(Duration::from_secs(5))
        .ping()
        .await
        .unwrap();
    responder.await.unwrap();
    assert_eq!(replies.nodes().collect::<Vec<_>>(), ["celery@fake"]);
    assert_eq!(replies.get("celery@fake"), Some(&ok("pong")));
}

#[tokio::test]
async fn nobody_answering_is_an_empty_reply_after_the_timeout() {
    let app = App::builder().build().await.unwrap();
    let replies = app
        .control()
        .timeout(Duration::from_millis(50))
        .ping()
        .await
        .unwrap();
    assert!(replies.is_empty());
}
