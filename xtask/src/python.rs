//! `cargo xtask python-venv`: a virtualenv with Python Celery and Flower, for the interop tests
//! (tests/flower.rs runs the real Flower) and the side-by-side benchmark. Rebuilt only when the requirements below change.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Result, err};

/// What the venv holds. The `redis` extra matters: plain `celery redis` failed on our
/// machines with "No module named 'packaging'". Flower 2.2.0 is the latest 2.2 release.
const REQUIREMENTS: &[&str] = &["celery[redis]==5.7.0", "flower==2.2.0"];

/// Records which requirements the venv was built with, to make `ensure_venv` idempotent.
const STAMP: &str = ".xtask-requirements";

pub fn venv_dir() -> PathBuf {
    util::target_dir().join("python-venv")
}

/// The venv's interpreter, for running Celery workers and clients.
pub fn interpreter(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// `cargo xtask python-venv`: prepares the venv and prints its path, alone on stdout (all
/// else goes to stderr), so scripts can use `VENV=$(cargo xtask python-venv)`.
pub fn run() -> Result<()> {
    let venv = ensure_venv()?;
    println!("{}", venv.display());
    Ok(())
}

/// Creates the venv and installs `REQUIREMENTS` unless a previous run already did.
pub fn ensure_venv() -> Result<PathBuf> {
    let venv = venv_dir();
    let wanted = REQUIREMENTS.join("\n");
    let stamp = venv.join(STAMP);
    let python = interpreter(&venv);
    if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!("python venv up to date: {}", venv.display());
        return Ok(venv);
    }
    if !python.is_file() {
        // `PYTHON` picks the interpreter (e.g. a pyenv one); python3 otherwise.
        let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        util::run(
            Command::new(&base)
                .args(["-m", "venv"])
                .arg(&venv)
                .stdout(io::stderr()),
        )
        .map_err(|e| {
            format!("{e}\n(on Debian the venv module needs `apt-get install -y python3-venv`)")
        })?;
    }
    util::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS)
            .stdout(io::stderr()),
    )?;
    let version = util::output(
        Command::new(&python).args(["-c", "import celery; print(celery.__version__)"]),
    )?;
    if version.trim().is_empty() {
        return err("celery does not import in the new venv");
    }
    let flower = util::output(
        Command::new(&python).args(["-c", "import flower; print(flower.__version__)"]),
    )?;
    if flower.trim().is_empty() {
        return err("flower does not import in the new venv");
    }
    eprintln!(
        "celery {}, flower {} in {}",
        version.trim(),
        flower.trim(),
        venv.display()
    );
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}
