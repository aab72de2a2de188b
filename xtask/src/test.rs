//! `cargo xtask test`: the one command CI runs. Lints, brings up the services the suites
//! need, runs every test (nextest when installed, plus doctests, which nextest skips) and
//! ends with a single `N passed, M failed` line.

use std::process::Command;

use crate::python;
use crate::services::{Service, Session};
use crate::util::{self, Result, err};

/// Services the test suites need; their URLs reach the tests as `QUEUE_TEST_*` variables.
/// A suite whose variable is unset skips its tests (outside CI, where that is a failure).
const TEST_SERVICES: &[Service] = &[
    Service::Redis,
    Service::Rabbitmq,
    Service::Postgres,
    Service::RedisSentinel,
];

/// Options of `cargo xtask test`.
pub struct Options {
    pub lint: bool,
    pub keep_services: bool,
    pub extra: Vec<String>,
}

/// Test counts, summed over the runs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
}

pub fn run(opts: Options) -> Result<()> {
    if opts.lint {
        util::header("cargo fmt --check");
        util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
        util::header("cargo clippy");
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?;
    }

    util::header("services");
    let mut session = Session::start(TEST_SERVICES, util::is_ci())?;
    // The interop suites drive the real Python Celery from this venv.
    util::header("python venv (celery 5.7)");
    match python::ensure_venv() {
        Ok(venv) => session.env.push((
            "QUEUE_TEST_PYTHON",
            python::interpreter(&venv).display().to_string(),
        )),
        Err(error) if util::is_ci() => {
            session.stop();
            return Err(error);
        }
        Err(error) => eprintln!("warning: no Python venv, interop tests will skip: {error}"),
    }
    // The monitor's browser tests drive headless Chromium through chromedriver.
    util::header("chromium (browser tests)");
    match crate::services::chromium::ensure() {
        Ok(env) => session.env.extend(env),
        Err(error) if util::is_ci() => {
            session.stop();
            return Err(error);
        }
        Err(error) => eprintln!("warning: no Chromium, browser tests will skip: {error}"),
    }
    // The monitor behind a real reverse proxy, configured as the README says.
    util::header("nginx (reverse-proxy test)");
    match crate::services::nginx::ensure() {
        Ok(env) => session.env.extend(env),
        Err(error) if util::is_ci() => {
            session.stop();
            return Err(error);
        }
        Err(error) => eprintln!("warning: no nginx, the reverse-proxy test will skip: {error}"),
    }
    let outcome = run_tests(&session, &opts.extra);
    if opts.keep_services {
        println!("\nleaving services running (--keep-services)");
    } else {
        session.stop();
    }
    // The summary comes last, after the services' shutdown chatter.
    let (counts, failures) = outcome?;
    util::header("summary");
    println!("{} passed, {} failed", counts.passed, counts.failed);
    if counts.failed > 0 {
        return err(format!("{} test(s) failed", counts.failed));
    }
    if !failures.is_empty() {
        return err(failures.join("\n"));
    }
    Ok(())
}

/// Runs the tests and the doctests; returns the counts and the commands that failed.
fn run_tests(session: &Session, extra: &[String]) -> Result<(Counts, Vec<String>)> {
    let mut counts = Counts::default();
    let mut failures = Vec::new();

    let nextest = util::succeeds(util::cargo().args(["nextest", "--version"]));
    let mut cmd = util::cargo();
    if nextest {
        util::header("tests (cargo nextest)");
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]);
        // An empty workspace is not a failure; the summary line says 0 passed.
        cmd.arg("--no-tests=warn");
    } else {
        util::header("tests (cargo test; install cargo-nextest for a faster run)");
        cmd.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
        // Doctests run in the next step, as they do after nextest.
        cmd.args(["--lib", "--bins", "--tests"]);
    }
    cmd.args(extra);
    run_counted(&mut cmd, session, &mut counts, &mut failures)?;

    // The fault suite's short profile: one counted test per scenario row.
    match crate::chaos::run(crate::chaos::Profile::short()) {
        Ok(rows) => {
            for row in rows {
                match row.verdict {
                    Ok(_) => counts.passed += 1,
                    Err(broken) => {
                        counts.failed += 1;
                        failures.push(format!("fault suite, {}: {broken}", row.scenario));
                    }
                }
            }
        }
        Err(error) => failures.push(format!("fault suite could not run: {error}")),
    }

    util::header("doctests (cargo test --doc)");
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--workspace",
        "--all-features",
        "--doc",
        "--no-fail-fast",
    ]);
    run_counted(&mut cmd, session, &mut counts, &mut failures)?;
    Ok((counts, failures))
}

