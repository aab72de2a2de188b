//! PostgreSQL: a cluster of our own under `target/services/postgres/data`, so the system
//! cluster (if any) is never touched, with trust auth on loopback and database `queue_test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Outcome, Status, live_pid, probe, start_logged, wait_until};
use crate::util::{self, Result, err};

const PORT: u16 = 5432;
const DATABASE: &str = "queue_test";
/// PostgreSQL refuses to run as root; as root we run its tools as this user.
const USER: &str = "postgres";

fn url() -> String {
    format!("postgres://postgres@127.0.0.1:{PORT}/{DATABASE}")
}

pub fn env_vars() -> Vec<(&'static str, String)> {
    vec![("QUEUE_TEST_POSTGRES_URL", url())]
}

/// An SSLRequest answered with 'S' or 'N': a PostgreSQL server listens on the port.
fn answers() -> bool {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    probe(PORT, &SSL_REQUEST).is_some_and(|a| matches!(a.first(), Some(b'S' | b'N')))
}

/// The directory of initdb, pg_ctl and pg_isready: Debian keeps them off PATH, under
/// `/usr/lib/postgresql/<major>/bin`; take the newest major installed.
pub(super) fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin).or_else(|| {
        let initdb = std::fs::canonicalize(util::which("initdb")?).ok()?;
        Some(initdb.parent()?.to_path_buf())
    })
}

/// A PostgreSQL tool, run as the postgres user when we are root.
fn tool(bin: &Path, name: &str, cwd: &Path) -> Command {
    let mut cmd = if util::is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--"]).arg(bin.join(name));
        cmd
    } else {
        Command::new(bin.join(name))
    };
    // The postgres user may not be allowed into our working directory.
    cmd.current_dir(cwd);
    cmd
}

pub fn up(dir: &Path) -> Result<Outcome> {
    let outcome = if answers() {
        println!("postgres already answers on port {PORT}");
        Outcome::Reused
    } else {
        if bin_dir().is_none() {
            super::apt_install(&["postgresql"])?;
        }
        start(dir)?;
        Outcome::Started
    };
    create_database(
        &bin_dir().ok_or("no PostgreSQL binaries after install")?,
        dir,
    )?;
    Ok(outcome)
}

fn start(dir: &Path) -> Result<()> {
    let bin = bin_dir().ok_or("no PostgreSQL binaries found (initdb)")?;
    let data = dir.join("data");
    super::make_dir(dir, Some(USER))?;
    if !data.join("PG_VERSION").is_file() {
        util::run(tool(&bin, "initdb", dir).arg("-D").arg(&data).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
    }
    // Test data need not survive a power cut: fsync off makes every commit cheap.
    let options = format!("-c listen_addresses=127.0.0.1 -p {PORT} -k /tmp -c fsync=off");
    let log = dir.join("postgres.log");
    let mut cmd = tool(&bin, "pg_ctl", dir);
    cmd.arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(&log);
    cmd.args(["-w", "-t", "60", "start"]);
    start_logged(&mut cmd, &dir.join("start.log"))
        .map_err(|e| format!("{e}\n{}:\n{}", log.display(), util::tail(&log, 20)))?;
    let mut isready = Command::new(bin.join("pg_isready"));
    isready.args(["-h", "127.0.0.1", "-p", &PORT.to_string(), "-U", USER]);
    wait_until("postgres", Duration::from_secs(30), || {
        util::succeeds(&mut isready)
    })
}

/// Creates `queue_test` unless it exists; also checks that `url()` really connects.
fn create_database(bin: &Path, dir: &Path) -> Result<()> {
    let port = PORT.to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", USER];
    let query = format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'");
    // A server we did not start (reused) leaves no directory of ours behind yet.
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exists = util::output(
        Command::new(bin.join("psql"))
            .current_dir(dir.parent().unwrap_or(dir))
            .args(conn)
            .args(["-d", "postgres", "-tAc", &query]),
    )
    .map_err(|e| format!("cannot connect as {}: {e}", url()))?;
    if exists.trim() != "1" {
        util::run(Command::new(bin.join("createdb")).args(conn).arg(DATABASE))?;
    }
    Ok(())
}

pub fn down(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    if live_pid(&data.join("postmaster.pid"), "postgres").is_none() {
        if answers() {
            println!("postgres on port {PORT} was not started by xtask; leaving it");
        } else {
            println!("postgres is not running");
        }
        return Ok(());
    }
    let Some(bin) = bin_dir() else {
        return err("postgres runs but its pg_ctl is gone");
    };
    util::run(
        tool(&bin, "pg_ctl", dir)
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"]),
    )
}

pub(super) fn status(dir: &Path) -> Status {
    Status {
        name: "postgres",
        port: PORT,
        answers: answers(),
        ours: live_pid(&dir.join("data").join("postmaster.pid"), "postgres"),
        url: url(),
    }
}
