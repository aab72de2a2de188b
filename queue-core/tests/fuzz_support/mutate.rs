//! Input generation: byte mutations, JSON-aware mutations of seed documents (hostile numbers,
//! invalid dates, wrong types, deep nesting, giant arrays, duplicate keys, mutations inside
//! base64-encoded JSON bodies), documents generated from scratch, and random bytes.
//!
//! JSON that `serde_json` cannot represent (`NaN`, `1e309`, lone surrogates, duplicate keys)
//! is carried in a [`Value`] as placeholder strings ([`RAW`], [`DUP`]) and written out by
//! [`write_json`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use serde_json::{Map, Value};

use super::Rng;
pub use super::dictionary::{INTEGERS, KEYS, NUMBERS, STRINGS, TOKENS};

/// A string value starting with this is written as the raw JSON text that follows.
pub const RAW: &str = "\u{1}RAW:";
/// An object key starting with this is written as the text after the next `:`, so that a
/// map can hold the same key twice.
pub const DUP: &str = "\u{1}DUP";

/// A placeholder for the raw JSON text `text`.
pub fn raw(text: &str) -> Value {
    Value::String(format!("{RAW}{text}"))
}

/// Writes `value` as JSON, placeholders as their raw text.
pub fn write_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(text) if text.starts_with(RAW) => {
            out.extend_from_slice(&text.as_bytes()[RAW.len()..]);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.extend_from_slice(b", ");
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.extend_from_slice(b", ");
                }
                write_string(plain_key(key), out);
                out.extend_from_slice(b": ");
                write_json(item, out);
            }
            out.push(b'}');
        }
        Value::String(text) => write_string(text, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The key as written: a [`DUP`] key loses its prefix and disambiguator.
pub fn plain_key(key: &str) -> &str {
    match key.strip_prefix(DUP) {
        Some(rest) => rest.split_once(':').map_or(rest, |(_, key)| key),
        None => key,
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(Value::from(text).to_string().as_bytes());
}

/// `value` as JSON bytes (placeholders raw).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(value, &mut out);
    out
}

/// Replaces what nests deeper than `max` levels by `null`.
pub fn clip_depth(value: &mut Value, max: usize) {
    match value {
        Value::Array(_) | Value::Object(_) if max == 0 => *value = Value::Null,
        Value::Array(items) => items.iter_mut().for_each(|item| clip_depth(item, max - 1)),
        Value::Object(map) => map.values_mut().for_each(|item| clip_depth(item, max - 1)),
        _ => {}
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn nth_node<'a>(value: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Value::Array(items) => items.iter_mut().find_map(|item| nth_node(item, n)),
        Value::Object(map) => map.values_mut().find_map(|item| nth_node(item, n)),
        _ => None,
    }
}

fn remove_at(map: &mut Map<String, Value>, index: usize) -> Option<(String, Value)> {
    let key = map.keys().nth(index)?.clone();
    map.shift_remove_entry(&key)
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    *items.choose(rng).expect("non-empty list")
}

fn pick_ref<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("non-empty list")
}

/// A hostile scalar: a number, a string, or a value of another type.
pub fn hostile_scalar(rng: &mut Rng) -> Value {
    match rng.random_range(0..10) {
        0..4 => raw(pick(rng, NUMBERS)),
        4..7 => Value::from(pick(rng, STRINGS)),
        7 => Value::Null,
        8 => Value::Bool(rng.random()),
        _ => random_value(rng, 2),
    }
}

/// A random JSON value, at most `depth` levels deep.
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 8 };
    match rng.random_range(0..kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => raw(pick(rng, NUMBERS)),
        3 => Value::from(rng.random::<i64>() >> rng.random_range(0..64)),
        4 => Value::from(pick(rng, STRINGS)),
        5 | 6 => {
            let len = rng.random_range(0..5);
            let mut map = Map::new();
            for _ in 0..len {
                map.insert((pick(rng, KEYS)).to_owned(), random_value(rng, depth - 1));
            }
            Value::Object(map)
        }
        _ => {
            let len = rng.random_range(0..5);
            Value::Array((0..len).map(|_| random_value(rng, depth - 1)).collect())
        }
    }
}

