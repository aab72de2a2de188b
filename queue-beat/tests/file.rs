//! The TOML schedule file: what it declares, and errors that name their line.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use queue_beat::Missed;
use queue_beat::file::ScheduleFile;

const SAMPLE: &str = r#"
[beat]
name = "shop.beat"
lease_ttl = "4s"
timezone = "Europe/Berlin"

[entries.add-every-minute]
task = "tasks.add"
every = "1m"
args = [1, 2]
queue = "math"
priority = 5
expires = 30

[entries.nightly]
task = "reports.nightly"
cron = "0 3 * * *"
kwargs = { format = "pdf" }
missed = "skip"

[entries.launch]
task = "shop.open"
at = 2026-12-24T18:00:00
"#;

#[test]
fn a_schedule_file_declares_entries_and_options() {
    let file = ScheduleFile::parse(SAMPLE).unwrap();
    assert_eq!(file.name.as_deref(), Some("shop.beat"));
    assert_eq!(file.lease_ttl, Some(Duration::from_secs(4)));
    let names: Vec<&str> = file.entries.iter().map(|entry| entry.name()).collect();
    assert_eq!(names, ["add-every-minute", "launch", "nightly"]);

    let add = &file.entries[0];
    assert_eq!(add.schedule().to_string(), "every 1m");
    let signature = add.signature();
    assert_eq!(signature.name, "tasks.add");
    assert_eq!(
        signature.args,
        vec![serde_json::json!(1), serde_json::json!(2)]
    );
    assert_eq!(signature.options.queue.as_deref(), Some("math"));
    assert_eq!(signature.options.priority, Some(5));
    assert!(signature.options.expires.is_some());
    assert_eq!(add.missed_policy(), Missed::RunOnce);

    // A local `at` time is read in the beat's zone.
    let launch = &file.entries[1];
    assert_eq!(
        launch
            .schedule()
            .next_after(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
        Some(Utc.with_ymd_and_hms(2026, 12, 24, 17, 0, 0).unwrap())
    );

    let nightly = &file.entries[2];
    assert_eq!(
        nightly.schedule().to_string(),
        "cron \"0 3 * * *\" Europe/Berlin"
    );
    assert_eq!(nightly.signature().kwargs["format"], "pdf");
    assert_eq!(nightly.missed_policy(), Missed::Skip);
}

fn error_of(text: &str) -> (usize, String) {
    let error = ScheduleFile::parse(text).unwrap_err();
    (error.line, error.to_string())
}

#[test]
fn a_bad_cron_names_its_line() {
    let (line, message) = error_of(
        "[entries.ok]\ntask = \"a\"\nevery = 5\n\n[entries.broken]\ntask = \"b\"\ncron = \"0 25 * * *\"\n",
    );
    assert_eq!(line, 7, "{message}");
    assert!(
        message.starts_with("7: entry \"broken\": invalid cron expression \"0 25 * * *\""),
        "{message}"
    );
}

#[test]
fn an_unknown_option_names_its_line() {
    let (line, message) = error_of("[entries.report]\ntask = \"a\"\nevery = \"1h\"\nretries = 3\n");
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("unknown field `retries`"), "{message}");

    let (line, message) = error_of("[beat]\nleader = true\n");
    assert_eq!(line, 2, "{message}");
    assert!(message.contains("unknown field `leader`"), "{message}");
}

#[test]
fn other_mistakes_name_their_line() {
    let (line, message) = error_of("[entries.a]\ntask = \"a\"\n");
    assert_eq!(line, 1, "{message}");
    assert!(
        message.contains("exactly one of every, cron or at"),
        "{message}"
    );

    let (line, message) = error_of(
        "[entries.a]\ntask = \"a\"\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Atlantis\"\n",
    );
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("Europe/Atlantis"), "{message}");

    let (line, message) = error_of("[entries.a]\ntask = \"a\"\nevery = \"soon\"\n");
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("invalid duration \"soon\""), "{message}");

    let (line, message) = error_of("[entries.a]\ntask = \"a\"\nevery = 1\npriority = 12\n");
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("priority 12 is above 9"), "{message}");

    let (line, message) = error_of("[entries.a]\ntask = \"a\"\nevery = 1\nmissed = \"twice\"\n");
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("twice"), "{message}");
}

#[test]
fn a_missing_file_says_so_with_its_path() {
    let error = ScheduleFile::read("/nonexistent/schedule.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("/nonexistent/schedule.toml: cannot read the schedule file"),
        "{error}"
    );
}
