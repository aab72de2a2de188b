//! Harness shared by the decoder fuzz tests (`queue-core/tests/decoder_fuzz.rs`, and
//! `queue-amqp/tests/header_fuzz.rs`, which includes this module by path).
//!
//! Each input is generated from `(seed, index)` alone, so that any one reproduces on its own;
//! it runs under `catch_unwind` with its allocations counted by [`alloc::CountingAlloc`],
//! while a watchdog stops the run on an input that does not terminate. Failing inputs are
//! grouped by panic location, minimised, saved and printed; one summary line goes to stdout.
//! The loop runs in a child process ([`supervise`]), so that an input that aborts the process
//! (a stack overflow, a refused allocation) is still named.
//!
//! Environment: `QUEUE_FUZZ_INPUTS` (default 20000), `QUEUE_FUZZ_SEED` (default fixed),
//! `QUEUE_FUZZ_INDEX` (run that one input only, and print it), `QUEUE_FUZZ_THREADS` (default:
//! the machine's cores), `QUEUE_FUZZ_MAX_INPUT` (bytes, default 65536), `QUEUE_FUZZ_ALLOC_CAP`
//! (bytes one input may hold at once, default 64 MiB), `QUEUE_FUZZ_CASE_TIMEOUT` (seconds one
//! input may take, default 30).

#![allow(dead_code)]

pub mod alloc;
pub mod case;
pub mod dictionary;
pub mod exercise;
pub mod mutate;
pub mod seeds;
pub mod supervise;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};

pub use case::{Failure, run_case};
use case::{install_panic_hook, minimise};

#[global_allocator]
static ALLOCATOR: alloc::CountingAlloc = alloc::CountingAlloc;

/// The generator of every input.
pub type Rng = rand::rngs::SmallRng;

/// The default seed: runs are deterministic unless `QUEUE_FUZZ_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x5eed_c0de_2026_0009;

/// Makes an input of at most `max` bytes (the second argument) from the generator.
pub type Generate = Box<dyn Fn(&mut Rng, usize) -> Vec<u8> + Send + Sync>;

/// The `n`-th one-step reduction of an input; `None` past the last.
pub type Reduce = fn(&[u8], usize) -> Option<Vec<u8>>;

/// One decoder under test.
pub struct Target {
    /// Short name, in reports.
    pub name: &'static str,
    /// Makes an input (at most `max` bytes) from the generator.
    pub generate: Generate,
    /// Decodes and uses an input; true when it decoded.
    pub run: fn(&[u8]) -> bool,
    /// The `n`-th one-step reduction of an input, for minimising; `None` past the last.
    pub reduce: Option<Reduce>,
    /// A readable form of an input, for reports.
    pub describe: Option<fn(&[u8]) -> String>,
}

/// Run settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many inputs.
    pub inputs: u64,
    /// The run's seed.
    pub seed: u64,
    /// Only this input.
    pub only: Option<u64>,
    /// Worker threads.
    pub threads: usize,
    /// Largest input, bytes.
    pub max_input: usize,
    /// Most bytes one input may hold at once.
    pub alloc_cap: usize,
    /// Longest one input may take.
    pub case_timeout: Duration,
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    };
    Some(parsed.unwrap_or_else(|| panic!("{name}={text:?} is not a number")))
}

impl Config {
    /// Settings from the `QUEUE_FUZZ_*` variables.
    pub fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            inputs: env_number("QUEUE_FUZZ_INPUTS").unwrap_or(20_000),
            seed: env_number("QUEUE_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            only: env_number("QUEUE_FUZZ_INDEX"),
            threads: env_number("QUEUE_FUZZ_THREADS")
                .map_or(cores, |threads| threads as usize)
                .max(1),
            max_input: env_number("QUEUE_FUZZ_MAX_INPUT").map_or(65_536, |bytes| bytes as usize),
            alloc_cap: env_number("QUEUE_FUZZ_ALLOC_CAP").map_or(64 << 20, |bytes| bytes as usize),
            case_timeout: Duration::from_secs(env_number("QUEUE_FUZZ_CASE_TIMEOUT").unwrap_or(30)),
        }
    }
}

