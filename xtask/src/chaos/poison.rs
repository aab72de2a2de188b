//! Poison: hostile messages (`queue-chaos poison`: invalid JSON, wrong body shape, unknown
//! task, 10 MB body, huge and NaN numbers in eta/expires/timelimit/retries, invalid UTF-8,
//! unknown content type, missing headers, a broken envelope) written straight to the broker
//! while good tasks flow. No worker may crash, every hostile message must reach the queue's
//! dead-letter queue with a reason, and every good task must run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::processes::{self, Fleet, Process, WorkerSpec, check, key_values, number, per_kind};
use super::scenarios::STALL;
use super::{Env, Profile, Row};
use crate::services::PrivateRedis;
use crate::util::Result;

const QUEUE: &str = "chaos.poison";
const DEAD: &str = "chaos.poison.dead_letter";

/// On a private redis-server: raw LPUSH into kombu's list of the queue.
pub fn redis(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("poison-redis")?;
    let server = PrivateRedis::start(&dir.join("redis"), false)?;
    let broker = server.url("");
    poison(profile, &dir, &broker, row, || {
        server.integer(&["LLEN", DEAD]).unwrap_or(0) as u64
    })
}

/// On the private RabbitMQ node: basic_publish with hostile properties and bodies.
pub fn rabbitmq(profile: &Profile, env: &mut Env, row: &mut Row) -> Result<()> {
    let dir = env.dir("poison-rabbitmq")?;
    let rabbit = env.rabbit()?;
    let broker = rabbit.url("heartbeat=5");
    let outcome = poison(profile, &dir, &broker, row, || {
        rabbit.queue_counts(DEAD).map_or(0, |(ready, _)| ready)
    });
    // Messages a worker took and never settled are unacked in the queue itself.
    if let (Err(broken), Some((_, unacked))) = (&mut row.verdict, rabbit.queue_counts(QUEUE)) {
        if unacked > 0 {
            broken.push_str(&format!("; {unacked} message(s) still unacked in {QUEUE}"));
        }
    }
    outcome
}

