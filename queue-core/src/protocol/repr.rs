//! Python-style `repr()` of arguments, for the `argsrepr`/`kwargsrepr` headers that Flower,
//! events and logs show. Informational only; truncated like Celery's (1024 characters).

use serde_json::{Map, Value};

const MAX_LENGTH: usize = 1024;

/// `repr(tuple(args))`, e.g. `(2, 'a', None)`.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (index, value) in args.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        write_value(&mut out, value);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    truncate(out)
}

/// `repr(kwargs)`, e.g. `{'z': 1}`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, kwargs);
    truncate(out)
}

/// `repr(value)`, e.g. `4` or `{'total': 2.5}`: the `result` of a `task-succeeded` event.
pub fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    truncate(out)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_LENGTH {
        let mut cut = MAX_LENGTH - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        write_string(out, key);
        out.push_str(": ");
        write_value(out, value);
    }
    out.push('}');
}

fn write_string(out: &mut String, text: &str) {
    out.push('\'');
    for character in text.chars() {
        match character {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(character),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_repr() {
        assert_eq!(args_repr(&[json!(2), json!(2)]), "(2, 2)");
        assert_eq!(args_repr(&[json!("a")]), "('a',)");
        assert_eq!(args_repr(&[]), "()");
        assert_eq!(
            args_repr(&[json!(null), json!(true), json!([1, "x"])]),
            "(None, True, [1, 'x'])"
        );
        let kwargs = json!({"z": 1}).as_object().unwrap().clone();
        assert_eq!(kwargs_repr(&kwargs), "{'z': 1}");
    }
}
