//! Flower's task search syntax (`flower/utils/search.py`): terms joined by `AND`
//! (implicit) and `OR`, grouped by parentheses; a term is `field:value` (`name`, `state`,
//! `worker`, `args`, `kwargs`, `result`) or free text; `state:` is exact, the others are
//! case-insensitive substrings of at least 3 characters; `kwargs:key=value` matches a pair.

/// Longest query accepted (Flower's `MAX_QUERY_LENGTH`).
const MAX_LENGTH: usize = 2048;
/// Most tokens (Flower's `MAX_QUERY_TOKENS`).
const MAX_TOKENS: usize = 128;
/// Deepest nesting (Flower's `MAX_QUERY_DEPTH`).
const MAX_DEPTH: usize = 5;
/// Shortest substring term (Flower's, and what a trigram index can serve).
pub const MIN_SUBSTRING: usize = 3;

/// The fields a term may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The task name (substring).
    Name,
    /// The state (exact).
    State,
    /// The worker (substring).
    Worker,
    /// The args repr (substring).
    Args,
    /// The kwargs repr (substring, or `key=value`).
    Kwargs,
    /// The result repr (substring).
    Result,
}

impl Field {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "name" => Self::Name,
            "state" => Self::State,
            "worker" => Self::Worker,
            "args" => Self::Args,
            "kwargs" => Self::Kwargs,
            "result" => Self::Result,
            _ => return None,
        })
    }

    /// The column holding it.
    pub fn column(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::State => "state",
            Self::Worker => "worker",
            Self::Args => "args",
            Self::Kwargs => "kwargs",
            Self::Result => "result",
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// Everything (an empty query).
    All,
    /// `field:value`; `None` field: free text over every field and the id.
    Term(Option<Field>, String),
    /// `kwargs:key=value`.
    KwargsPair(String, String),
    /// All must match.
    And(Vec<Query>),
    /// One must match.
    Or(Vec<Query>),
}

/// A query that does not parse, with Flower's wording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuerySyntaxError(pub String);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Term(String, usize),
}

fn error(message: impl std::fmt::Display, position: Option<usize>) -> QuerySyntaxError {
    QuerySyntaxError(match position {
        Some(position) => format!("{message} at position {position}."),
        None => format!("{message}."),
    })
}

fn tokenize(query: &str) -> Result<Vec<Token>, QuerySyntaxError> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    let push = |tokens: &mut Vec<Token>, token| {
        tokens.push(token);
        if tokens.len() > MAX_TOKENS {
            return Err(error(format!("Query exceeds {MAX_TOKENS} tokens"), None));
        }
        Ok(())
    };
    while index < chars.len() {
        let char = chars[index];
        if char.is_whitespace() {
            index += 1;
            continue;
        }
        let position = index;
        if char == '(' || char == ')' {
            push(
                &mut tokens,
                if char == '(' {
                    Token::Open
                } else {
                    Token::Close
                },
            )?;
            index += 1;
            continue;
        }
        let mut value = String::new();
        let (mut quoted, mut in_quote) = (false, false);
        while index < chars.len() {
            let char = chars[index];
            if char == '\\' && matches!(chars.get(index + 1), Some('"' | '\\')) {
                value.push(chars[index + 1]);
                index += 2;
                continue;
            }
            if char == '"' {
                quoted = true;
                in_quote = !in_quote;
                index += 1;
                continue;
            }
            if !in_quote && (char.is_whitespace() || char == '(' || char == ')') {
                break;
            }
            value.push(char);
            index += 1;
        }
        if in_quote {
            return Err(error("Unterminated quoted phrase", Some(position)));
        }
        if value.is_empty() {
            return Err(error("Empty search term", Some(position)));
        }
        let token = match value.as_str() {
            "AND" if !quoted => Token::And,
            "OR" if !quoted => Token::Or,
            "NOT" if !quoted => return Err(error("NOT is not supported", Some(position))),
            _ => Token::Term(value, position),
        };
        push(&mut tokens, token)?;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index)
    }

    fn parse_or(&mut self, depth: usize) -> Result<Query, QuerySyntaxError> {
        let mut children = vec![self.parse_and(depth)?];
        while self.peek() == Some(&Token::Or) {
            self.index += 1;
            if matches!(
                self.peek(),
                None | Some(Token::Close | Token::And | Token::Or)
            ) {
                return Err(error("OR must be followed by a search term", None));
            }
            children.push(self.parse_and(depth)?);
        }
        Ok(combine(children, Query::Or))
    }

    fn parse_and(&mut self, depth: usize) -> Result<Query, QuerySyntaxError> {
        let mut children = vec![self.parse_primary(depth)?];
        while let Some(token) = self.peek() {
            match token {
                Token::Close | Token::Or => break,
                Token::And => {
                    self.index += 1;
                    if matches!(
                        self.peek(),
                        None | Some(Token::Close | Token::And | Token::Or)
                    ) {
                        return Err(error("AND must be followed by a search term", None));
                    }
                }
                _ => {}
            }
            children.push(self.parse_primary(depth)?);
        }
        Ok(combine(children, Query::And))
    }

    fn parse_primary(&mut self, depth: usize) -> Result<Query, QuerySyntaxError> {
        match self.peek().cloned() {
            Some(Token::Open) => {
                if depth >= MAX_DEPTH {
                    return Err(error(
                        format!("Query nesting exceeds {MAX_DEPTH} levels"),
                        None,
                    ));
                }
                self.index += 1;
                if self.peek() == Some(&Token::Close) {
                    return Err(error("Empty group", None));
                }
                let inner = self.parse_or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(error("Missing closing parenthesis", None));
                }
                self.index += 1;
                Ok(inner)
            }
            Some(Token::Term(value, position)) => {
                self.index += 1;
                term(&value, position)
            }
            _ => Err(error("Expected a search term", None)),
        }
    }
}

