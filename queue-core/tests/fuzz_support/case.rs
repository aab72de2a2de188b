//! Running one input: under `catch_unwind`, its allocations counted, its panic recorded with
//! the project frame that caused it; and minimising an input that fails.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use super::{Config, Target, alloc};

/// How one input failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// It panicked here.
    Panic {
        /// `file:line:column`.
        location: String,
        /// The panic message.
        message: String,
    },
    /// It held more than the cap at once.
    Alloc {
        /// Peak bytes.
        peak: usize,
    },
}

impl Failure {
    pub(super) fn same_kind(&self, other: &Failure) -> bool {
        match (self, other) {
            (Failure::Panic { location: a, .. }, Failure::Panic { location: b, .. }) => a == b,
            (Failure::Alloc { .. }, Failure::Alloc { .. }) => true,
            _ => false,
        }
    }

    pub(super) fn key(&self) -> String {
        match self {
            Failure::Panic { location, .. } => location.clone(),
            Failure::Alloc { .. } => "allocation cap".to_owned(),
        }
    }
}

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Records panics of armed threads instead of printing them; others print as usual.
pub(super) fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !ARMED.get() {
                previous(info);
                return;
            }
            alloc::untracked(|| {
                let mut location = info.location().map_or_else(
                    || "<unknown>".to_owned(),
                    |at| format!("{}:{}:{}", at.file(), at.line(), at.column()),
                );
                if !is_project_file(&location) {
                    // A panic inside std or a dependency (`Duration::from_secs_f64`, chrono):
                    // the frame of ours that called it is what to fix.
                    if let Some(caller) = project_caller() {
                        location = format!("{caller} (in {location})");
                    }
                }
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string payload>".to_owned());
                LAST_PANIC.set(Some((location, message)));
            });
        }));
    });
}

fn is_project_file(path: &str) -> bool {
    // std (`/rustc/...`, `library/...`) and dependencies (`~/.cargo/registry/...`) are not
    // ours; the workspace's files are relative, or absolute in a dependency's debug info.
    !(path.starts_with("/rustc/")
        || path.starts_with("library/")
        || path.contains("/.cargo/")
        || path.contains("/rustlib/"))
}

/// The innermost frame of the project (not std, not a dependency, not this harness) in the
/// current backtrace, as `file:line:column`; `None` without debug info.
fn project_caller() -> Option<String> {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    trace
        .lines()
        .filter_map(|line| line.trim().strip_prefix("at "))
        .map(|path| path.trim_start_matches("./"))
        .find(|path| is_project_file(path) && !path.contains("fuzz_support"))
        .map(str::to_owned)
}

/// Runs one input: its outcome (decoded or not) or its failure, and its peak allocation.
pub fn run_case(
    target: &Target,
    input: &[u8],
    seed: u64,
    index: u64,
    cap: usize,
) -> (Result<bool, Failure>, usize) {
    install_panic_hook();
    ARMED.set(true);
    alloc::begin(seed, index);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let peak = alloc::end();
    ARMED.set(false);
    let result = match outcome {
        Ok(_) if peak > cap => Err(Failure::Alloc { peak }),
        Ok(decoded) => Ok(decoded),
        Err(_) => {
            let (location, message) = LAST_PANIC
                .take()
                .unwrap_or_else(|| ("<unknown>".to_owned(), "<no message>".to_owned()));
            Err(Failure::Panic { location, message })
        }
    };
    (result, peak)
}

/// Shortest input found that fails as `failure` does: structural reductions first, then
/// byte ranges removed, within a bounded number of runs.
pub(super) fn minimise(
    target: &Target,
    input: &[u8],
    failure: &Failure,
    config: &Config,
) -> Vec<u8> {
    let budget = Cell::new(4_000usize);
    let fails = |candidate: &[u8]| {
        budget.set(budget.get().saturating_sub(1));
        matches!(run_case(target, candidate, config.seed, u64::MAX, config.alloc_cap).0,
            Err(ref got) if got.same_kind(failure))
    };
    let mut best = input.to_vec();
    loop {
        let before = best.len();
        if let Some(reduce) = target.reduce {
            let mut n = 0;
            while budget.get() > 0 {
                let Some(candidate) = reduce(&best, n) else {
                    break;
                };
                if candidate.len() < best.len() && fails(&candidate) {
                    best = candidate;
                } else {
                    n += 1;
                }
            }
        }
        let mut chunk = best.len() / 2;
        while chunk > 0 && budget.get() > 0 {
            let mut at = 0;
            while at + chunk <= best.len() && budget.get() > 0 {
                let mut candidate = best.clone();
                candidate.drain(at..at + chunk);
                if fails(&candidate) {
                    best = candidate;
                } else {
                    at += chunk;
                }
            }
            chunk /= 2;
        }
        if best.len() == before || budget.get() == 0 {
            return best;
        }
    }
}