fn poison(
    profile: &Profile,
    dir: &Path,
    broker: &str,
    row: &mut Row,
    dead_letters: impl Fn() -> u64,
) -> Result<()> {
    let (prefix, good, hostile) = ("good", profile.tasks, profile.hostile);
    let spec = WorkerSpec {
        broker: broker.into(),
        backend: None,
        queue: QUEUE.into(),
        concurrency: 8,
        prefetch: 8,
    };
    let mut fleet = Fleet::start(spec, &dir.join("workers"), profile.workers)?;
    let spread = Duration::from_secs(if profile.long { 40 } else { 6 });
    let pace = |count: u64, batch: u64| {
        (spread.as_millis() as u64 / count.div_ceil(batch).max(1)).min(1_000)
    };
    let producer = processes::producer(dir, broker, QUEUE, prefix, good, pace(good, 100), false)?;
    let poisoner = Process::spawn(
        "poison",
        &[
            "poison",
            "--broker",
            broker,
            "--queue",
            QUEUE,
            "--count",
            &hostile.to_string(),
            "--big",
            &profile.big.to_string(),
            "--burst",
            "50",
            "--pace-ms",
            &pace(hostile, 50).to_string(),
        ]
        .map(String::from),
        dir.join("poison.log"),
    )?;
    let mut broken = Vec::new();
    let sent = finish(poisoner, "poison", &mut broken);
    let sent_kinds = per_kind(&key_values(&sent, "poison"), "kind");
    finish(producer, "producer", &mut broken);
    if let Err(error) = fleet.wait_all(prefix, good, STALL) {
        broken.push(error.to_string());
    }
    // Dead letters land as the workers reach them; wait until all are there, or until their
    // count stops moving for a while (the watchdog).
    let mut last = (dead_letters(), Instant::now());
    while last.0 < hostile && last.1.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        let _ = fleet.reap();
        let now = dead_letters();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let _ = fleet.reap();
    let dead = check(&[
        "check-dead",
        "--broker",
        broker,
        "--queue",
        QUEUE,
        "--limit",
        &(hostile + 1_000).to_string(),
    ])?;
    let panics = fleet.panics();
    let stuck = fleet.stop();
    let found = processes::tally(&fleet.tally(), prefix, good);
    row.counts(good, &found);

    broken.extend(fleet.crash_summary());
    if found.lost > 0 {
        broken.push(format!(
            "{} good tasks lost, e.g. {}",
            found.lost,
            found.lost_examples.join(", ")
        ));
    }
    let total = number(&dead, "total");
    let dead_kinds = per_kind(&dead, "kind");
    let pinned = per_kind(&dead, "pinned");
    let ran = ran_by_kind(&found.foreign);
    let reasons: BTreeMap<String, String> = dead
        .iter()
        .filter(|(key, _)| key == "reason")
        .filter_map(|(_, value)| {
            let (kind, reason) = value.split_once(' ')?;
            Some((kind.to_owned(), reason.to_owned()))
        })
        .collect();
    for (kind, sent) in &sent_kinds {
        let got = dead_kinds.get(kind).copied().unwrap_or(0);
        if got != *sent {
            let mut clause = format!("{kind}: {got} of {sent} dead-lettered");
            if let Some(n) = ran.get(kind) {
                clause.push_str(&format!(", {n} ran as tasks"));
            }
            if let Some(n) = pinned.get(kind) {
                clause.push_str(&format!(", {n} pinned unacked"));
            }
            broken.push(clause);
        }
    }
    let without_reason = number(&dead, "without-reason");
    if without_reason > 0 {
        let kinds: Vec<String> = per_kind(&dead, "no-reason")
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        broken.push(format!(
            "{without_reason} dead letters read back without a reason (Broker::dead_letters): {}",
            kinds.join(", ")
        ));
    }
    let strays = number(&dead, "good") + number(&dead, "unclassified");
    if strays > 0 {
        broken.push(format!(
            "{strays} dead letters that are not the hostile ones (good tasks or unknown)"
        ));
    }
    if !panics.is_empty() && !broken.is_empty() {
        broken.push(format!("panics in the worker logs: {panics}"));
    }
    if !stuck.is_empty() {
        broken.push(format!(
            "{} did not exit within 30 s of SIGTERM",
            stuck.join(", ")
        ));
    }
    println!("dead-letter reasons, one per kind:");
    for (kind, reason) in &reasons {
        println!("  {kind}: {reason}");
    }
    row.judge(
        broken,
        format!(
            "0 crashes, {total}/{hostile} hostile dead-lettered with a reason ({} kinds), good all done",
            dead_kinds.len()
        ),
    );
    Ok(())
}

/// Waits for a helper process; its output. A failure is a broken clause.
fn finish(mut process: Process, what: &str, broken: &mut Vec<String>) -> String {
    match process.wait(Duration::from_secs(300)) {
        Some(status) if status.success() => {}
        Some(status) => broken.push(format!("{what} failed ({status})")),
        None => broken.push(format!("{what} did not finish within 300 s")),
    }
    process.output()
}

/// Hostile ids (`poison-<kind>-<n>`) that ran as tasks, by kind.
fn ran_by_kind(foreign: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for (id, runs) in foreign {
        if let Some((kind, _)) = id
            .strip_prefix("poison-")
            .and_then(|rest| rest.rsplit_once('-'))
        {
            *kinds.entry(kind.to_owned()).or_default() += runs;
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_runs_are_counted_by_kind() {
        let mut foreign = BTreeMap::new();
        foreign.insert("poison-nan-numbers-3".to_owned(), 1);
        foreign.insert("poison-nan-numbers-13".to_owned(), 2);
        foreign.insert("poison-huge-numbers-4".to_owned(), 1);
        foreign.insert("stray".to_owned(), 1);
        let kinds = ran_by_kind(&foreign);
        assert_eq!(kinds["nan-numbers"], 3);
        assert_eq!(kinds["huge-numbers"], 1);
        assert_eq!(kinds.len(), 2);
    }
}
