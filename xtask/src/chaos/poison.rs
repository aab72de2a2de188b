//! Hostile messages, written straight into the kombu list of the chaos queue as another
//! producer (or an attacker) could: each kind must be dead-lettered with a reason, and the
//! worker must go on.

/// The kinds, cycled through; every 1000th message is a 10 MB body instead.
const KINDS: &[&str] = &[
    "invalid JSON",
    "wrong body shape",
    "unknown task",
    "eta past year 9999",
    "negative retries",
    "NaN timelimit",
    "huge expires number",
    "invalid UTF-8",
    "unknown content type",
    "missing headers",
    "broken kombu envelope",
];

/// `count` LPUSH commands in RESP for the list `queue`, ready to pipe to Redis.
pub fn commands(queue: &str, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for index in 0..count {
        let payload = if index % 1000 == 999 {
            envelope(
                &headers("chaos.record", index, ""),
                &"x".repeat(10 << 20),
                "application/json",
            )
        } else {
            message(KINDS[index % KINDS.len()], index)
        };
        out.extend_from_slice(b"*3\r\n$5\r\nLPUSH\r\n");
        out.extend_from_slice(format!("${}\r\n{queue}\r\n", queue.len()).as_bytes());
        out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn message(kind: &str, index: usize) -> Vec<u8> {
    let good_body = r#"[["x"], {}, {}]"#;
    match kind {
        "invalid JSON" => br#"{"body": "W1td", "headers": {"#.to_vec(),
        "wrong body shape" => envelope(&headers("chaos.record", index, ""), r#"{"not": "a list"}"#, "application/json"),
        "unknown task" => envelope(&headers("chaos.nobody", index, ""), good_body, "application/json"),
        "eta past year 9999" => envelope(&headers("chaos.record", index, r#", "eta": "99999-01-01T00:00:00""#), good_body, "application/json"),
        "negative retries" => envelope(&headers("chaos.record", index, r#", "retries": -1"#), good_body, "application/json"),
        "NaN timelimit" => envelope(&headers("chaos.record", index, r#", "timelimit": ["NaN", -5]"#), good_body, "application/json"),
        "huge expires number" => envelope(&headers("chaos.record", index, r#", "expires": 1e308"#), good_body, "application/json"),
        "invalid UTF-8" => vec![0xff, 0xfe, b'{', 0x80, 0x81],
        "unknown content type" => envelope(&headers("chaos.record", index, ""), good_body, "application/x-unknown"),
        "missing headers" => format!(
            r#"{{"body": "{}", "content-encoding": "utf-8", "content-type": "application/json", "properties": {{"body_encoding": "base64", "delivery_tag": "poison-{index}", "delivery_info": {{"exchange": "", "routing_key": "chaos"}}, "priority": 0}}}}"#,
            base64(good_body.as_bytes())
        )
        .into_bytes(),
        _ => format!(r#"{{"body": 17, "headers": [], "properties": "none", "delivery_tag": "poison-{index}"}}"#).into_bytes(),
    }
}

fn headers(task: &str, index: usize, extra: &str) -> String {
    format!(
        r#"{{"lang": "py", "task": "{task}", "id": "poison-{index}", "root_id": "poison-{index}", "retries": 0, "timelimit": [null, null]{extra}}}"#
    )
}

fn envelope(headers: &str, body: &str, content_type: &str) -> Vec<u8> {
    format!(
        r#"{{"body": "{}", "content-encoding": "utf-8", "content-type": "{content_type}", "headers": {headers}, "properties": {{"body_encoding": "base64", "delivery_tag": "{}", "delivery_info": {{"exchange": "", "routing_key": "chaos"}}, "priority": 0}}}}"#,
        base64(body.as_bytes()),
        uuid_like(headers),
    )
    .into_bytes()
}

/// A delivery tag unique per message (kombu's are UUIDs; any unique text does).
fn uuid_like(seed: &str) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in seed.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3);
    }
    format!("poison-{hash:016x}")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let value = chunk.iter().enumerate().fold(0u32, |value, (index, byte)| {
            value | u32::from(*byte) << (16 - 8 * index)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(value >> (18 - 6 * position) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::base64(b"[[1, 2], {}]"), "W1sxLCAyXSwge31d");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"a"), "YQ==");
    }
}
