//! `cargo xtask chaos`: the fault suite. Real worker and producer processes (the
//! `queue-chaos` binary) and real servers of the suite's own on loopback (private
//! redis-server, RabbitMQ node and PostgreSQL cluster, on free ports, so that killing one
//! never disturbs the shared test servers) are killed and restarted under load, and fed
//! hostile input. Every task run appends its id to a sink file of its worker process, outside
//! the broker and the backend, so loss and duplicates are counted per id, not assumed.
//! Each scenario prints one row; the table comes at the end; a row that breaks what it must
//! hold fails the run.
//!
//! The short profile runs inside `cargo xtask test` (one counted test per row);
//! `cargo xtask chaos --long` runs the full sizes.

mod fuzz;
mod poison;
mod processes;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use crate::services::PrivateRabbit;
use crate::util::{self, Result};

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub long: bool,
    /// Tasks per scenario.
    tasks: u64,
    /// Worker processes per scenario (the killed-workers scenario uses `kill_workers`).
    workers: usize,
    kill_workers: usize,
    kills: usize,
    /// Hostile messages in the poison scenarios, and how many of them are 10 MB bodies.
    hostile: u64,
    big: u64,
    /// How long a result backend stays down.
    outage: Duration,
    fuzz_inputs: u64,
}

impl Profile {
    pub fn short() -> Self {
        Self {
            long: false,
            tasks: 2_000,
            workers: 2,
            kill_workers: 3,
            kills: 3,
            hostile: 300,
            big: 1,
            outage: Duration::from_secs(3),
            fuzz_inputs: 20_000,
        }
    }

    pub fn long() -> Self {
        Self {
            long: true,
            tasks: 100_000,
            workers: 4,
            kill_workers: 4,
            kills: 10,
            hostile: 10_000,
            big: 10,
            outage: Duration::from_secs(10),
            fuzz_inputs: 10_000_000,
        }
    }

    fn name(&self) -> &'static str {
        if self.long { "long" } else { "short" }
    }
}

/// One scenario's figures and verdict.
#[derive(Debug)]
pub struct Row {
    pub scenario: String,
    sent: u64,
    done: u64,
    lost: u64,
    duplicated: u64,
    recovery: Option<Duration>,
    /// What must hold (the words).
    must: &'static str,
    /// `Ok(what was measured)` or `Err(what broke, with the evidence)`.
    pub verdict: std::result::Result<String, String>,
}

impl Row {
    fn new(scenario: &str, must: &'static str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            sent: 0,
            done: 0,
            lost: 0,
            duplicated: 0,
            recovery: None,
            must,
            verdict: Err("did not run".into()),
        }
    }

    fn counts(&mut self, sent: u64, tally: &processes::Tally) {
        self.sent = sent;
        self.done = tally.done;
        self.lost = tally.lost;
        self.duplicated = tally.duplicated;
    }

    /// `Ok(summary)` when `broken` is empty, else `Err` with every broken clause.
    fn judge(&mut self, broken: Vec<String>, summary: String) {
        self.verdict = if broken.is_empty() {
            Ok(summary)
        } else {
            Err(broken.join("; "))
        };
    }
}

/// What the scenarios share: the run's directory and the private RabbitMQ node (booted
/// once, for the restart and the poison scenarios).
pub struct Env {
    dir: PathBuf,
    rabbit: Option<PrivateRabbit>,
}

