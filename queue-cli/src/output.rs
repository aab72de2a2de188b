//! How replies are printed: as `celery inspect` / `celery control` print them
//! (`celery/bin/base.py`'s `pretty`), or as one JSON object.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Failure, Target};

/// A control request's replies, `(node, reply)` in arrival order.
pub type Replies = Vec<(String, Value)>;

/// Prints `replies` (human or `--json`); `summary` adds `N nodes online.` as `celery
/// inspect` does. No replies is Celery's "No nodes replied" error.
pub fn print_replies(replies: Replies, target: &Target, summary: bool) -> Result<(), Failure> {
    if replies.is_empty() {
        return Err(Failure::NoReplies);
    }
    if target.json {
        let object: Map<String, Value> = replies.into_iter().collect();
        println!("{}", Value::Object(object));
        return Ok(());
    }
    for (node, reply) in &replies {
        let (status, text) = pretty(reply);
        println!("->  {node}: {status}");
        println!("{}", indent(&text, 4));
    }
    if summary {
        let count = replies.len();
        let noun = if count == 1 { "node" } else { "nodes" };
        println!("\n{count} {noun} online.");
    }
    Ok(())
}

/// Celery's `pretty`: a status (`OK`/`ERROR`) and the text of a reply.
pub fn pretty(reply: &Value) -> (&'static str, String) {
    match reply {
        Value::Array(items) if items.is_empty() => ("OK", "- empty -".to_owned()),
        Value::Array(items) => {
            let lines: Vec<String> = items
                .iter()
                .map(|item| format!("* {}", plain(item)))
                .collect();
            ("OK", lines.join("\n"))
        }
        Value::Object(object) if object.contains_key("ok") => {
            ("OK", indent(&pretty(&object["ok"]).1, 4))
        }
        Value::Object(object) if object.contains_key("error") => {
            ("ERROR", indent(&pretty(&object["error"]).1, 4))
        }
        Value::Object(_) => ("OK", pretty_json(&sorted(reply))),
        other => ("OK", plain(other)),
    }
}

/// A string as it is, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// JSON indented by 4, as Python's `json.dumps(indent=4)`.
fn pretty_json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    match value.serialize(&mut serializer) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => value.to_string(),
    }
}

/// Object keys sorted at every depth (`sort_keys=True`).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn indent(text: &str, width: usize) -> String {
    let pad = " ".repeat(width);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_print_as_celery_prints_them() {
        assert_eq!(pretty(&json!({"ok": "pong"})), ("OK", "    pong".into()));
        assert_eq!(
            pretty(&json!({"error": "KeyError('x')"})),
            ("ERROR", "    KeyError('x')".into())
        );
        assert_eq!(pretty(&json!([])), ("OK", "- empty -".into()));
        assert_eq!(
            pretty(&json!(["tasks.add", "tasks.echo"])),
            ("OK", "* tasks.add\n* tasks.echo".into())
        );
        assert_eq!(
            pretty(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            (
                "OK",
                "{\n    \"a\": {\n        \"c\": 3,\n        \"d\": 2\n    },\n    \"b\": 1\n}"
                    .into()
            )
        );
        assert_eq!(pretty(&json!(7)), ("OK", "7".into()));
    }
}
