//! Small helpers shared by the subcommands: where things live, how commands are run and
//! echoed, and how their output is teed so the test runner can parse it.

use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// Every fallible step returns this; `main` prints the error and exits 1.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Builds an error from a message, for the many "this went wrong, here is why" cases.
pub fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

/// The workspace root: xtask lives one level below it, and cargo runs us from anywhere.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// The cargo target directory, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// `CI=true` (or `1`) turns "could not start a service" from a warning into a failure.
pub fn is_ci() -> bool {
    matches!(env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Root may install packages and switch users; anyone else gets told what to do instead.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The cargo that runs us (`$CARGO`), so nested invocations use the same toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    // A CI run builds once from a clean clone: incremental caches (GiBs) are never reused
    // there and only fill the disk.
    if is_ci() && env::var_os("CARGO_INCREMENTAL").is_none() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// A step header, so a long CI log shows where each step starts.
pub fn header(msg: &str) {
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1;34m==>\x1b[0m \x1b[1m{msg}\x1b[0m");
    } else {
        println!("\n==> {msg}");
    }
}

/// The command line as a shell would show it, for echoing and for error messages.
pub fn describe(cmd: &Command) -> String {
    let program = cmd.get_program();
    // `$CARGO` is a long toolchain path; what matters is that it is cargo.
    let program = if env::var_os("CARGO").is_some_and(|c| c == program) {
        "cargo".into()
    } else {
        program.to_string_lossy()
    };
    let mut parts = vec![program.into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c);
        if a.is_empty() || !a.chars().all(plain) {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs a command with inherited stdio, echoing it (on stderr, like `set -x`) first; a
/// non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))?;
    check(cmd, status)
}

/// Runs a command quietly and returns its stdout; a non-zero exit is an error with stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))?;
    if !out.status.success() {
        return err(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the command runs and exits 0, with all output discarded: a probe.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// Runs a command, streaming its stdout and stderr through while keeping every line, so the
/// caller can parse what cargo and nextest print without hiding it from the user.
pub fn run_tee(cmd: &mut Command) -> Result<(ExitStatus, Vec<String>)> {
    eprintln!("$ {}", describe(cmd));
    if std::io::stderr().is_terminal() {
        // Piped output loses colour by default; keep it for people at a terminal.
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = tee(child.stdout.take().expect("piped"), lines.clone(), false);
    let errs = tee(child.stderr.take().expect("piped"), lines.clone(), true);
    let status = child.wait()?;
    let _ = out.join();
    let _ = errs.join();
    let lines = std::mem::take(&mut *lines.lock().expect("tee thread panicked"));
    Ok((status, lines))
}

fn tee(
    src: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    to_stderr: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if to_stderr {
                let _ = std::io::stderr().write_all(&buf);
            } else {
                let _ = std::io::stdout().write_all(&buf);
            }
            let line = String::from_utf8_lossy(&buf);
            sink.lock()
                .expect("tee sink")
                .push(strip_ansi(line.trim_end()));
            buf.clear();
        }
    })
}

/// Removes ANSI escape sequences (colours), so parsing sees plain text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte (0x40..=0x7e).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds a program on PATH, also looking in the sbin directories a non-login root shell
/// may lack (rabbitmq-server and runuser live there).
pub fn which(program: impl AsRef<OsStr>) -> Option<PathBuf> {
    let program = program.as_ref();
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Tail of a log file, to show why a server did not come up.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            strip_ansi("\x1b[1;32m    Summary\x1b[0m [ 1s] 3 tests run"),
            "    Summary [ 1s] 3 tests run"
        );
    }

    #[test]
    fn describes_commands_with_quotes() {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--port", "6379", "celery[redis]==5.7.0"]);
        assert_eq!(
            describe(&cmd),
            "redis-server --save '' --port 6379 'celery[redis]==5.7.0'"
        );
    }
}
