//! Reads back the argument reprs that task events carry (`argsrepr`, `kwargsrepr`): Python
//! literals as Celery writes them (`(1, 'a')`, `{'x': None}`) and JSON, so that a task can
//! be re-sent with its arguments. Anything else (an object's repr) is refused: it could not
//! be re-sent faithfully.

use serde_json::{Map, Number, Value};

/// Deepest nesting read (a repr from the network must not exhaust the stack).
const MAX_DEPTH: usize = 64;

/// Why a repr cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a literal at character {position}: {reason}")]
pub struct LiteralError {
    position: usize,
    reason: &'static str,
}

struct Reader<'a> {
    chars: Vec<char>,
    index: usize,
    _text: &'a str,
}

/// Parses `text` as one Python or JSON literal.
pub fn parse(text: &str) -> Result<Value, LiteralError> {
    let mut reader = Reader {
        chars: text.chars().collect(),
        index: 0,
        _text: text,
    };
    let value = reader.value(0)?;
    reader.space();
    if reader.index != reader.chars.len() {
        return Err(reader.error("unexpected text after the value"));
    }
    Ok(value)
}

impl Reader<'_> {
    fn error(&self, reason: &'static str) -> LiteralError {
        LiteralError {
            position: self.index,
            reason,
        }
    }

    fn space(&mut self) {
        while self
            .chars
            .get(self.index)
            .is_some_and(|c| c.is_whitespace())
        {
            self.index += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.index).copied()
    }

    fn word(&mut self, word: &str) -> bool {
        let end = self.index + word.chars().count();
        if end <= self.chars.len() && self.chars[self.index..end].iter().copied().eq(word.chars()) {
            self.index = end;
            return true;
        }
        false
    }

    fn value(&mut self, depth: usize) -> Result<Value, LiteralError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.space();
        match self.peek() {
            Some('[') => self.sequence(']', depth),
            Some('(') => self.sequence(')', depth),
            Some('{') => self.mapping(depth),
            Some('\'' | '"') => self.string().map(Value::String),
            Some(c) if c == '-' || c == '+' || c.is_ascii_digit() || c == '.' => self.number(),
            _ => {
                for (word, value) in [
                    ("None", Value::Null),
                    ("null", Value::Null),
                    ("True", Value::Bool(true)),
                    ("true", Value::Bool(true)),
                    ("False", Value::Bool(false)),
                    ("false", Value::Bool(false)),
                ] {
                    if self.word(word) {
                        return Ok(value);
                    }
                }
                Err(self.error("expected a literal"))
            }
        }
    }

    fn sequence(&mut self, close: char, depth: usize) -> Result<Value, LiteralError> {
        self.index += 1;
        let mut items = Vec::new();
        loop {
            self.space();
            if self.peek() == Some(close) {
                self.index += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.space();
            match self.peek() {
                Some(',') => self.index += 1,
                Some(c) if c == close => {}
                _ => return Err(self.error("expected ',' or the closing bracket")),
            }
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<Value, LiteralError> {
        self.index += 1;
        let mut map = Map::new();
        loop {
            self.space();
            if self.peek() == Some('}') {
                self.index += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value(depth + 1)? {
                Value::String(key) => key,
                Value::Number(number) => number.to_string(),
                _ => return Err(self.error("dictionary keys must be strings or numbers")),
            };
            self.space();
            if self.peek() != Some(':') {
                return Err(self.error("expected ':'"));
            }
            self.index += 1;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            self.space();
            match self.peek() {
                Some(',') => self.index += 1,
                Some('}') => {}
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = self.peek().ok_or_else(|| self.error("expected a string"))?;
        self.index += 1;
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            self.index += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escaped = self
                .peek()
                .ok_or_else(|| self.error("unterminated escape"))?;
            self.index += 1;
            match escaped {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' | '/' => out.push(escaped),
                'x' => out.push(self.hex(2)?),
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                _ => return Err(self.error("unknown escape")),
            }
        }
    }

    fn hex(&mut self, digits: usize) -> Result<char, LiteralError> {
        let end = self.index + digits;
        if end > self.chars.len() {
            return Err(self.error("short escape"));
        }
        let text: String = self.chars[self.index..end].iter().collect();
        self.index = end;
        u32::from_str_radix(&text, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error("bad escape"))
    }

    fn number(&mut self) -> Result<Value, LiteralError> {
        let start = self.index;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E' | '_'))
        {
            self.index += 1;
        }
        let text: String = self.chars[start..self.index]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        if let Ok(integer) = text.parse::<i64>() {
            return Ok(Value::from(integer));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| self.error("bad number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_and_json_literals_read_back() {
        assert_eq!(
            parse("(1, 'a', None, True)").unwrap(),
            json!([1, "a", null, true])
        );
        assert_eq!(parse("(5,)").unwrap(), json!([5]));
        assert_eq!(
            parse("{'x': [1.5, -2], 'y': {\"z\": false}}").unwrap(),
            json!({"x": [1.5, -2], "y": {"z": false}})
        );
        assert_eq!(parse(r#"'it\'s \x41\u00e9'"#).unwrap(), json!("it's Aé"));
        assert_eq!(parse("[]").unwrap(), json!([]));
        for bad in [
            "<object at 0x1>",
            "(1, 2",
            "{'a' 1}",
            "datetime.date(2024, 1, 1)",
            "1 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
