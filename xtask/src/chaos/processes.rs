//! The processes of the fault suite, all of the `queue-chaos` binary (crate `queue-chaos`):
//! worker processes, each with a sink file of its own in which every task run leaves its
//! id; producers; and the end-of-scenario checks, which print `key value` lines.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Result, err};

/// The fault suite's binary, built by [`build`].
pub fn binary() -> PathBuf {
    util::target_dir().join("debug/queue-chaos")
}

/// Builds `queue-chaos` once per run, in the debug profile, as part of the test build with
/// the flags the full test run uses (`cargo test --workspace --all-features --no-run`, as
/// nextest does): inside `cargo xtask test` nothing is left to compile, and the crate's own
/// integration test makes cargo place the binary at `target/debug/queue-chaos`.
pub fn build() -> Result<()> {
    util::run(util::cargo().args([
        "test",
        "--workspace",
        "--all-features",
        "--no-run",
        "--quiet",
    ]))?;
    if !binary().is_file() {
        return err(format!("{} was not built", binary().display()));
    }
    Ok(())
}

/// A process of ours, its stdout and stderr in a log file.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, args: &[String], log: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary().display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `grace` for it to exit; SIGKILL after that. Whether it exited
    /// by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Waits until it exits, at most `limit`; its status, or `None` (then it is killed).
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Its log, for reading results and evidence.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// Crashes after which a fleet stops replacing its workers (they would only crash again).
pub const MAX_CRASHES: usize = 10;

/// The last non-empty line of a log, shortened.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// How a fleet of workers is configured.
#[derive(Clone)]
pub struct WorkerSpec {
    pub broker: String,
    pub backend: Option<String>,
    pub queue: String,
    pub concurrency: usize,
    pub prefetch: usize,
}

/// Worker processes; each (re)start gets a sink file of its own in `dir`.
pub struct Fleet {
    spec: WorkerSpec,
    dir: PathBuf,
    workers: Vec<Process>,
    started: usize,
    /// Workers that exited without being told to (a crash), with how they ended.
    pub crashes: Vec<String>,
    sink: Sink,
}

impl Fleet {
    pub fn start(spec: WorkerSpec, dir: &Path, count: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut fleet = Self {
            spec,
            dir: dir.to_path_buf(),
            workers: Vec::new(),
            started: 0,
            crashes: Vec::new(),
            sink: Sink::new(dir),
        };
        for _ in 0..count {
            let worker = fleet.spawn()?;
            fleet.workers.push(worker);
        }
        Ok(fleet)
    }

    /// Messages one worker may hold at once: what it runs plus what it reads ahead.
    pub fn capacity(&self) -> u64 {
        (self.workers.len() * (self.spec.concurrency + self.spec.prefetch)) as u64
    }

    fn spawn(&mut self) -> Result<Process> {
        self.started += 1;
        let name = format!("worker{}", self.started);
        let mut args: Vec<String> = [
            "worker",
            "--broker",
            &self.spec.broker,
            "--queue",
            &self.spec.queue,
            "--node",
            &format!("chaos-{name}@localhost"),
        ]
        .map(String::from)
        .into();
        args.extend([
            "--concurrency".into(),
            self.spec.concurrency.to_string(),
            "--prefetch".into(),
            self.spec.prefetch.to_string(),
            "--sink".into(),
            self.dir.join(format!("{name}.sink")).display().to_string(),
        ]);
        if let Some(backend) = &self.spec.backend {
            args.extend(["--backend".into(), backend.clone()]);
        }
        Process::spawn(&name, &args, self.dir.join(format!("{name}.log")))
    }

    /// `kill -9` of worker `index` (modulo their number) and a fresh one in its place.
    pub fn kill_and_replace(&mut self, index: usize) -> Result<()> {
        let index = index % self.workers.len();
        self.workers[index].kill();
        self.workers[index] = self.spawn()?;
        Ok(())
    }

    /// Replaces workers that exited by themselves, recording each as a crash; gives up
    /// (an error) once workers have crashed [`MAX_CRASHES`] times.
    pub fn reap(&mut self) -> Result<()> {
        for index in 0..self.workers.len() {
            if let Some(status) = self.workers[index].exited() {
                let worker = &self.workers[index];
                let log = worker.output();
                let mut evidence = panic_lines(&log);
                if evidence.is_empty() {
                    evidence = last_line(&log);
                }
                self.crashes
                    .push(format!("{} exited ({status}): {evidence}", worker.name));
                if self.crashes.len() >= MAX_CRASHES {
                    return err(format!(
                        "workers crashed {} times, the last: {}",
                        self.crashes.len(),
                        self.crashes.last().expect("just pushed")
                    ));
                }
                self.workers[index] = self.spawn()?;
            }
        }
        Ok(())
    }

