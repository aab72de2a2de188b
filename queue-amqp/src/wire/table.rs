//! JSON ⇄ AMQP field tables, the way py-amqp encodes Python values.
//!
//! str → `S`, bool → `t`, float → `d`, int → `I` (signed 32) or `l` (signed 64; py-amqp
//! writes `L` and reads both), dict → `F`, list → `A`, `None` → `V` (void). Reading back
//! refuses what JSON cannot hold faithfully (NaN, bytes that are not UTF-8, deep nesting).

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// A JSON value as py-amqp would encode the equivalent Python value.
pub(crate) fn json_to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(flag) => AMQPValue::Boolean(*flag),
        Value::Number(number) => number_to_amqp(number),
        Value::String(text) => AMQPValue::LongString(LongString::from(text.as_bytes())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(json_to_amqp).collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(json_to_table(map)),
    }
}

fn number_to_amqp(number: &Number) -> AMQPValue {
    if let Some(integer) = number.as_i64() {
        // py-amqp's bounds: ±(2^31 - 1) as `I`, anything wider as 64-bit.
        match i32::try_from(integer) {
            Ok(small) if small != i32::MIN => AMQPValue::LongInt(small),
            _ => AMQPValue::LongLongInt(integer),
        }
    } else {
        // Floats, and integers beyond i64 (which AMQP tables cannot hold exactly).
        AMQPValue::Double(number.as_f64().unwrap_or(0.0))
    }
}

/// A JSON object as an AMQP field table.
pub(crate) fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        table.insert(ShortString::from(key.as_str()), json_to_amqp(value));
    }
    table
}

/// How deep header tables and arrays may nest. Celery's headers nest two or three levels;
/// the bound keeps a hostile message from exhausting the stack here or in serde.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a header value does not convert, and where (path segments, innermost first).
#[derive(Debug)]
struct ValueError {
    path: Vec<String>,
    reason: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            return formatter.write_str(&self.reason);
        }
        let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        write!(formatter, "header `{}`: {}", path.join(""), self.reason)
    }
}

fn refuse(reason: impl Into<String>) -> ValueError {
    ValueError {
        path: Vec::new(),
        reason: reason.into(),
    }
}

fn to_json(value: &AMQPValue, depth: usize) -> Result<Value, ValueError> {
    Ok(match value {
        AMQPValue::Boolean(flag) => Value::Bool(*flag),
        AMQPValue::ShortShortInt(number) => Value::from(*number),
        AMQPValue::ShortShortUInt(number) => Value::from(*number),
        AMQPValue::ShortInt(number) => Value::from(*number),
        AMQPValue::ShortUInt(number) => Value::from(*number),
        AMQPValue::LongInt(number) => Value::from(*number),
        AMQPValue::LongUInt(number) => Value::from(*number),
        AMQPValue::LongLongInt(number) => Value::from(*number),
        AMQPValue::Float(number) => float(f64::from(*number))?,
        AMQPValue::Double(number) => float(*number)?,
        AMQPValue::DecimalValue(decimal) => {
            float(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))?
        }
        AMQPValue::ShortString(text) => Value::String(text.as_str().to_owned()),
        AMQPValue::LongString(text) => utf8(text.as_bytes())?,
        AMQPValue::ByteArray(bytes) => utf8(bytes.as_slice())?,
        AMQPValue::Timestamp(seconds) => Value::from(*seconds),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(items) => {
            let depth = nested(depth)?;
            let items = items.as_slice().iter().enumerate().map(|(index, item)| {
                to_json(item, depth).map_err(|mut error| {
                    error.path.push(format!("[{index}]"));
                    error
                })
            });
            Value::Array(items.collect::<Result<_, _>>()?)
        }
        AMQPValue::FieldTable(table) => Value::Object(table_json(table, nested(depth)?, ".")?),
    })
}

fn nested(depth: usize) -> Result<usize, ValueError> {
    if depth >= MAX_DEPTH {
        return Err(refuse(format!(
            "tables and arrays nest deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

fn float(number: f64) -> Result<Value, ValueError> {
    Number::from_f64(number)
        .map(Value::Number)
        .ok_or_else(|| refuse(format!("{number} is not a finite number")))
}

fn utf8(bytes: &[u8]) -> Result<Value, ValueError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Value::String(text.to_owned())),
        Err(error) => Err(refuse(format!("the bytes are not UTF-8 text ({error})"))),
    }
}

/// An AMQP field table as a JSON object. Timestamps become seconds; decimals become floats;
/// long strings and byte arrays become strings.
///
/// Refuses what a Celery header cannot mean and JSON cannot hold faithfully: NaN and
/// infinite numbers, bytes that are not UTF-8 (a lossy conversion would silently change a
/// task name or id), nesting deeper than [`MAX_DEPTH`]. The error names the header's path,
/// e.g. ``header `timelimit[0]`: NaN is not a finite number``.
pub(crate) fn table_to_json(table: &FieldTable) -> Result<Map<String, Value>, String> {
    table_json(table, 0, "").map_err(|error| error.to_string())
}

fn table_json(
    table: &FieldTable,
    depth: usize,
    separator: &str,
) -> Result<Map<String, Value>, ValueError> {
    table
        .inner()
        .iter()
        .map(|(key, value)| match to_json(value, depth) {
            Ok(value) => Ok((key.as_str().to_owned(), value)),
            Err(mut error) => {
                error.path.push(format!("{separator}{}", key.as_str()));
                Err(error)
            }
        })
        .collect()
}