/// Applies one JSON-aware mutation to a random node of `value`. `pool` gives subtrees to
/// splice in; `max` bounds the size a mutation grows the document to.
pub fn mutate_value(rng: &mut Rng, value: &mut Value, pool: &[Value], max: usize) {
    let nodes = count_nodes(value);
    let mut n = rng.random_range(0..nodes);
    let Some(node) = nth_node(value, &mut n) else {
        return;
    };
    match rng.random_range(0..20) {
        // Numbers first: the known weak spot (durations, timestamps, integer widths).
        0..4 => *node = raw(pick(rng, NUMBERS)),
        4..6 => *node = Value::from(pick(rng, STRINGS)),
        6 => *node = random_value(rng, 2),
        7 => {
            let depth = pick(rng, &[1, 2, 3, 8, 64, 127, 128, 129, 200, 600]);
            for _ in 0..depth {
                let inner = node.take();
                *node = if rng.random() {
                    Value::Array(vec![inner])
                } else {
                    let mut map = Map::new();
                    map.insert((pick(rng, KEYS)).to_owned(), inner);
                    Value::Object(map)
                };
            }
        }
        8 | 9 => match node {
            Value::Object(map) if !map.is_empty() => {
                let index = rng.random_range(0..map.len());
                remove_at(map, index);
            }
            Value::Array(items) if !items.is_empty() => {
                items.remove(rng.random_range(0..items.len()));
            }
            other => *other = Value::Null,
        },
        10 | 11 => match node {
            Value::Object(map) => {
                map.insert((pick(rng, KEYS)).to_owned(), hostile_scalar(rng));
            }
            Value::Array(items) => items.push(hostile_scalar(rng)),
            other => *other = hostile_scalar(rng),
        },
        12 => {
            let element = match node {
                Value::Array(items) if !items.is_empty() => items[0].clone(),
                _ => hostile_scalar(rng),
            };
            let size = to_bytes(&element).len() + 2;
            // Mostly moderate: a giant array costs every later step (and the run) its size.
            let wanted = pick(rng, &[16, 64, 256, 1024, 4096, 65536]);
            let count = wanted.min(max / size).max(1);
            *node = Value::Array(vec![element; count]);
        }
        13 => {
            let donor = pick_ref(rng, pool).clone();
            let mut donor = donor;
            let count = count_nodes(&donor);
            let mut k = rng.random_range(0..count);
            if let Some(part) = nth_node(&mut donor, &mut k) {
                *node = part.take();
            }
        }
        14 | 15 => mutate_inside_string(rng, node, pool, max),
        16 => match node {
            Value::Number(number) => {
                let text = number.to_string();
                *node = match rng.random_range(0..4) {
                    0 => raw(&format!("-{text}")),
                    1 => raw(&format!("{text}e300")),
                    2 => raw(&format!("{text}000000000000000000000")),
                    _ => Value::from(text),
                };
            }
            Value::String(text) => {
                if let Ok(number) = text.parse::<f64>() {
                    *node = Value::from(number);
                } else {
                    *node = Value::Array(vec![Value::from(text.as_str())]);
                }
            }
            Value::Null => *node = Value::from(0),
            Value::Bool(flag) => *node = Value::from(flag.to_string()),
            Value::Array(items) => {
                let map = items
                    .drain(..)
                    .enumerate()
                    .map(|(index, item)| (index.to_string(), item))
                    .collect();
                *node = Value::Object(map);
            }
            Value::Object(map) => *node = Value::Array(map.values().cloned().collect()),
        },
        17 => {
            let map = match node {
                Value::Object(map) if !map.is_empty() => map,
                other => {
                    *other = Value::Object(Map::new());
                    return;
                }
            };
            {
                let index = rng.random_range(0..map.len());
                let (key, item) = remove_at(map, index).expect("index in range");
                let new_key = if rng.random() {
                    // The same key twice: serde keeps the last, or refuses.
                    format!("{DUP}{}:{}", rng.random::<u32>(), plain_key(&key))
                } else {
                    (pick(rng, KEYS)).to_owned()
                };
                map.insert(key, item.clone());
                map.insert(new_key, item);
            }
        }
        18 => {
            *node = raw(pick(
                rng,
                &["\"\\ud800\"", "\"\\udfff\\ud800\"", "\"\\u0000\""],
            ))
        }
        _ => {
            if let Value::Object(map) = node {
                map.clear();
            } else {
                *node = Value::Array(Vec::new());
            }
        }
    }
}

