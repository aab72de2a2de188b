//! The scenarios that kill things: worker processes, the broker, the result backend.

use std::path::Path;
use std::time::{Duration, Instant};

use super::processes::{self, Fleet, Process, WorkerSpec, check, last_line, number, tally};
use super::{Env, Profile, Row};
use crate::services::{PrivatePostgres, PrivateRedis};
use crate::util::Result;

/// The watchdog: this long without a single task run (while some are left) is a stall.
pub const STALL: Duration = Duration::from_secs(30);

/// Consumption must resume within this of the server being back.
const RESUME: Duration = Duration::from_secs(5);

/// Each worker process runs 8 tasks at once and reads 8 ahead.
const CONCURRENCY: usize = 8;
const PREFETCH: usize = 8;

/// A small xorshift generator: which worker dies, and a little jitter in when.
pub struct Random(u64);

impl Random {
    pub fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64);
        Self(nanos | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The pause between a producer's batches (of 100) that spreads `count` tasks over
/// `spread`: load all through the faults rather than a backlog queued up front.
fn pace_ms(count: u64, spread: Duration) -> u64 {
    let batches = count.div_ceil(100).max(1);
    (spread.as_millis() as u64 / batches).min(1_000)
}

fn spread(profile: &Profile) -> Duration {
    Duration::from_secs(if profile.long { 40 } else { 6 })
}

/// Waits for a producer to finish; its failure as a broken clause.
fn finish_producer(mut producer: Process, broken: &mut Vec<String>) {
    match producer.wait(Duration::from_secs(300)) {
        Some(status) if status.success() => {}
        Some(status) => broken.push(format!(
            "producer failed ({status}): {}",
            last_line(&producer.output())
        )),
        None => broken.push("producer did not finish within 300 s".into()),
    }
}

/// The clauses every scenario shares: loss (with examples), crashes, stuck workers.
fn common_clauses(
    fleet: &Fleet,
    tally: &processes::Tally,
    stuck: &[String],
    broken: &mut Vec<String>,
) {
    if tally.lost > 0 {
        broken.push(format!(
            "{} lost, e.g. {}",
            tally.lost,
            tally.lost_examples.join(", ")
        ));
    }
    broken.extend(fleet.crash_summary());
    if !stuck.is_empty() {
        broken.push(format!(
            "{} did not exit within 30 s of SIGTERM",
            stuck.join(", ")
        ));
    }
}

/// 100k tasks (short: 2k), 4 worker processes (short: 3); `kill -9` of a random one 10
/// times (short: 3) during the run, each replaced at once. A short visibility timeout (5 s)
/// brings a killed worker's messages back quickly.
pub fn workers_killed(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("workers-killed")?;
    let redis = PrivateRedis::start(&dir.join("redis"), false)?;
    let broker = redis.url("visibility_timeout=5");
    let (queue, prefix, count) = ("chaos.killed", "killed", profile.tasks);
    let producer = processes::producer(&dir, &broker, queue, prefix, count, 0, false)?;
    let spec = WorkerSpec {
        broker,
        backend: None,
        queue: queue.into(),
        concurrency: CONCURRENCY,
        prefetch: PREFETCH,
    };
    let mut fleet = Fleet::start(spec, &dir.join("workers"), profile.kill_workers)?;
    let mut random = Random::seeded();
    let mut broken = Vec::new();
    // Every message fetched and not yet acked is in kombu's `unacked` hash: what all the
    // workers held at the moment of a kill bounds what the killed one could run twice.
    let mut in_flight = 0;
    let step = count / (profile.kills as u64 + 1);
    for kill in 1..=profile.kills as u64 {
        let jitter = random.next() % (step / 2).max(1);
        let target = step * kill - step / 4 + jitter;
        if let Err(error) = fleet.wait(&format!("before kill {kill}"), STALL, |f| {
            f.runs() >= target
        }) {
            broken.push(error.to_string());
            break;
        }
        in_flight += redis.integer(&["HLEN", "unacked"]).unwrap_or(0) as u64;
        fleet.kill_and_replace(random.next() as usize)?;
    }
    let last_kill = Instant::now();
    if broken.is_empty() {
        if let Err(error) = fleet.wait_all(prefix, count, STALL) {
            broken.push(error.to_string());
        }
        row.recovery = Some(last_kill.elapsed());
    }
    finish_producer(producer, &mut broken);
    let stuck = fleet.stop();
    let found = tally(&fleet.tally(), prefix, count);
    row.counts(count, &found);
    common_clauses(&fleet, &found, &stuck, &mut broken);
    if found.duplicated > in_flight {
        broken.push(format!(
            "{} duplicates > {in_flight} in flight at the kills",
            found.duplicated
        ));
    }
    row.judge(
        broken,
        format!(
            "lost 0, {} duplicates ≤ {in_flight} in flight at {} kills",
            found.duplicated, profile.kills
        ),
    );
    Ok(())
}

/// A broker restarted twice while a producer sends and workers consume. `restart` stops
/// the server and returns once it answers again.
fn broker_restarted(
    profile: &Profile,
    dir: &Path,
    broker: &str,
    queue: &str,
    row: &mut Row,
    mut restart: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (prefix, count) = ("restart", profile.tasks);
    let pace = pace_ms(count, spread(profile));
    let producer = processes::producer(dir, broker, queue, prefix, count, pace, false)?;
    let spec = WorkerSpec {
        broker: broker.into(),
        backend: None,
        queue: queue.into(),
        concurrency: CONCURRENCY,
        prefetch: PREFETCH,
    };
    let mut fleet = Fleet::start(spec, &dir.join("workers"), profile.workers)?;
    let mut broken = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 1..=2u64 {
        if let Err(error) = fleet.wait(&format!("before restart {round}"), STALL, |f| {
            f.runs() >= count * round / 3
        }) {
            broken.push(error.to_string());
            break;
        }
        let down = Instant::now();
        restart()?;
        let back = Instant::now();
        println!(
            "restart {round}: server down and back in {:.1} s",
            (back - down).as_secs_f64()
        );
        // What the workers held when the server went away may still run without a new
        // fetch; more runs than that prove consumption resumed.
        let base = fleet.runs() + fleet.capacity();
        let resumed = fleet.wait(&format!("after restart {round}"), STALL, |f| {
            f.runs() > base || tally(&f.tally(), prefix, count).lost == 0
        });
        match resumed {
            Ok(()) => slowest = slowest.max(back.elapsed()),
            Err(error) => {
                broken.push(error.to_string());
                break;
            }
        }
    }
    row.recovery = Some(slowest);
    if broken.is_empty() {
        if let Err(error) = fleet.wait_all(prefix, count, STALL) {
            broken.push(error.to_string());
        }
    }
    finish_producer(producer, &mut broken);
    let stuck = fleet.stop();
    let found = tally(&fleet.tally(), prefix, count);
    row.counts(count, &found);
    common_clauses(&fleet, &found, &stuck, &mut broken);
    if slowest > RESUME {
        broken.push(format!(
            "consumption resumed {:.1} s after the server was back (> 5 s)",
            slowest.as_secs_f64()
        ));
    }
    row.judge(
        broken,
        format!(
            "lost 0, resumed ≤ {:.1} s after each of 2 restarts",
            slowest.as_secs_f64()
        ),
    );
    Ok(())
}

/// The broker's redis-server (append-only, `appendfsync always`) killed with SIGKILL and
/// started again on its data, twice, mid-load.
pub fn redis_restarted(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("redis-restarted")?;
    let mut redis = PrivateRedis::start(&dir.join("redis"), true)?;
    let broker = redis.url("visibility_timeout=10");
    broker_restarted(profile, &dir, &broker, "chaos.restart", row, || {
        redis.kill();
        redis.boot()
    })
}

/// The private RabbitMQ node stopped and started again, twice, mid-load: durable queues,
/// persistent messages, publisher confirms (the broker's defaults).
pub fn rabbitmq_restarted(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("rabbitmq-restarted")?;
    let rabbit = env.rabbit()?;
    let broker = rabbit.url("heartbeat=5&publish_timeout=60");
    broker_restarted(profile, &dir, &broker, "chaos.restart", row, || {
        rabbit.stop()?;
        rabbit.boot()
    })
}

/// A result backend down for a while mid-load, then back: every task's SUCCESS must be
/// readable at the end (the worker stores before it acks, and gives the message back when
/// it cannot store).
fn backend_down(
    profile: &Profile,
    dir: &Path,
    backend: &str,
    row: &mut Row,
    mut outage: impl FnMut() -> Result<()>,
) -> Result<()> {
    let redis = PrivateRedis::start(&dir.join("broker"), false)?;
    let broker = redis.url("visibility_timeout=10");
    let (queue, prefix, count) = ("chaos.results", "results", profile.tasks);
    let pace = pace_ms(count, spread(profile));
    let producer = processes::producer(dir, &broker, queue, prefix, count, pace, true)?;
    let spec = WorkerSpec {
        broker,
        backend: Some(backend.into()),
        queue: queue.into(),
        concurrency: CONCURRENCY,
        prefetch: PREFETCH,
    };
    let mut fleet = Fleet::start(spec, &dir.join("workers"), profile.workers)?;
    let mut broken = Vec::new();
    match fleet.wait("before the outage", STALL, |f| f.runs() >= count / 3) {
        Ok(()) => {
            outage()?;
            let back = Instant::now();
            let base = fleet.runs() + fleet.capacity();
            match fleet.wait("after the backend came back", STALL, |f| {
                f.runs() > base || tally(&f.tally(), prefix, count).lost == 0
            }) {
                Ok(()) => row.recovery = Some(back.elapsed()),
                Err(error) => broken.push(error.to_string()),
            }
        }
        Err(error) => broken.push(error.to_string()),
    }
    if broken.is_empty() {
        if let Err(error) = fleet.wait_all(prefix, count, STALL) {
            broken.push(error.to_string());
        }
    }
    finish_producer(producer, &mut broken);
    let stuck = fleet.stop();
    let found = tally(&fleet.tally(), prefix, count);
    row.counts(count, &found);
    common_clauses(&fleet, &found, &stuck, &mut broken);
    let results = check(&[
        "check-results",
        "--backend",
        backend,
        "--prefix",
        prefix,
        "--count",
        &count.to_string(),
    ])?;
    let success = number(&results, "success");
    if success < count {
        let examples: Vec<String> = results
            .iter()
            .filter(|(key, _)| key.starts_with("example-"))
            .map(|(_, value)| value.clone())
            .collect();
        broken.push(format!(
            "{} of {count} SUCCESS results not readable ({} missing, {} in another state or unreadable), e.g. {}",
            count - success,
            number(&results, "missing"),
            number(&results, "other"),
            examples.join(", ")
        ));
    }
    row.judge(
        broken,
        format!("lost 0, all {success} SUCCESS results readable"),
    );
    Ok(())
}

/// Results in a redis-server (append-only) killed with SIGKILL, down for the outage, then
/// started again on its data.
pub fn redis_backend_down(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("backend-down-redis")?;
    let mut results = PrivateRedis::start(&dir.join("results"), true)?;
    // Commands fail after 2 s instead of waiting out the outage inside the client: the
    // worker's own handling of a failed store is what is on trial.
    let backend = results.url("command_timeout=2");
    let outage = profile.outage;
    backend_down(profile, &dir, &backend, row, || {
        results.kill();
        // The fault's duration, not a synchronisation.
        std::thread::sleep(outage);
        results.boot()
    })
}

/// Results in a PostgreSQL cluster that crashes (`pg_ctl stop -m immediate`), stays down
/// for the outage, then starts again.
pub fn postgres_backend_down(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("backend-down-postgres")?;
    let cluster = PrivatePostgres::start(&dir.join("postgres"))?;
    let backend = cluster.url("acquire_timeout=2");
    let outage = profile.outage;
    backend_down(profile, &dir, &backend, row, || {
        cluster.crash()?;
        std::thread::sleep(outage);
        cluster.boot()
    })
}
