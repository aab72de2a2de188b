//! Keeps secrets out of what the monitor shows: the user info of any URL in a text.

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`.
///
/// ```
/// assert_eq!(
///     queue_monitor::redact::text("cannot reach amqp://guest:s3cret@rabbit:5672//: refused"),
///     "cannot reach amqp://guest:***@rabbit:5672//: refused"
/// );
/// ```
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find("://") {
        let (before, after) = rest.split_at(index + 3);
        out.push_str(before);
        // The authority ends at the first '/', whitespace or quote.
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user_info = &authority[..at];
                match user_info.split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str(user_info),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_go_users_stay() {
        assert_eq!(super::text("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(super::text("no url here"), "no url here");
        assert_eq!(
            super::text("a http://h/x b postgres://u:p@db/x"),
            "a http://h/x b postgres://u:***@db/x"
        );
        assert_eq!(super::text("x://u@h"), "x://u@h");
    }
}