impl Env {
    fn dir(&self, scenario: &str) -> Result<PathBuf> {
        let dir = self.dir.join(scenario.replace([' ', '(', ')', ','], "-"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn rabbit(&mut self) -> Result<&PrivateRabbit> {
        if self.rabbit.is_none() {
            self.rabbit = Some(PrivateRabbit::start(&self.dir.join("rabbitmq"))?);
        }
        Ok(self.rabbit.as_ref().expect("started above"))
    }
}

type Scenario = fn(&Profile, &mut Env, &mut Row) -> Result<()>;

/// Every scenario, in order: name, what must hold, the run.
const SCENARIOS: &[(&str, &str, Scenario)] = &[
    (
        "workers killed",
        "lost 0; duplicates ≤ tasks in flight at the kills",
        scenarios::workers_killed,
    ),
    (
        "Redis restarted mid-load",
        "lost 0; consumption resumes ≤ 5 s after the server is back; no stall",
        scenarios::redis_restarted,
    ),
    (
        "RabbitMQ restarted mid-load",
        "lost 0; consumption resumes ≤ 5 s after the server is back; no stall",
        scenarios::rabbitmq_restarted,
    ),
    (
        "result backend down (Redis)",
        "no SUCCESS lost: every task's result readable at the end",
        scenarios::redis_backend_down,
    ),
    (
        "result backend down (PostgreSQL)",
        "no SUCCESS lost: every task's result readable at the end",
        scenarios::postgres_backend_down,
    ),
    (
        "poison (Redis)",
        "0 worker crashes; 100 % dead-lettered with a reason; good tasks all done",
        poison::redis,
    ),
    (
        "poison (RabbitMQ)",
        "0 worker crashes; 100 % dead-lettered with a reason; good tasks all done",
        poison::rabbitmq,
    ),
    (
        "decoder fuzz (kombu envelope, body, headers)",
        "no panic, no unbounded allocation (long: ≥ 10 M inputs)",
        fuzz::decoder,
    ),
    (
        "decoder fuzz (AMQP headers)",
        "no panic, no unbounded allocation (long: ≥ 10 M inputs)",
        fuzz::amqp_headers,
    ),
];

/// Runs every scenario of `profile`, printing a row as each ends and the table at the end.
/// `Err` only when the suite could not run at all (the build failed); broken rows are in
/// the rows' verdicts.
pub fn run(profile: Profile) -> Result<Vec<Row>> {
    run_only(profile, &[])
}

/// [`run`], limited to the scenarios whose name contains one of `only` (all when empty).
pub fn run_only(profile: Profile, only: &[String]) -> Result<Vec<Row>> {
    util::header(&format!(
        "fault suite ({} profile): building queue-chaos (debug)",
        profile.name()
    ));
    processes::build()?;
    let dir = util::target_dir().join("chaos").join(profile.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut env = Env { dir, rabbit: None };
    let mut rows = Vec::new();
    let chosen = SCENARIOS.iter().filter(|(name, _, _)| {
        only.is_empty()
            || only
                .iter()
                .any(|part| name.to_lowercase().contains(&part.to_lowercase()))
    });
    for (name, must, scenario) in chosen {
        util::header(&format!("fault suite: {name}"));
        let started = std::time::Instant::now();
        let mut row = Row::new(name, must);
        if let Err(error) = scenario(&profile, &mut env, &mut row) {
            row.verdict = Err(format!("could not run: {error}"));
        }
        println!("{}", line(&row));
        println!("({:.0} s)", started.elapsed().as_secs_f64());
        rows.push(row);
    }
    drop(env);
    util::header(&format!("fault suite ({} profile)", profile.name()));
    println!("{}", table(&rows));
    println!(
        "logs and sink files: {}",
        util::target_dir().join("chaos").display()
    );
    Ok(rows)
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or("–".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// One row as a line, printed as the scenario ends.
fn line(row: &Row) -> String {
    format!(
        "row: {} | sent {} | done {} | lost {} | duplicated {} | recover {} | {}",
        row.scenario,
        row.sent,
        row.done,
        row.lost,
        row.duplicated,
        seconds(row.recovery),
        match &row.verdict {
            Ok(holds) => format!("holds: {holds}"),
            Err(broken) => format!("FAILED: {broken}"),
        }
    )
}

/// The rows as a markdown table; the evidence of failed rows below it.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | sent | done | lost | duplicated | time to recover | must hold | result |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.sent,
            row.done,
            row.lost,
            row.duplicated,
            seconds(row.recovery),
            row.must,
            match &row.verdict {
                Ok(holds) => format!("✔ {}", holds.replace('|', "/")),
                Err(_) => "✘ failed".to_owned(),
            }
        ));
    }
    for row in rows {
        if let Err(broken) = &row.verdict {
            out.push_str(&format!("\n✘ {}: {broken}\n", row.scenario));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_row_shows_its_evidence_under_the_table() {
        let mut ok = Row::new("workers killed", "lost 0");
        ok.judge(Vec::new(), "lost 0".into());
        let mut broken = Row::new("poison (Redis)", "100 % dead-lettered");
        broken.judge(
            vec![
                "huge-numbers: 0 of 30 dead-lettered".into(),
                "1 crash".into(),
            ],
            String::new(),
        );
        let text = table(&[ok, broken]);
        assert!(text.contains("| workers killed | 0 | 0 | 0 | 0 | – | lost 0 | ✔ lost 0 |"));
        assert!(text.contains("| ✘ failed |"));
        assert!(text.contains("✘ poison (Redis): huge-numbers: 0 of 30 dead-lettered; 1 crash"));
    }
}
