//! Parsing and validation of the `#[task(...)]` options.
//!
//! Every option is `key = value`. Values are checked here, at compile time, so that a bad
//! priority or rate limit is an error pointing at the value rather than a surprise in a worker.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprPath, ExprUnary, Lit, LitStr, MetaNameValue, Token, UnOp};

/// The option names `#[task]` accepts, in the order they are listed in error messages.
pub const VALID_OPTIONS: &[&str] = &[
    "name",
    "queue",
    "priority",
    "max_retries",
    "retry_delay",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_on",
    "acks_late",
    "ignore_result",
    "time_limit",
    "soft_time_limit",
    "rate_limit",
    "track_started",
];

/// The highest task priority (`queue::MAX_PRIORITY`).
const MAX_PRIORITY: u64 = 9;

/// A duration written in seconds, split at compile time into whole seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds {
    pub secs: u64,
    pub nanos: u32,
}

/// `max_retries`: a count, or `None` for no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxRetries {
    Limited(u32),
    Unlimited,
}

/// A validated `rate_limit`: `count` starts per `period_secs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub period_secs: u64,
}

/// The predicate of `retry_on`, with the span of the option for error messages.
#[derive(Clone)]
pub struct RetryOn {
    pub predicate: Expr,
    pub key_span: Span,
}

/// The options of one `#[task(...)]`; `None` means "not given, keep the default".
#[derive(Clone, Default)]
pub struct TaskOptions {
    pub name: Option<LitStr>,
    pub queue: Option<LitStr>,
    pub priority: Option<u8>,
    pub max_retries: Option<MaxRetries>,
    pub retry_delay: Option<Seconds>,
    pub retry_backoff: Option<bool>,
    pub retry_backoff_max: Option<Seconds>,
    pub retry_jitter: Option<bool>,
    pub retry_on: Option<RetryOn>,
    pub acks_late: Option<bool>,
    pub ignore_result: Option<bool>,
    pub time_limit: Option<Seconds>,
    pub soft_time_limit: Option<Seconds>,
    pub rate_limit: Option<RateLimit>,
    pub track_started: Option<bool>,
}

impl Parse for TaskOptions {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let pairs = Punctuated::<OptionPair, Token![,]>::parse_terminated(input)?;
        let mut options = TaskOptions::default();
        let mut errors: Option<syn::Error> = None;
        let mut seen: Vec<String> = Vec::new();
        for pair in pairs {
            let result = option_key(&pair.path).and_then(|key| {
                let name = key.to_string();
                if seen.contains(&name) {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("duplicate task option `{name}`"),
                    ));
                }
                seen.push(name);
                options.set(&key, pair.value)
            });
            if let Err(error) = result {
                match &mut errors {
                    Some(all) => all.combine(error),
                    None => errors = Some(error),
                }
            }
        }
        match errors {
            Some(error) => Err(error),
            None => Ok(options),
        }
    }
}

/// One `key = value` pair.
struct OptionPair {
    path: syn::Path,
    value: Expr,
}

impl Parse for OptionPair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let meta: syn::Meta = input.parse()?;
        let expected = |tokens: &dyn quote::ToTokens, key: &str| {
            syn::Error::new_spanned(
                tokens,
                format!("expected `{key} = value`: task options are written `name = value`"),
            )
        };
        match meta {
            syn::Meta::NameValue(MetaNameValue { path, value, .. }) => {
                Ok(OptionPair { path, value })
            }
            syn::Meta::Path(path) => {
                let key = option_key(&path)?;
                Err(expected(&path, &key.to_string()))
            }
            syn::Meta::List(list) => {
                let key = option_key(&list.path)?;
                Err(expected(&list, &key.to_string()))
            }
        }
    }
}

