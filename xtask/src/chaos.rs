//! `cargo xtask chaos`: the fault suite. Real worker processes (`examples/chaos.rs`) and real
//! servers on loopback are killed and restarted under load; every execution writes its task
//! id to a sink file outside the workers, so loss and duplicates are counted, not assumed.
//! Each scenario prints one row; the run fails when a row breaks what it must hold.
//!
//! The short profile runs inside `cargo xtask test`; `--long` runs the full sizes.

mod poison;
mod processes;

use std::path::Path;
use std::time::{Duration, Instant};

use processes::{Redis, Workers};

use crate::util::{self, Result, err};

/// One scenario: runs it with the profile's sizes under a base directory.
type Scenario = fn(&Profile, &Path) -> Result<Row>;

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub long: bool,
    tasks: usize,
    workers: usize,
    kills: usize,
    hostile: usize,
    fuzz_inputs: u64,
}

impl Profile {
    pub fn short() -> Self {
        Self {
            long: false,
            tasks: 3_000,
            workers: 3,
            kills: 3,
            hostile: 1_000,
            fuzz_inputs: 20_000,
        }
    }

    pub fn long() -> Self {
        Self {
            long: true,
            tasks: 100_000,
            workers: 4,
            kills: 10,
            hostile: 10_000,
            fuzz_inputs: 10_000_000,
        }
    }
}

/// One scenario's figures.
#[derive(Debug)]
pub struct Row {
    pub scenario: &'static str,
    sent: usize,
    done: usize,
    lost: usize,
    duplicated: usize,
    recovery: Option<Duration>,
    /// What must hold, and whether it did (with the evidence when not).
    pub verdict: std::result::Result<String, String>,
}

impl Row {
    fn new(scenario: &'static str, sent: usize) -> Self {
        Self {
            scenario,
            sent,
            done: 0,
            lost: 0,
            duplicated: 0,
            recovery: None,
            verdict: Err("did not run".into()),
        }
    }

    fn count(&mut self, workers: &Workers, ids: &[String]) {
        let counts = workers.counts();
        self.done = ids.iter().filter(|id| counts.contains_key(*id)).count();
        self.lost = self.sent - self.done;
        self.duplicated = counts
            .values()
            .map(|n| (*n as usize).saturating_sub(1))
            .sum();
    }
}

/// Runs every scenario of `profile`; prints the table; `Err` when a row failed.
pub fn run(profile: Profile) -> Result<Vec<Row>> {
    if util::which("redis-server").is_none() {
        return err("redis-server is not installed: run `cargo xtask services up redis` first");
    }
    util::header("fault suite: building the chaos worker");
    processes::build()?;
    let base = util::target_dir().join("chaos");
    std::fs::create_dir_all(&base)?;
    let scenarios: [(&str, Scenario); 5] = [
        ("workers killed", workers_killed),
        ("redis restarted", redis_restarted),
        ("result backend down", backend_down),
        ("poison", poison_messages),
        ("decoder fuzz", decoder_fuzz),
    ];
    let mut rows = Vec::new();
    for (name, scenario) in scenarios {
        util::header(&format!("fault suite: {name}"));
        let row = scenario(&profile, &base).unwrap_or_else(|error| {
            let mut row = Row::new(leak(name), 0);
            row.verdict = Err(error.to_string());
            row
        });
        println!("{}", line(&row));
        rows.push(row);
    }
    util::header(if profile.long {
        "fault suite (long profile)"
    } else {
        "fault suite (short profile)"
    });
    println!("{}", table(&rows));
    Ok(rows)
}

fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n}")).collect()
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!("{:08x}", nanos ^ std::process::id())
}