/// A distinct failure: first input, how many inputs hit it, and the minimised input.
#[derive(Clone, Debug)]
pub struct Finding {
    /// Target name.
    pub target: &'static str,
    /// The failure of the first input.
    pub failure: Failure,
    /// Index of the first input.
    pub index: u64,
    /// How many inputs failed so.
    pub count: u64,
    /// The first input.
    pub input: Vec<u8>,
    /// Its minimised form.
    pub minimised: Vec<u8>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// Inputs past the allocation cap.
    pub alloc_failures: u64,
    /// Largest peak of one input.
    pub max_alloc_bytes: usize,
    /// Wall time.
    pub seconds: f64,
    /// Distinct failures.
    pub findings: Vec<Finding>,
    /// Per target: inputs, and how many decoded.
    pub per_target: BTreeMap<&'static str, (u64, u64)>,
    /// Why a supervised run failed (its child's report, or how the child died).
    pub failure: Option<String>,
}

/// Stack of each fuzz worker: that of a tokio worker thread, where the decoders run.
pub const WORKER_STACK: usize = 2 << 20;

/// Input `index` of the run with `seed`: which target, and the bytes.
pub fn input_for(targets: &[Target], seed: u64, index: u64, max: usize) -> (usize, Vec<u8>) {
    let mut rng = Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let target = rng.random_range(0..targets.len());
    let mut bytes = (targets[target].generate)(&mut rng, max);
    bytes.truncate(max);
    (target, bytes)
}

/// Bytes as text, non-printable ones as `\xNN`, cut after `limit` characters.
pub fn escape(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(character),
                '\n' => out.push_str("\\n"),
                other if !other.is_control() => out.push(other),
                other => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(other));
                }
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
        if out.len() > limit {
            let _ = write!(out, "... ({} bytes in all)", bytes.len());
            break;
        }
    }
    out
}

struct Slot {
    /// Index + 1 of the input running, 0 when idle.
    running: AtomicU64,
    /// When it started, milliseconds since the run began.
    since: AtomicU64,
}

#[derive(Default)]
struct Tally {
    inputs: u64,
    panics: u64,
    alloc_failures: u64,
    max_alloc: usize,
    per_target: BTreeMap<&'static str, (u64, u64)>,
    findings: BTreeMap<(&'static str, String), Finding>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.inputs += other.inputs;
        self.panics += other.panics;
        self.alloc_failures += other.alloc_failures;
        self.max_alloc = self.max_alloc.max(other.max_alloc);
        for (name, (inputs, decoded)) in other.per_target {
            let entry = self.per_target.entry(name).or_default();
            entry.0 += inputs;
            entry.1 += decoded;
        }
        for (key, finding) in other.findings {
            match self.findings.get_mut(&key) {
                Some(mine) => {
                    mine.count += finding.count;
                    if finding.index < mine.index {
                        let count = mine.count;
                        *mine = Finding { count, ..finding };
                    }
                }
                None => {
                    self.findings.insert(key, finding);
                }
            }
        }
    }
}

fn worker(
    targets: &[Target],
    config: &Config,
    indices: impl Iterator<Item = u64>,
    (number, slot, flight): (usize, &Slot, Option<&supervise::Flight>),
    started: Instant,
) -> Tally {
    let mut tally = Tally::default();
    for index in indices {
        if let Some(flight) = flight {
            flight.record(number, Some(index), tally.inputs);
        }
        let (which, input) = input_for(targets, config.seed, index, config.max_input);
        let target = &targets[which];
        slot.since
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        slot.running.store(index + 1, Ordering::Release);
        let (result, peak) = run_case(target, &input, config.seed, index, config.alloc_cap);
        slot.running.store(0, Ordering::Release);
        tally.inputs += 1;
        tally.max_alloc = tally.max_alloc.max(peak);
        let entry = tally.per_target.entry(target.name).or_default();
        entry.0 += 1;
        match result {
            Ok(decoded) => entry.1 += u64::from(decoded),
            Err(failure) => {
                match failure {
                    Failure::Panic { .. } => tally.panics += 1,
                    Failure::Alloc { .. } => tally.alloc_failures += 1,
                }
                let key = (target.name, failure.key());
                let finding = tally.findings.entry(key).or_insert_with(|| Finding {
                    target: target.name,
                    failure,
                    index,
                    count: 0,
                    input: input.clone(),
                    minimised: Vec::new(),
                });
                finding.count += 1;
            }
        }
    }
    if let Some(flight) = flight {
        flight.record(number, None, tally.inputs);
    }
    tally
}

