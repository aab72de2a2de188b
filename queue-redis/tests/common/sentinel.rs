//! The Sentinel topology of `cargo xtask services up redis-sentinel`: its URL, admin
//! commands through `redis-cli`, and a lock between the tests that share it.
//!
//! The failover test kills the master; tests that merely use the topology take the lock
//! shared ([`shared_topology`]), the failover test exclusively ([`exclusive_topology`]), so
//! no suite runs while writes may be lost. nextest runs every test in a process of its own
//! and test binaries in parallel: the lock is a directory in the system's temporary
//! directory, with a file per holder naming its pid and start time (so a killed holder's
//! file is recognised as stale).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable `cargo xtask test` sets.
pub const URL_VARIABLE: &str = "QUEUE_TEST_REDIS_SENTINEL_URL";
/// The master's name in the topology.
pub const MASTER_NAME: &str = "queue-master";

/// The sentinel URL list with database `db` and `query` (may be empty) added to its options.
pub fn with_db(base: &str, db: u8, query: &str) -> String {
    let mut parts = Vec::new();
    let mut options = Vec::new();
    for part in base.split(';') {
        let mut url = url::Url::parse(part).expect("each part is a sentinel:// URL");
        options.extend(url.query().map(str::to_owned));
        url.set_query(None);
        url.set_path("");
        parts.push(url.to_string().trim_end_matches('/').to_owned());
    }
    options.extend((!query.is_empty()).then(|| query.to_owned()));
    // The database on the first part: then the whole text is also one valid URL.
    parts[0].push_str(&format!("/{db}"));
    format!("{}?{}", parts.join(";"), options.join("&"))
}

/// The sentinels' ports in the URL list.
pub fn sentinel_ports(base: &str) -> Vec<u16> {
    base.split(';')
        .map(|part| {
            url::Url::parse(part)
                .expect("a sentinel:// URL")
                .port()
                .unwrap_or(26379)
        })
        .collect()
}

/// `redis-cli -p <port> <args>`: its output, or `None` when it fails.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        .filter(|text| !text.starts_with("ERR") && !text.starts_with("Could not connect"))
}

/// The master's port as the first answering sentinel names it.
pub fn master_port(sentinels: &[u16]) -> Option<u16> {
    sentinels.iter().find_map(|&port| {
        let answer = cli(port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME])?;
        answer.lines().nth(1)?.trim().parse().ok()
    })
}

/// A field of `INFO <section>`.
pub fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let info = cli(port, &["INFO", section])?;
    info.lines().find_map(|line| {
        let (name, value) = line.trim().split_once(':')?;
        (name == field).then(|| value.to_owned())
    })
}

/// The master has a replica online, every sentinel sees no node down and can authorize a
/// failover: another failover would succeed.
pub fn healthy(sentinels: &[u16]) -> bool {
    let Some(master) = master_port(sentinels) else {
        return false;
    };
    let replicated = cli(master, &["INFO", "replication"]).is_some_and(|info| {
        info.contains("role:master") && info.lines().any(|l| l.contains("state=online"))
    });
    replicated
        && sentinels.iter().all(|&port| {
            let quorum = cli(port, &["SENTINEL", "ckquorum", MASTER_NAME])
                .is_some_and(|answer| answer.starts_with("OK 3 usable"));
            let replicas = cli(port, &["SENTINEL", "replicas", MASTER_NAME])
                .is_some_and(|answer| answer.contains("slave") && !answer.contains("s_down"));
            quorum && replicas
        })
}

/// Waits up to `timeout` for [`healthy`]; panics with the state otherwise.
pub fn wait_healthy(sentinels: &[u16], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !healthy(sentinels) {
        assert!(
            Instant::now() < deadline,
            "the Sentinel topology is not healthy after {timeout:?} (master {:?}); run `cargo xtask services up redis-sentinel`",
            master_port(sentinels)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("queue-redis-sentinel-topology");
    std::fs::create_dir_all(dir.join("shared")).expect("the lock directory");
    dir
}

/// `<pid> <start time>` of a process, as `/proc/<pid>/stat` tells.
fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 (starttime) is the 20th after the command name.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

fn me() -> String {
    identity(std::process::id()).expect("our own /proc entry")
}

/// Whether the holder named in `file` still runs (and is not us).
fn live_holder(file: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let text = text.trim().to_owned();
    let pid = text.split(' ').next().and_then(|pid| pid.parse().ok());
    let live = pid.and_then(identity).is_some_and(|now| now == text);
    if !live && !text.is_empty() {
        let _ = std::fs::remove_file(file);
    }
    live && text != me()
}

/// Takes the topology shared for the rest of this process (a test under nextest); waits
/// while a failover test holds it.
pub fn shared_topology() {
    static TAKEN: OnceLock<()> = OnceLock::new();
    TAKEN.get_or_init(|| {
        let dir = lock_dir();
        let mine = dir.join("shared").join(std::process::id().to_string());
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            std::fs::write(&mine, me()).expect("the shared lock file");
            if !live_holder(&dir.join("exclusive")) {
                return;
            }
            // The failover test runs: step back so that it can see us gone.
            let _ = std::fs::remove_file(&mine);
            assert!(
                Instant::now() < deadline,
                "the failover test held the topology for 10 min"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// The topology held exclusively until dropped.
pub struct Exclusive(PathBuf);

impl Drop for Exclusive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until no other test holds the topology, and takes it.
pub fn exclusive_topology() -> Exclusive {
    let dir = lock_dir();
    let file = dir.join("exclusive");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file);
        match created {
            Ok(mut handle) => {
                use std::io::Write;
                handle.write_all(me().as_bytes()).expect("the lock file");
                break;
            }
            Err(_) => {
                // Another failover test, or a stale file (removed by live_holder).
                let _ = live_holder(&file);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the topology stayed locked for 10 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = Exclusive(file);
    loop {
        let readers = std::fs::read_dir(dir.join("shared"))
            .expect("the lock directory")
            .filter_map(|entry| entry.ok())
            .filter(|entry| live_holder(&entry.path()))
            .count();
        if readers == 0 {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "{readers} tests kept the topology for 10 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
