//! The fuzz loop runs in a child process (the test binary running the same test), so that an
//! input that aborts the process (a stack overflow, an allocation refused past the hard cap,
//! the watchdog's exit) is named instead of taking the report down with it.
//!
//! Each worker of the child writes the index of the input it starts, and how many it
//! finished, to its slot of a small file; when the child dies, the parent reads the file and
//! regenerates the inputs that were running.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Config, Report, Target, describe_input};

/// Set in the child: the path of the in-flight file.
pub const CHILD_ENV: &str = "QUEUE_FUZZ_CHILD";

const SLOT_BYTES: u64 = 16;

/// The child's record of the inputs in flight.
pub struct Flight {
    file: File,
}

impl Flight {
    /// The record the parent asked for, in a child.
    pub fn from_env() -> Option<Flight> {
        let path = std::env::var_os(CHILD_ENV)?;
        let file = File::options()
            .write(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("in-flight file {path:?}: {error}"));
        Some(Flight { file })
    }

    /// Worker `slot` starts input `index` (`None`: idle) after finishing `done` inputs.
    pub fn record(&self, slot: usize, index: Option<u64>, done: u64) {
        let mut bytes = [0u8; SLOT_BYTES as usize];
        bytes[..8].copy_from_slice(&index.map_or(0, |index| index + 1).to_le_bytes());
        bytes[8..].copy_from_slice(&done.to_le_bytes());
        // A failed write only costs the crash report its detail.
        let _ = self.file.write_all_at(&bytes, slot as u64 * SLOT_BYTES);
    }
}

/// Whether this process is the child of a supervised run.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

fn read_slots(path: &Path, threads: usize) -> Vec<(Option<u64>, u64)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    (0..threads)
        .map(|slot| {
            let at = slot * SLOT_BYTES as usize;
            let word = |offset: usize| {
                bytes
                    .get(at + offset..at + offset + 8)
                    .and_then(|word| word.try_into().ok())
                    .map_or(0, u64::from_le_bytes)
            };
            (word(0).checked_sub(1), word(8))
        })
        .collect()
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

fn tail(text: &str, chars: usize) -> &str {
    let mut start = text.len().saturating_sub(chars);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs `test` of this binary as a child doing the fuzz loop, forwards its report, and names
/// the inputs that were running if it died.
pub fn run(label: &str, test: &str, targets: &[Target], config: &Config) -> Report {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(label);
    std::fs::create_dir_all(&dir).expect("the target tmp directory is writable");
    let path: PathBuf = dir.join(format!("in-flight-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; config.threads * SLOT_BYTES as usize])
        .expect("the in-flight file is writable");
    let started = std::time::Instant::now();
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .output()
        .expect("the test binary runs itself");
    let slots = read_slots(&path, config.threads);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    let prefix = format!("{label} inputs=");
    // libtest may print `test NAME ... ` on the same line first.
    let summary = stdout
        .lines()
        .find_map(|line| line.find(&prefix).map(|at| &line[at..]));
    let mut report = Report::default();
    if let Some(line) = summary {
        report.inputs = field(line, "inputs").unwrap_or(0.0) as u64;
        report.panics = field(line, "panics").unwrap_or(0.0) as u64;
        report.max_alloc_bytes = field(line, "max_alloc_bytes").unwrap_or(0.0) as usize;
        report.seconds = field(line, "seconds").unwrap_or(0.0);
        println!("\n{line}");
        if !output.status.success() {
            report.failure = Some(format!(
                "the fuzz run failed ({}); its findings are printed above, ending with:\n{}",
                output.status,
                tail(&stderr, 1_500)
            ));
        }
        return report;
    }
    // The child died before its summary: name what it was running.
    let mut running = Vec::new();
    for (slot, (index, done)) in slots.iter().enumerate() {
        report.inputs += done;
        if let Some(index) = index {
            running.push(format!(
                "worker {slot}: QUEUE_FUZZ_SEED={:#x} QUEUE_FUZZ_INDEX={index}: {}",
                config.seed,
                describe_input(targets, config, *index)
            ));
        }
    }
    report.panics = running.len().max(1) as u64;
    let text = format!(
        "the fuzz process died ({}) after {} inputs, while running:\n{}\nits stderr ends with:\n{}",
        output.status,
        report.inputs,
        running.join("\n"),
        tail(&stderr, 3_000)
    );
    eprintln!("{label}: {text}");
    report.seconds = started.elapsed().as_secs_f64();
    println!(
        "\n{label} inputs={} panics={} max_alloc_bytes=0 seconds={:.1}",
        report.inputs, report.panics, report.seconds
    );
    report.failure = Some(text);
    report
}