/// The option name of `path`, which must be one of [`VALID_OPTIONS`].
fn option_key(path: &syn::Path) -> syn::Result<syn::Ident> {
    let unknown = |shown: String| {
        syn::Error::new_spanned(
            path,
            format!(
                "unknown task option `{shown}`; valid options are: {}",
                VALID_OPTIONS.join(", ")
            ),
        )
    };
    let Some(ident) = path.get_ident() else {
        let shown = quote::quote!(#path).to_string().replace(' ', "");
        return Err(unknown(shown));
    };
    if !VALID_OPTIONS.contains(&ident.to_string().as_str()) {
        return Err(unknown(ident.to_string()));
    }
    Ok(ident.clone())
}

impl TaskOptions {
    fn set(&mut self, key: &syn::Ident, value: Expr) -> syn::Result<()> {
        match key.to_string().as_str() {
            "name" => self.name = Some(non_empty_string(&value, "name", "\"tasks.add\"")?),
            "queue" => self.queue = Some(non_empty_string(&value, "queue", "\"math\"")?),
            "priority" => self.priority = Some(priority(&value)?),
            "max_retries" => self.max_retries = Some(max_retries(&value)?),
            "retry_delay" => self.retry_delay = Some(seconds(&value, "retry_delay")?),
            "retry_backoff" => self.retry_backoff = Some(boolean(&value, "retry_backoff")?),
            "retry_backoff_max" => {
                self.retry_backoff_max = Some(seconds(&value, "retry_backoff_max")?)
            }
            "retry_jitter" => self.retry_jitter = Some(boolean(&value, "retry_jitter")?),
            "retry_on" => {
                self.retry_on = Some(RetryOn {
                    predicate: predicate(value)?,
                    key_span: key.span(),
                })
            }
            "acks_late" => self.acks_late = Some(boolean(&value, "acks_late")?),
            "ignore_result" => self.ignore_result = Some(boolean(&value, "ignore_result")?),
            "time_limit" => self.time_limit = Some(seconds(&value, "time_limit")?),
            "soft_time_limit" => self.soft_time_limit = Some(seconds(&value, "soft_time_limit")?),
            "rate_limit" => self.rate_limit = Some(rate_limit(&value)?),
            "track_started" => self.track_started = Some(boolean(&value, "track_started")?),
            other => unreachable!("option `{other}` was checked against VALID_OPTIONS"),
        }
        Ok(())
    }
}

/// The literal of `value`, looking through parentheses and groups.
fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(group) => literal(&group.expr),
        Expr::Paren(paren) => literal(&paren.expr),
        _ => None,
    }
}

/// Whether `value` is a negated literal (`-1`), to say "must not be negative" for it.
fn is_negative_literal(value: &Expr) -> bool {
    match literal(value) {
        Some(Lit::Int(int)) => int.base10_digits().starts_with('-'),
        Some(Lit::Float(float)) => float.base10_digits().starts_with('-'),
        _ => {
            matches!(value, Expr::Unary(ExprUnary { op: UnOp::Neg(_), expr, .. }) if literal(expr).is_some())
        }
    }
}

fn non_empty_string(value: &Expr, key: &str, example: &str) -> syn::Result<LitStr> {
    match literal(value) {
        Some(Lit::Str(text)) if !text.value().trim().is_empty() => Ok(text.clone()),
        Some(Lit::Str(text)) => Err(syn::Error::new(
            text.span(),
            format!("`{key}` must not be empty"),
        )),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects a string literal, e.g. `{key} = {example}`"),
        )),
    }
}

fn boolean(value: &Expr, key: &str) -> syn::Result<bool> {
    match literal(value) {
        Some(Lit::Bool(flag)) => Ok(flag.value),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects `true` or `false`"),
        )),
    }
}

fn priority(value: &Expr) -> syn::Result<u8> {
    let message =
        format!("`priority` expects an integer from 0 (lowest) to {MAX_PRIORITY} (highest)");
    match literal(value) {
        Some(Lit::Int(int)) => match int.base10_parse::<u64>() {
            Ok(priority) if priority <= MAX_PRIORITY => Ok(priority as u8),
            _ => Err(syn::Error::new(
                int.span(),
                format!("{message}, got {}", int.base10_digits()),
            )),
        },
        _ => Err(syn::Error::new_spanned(value, message)),
    }
}

fn max_retries(value: &Expr) -> syn::Result<MaxRetries> {
    if let Expr::Path(ExprPath {
        path, qself: None, ..
    }) = value
    {
        if path.is_ident("None") {
            return Ok(MaxRetries::Unlimited);
        }
    }
    let message =
        "`max_retries` expects a number of retries (e.g. `max_retries = 5`) or `None` for no limit";
    match literal(value) {
        Some(Lit::Int(int)) => int
            .base10_parse::<u32>()
            .map(MaxRetries::Limited)
            .map_err(|_| syn::Error::new(int.span(), format!("{message}; got {int}"))),
        _ => Err(syn::Error::new_spanned(value, message)),
    }
}