/// String mutations; a string holding base64 JSON (a kombu body) is mutated inside.
fn mutate_inside_string(rng: &mut Rng, node: &mut Value, pool: &[Value], max: usize) {
    let Value::String(text) = node else {
        *node = Value::from(pick(rng, STRINGS));
        return;
    };
    if let Some(mut inner) = STANDARD
        .decode(text.as_bytes())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    {
        for _ in 0..rng.random_range(1..=3) {
            mutate_value(rng, &mut inner, pool, max);
        }
        *text = STANDARD.encode(to_bytes(&inner));
        return;
    }
    match rng.random_range(0..5) {
        0 => {
            let mut cut = rng.random_range(0..=text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        1 => text.push_str(pick(rng, &["Z", "+00:00", ".123456789", "\u{0}", "é"])),
        2 => {
            let count = (max / 2 / text.len().max(1)).clamp(1, 4096);
            *text = text.repeat(count);
        }
        3 => *text = STANDARD.encode(text.as_bytes()),
        _ => *text = (pick(rng, STRINGS)).to_owned(),
    }
}

/// Applies one byte-level mutation. `pool` gives other inputs to splice with.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max: usize) {
    if data.is_empty() {
        data.extend_from_slice(pick(rng, TOKENS).as_bytes());
        return;
    }
    let at = rng.random_range(0..data.len());
    match rng.random_range(0..12) {
        0 => data[at] ^= 1 << rng.random_range(0..8),
        1 => data[at] = rng.random(),
        2 => data[at] = pick(rng, b"\x00\xff\x7f\x80\"\\{}[],:0123456789-+eE.nul tf"),
        3 => {
            let end = rng.random_range(at..=data.len().min(at + 64));
            data.drain(at..end);
        }
        4 => {
            let count = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            data.splice(at..at, bytes);
        }
        5 => {
            let end = rng.random_range(at..=data.len().min(at + 256));
            let chunk = data[at..end].to_vec();
            let to = rng.random_range(0..=data.len());
            data.splice(to..to, chunk);
        }
        6 => data.truncate(at),
        7 => {
            let other = pick_ref(rng, pool);
            let from = rng.random_range(0..=other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        8 => {
            let token = if rng.random() {
                pick(rng, TOKENS)
            } else {
                pick(rng, NUMBERS)
            };
            data.splice(at..at, token.bytes());
        }
        9 => {
            let key = format!("\"{}\": ", pick(rng, KEYS));
            data.splice(at..at, key.into_bytes());
        }
        10 => {
            // A number in the text replaced by a hostile one.
            let start = data[at..]
                .iter()
                .position(u8::is_ascii_digit)
                .map(|p| at + p);
            if let Some(start) = start {
                let end = data[start..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || b"+-.eE".contains(b)))
                    .map_or(data.len(), |p| start + p);
                data.splice(start..end, pick(rng, NUMBERS).bytes());
            }
        }
        _ => {
            let width = pick(rng, &[1usize, 2, 4, 8]);
            let value = pick(rng, INTEGERS).to_be_bytes();
            let bytes = &value[8 - width..];
            let end = (at + width).min(data.len());
            data.splice(at..end, bytes.iter().copied());
        }
    }
    data.truncate(max);
}

/// Random bytes: fully random, JSON-ish characters, or printable text.
pub fn random_bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max.min(512));
    match rng.random_range(0..3) {
        0 => (0..len).map(|_| rng.random()).collect(),
        1 => (0..len)
            .map(|_| pick(rng, b"{}[]\":,0123456789.eE-+ntrufalsNI\\ "))
            .collect(),
        _ => (0..len).map(|_| rng.random_range(0x20..0x7f)).collect(),
    }
}

/// A generator for a JSON decoder: mutated seeds (JSON-aware and byte-level), documents
/// generated from scratch, and random bytes.
pub fn json_generator(seeds: Vec<Value>) -> impl Fn(&mut Rng, usize) -> Vec<u8> + Send + Sync {
    let byte_seeds: Vec<Vec<u8>> = seeds.iter().map(to_bytes).collect();
    move |rng, max| match rng.random_range(0..100) {
        0..5 => random_bytes(rng, max),
        5..10 => to_bytes(&random_value(rng, 4)),
        10..35 => {
            let mut data = pick_ref(rng, &byte_seeds).clone();
            for _ in 0..stack_depth(rng) {
                mutate_bytes(rng, &mut data, &byte_seeds, max);
            }
            data
        }
        _ => {
            let mut value = pick_ref(rng, &seeds).clone();
            for _ in 0..stack_depth(rng) {
                mutate_value(rng, &mut value, &seeds, max);
            }
            let mut data = to_bytes(&value);
            if rng.random_ratio(1, 8) {
                mutate_bytes(rng, &mut data, &byte_seeds, max);
            }
            data
        }
    }
}

/// How many mutations to stack: mostly one or two, so that most inputs stay close to valid
/// and reach the deeper decoding steps.
pub fn stack_depth(rng: &mut Rng) -> usize {
    match rng.random_range(0..8) {
        0..4 => 1,
        4..6 => 2,
        _ => rng.random_range(3..=8),
    }
}

/// The `n`-th one-step reduction of a JSON document (a node replaced by `null`, a member or
/// element removed, a base64 JSON string reduced inside), for
/// minimising a failing input; `None` past the last.
pub fn json_reduction(input: &[u8], n: usize) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(input).ok()?;
    let mut n = n;
    reduce(&mut value, &mut n).then(|| to_bytes(&value))
}

fn reduce(value: &mut Value, n: &mut usize) -> bool {
    if !value.is_null() {
        if *n == 0 {
            *value = Value::Null;
            return true;
        }
        *n -= 1;
    }
    match value {
        Value::Array(items) => {
            for index in 0..items.len() {
                if *n == 0 {
                    items.remove(index);
                    return true;
                }
                *n -= 1;
            }
            items.iter_mut().any(|item| reduce(item, n))
        }
        Value::Object(map) => {
            for index in 0..map.len() {
                if *n == 0 {
                    remove_at(map, index);
                    return true;
                }
                *n -= 1;
            }
            map.values_mut().any(|item| reduce(item, n))
        }
        Value::String(text) => {
            let Some(bytes) = STANDARD.decode(text.as_bytes()).ok() else {
                return false;
            };
            let Ok(mut inner) = serde_json::from_slice::<Value>(&bytes) else {
                return false;
            };
            if reduce(&mut inner, n) {
                *text = STANDARD.encode(to_bytes(&inner));
                return true;
            }
            false
        }
        _ => false,
    }
}