/// Runs one test command with the services' variables, adds its counts, and records a
/// failing exit (a build error has no failed tests to count but must still fail the run).
fn run_counted(
    cmd: &mut Command,
    session: &Session,
    counts: &mut Counts,
    failures: &mut Vec<String>,
) -> Result<()> {
    cmd.envs(session.env.iter().map(|(k, v)| (k, v)));
    let (status, lines) = util::run_tee(cmd)?;
    let found = parse_counts(&lines);
    counts.passed += found.passed;
    counts.failed += found.failed;
    if !status.success() {
        failures.push(format!("`{}` failed ({status})", util::describe(cmd)));
    }
    Ok(())
}

/// Reads nextest's `Summary [...] N tests run: N passed, M failed, ...` line, or, without
/// one, sums the `test result: ok. N passed; M failed; ...` lines of libtest (unit,
/// integration, doc). Nextest echoes a failed test's own libtest output, so its summary,
/// when present, is the only line that counts.
fn parse_counts(lines: &[String]) -> Counts {
    let nextest = lines.iter().rev().find_map(|line| {
        let line = line.trim();
        if !line.starts_with("Summary [") {
            return None;
        }
        line.split_once(" run: ")
            .map(|(_, rest)| parse_nextest(rest))
    });
    if let Some(counts) = nextest {
        return counts;
    }
    let mut counts = Counts::default();
    for line in lines {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            continue;
        };
        // `ok. 5 passed; 0 failed; 1 ignored; ...` or `FAILED. 3 passed; 2 failed; ...`
        let clauses = rest.split_once('.').map_or(rest, |(_, c)| c);
        for (n, label) in clauses.split(';').filter_map(count_and_label) {
            match label {
                "passed" => counts.passed += n,
                "failed" => counts.failed += n,
                _ => {}
            }
        }
    }
    counts
}

/// `8 passed (1 slow, 2 flaky), 2 failed, 1 timed out, 3 skipped`: everything but passed
/// and skipped counts as failed (failed, timed out, exec failed, ...).
fn parse_nextest(rest: &str) -> Counts {
    let mut plain = String::new();
    let mut depth = 0;
    for c in rest.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let mut counts = Counts::default();
    for (n, label) in plain.split(',').filter_map(count_and_label) {
        match label {
            "passed" => counts.passed += n,
            "skipped" => {}
            _ => counts.failed += n,
        }
    }
    counts
}

/// `" 5 passed"` -> `(5, "passed")`.
fn count_and_label(clause: &str) -> Option<(u64, &str)> {
    let (n, label) = clause.trim().split_once(' ')?;
    Some((n.parse().ok()?, label.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn sums_libtest_result_lines() {
        let out = lines(
            "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s\n\
             test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        assert_eq!(
            parse_counts(&out),
            Counts {
                passed: 8,
                failed: 2
            }
        );
    }

    #[test]
    fn reads_nextest_summary() {
        let out = lines(
            "        PASS [   0.004s] queue-core message::tests::roundtrip\n\
             ------------\n     \
             Summary [   0.250s] 12 tests run: 10 passed (1 slow), 1 failed, 1 timed out, 2 skipped",
        );
        assert_eq!(
            parse_counts(&out),
            Counts {
                passed: 10,
                failed: 2
            }
        );
    }

    #[test]
    fn ignores_libtest_output_that_nextest_echoes() {
        let out = lines(
            "        FAIL [   0.068s] (8/8) xtask::bin/xtask tmp::boom\n    \
             test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 7 filtered out\n     \
             Summary [   0.079s] 8 tests run: 7 passed, 1 failed, 0 skipped",
        );
        assert_eq!(
            parse_counts(&out),
            Counts {
                passed: 7,
                failed: 1
            }
        );
    }

    #[test]
    fn reads_nextest_summary_of_one_test() {
        let out = lines("     Summary [   0.001s] 1 test run: 1 passed, 0 skipped");
        assert_eq!(
            parse_counts(&out),
            Counts {
                passed: 1,
                failed: 0
            }
        );
    }

    #[test]
    fn ignores_test_names_that_look_like_results() {
        let out = lines("        PASS [   0.004s] xtask test::tests::test_result_ok_5_passed");
        assert_eq!(parse_counts(&out), Counts::default());
    }
}
