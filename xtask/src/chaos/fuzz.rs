//! Decoder fuzz rows: the fuzz harnesses are tests of their crates
//! (`queue-core/tests/decoder_fuzz.rs`, `queue-amqp/tests/header_fuzz.rs`; `QUEUE_FUZZ_INPUTS`
//! sets the count); the suite runs them and turns their summary line
//! (`<label> inputs=… panics=… max_alloc_bytes=… seconds=…`) into a row.

use std::time::Duration;

use super::{Env, Profile, Row};
use crate::util::{self, Result};

pub fn decoder(profile: &Profile, _env: &mut Env, row: &mut Row) -> Result<()> {
    harness(
        profile,
        row,
        "queue-core/tests/decoder_fuzz.rs",
        "decoder_fuzz",
        "decoder-fuzz",
    )
}

pub fn amqp_headers(profile: &Profile, _env: &mut Env, row: &mut Row) -> Result<()> {
    harness(
        profile,
        row,
        "queue-amqp/tests/header_fuzz.rs",
        "header_fuzz",
        "header-fuzz",
    )
}

fn harness(profile: &Profile, row: &mut Row, file: &str, test: &str, label: &str) -> Result<()> {
    if !util::repo_root().join(file).is_file() {
        row.verdict = Err(format!("missing: {file} does not exist"));
        return Ok(());
    }
    let mut command = util::cargo();
    command.args(["test", "--workspace", "--all-features", "--test", test]);
    // Ten million inputs take an hour in the debug build, minutes in release.
    if profile.long {
        command.arg("--release");
    }
    command
        .args(["--", "--nocapture"])
        .env("QUEUE_FUZZ_INPUTS", profile.fuzz_inputs.to_string());
    let (status, lines) = util::run_tee(&mut command)?;
    let Some(summary) = summary_line(&lines, label) else {
        row.verdict = Err(format!(
            "no `{label} inputs=…` summary line; the test {}",
            if status.success() { "passed" } else { "failed" }
        ));
        return Ok(());
    };
    let field = |name: &str| field(&summary, name);
    let inputs = field("inputs").unwrap_or(0.0) as u64;
    let panics = field("panics").unwrap_or(f64::NAN);
    row.sent = inputs;
    row.done = inputs;
    row.recovery = field("seconds").map(Duration::from_secs_f64);
    let mut broken = Vec::new();
    if !status.success() {
        broken.push(format!("the fuzz test failed ({status}): {summary}"));
    } else if panics != 0.0 {
        broken.push(format!("{panics} panics: {summary}"));
    }
    if inputs < profile.fuzz_inputs {
        broken.push(format!(
            "{inputs} inputs run, {} asked for",
            profile.fuzz_inputs
        ));
    }
    row.judge(
        broken,
        format!(
            "{inputs} inputs, 0 panics, largest allocation {} bytes",
            field("max_alloc_bytes").unwrap_or(0.0)
        ),
    );
    Ok(())
}

/// The harness's summary, which libtest may print after `test NAME ... ` on one line.
fn summary_line(lines: &[String], label: &str) -> Option<String> {
    let prefix = format!("{label} inputs=");
    lines
        .iter()
        .rev()
        .find_map(|line| line.find(&prefix).map(|at| line[at..].to_owned()))
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let lines = vec![
            "running 1 test".to_owned(),
            "test decoders ... decoder-fuzz inputs=20000 panics=0 max_alloc_bytes=1048576 seconds=3.5"
                .to_owned(),
        ];
        let line = summary_line(&lines, "decoder-fuzz").unwrap();
        assert_eq!(field(&line, "inputs"), Some(20000.0));
        assert_eq!(field(&line, "panics"), Some(0.0));
        assert_eq!(field(&line, "seconds"), Some(3.5));
        assert_eq!(summary_line(&lines, "header-fuzz"), None);
    }
}