/// A duration in seconds: a non-negative integer or float literal.
fn seconds(value: &Expr, key: &str) -> syn::Result<Seconds> {
    let message = format!(
        "`{key}` expects a duration in seconds: an integer or a float, e.g. `{key} = 30` or `{key} = 2.5`"
    );
    if is_negative_literal(value) {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` must not be negative"),
        ));
    }
    match literal(value) {
        Some(Lit::Int(int)) => int
            .base10_parse::<u64>()
            .map(|secs| Seconds { secs, nanos: 0 })
            .map_err(|_| syn::Error::new(int.span(), format!("`{key}` is too large"))),
        Some(Lit::Float(float)) => {
            let secs: f64 = float.base10_parse()?;
            if !secs.is_finite() || secs >= u64::MAX as f64 {
                return Err(syn::Error::new(
                    float.span(),
                    format!("`{key}` is too large"),
                ));
            }
            let whole = secs.trunc();
            let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
            Ok(Seconds {
                secs: whole as u64,
                nanos,
            })
        }
        _ => Err(syn::Error::new_spanned(value, message)),
    }
}

/// A rate limit string: `N`, `N/s`, `N/m` or `N/h` (also `sec`, `min`, `hour`), `N > 0`.
fn rate_limit(value: &Expr) -> syn::Result<RateLimit> {
    let Some(Lit::Str(text)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`rate_limit` expects a string such as \"10/s\", \"100/m\" or \"5/h\"",
        ));
    };
    parse_rate_limit(&text.value()).map_err(|problem| {
        syn::Error::new(
            text.span(),
            format!("invalid rate limit {:?}: {problem}", text.value()),
        )
    })
}

/// Parses a rate limit like the runtime's `RateLimit::from_str`, with messages for humans.
pub fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let expected =
        "expected a positive count per second, minute or hour, e.g. \"10/s\", \"100/m\" or \"5/h\"";
    let trimmed = text.trim();
    let (count, unit) = trimmed.split_once('/').unwrap_or((trimmed, "s"));
    let count: u32 = count.trim().parse().map_err(|_| expected.to_owned())?;
    if count == 0 {
        return Err("the count must be positive".to_owned());
    }
    let period_secs = match unit.trim() {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" | "hour" => 3600,
        other => return Err(format!("unknown unit {other:?}: use s, m or h")),
    };
    Ok(RateLimit { count, period_secs })
}

/// The `retry_on` predicate: a path to a function (or a closure) taking `&E`.
fn predicate(value: Expr) -> syn::Result<Expr> {
    match value {
        Expr::Path(_) | Expr::Closure(_) => Ok(value),
        Expr::Group(group) => predicate(*group.expr),
        other => Err(syn::Error::new_spanned(
            other,
            "`retry_on` expects a path to a function `fn(&E) -> bool`, where `E` is the task's error type, e.g. `retry_on = is_transient`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> syn::Result<TaskOptions> {
        syn::parse_str::<TaskOptions>(text)
    }

    #[test]
    fn parses_every_option() {
        let options = parse(
            r#"name = "tasks.add", queue = "math", priority = 5, max_retries = None,
               retry_delay = 2.5, retry_backoff = true, retry_backoff_max = 600,
               retry_jitter = false, retry_on = crate::is_transient, acks_late = false,
               ignore_result = true, time_limit = 30, soft_time_limit = 20,
               rate_limit = "10/m", track_started = true"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(options.name.unwrap().value(), "tasks.add");
        assert_eq!(options.priority, Some(5));
        assert_eq!(options.max_retries, Some(MaxRetries::Unlimited));
        assert_eq!(
            options.retry_delay,
            Some(Seconds {
                secs: 2,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            options.rate_limit,
            Some(RateLimit {
                count: 10,
                period_secs: 60
            })
        );
        assert!(options.retry_on.is_some());
    }

    #[test]
    fn rejects_bad_values_with_clear_messages() {
        let message = |text: &str| match parse(text) {
            Ok(_) => panic!("{text} should not parse"),
            Err(error) => error.to_string(),
        };
        assert!(message("colour = 1").contains("unknown task option `colour`; valid options"));
        assert!(message("priority = 10").contains("from 0 (lowest) to 9"));
        assert!(message("priority = \"high\"").contains("priority"));
        assert!(message("rate_limit = \"10/d\"").contains("unknown unit"));
        assert!(message("rate_limit = \"0/s\"").contains("positive"));
        assert!(message("retry_delay = -1").contains("negative"));
        assert!(message("queue = 1").contains("string literal"));
        assert!(message("acks_late").contains("acks_late = value"));
        assert!(message("queue = \"a\", queue = \"b\"").contains("duplicate"));
        assert!(message("retry_on = \"x\"").contains("fn(&E) -> bool"));
    }
}