/// 4 worker processes (3 in the short profile) on a backlog; `kill -9` one at random, again
/// and again, each replaced. Lost 0; duplicates at most what the killed ones held.
fn workers_killed(profile: &Profile, base: &Path) -> Result<Row> {
    let redis = Redis::start(6390, &base.join("redis-kill"))?;
    // A short visibility timeout: a killed worker's messages come back within seconds.
    let broker = format!("{}?visibility_timeout=3", redis.url(0));
    let prefix = format!("kill-{}", run_id());
    processes::produce(&broker, &prefix, profile.tasks)?;
    let concurrency = 8;
    let mut workers = Workers::new(base.join("kill.sink"), broker, None, concurrency);
    for _ in 0..profile.workers {
        workers.spawn()?;
    }
    let mut row = Row::new("workers killed", profile.tasks);
    let mut random = run_id()
        .bytes()
        .fold(7u64, |seed, byte| seed * 31 + u64::from(byte));
    let step = profile.tasks / (profile.kills + 1);
    for kill in 0..profile.kills {
        workers.progress_after(step * (kill + 1), Duration::from_secs(60));
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        workers.kill_and_replace(random as usize)?;
    }
    let started = Instant::now();
    let waited = workers.wait_for(profile.tasks, Duration::from_secs(30));
    row.recovery = Some(started.elapsed());
    workers.stop();
    row.count(&workers, &ids(&prefix, profile.tasks));
    // Each killed worker held at most its concurrency plus as many read ahead.
    let bound = profile.kills * concurrency * 2;
    row.verdict = match waited {
        Err(error) => Err(error.to_string()),
        Ok(()) if row.lost > 0 => Err(format!("{} lost", row.lost)),
        Ok(()) if row.duplicated > bound => {
            Err(format!("{} duplicates > bound {bound}", row.duplicated))
        }
        Ok(()) => Ok(format!(
            "lost 0, duplicates ≤ {bound} (in flight at the kills)"
        )),
    };
    Ok(row)
}

/// The broker's Redis (AOF, appendfsync always) killed and restarted twice while workers
/// drain a backlog. Lost 0; consumption resumes within 5 s of the server being back.
fn redis_restarted(profile: &Profile, base: &Path) -> Result<Row> {
    let mut redis = Redis::start(6391, &base.join("redis-restart"))?;
    let broker = format!("{}?visibility_timeout=10", redis.url(0));
    let prefix = format!("restart-{}", run_id());
    processes::produce(&broker, &prefix, profile.tasks)?;
    let mut workers = Workers::new(base.join("restart.sink"), broker, None, 8);
    for _ in 0..2 {
        workers.spawn()?;
    }
    let mut row = Row::new("redis restarted", profile.tasks);
    let mut slowest = Duration::ZERO;
    let mut verdict = Ok(());
    for round in 1..=2 {
        workers.progress_after(profile.tasks * round / 3, Duration::from_secs(60));
        redis.kill();
        std::thread::sleep(Duration::from_millis(500)); // the outage itself
        redis.restart()?;
        let before = workers.counts().len();
        match workers.progress_after(before, Duration::from_secs(30)) {
            Some(resumed) => slowest = slowest.max(resumed),
            None if before >= profile.tasks => {}
            None => verdict = Err(format!("no progress within 30 s after restart {round}")),
        }
    }
    let waited = workers.wait_for(profile.tasks, Duration::from_secs(30));
    workers.stop();
    row.count(&workers, &ids(&prefix, profile.tasks));
    row.recovery = Some(slowest);
    row.verdict = match (verdict, waited) {
        (Err(error), _) => Err(error),
        (_, Err(error)) => Err(error.to_string()),
        _ if row.lost > 0 => Err(format!("{} lost", row.lost)),
        _ if slowest > Duration::from_secs(5) => Err(format!("resumed after {slowest:?} > 5 s")),
        _ => Ok("lost 0, resumed ≤ 5 s after the server was back".into()),
    };
    Ok(row)
}

/// The result backend's Redis killed for 3 s while workers store results; restarted with
/// its AOF. No SUCCESS lost: every task's result is readable at the end.
fn backend_down(profile: &Profile, base: &Path) -> Result<Row> {
    let broker_redis = Redis::start(6392, &base.join("redis-broker"))?;
    let mut backend_redis = Redis::start(6393, &base.join("redis-backend"))?;
    let broker = broker_redis.url(0);
    let backend = backend_redis.url(0);
    let prefix = format!("results-{}", run_id());
    let tasks = profile.tasks.min(20_000);
    processes::produce(&broker, &prefix, tasks)?;
    let mut workers = Workers::new(base.join("results.sink"), broker, Some(backend.clone()), 8);
    for _ in 0..2 {
        workers.spawn()?;
    }
    let mut row = Row::new("result backend down", tasks);
    workers.progress_after(tasks / 4, Duration::from_secs(60));
    backend_redis.kill();
    std::thread::sleep(Duration::from_secs(3));
    backend_redis.restart()?;
    let waited = workers.wait_for(tasks, Duration::from_secs(60));
    workers.stop();
    row.count(&workers, &ids(&prefix, tasks));
    let readable = processes::verified(&backend, &prefix, tasks)?;
    row.verdict = match waited {
        Err(error) => Err(error.to_string()),
        Ok(()) if readable < tasks => Err(format!("{} results not readable", tasks - readable)),
        Ok(()) => Ok(format!("all {readable} results readable")),
    };
    Ok(row)
}

