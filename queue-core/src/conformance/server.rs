//! Whether a test that needs a server (or a tool) runs, skips or fails.
//!
//! One rule for every test of the workspace, the same as `cargo xtask`'s: `CI` set to `true`
//! or `1` means CI, and under CI a missing server is a failure, never a silent skip. Outside
//! CI a test whose server is not configured prints one `skipped: …` line and returns.
//!
//! The decisions are pure functions of the values ([`decide`], [`is_ci_value`]) so that they
//! are tested without touching the process environment; [`server_url`], [`is_ci`] and
//! [`skip_or_fail`] read the environment and act on them.

use std::fmt::Display;

/// The variable that says whether the tests run under CI.
pub const CI_VARIABLE: &str = "CI";

/// Whether a value of `CI` means CI: `true` or `1` (as `cargo xtask` reads it). Unset,
/// empty, `false`, `0` and anything else do not.
pub fn is_ci_value(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "1"))
}

/// Whether the tests run under CI (see [`is_ci_value`]).
pub fn is_ci() -> bool {
    is_ci_value(std::env::var(CI_VARIABLE).ok().as_deref())
}

/// What a test does about the server named by an environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The variable is set: run against this URL.
    Run(String),
    /// Not set, outside CI: print this line and return without checking anything.
    Skip(String),
    /// Not set, under CI: fail with this message.
    Fail(String),
}

/// The decision for a test needing the server in `variable`, given the variable's value and
/// `CI`'s. An empty value counts as unset (`VAR= cargo test` is a way to unset it).
pub fn decide(variable: &str, value: Option<&str>, ci: Option<&str>) -> Decision {
    match value {
        Some(url) if !url.is_empty() => Decision::Run(url.to_owned()),
        _ => missing_decision(&format!("{variable} is not set"), ci),
    }
}

/// The decision when something a test needs (`reason` says what is missing) is absent.
fn missing_decision(reason: &str, ci: Option<&str>) -> Decision {
    if is_ci_value(ci) {
        Decision::Fail(format!(
            "{reason} under CI ({CI_VARIABLE}={}): a missing server is a failure there; \
             run the tests with `cargo xtask test`",
            ci.unwrap_or_default()
        ))
    } else {
        Decision::Skip(format!(
            "skipped: {reason} (run the tests with `cargo xtask test`, or \
             `cargo xtask services up` and export what `cargo xtask services status` prints)"
        ))
    }
}

/// The URL in `variable` (e.g. `QUEUE_TEST_REDIS_URL`), for a test that needs that server.
///
/// `Some(url)` when it is set. Otherwise, outside CI, prints `skipped: <variable> is not
/// set …` and returns `None`: the test then returns at once. Under CI it panics: the test
/// fails.
///
/// # Panics
///
/// When the variable is missing and `CI` is `true` or `1`.
pub fn server_url(variable: &str) -> Option<String> {
    let value = std::env::var(variable).ok();
    let ci = std::env::var(CI_VARIABLE).ok();
    act(decide(variable, value.as_deref(), ci.as_deref()))
}

/// For a test that cannot run because something other than a server URL is missing (a
/// Python venv, an installed server binary): prints `skipped: <reason>` outside CI, panics
/// under CI. The caller returns after it.
///
/// # Panics
///
/// When `CI` is `true` or `1`.
pub fn skip_or_fail(reason: impl Display) {
    let ci = std::env::var(CI_VARIABLE).ok();
    let _: Option<String> = act(missing_decision(&reason.to_string(), ci.as_deref()));
}

fn act(decision: Decision) -> Option<String> {
    match decision {
        Decision::Run(url) => Some(url),
        Decision::Skip(line) => {
            eprintln!("{line}");
            None
        }
        Decision::Fail(message) => panic!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAR: &str = "QUEUE_TEST_REDIS_URL";

    #[test]
    fn ci_means_true_or_one() {
        assert!(is_ci_value(Some("true")));
        assert!(is_ci_value(Some("1")));
        for value in [None, Some(""), Some("false"), Some("0"), Some("yes")] {
            assert!(!is_ci_value(value), "{value:?} is not CI");
        }
    }

    #[test]
    fn a_set_variable_runs_whatever_ci_says() {
        for ci in [None, Some("true"), Some("1")] {
            assert_eq!(
                decide(VAR, Some("redis://127.0.0.1/0"), ci),
                Decision::Run("redis://127.0.0.1/0".into())
            );
        }
    }

    #[test]
    fn missing_outside_ci_skips_with_a_line_naming_the_variable() {
        for ci in [None, Some("false"), Some("0")] {
            for value in [None, Some("")] {
                let Decision::Skip(line) = decide(VAR, value, ci) else {
                    panic!("{value:?} with CI={ci:?} must skip");
                };
                assert!(
                    line.starts_with("skipped: QUEUE_TEST_REDIS_URL is not set"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn missing_under_ci_fails_for_true_and_one() {
        for ci in ["true", "1"] {
            for value in [None, Some("")] {
                let Decision::Fail(message) = decide(VAR, value, Some(ci)) else {
                    panic!("{value:?} with CI={ci} must fail");
                };
                assert!(
                    message.contains("QUEUE_TEST_REDIS_URL is not set"),
                    "{message}"
                );
                assert!(message.contains("cargo xtask test"), "{message}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "QUEUE_TEST_REDIS_URL is not set under CI")]
    fn a_failing_decision_panics() {
        act(decide(VAR, None, Some("1")));
    }

    #[test]
    fn a_skipping_decision_returns_none() {
        assert_eq!(act(decide(VAR, None, None)), None);
    }
}