    /// The crashes in a few words: how many, and the first ones.
    pub fn crash_summary(&self) -> Option<String> {
        if self.crashes.is_empty() {
            return None;
        }
        let shown: Vec<&str> = self.crashes.iter().take(3).map(String::as_str).collect();
        Some(format!(
            "{} worker crash(es): {}",
            self.crashes.len(),
            shown.join("; ")
        ))
    }

    /// Lines in the sink files so far (runs, duplicates included).
    pub fn runs(&mut self) -> u64 {
        self.sink.lines()
    }

    /// Runs per task id.
    pub fn tally(&self) -> HashMap<String, u32> {
        self.sink.tally()
    }

    /// Polls until `done` holds, reaping crashed workers. The watchdog: no new run for
    /// `stall` (while not done) fails with the state it stalled in.
    pub fn wait(
        &mut self,
        what: &str,
        stall: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<()> {
        let mut last = self.runs();
        let mut progressed = Instant::now();
        loop {
            self.reap()?;
            if done(self) {
                return Ok(());
            }
            let runs = self.runs();
            if runs != last {
                last = runs;
                progressed = Instant::now();
            } else if progressed.elapsed() > stall {
                return err(format!(
                    "stalled {what}: no task ran for {}s ({runs} runs so far)",
                    stall.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until every id `<prefix>-<n>`, n < count, ran at least once.
    pub fn wait_all(&mut self, prefix: &str, count: u64, stall: Duration) -> Result<()> {
        let mut checked_at = 0;
        self.wait("before every task ran", stall, |fleet| {
            let runs = fleet.runs();
            // A full count only when the sink could hold them all, and not on every poll.
            if runs < count || runs == checked_at {
                return false;
            }
            checked_at = runs;
            tally(&fleet.tally(), prefix, count).lost == 0
        })
    }

    /// SIGTERM to every worker (warm shutdown); the ones that did not exit in time.
    pub fn stop(&mut self) -> Vec<String> {
        let mut stuck = Vec::new();
        for worker in &mut self.workers {
            if worker.exited().is_none() && !worker.terminate(Duration::from_secs(30)) {
                stuck.push(worker.name.clone());
            }
        }
        stuck
    }

    /// The first lines that show a panic in any worker's log, as evidence.
    pub fn panics(&self) -> String {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines = panic_lines(&text);
                if !lines.is_empty() {
                    found.push(format!(
                        "{}: {lines}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ));
                }
            }
        }
        found.truncate(3);
        found.join("; ")
    }
}

/// `panicked at …` lines of a log (with the message that follows), shortened.
fn panic_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            let message = lines.get(index + 1).copied().unwrap_or_default();
            found.push(format!("{} {}", line.trim(), message.trim()));
        }
    }
    let total = found.len();
    found.truncate(2);
    let mut text: String = found.join(" | ").chars().take(400).collect();
    if total > 2 {
        text.push_str(&format!(" (+{} more)", total - 2));
    }
    text
}

/// The sink files of a fleet: complete lines only (a line a kill cut short has no newline
/// and does not count: its task did not finish recording).
struct Sink {
    dir: PathBuf,
    /// Per file: bytes read up to the last newline, and the lines in them.
    read: BTreeMap<PathBuf, (u64, u64)>,
}

impl Sink {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            read: BTreeMap::new(),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "sink"))
            .collect();
        files.sort();
        files
    }

    fn lines(&mut self) -> u64 {
        for file in self.files() {
            let (offset, lines) = self.read.get(&file).copied().unwrap_or((0, 0));
            let Ok(mut handle) = std::fs::File::open(&file) else {
                continue;
            };
            let mut fresh = Vec::new();
            use std::io::Seek;
            if handle.seek(std::io::SeekFrom::Start(offset)).is_err()
                || handle.read_to_end(&mut fresh).is_err()
            {
                continue;
            }
            let complete = fresh
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1);
            let new_lines = fresh[..complete].iter().filter(|b| **b == b'\n').count() as u64;
            self.read
                .insert(file, (offset + complete as u64, lines + new_lines));
        }
        self.read.values().map(|(_, lines)| lines).sum()
    }

    fn tally(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for file in self.files() {
            let text = std::fs::read(&file).unwrap_or_default();
            let complete = text
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1);
            for line in String::from_utf8_lossy(&text[..complete]).lines() {
                if !line.is_empty() {
                    *counts.entry(line.to_owned()).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}

/// What the sink says about the tasks `<prefix>-<n>`, n < count.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub done: u64,
    pub lost: u64,
    /// Runs beyond the first, over these tasks.
    pub duplicated: u64,
    /// Ids that ran but were never sent under this prefix (hostile messages, say).
    pub foreign: BTreeMap<String, u64>,
    /// The first few ids that never ran, as evidence.
    pub lost_examples: Vec<String>,
}

pub fn tally(counts: &HashMap<String, u32>, prefix: &str, count: u64) -> Tally {
    let mut result = Tally::default();
    for n in 0..count {
        match counts.get(&format!("{prefix}-{n}")) {
            Some(runs) => {
                result.done += 1;
                result.duplicated += u64::from(runs.saturating_sub(1));
            }
            None => {
                result.lost += 1;
                if result.lost_examples.len() < 5 {
                    result.lost_examples.push(format!("{prefix}-{n}"));
                }
            }
        }
    }
    let own = format!("{prefix}-");
    for (id, runs) in counts {
        let ours = id
            .strip_prefix(&own)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < count);
        if !ours {
            *result.foreign.entry(id.clone()).or_default() += u64::from(*runs);
        }
    }
    result
}