/// Watches the workers: an input past the timeout ends the process, naming the input.
fn watchdog(
    targets: &[Target],
    config: &Config,
    slots: &[Slot],
    done: &AtomicBool,
    started: Instant,
    label: &str,
) {
    let mut last_progress = Instant::now();
    while !done.load(Ordering::Acquire) {
        std::thread::park_timeout(Duration::from_millis(500));
        let now = started.elapsed().as_millis() as u64;
        for slot in slots {
            let running = slot.running.load(Ordering::Acquire);
            let since = slot.since.load(Ordering::Relaxed);
            if running == 0 || now.saturating_sub(since) < config.case_timeout.as_millis() as u64 {
                continue;
            }
            let index = running - 1;
            eprintln!(
                "{label}: input QUEUE_FUZZ_SEED={:#x} QUEUE_FUZZ_INDEX={index} did not finish \
                 within {:?}: {}",
                config.seed,
                config.case_timeout,
                describe_input(targets, config, index)
            );
            std::process::exit(101);
        }
        if last_progress.elapsed() >= Duration::from_secs(60) {
            last_progress = Instant::now();
            eprintln!(
                "{label}: running for {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A readable account of input `index`: its target, bytes, and how the target reads it.
pub fn describe_input(targets: &[Target], config: &Config, index: u64) -> String {
    // On a thread of its own with a large stack: the input may nest deep enough to overflow
    // the caller's stack, which is what it may have done to the fuzz worker.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn_scoped(scope, || describe_here(targets, config, index))
            .expect("a thread to describe an input")
            .join()
            .unwrap_or_else(|_| format!("input {index} could not be described (it panicked)"))
    })
}

fn describe_here(targets: &[Target], config: &Config, index: u64) -> String {
    let (which, input) = input_for(targets, config.seed, index, config.max_input);
    let target = &targets[which];
    let readable = target
        .describe
        .map(|describe| format!("\n  reads as: {}", describe(&input)))
        .unwrap_or_default();
    format!(
        "target {}, {} bytes: {}{readable}",
        target.name,
        input.len(),
        escape(&input, 4_000)
    )
}

/// Runs the inputs of `config` through `targets`, prints findings to stderr and the summary
/// line `<label> inputs=N panics=P max_alloc_bytes=B seconds=S` to stdout. `test` is the
/// name of the calling test: the loop runs in a child process running that test (see
/// [`supervise`]), except for a single input (`QUEUE_FUZZ_INDEX`), run here.
pub fn run(label: &str, test: &str, targets: &[Target], config: &Config) -> Report {
    if config.only.is_none() && !supervise::is_child() {
        return supervise::run(label, test, targets, config);
    }
    install_panic_hook();
    exercise::init();
    let started = Instant::now();
    let slots: Vec<Slot> = (0..config.threads)
        .map(|_| Slot {
            running: AtomicU64::new(0),
            since: AtomicU64::new(0),
        })
        .collect();
    let done = AtomicBool::new(false);
    let mut tally = Tally::default();
    if let Some(index) = config.only {
        eprintln!(
            "{label}: input {index}: {}",
            describe_input(targets, config, index)
        );
        let indices = std::iter::once(index);
        tally = worker(targets, config, indices, (0, &slots[0], None), started);
    } else {
        let flight = supervise::Flight::from_env();
        let flight = flight.as_ref();
        std::thread::scope(|scope| {
            let dog = scope.spawn(|| watchdog(targets, config, &slots, &done, started, label));
            let handles: Vec<_> = slots
                .iter()
                .enumerate()
                .map(|(number, slot)| {
                    let indices = (number as u64..config.inputs).step_by(config.threads);
                    std::thread::Builder::new()
                        .name(format!("fuzz-{number}"))
                        .stack_size(WORKER_STACK)
                        .spawn_scoped(scope, move || {
                            worker(targets, config, indices, (number, slot, flight), started)
                        })
                        .expect("a fuzz worker thread")
                })
                .collect();
            for handle in handles {
                tally.merge(handle.join().expect("fuzz workers do not panic"));
            }
            done.store(true, Ordering::Release);
            dog.thread().unpark();
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut findings: Vec<Finding> = tally.findings.into_values().collect();
    for finding in &mut findings {
        let target = targets
            .iter()
            .find(|target| target.name == finding.target)
            .expect("a finding names its target");
        finding.minimised = minimise(target, &finding.input, &finding.failure, config);
    }
    let report = Report {
        inputs: tally.inputs,
        panics: tally.panics,
        alloc_failures: tally.alloc_failures,
        max_alloc_bytes: tally.max_alloc,
        seconds,
        findings,
        per_target: tally.per_target,
        failure: None,
    };
    print_report(label, targets, config, &report);
    report
}

fn print_report(label: &str, targets: &[Target], config: &Config, report: &Report) {
    let rate = report.inputs as f64 / report.seconds.max(1e-9);
    eprintln!(
        "{label}: seed {:#x}, {} threads, {rate:.0} inputs/s; per target (inputs, decoded): {:?}",
        config.seed, config.threads, report.per_target
    );
    let rejected = exercise::REENCODE_REJECTED.load(Ordering::Relaxed);
    if rejected > 0 {
        eprintln!(
            "{label}: {rejected} decoded messages did not decode again once re-encoded; first: {}",
            exercise::reencode_example().unwrap_or_default()
        );
    }
    let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(label);
    for (number, finding) in report.findings.iter().enumerate() {
        let path = saved.join(format!("{}-{number}.bin", finding.target));
        let stored = std::fs::create_dir_all(&saved)
            .and_then(|()| std::fs::write(&path, &finding.minimised))
            .map_or_else(
                |error| format!("not saved: {error}"),
                |()| path.display().to_string(),
            );
        let what = match &finding.failure {
            Failure::Panic { location, message } => format!("PANIC at {location}: {message:?}"),
            Failure::Alloc { peak } => {
                format!("ALLOCATED {peak} bytes at once (cap {})", config.alloc_cap)
            }
        };
        let target = targets.iter().find(|target| target.name == finding.target);
        let readable = target
            .and_then(|target| target.describe)
            .map(|describe| format!("\n  reads as: {}", describe(&finding.minimised)))
            .unwrap_or_default();
        eprintln!(
            "{label}: target {}: {what}\n  {} inputs; first QUEUE_FUZZ_SEED={:#x} QUEUE_FUZZ_INDEX={}\n  \
             minimised ({} bytes, saved {stored}): {}{readable}",
            finding.target,
            finding.count,
            config.seed,
            finding.index,
            finding.minimised.len(),
            escape(&finding.minimised, 2_000),
        );
    }
    // On a line of its own even after libtest's `test NAME ... `.
    println!(
        "\n{label} inputs={} panics={} max_alloc_bytes={} seconds={:.1}",
        report.inputs, report.panics, report.max_alloc_bytes, report.seconds
    );
}

/// Fails the test when the run found a panic or an allocation past the cap.
pub fn assert_clean(label: &str, report: &Report) {
    let summary: Vec<String> = report
        .findings
        .iter()
        .map(|finding| {
            let what = match &finding.failure {
                Failure::Panic { location, .. } => format!("panic at {location}"),
                Failure::Alloc { peak } => format!("{peak} bytes allocated"),
            };
            format!(
                "{}: {what}, {} inputs (minimised input printed above)",
                finding.target, finding.count
            )
        })
        .collect();
    if let Some(failure) = &report.failure {
        panic!("{label}: {failure}");
    }
    assert!(
        report.panics == 0 && report.alloc_failures == 0,
        "{label}: {} panics, {} inputs past the allocation cap:\n{}",
        report.panics,
        report.alloc_failures,
        summary.join("\n")
    );
}

/// Runs recorded inputs (regressions) through `target`; the failures, if any.
pub fn replay(target: &Target, inputs: &[&[u8]]) -> Vec<String> {
    install_panic_hook();
    exercise::init();
    inputs
        .iter()
        .filter_map(|input| {
            let (result, _) = run_case(target, input, DEFAULT_SEED, u64::MAX, 64 << 20);
            result
                .err()
                .map(|failure| format!("{}: {failure:?}", escape(input, 300)))
        })
        .collect()
}