fn combine(mut children: Vec<Query>, make: fn(Vec<Query>) -> Query) -> Query {
    children.dedup();
    if children.len() == 1 {
        children.remove(0)
    } else {
        make(children)
    }
}

fn term(token: &str, position: usize) -> Result<Query, QuerySyntaxError> {
    let (field, value) = match token.split_once(':') {
        Some((name, value)) => match Field::parse(name) {
            Some(field) => (Some(field), value),
            None => (None, token),
        },
        None => (None, token),
    };
    if field.is_none() && value.starts_with('-') {
        return Err(error("Negation with '-' is not supported", Some(position)));
    }
    if value.is_empty() {
        return Err(error("Search qualifier requires a value", Some(position)));
    }
    if field == Some(Field::Kwargs) {
        if let Some((key, item)) = value.split_once('=') {
            return Ok(Query::KwargsPair(
                key.trim().to_owned(),
                item.trim().to_owned(),
            ));
        }
    }
    if field != Some(Field::State) && value.trim().chars().count() < MIN_SUBSTRING {
        return Err(error(
            format!("Substring search terms must contain at least {MIN_SUBSTRING} characters"),
            Some(position),
        ));
    }
    Ok(Query::Term(field, value.to_owned()))
}

/// Parses `query` (empty: [`Query::All`]).
pub fn parse(query: &str) -> Result<Query, QuerySyntaxError> {
    let query = query.trim();
    if query.chars().count() > MAX_LENGTH {
        return Err(error(
            format!("Query exceeds {MAX_LENGTH} characters"),
            None,
        ));
    }
    let tokens = tokenize(query)?;
    if tokens.is_empty() {
        return Ok(Query::All);
    }
    let mut parser = Parser { tokens, index: 0 };
    let parsed = parser.parse_or(0)?;
    if parser.index < parser.tokens.len() {
        return Err(error("Unexpected token", None));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flower_queries_parse() {
        assert_eq!(parse("  ").unwrap(), Query::All);
        assert_eq!(
            parse("state:FAILURE name:tasks.add args:42x").unwrap(),
            Query::And(vec![
                Query::Term(Some(Field::State), "FAILURE".into()),
                Query::Term(Some(Field::Name), "tasks.add".into()),
                Query::Term(Some(Field::Args), "42x".into()),
            ])
        );
        assert_eq!(
            parse("(state:SUCCESS OR state:FAILURE) \"hello world\"").unwrap(),
            Query::And(vec![
                Query::Or(vec![
                    Query::Term(Some(Field::State), "SUCCESS".into()),
                    Query::Term(Some(Field::State), "FAILURE".into()),
                ]),
                Query::Term(None, "hello world".into()),
            ])
        );
        assert_eq!(
            parse("kwargs:user=alice").unwrap(),
            Query::KwargsPair("user".into(), "alice".into())
        );
        assert_eq!(
            parse("other:abc").unwrap(),
            Query::Term(None, "other:abc".into())
        );
        for bad in [
            "ab", "NOT x", "-abc", "(abc", "abc OR", "\"abc", "()", "name:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