/// A producer of `count` tasks `<prefix>-<n>`, in the background.
pub fn producer(
    dir: &Path,
    broker: &str,
    queue: &str,
    prefix: &str,
    count: u64,
    pace_ms: u64,
    results: bool,
) -> Result<Process> {
    let mut args: Vec<String> = [
        "produce", "--broker", broker, "--queue", queue, "--prefix", prefix,
    ]
    .map(String::from)
    .into();
    args.extend([
        "--count".into(),
        count.to_string(),
        "--pace-ms".into(),
        pace_ms.to_string(),
        "--progress".into(),
        dir.join(format!("{prefix}.progress")).display().to_string(),
    ]);
    if results {
        args.push("--results".into());
    }
    Process::spawn(
        &format!("producer {prefix}"),
        &args,
        dir.join(format!("{prefix}.producer.log")),
    )
}

/// Runs a check of the `queue-chaos` binary and returns its `<tag> key value` lines as
/// `key → value` (the value is the rest of the line).
pub fn check(args: &[&str]) -> Result<Vec<(String, String)>> {
    let tag = args[0].strip_prefix("check-").unwrap_or(args[0]);
    let out = util::output(Command::new(binary()).args(args))?;
    Ok(key_values(&out, tag))
}

/// `<tag> key value…` lines as pairs.
pub fn key_values(text: &str, tag: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(tag)?.strip_prefix(' ')?;
            let (key, value) = rest.split_once(' ')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The number under `key` in check output (0 when absent).
pub fn number(pairs: &[(String, String)], key: &str) -> u64 {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `kind <name> <n>` entries as a map.
pub fn per_kind(pairs: &[(String, String)], key: &str) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .filter_map(|(_, v)| {
            let (kind, n) = v.rsplit_once(' ')?;
            Some((kind.to_owned(), n.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_lost_duplicated_and_foreign_runs() {
        let mut counts = HashMap::new();
        counts.insert("t-0".to_owned(), 1);
        counts.insert("t-1".to_owned(), 3);
        counts.insert("t-7".to_owned(), 1); // beyond count: not ours
        counts.insert("poison-unknown-task-4".to_owned(), 2);
        let found = tally(&counts, "t", 3);
        assert_eq!((found.done, found.lost, found.duplicated), (2, 1, 2));
        assert_eq!(found.foreign.len(), 2);
        assert_eq!(found.foreign["poison-unknown-task-4"], 2);
    }

    #[test]
    fn sink_counts_complete_lines_only() {
        let dir = std::env::temp_dir().join(format!("xtask-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.sink"), "t-0\nt-1\nt-").unwrap();
        std::fs::write(dir.join("b.sink"), "t-1\n").unwrap();
        std::fs::write(dir.join("a.log"), "t-9\n").unwrap();
        let mut sink = Sink::new(&dir);
        assert_eq!(sink.lines(), 3);
        // The cut line completes later: counted once, from where the last read stopped.
        std::fs::write(dir.join("a.sink"), "t-0\nt-1\nt-2\n").unwrap();
        assert_eq!(sink.lines(), 4);
        let counts = sink.tally();
        assert_eq!(counts["t-1"], 2);
        assert_eq!(tally(&counts, "t", 3).lost, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_check_output() {
        let pairs = key_values(
            "dead total 12\ndead kind invalid-json 5\ndead kind big-body 1\nnoise\n",
            "dead",
        );
        assert_eq!(number(&pairs, "total"), 12);
        assert_eq!(number(&pairs, "missing"), 0);
        let kinds = per_kind(&pairs, "kind");
        assert_eq!(kinds["invalid-json"], 5);
        assert_eq!(kinds.len(), 2);
    }

    #[test]
    fn finds_panics_in_a_log() {
        let log = "warn x\nthread 'tokio-runtime-worker' panicked at queue-core/src/protocol/mod.rs:250:5:\ncan not convert float seconds to Duration: value is either too big or NaN\n";
        let found = panic_lines(log);
        assert!(found.contains("protocol/mod.rs:250"), "{found}");
        assert!(found.contains("too big or NaN"), "{found}");
    }
}