/// Hostile messages mixed into good ones. No worker crash; every hostile message
/// dead-lettered; every good task done.
fn poison_messages(profile: &Profile, base: &Path) -> Result<Row> {
    let redis = Redis::start(6394, &base.join("redis-poison"))?;
    let broker = redis.url(0);
    let prefix = format!("good-{}", run_id());
    let good = profile.tasks;
    let half = good / 2;
    processes::produce(&broker, &format!("{prefix}a"), half)?;
    redis.pipe(&poison::commands("chaos", profile.hostile), profile.hostile)?;
    processes::produce(&broker, &format!("{prefix}b"), good - half)?;
    let mut workers = Workers::new(base.join("poison.sink"), broker, None, 8);
    workers.spawn()?;
    let mut row = Row::new("poison", good + profile.hostile);
    // The good tasks after the hostile block wait until it is dead-lettered (10 MB bodies
    // in a debug build take seconds each), so the stall watchdog is wider here.
    let waited = workers.wait_for(good, Duration::from_secs(180));
    // The hostile ones are handled in the same pass; wait for the last dead letters.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = 0;
    while Instant::now() < deadline {
        dead = redis.integer(&["LLEN", "chaos.dead_letter"]).unwrap_or(0) as usize;
        if dead >= profile.hostile {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    workers.reap()?;
    let crashed = workers.crashed;
    workers.stop();
    let mut good_ids = ids(&format!("{prefix}a"), half);
    good_ids.extend(ids(&format!("{prefix}b"), good - half));
    row.count(&workers, &good_ids);
    row.sent = good;
    row.lost = good - row.done;
    row.verdict = match waited {
        Err(error) => Err(error.to_string()),
        Ok(()) if crashed > 0 => Err(format!("{crashed} worker crashes")),
        Ok(()) if dead != profile.hostile => Err(format!(
            "{dead} of {} hostile dead-lettered",
            profile.hostile
        )),
        Ok(()) if row.lost > 0 => Err(format!("{} good tasks lost", row.lost)),
        Ok(()) => Ok(format!(
            "0 crashes, {dead} of {} hostile dead-lettered, good all done",
            profile.hostile
        )),
    };
    Ok(row)
}

/// The decoder fuzz harness (`queue-core/tests/decoder_fuzz.rs`), its summary line as a row.
fn decoder_fuzz(profile: &Profile, _base: &Path) -> Result<Row> {
    let harness = util::repo_root().join("queue-core/tests/decoder_fuzz.rs");
    let mut row = Row::new("decoder fuzz", 0);
    if !harness.exists() {
        row.verdict = Err("missing: queue-core/tests/decoder_fuzz.rs".into());
        return Ok(row);
    }
    let mut command = util::cargo();
    command
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--test",
            "decoder_fuzz",
        ])
        .args(if profile.long {
            &["--release"][..]
        } else {
            &[][..]
        })
        .args(["--", "--nocapture"])
        .env("QUEUE_FUZZ_INPUTS", profile.fuzz_inputs.to_string());
    let (status, lines) = util::run_tee(&mut command)?;
    let summary = lines.iter().find(|line| line.starts_with("decoder-fuzz "));
    let field = |name: &str| {
        summary.and_then(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse::<f64>().ok())
        })
    };
    row.sent = field("inputs").unwrap_or(0.0) as usize;
    row.done = row.sent;
    let panics = field("panics").unwrap_or(f64::NAN);
    row.recovery = field("seconds").map(Duration::from_secs_f64);
    row.verdict = if status.success() && panics == 0.0 {
        Ok(format!(
            "{} inputs, 0 panics, max allocation {} bytes",
            row.sent,
            field("max_alloc_bytes").unwrap_or(0.0)
        ))
    } else {
        Err(format!(
            "harness failed: {}",
            summary.map_or("no summary line", String::as_str)
        ))
    };
    Ok(row)
}

fn line(row: &Row) -> String {
    format!(
        "{}: sent {} done {} lost {} duplicated {} recovery {} -> {}",
        row.scenario,
        row.sent,
        row.done,
        row.lost,
        row.duplicated,
        row.recovery
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        match &row.verdict {
            Ok(holds) => format!("holds: {holds}"),
            Err(broken) => format!("FAILED: {broken}"),
        }
    )
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | sent | done | lost | duplicated | time to recover / run | must hold |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.sent,
            row.done,
            row.lost,
            row.duplicated,
            row.recovery
                .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            match &row.verdict {
                Ok(holds) => format!("✔ {holds}"),
                Err(broken) => format!("✘ {broken}"),
            }
        ));
    }
    out
}
