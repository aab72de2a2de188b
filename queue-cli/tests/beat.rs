//! `queue beat` as operators run it: three beat processes on one Redis, a 1 s entry, the
//! leader killed with SIGKILL twice in 30 s; a Rust worker in this process runs what they
//! send. Every tick runs once: 28–31 executions, no tick id twice, and each killed leader is
//! replaced within twice the lease.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use queue::{App, TaskContext, Worker};

static EXECUTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[queue::task(name = "beat.record")]
fn record(context: &TaskContext) {
    EXECUTED.lock().unwrap().push(context.id().to_owned());
}

const LEASE_TTL: Duration = Duration::from_secs(2);
const RUN_FOR: Duration = Duration::from_secs(30);

fn start_beat(
    index: usize,
    schedule: &std::path::Path,
    broker: &str,
    lines: &mpsc::Sender<(usize, String)>,
) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["beat", "--schedule"])
        .arg(schedule)
        .env("QUEUE_BROKER_URL", broker)
        .env_remove("QUEUE_RESULT_BACKEND")
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND")
        .env("RUST_LOG", "queue_beat=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start queue beat");
    let stderr = child.stderr.take().expect("piped");
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send((index, line)).is_err() {
                break;
            }
        }
    });
    child
}

/// Reads the beats' log lines until `deadline` (the test's timeline: the entry ticks in
/// real time).
fn read_until(lines: &mpsc::Receiver<(usize, String)>, deadline: Instant) {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Err(mpsc::RecvTimeoutError::Disconnected) = lines.recv_timeout(left) {
            return;
        }
    }
}

/// The next beat (other than `not`) to say it leads, and when.
fn next_leader(
    lines: &mpsc::Receiver<(usize, String)>,
    not: &[usize],
    within: Duration,
) -> (usize, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (index, line) = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no beat took the lead within {within:?}"));
        if line.contains("beat leads") && !not.contains(&index) {
            return (index, Instant::now());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beat_processes_fire_each_tick_once_while_the_leader_is_killed_twice() {
    let Some(broker) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    let suffix = uuid_suffix();
    let queue = format!("beat.test.{suffix}");
    let directory = std::env::temp_dir().join(format!("queue-beat-test-{suffix}"));
    std::fs::create_dir_all(&directory).unwrap();
    let schedule = directory.join("schedule.toml");
    std::fs::write(
        &schedule,
        format!(
            "[beat]\nname = \"beat.test.{suffix}\"\nlease_ttl = \"{}s\"\n\n[entries.every-second]\ntask = \"beat.record\"\nevery = \"1s\"\nqueue = \"{queue}\"\n",
            LEASE_TTL.as_secs()
        ),
    )
    .unwrap();

    let app = App::builder()
        .broker(broker.clone())
        .task(record)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();

    let (sender, lines) = mpsc::channel();
    let mut beats: Vec<Option<Child>> = (0..3)
        .map(|index| Some(start_beat(index, &schedule, &broker, &sender)))
        .collect();
    let lines = tokio::task::block_in_place(|| {
        let (mut leader, started) = next_leader(&lines, &[], Duration::from_secs(20));
        let mut killed = Vec::new();
        for kill_at in [RUN_FOR / 3, RUN_FOR * 2 / 3] {
            read_until(&lines, started + kill_at);
            let mut child = beats[leader].take().expect("the leader runs");
            child.kill().expect("SIGKILL the leader");
            let killed_at = Instant::now();
            child.wait().unwrap();
            killed.push(leader);
            let (next, took_over) = next_leader(&lines, &killed, LEASE_TTL * 4);
            let gap = took_over - killed_at;
            assert!(
                gap <= LEASE_TTL * 2,
                "beat {next} took over {gap:?} after the leader was killed; the lease is {LEASE_TTL:?}"
            );
            leader = next;
        }
        read_until(&lines, started + RUN_FOR);
        lines
    });
    for child in beats.iter_mut().flatten() {
        // SIGTERM: the beat gives its lease up and exits 0.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for mut child in beats.into_iter().flatten() {
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert!(
            status.success(),
            "a beat stopped by SIGTERM exits 0: {status}"
        );
    }
    drop(lines);

    // Everything sent is run: wait for the queue to empty, then stop the worker gracefully.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.broker().queue_length(&queue).await.unwrap().total > 0 {
        assert!(Instant::now() < deadline, "the worker drains the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.unwrap();
    std::fs::remove_dir_all(&directory).ok();

    let executed = EXECUTED.lock().unwrap().clone();
    let unique: std::collections::HashSet<&String> = executed.iter().collect();
    assert_eq!(
        unique.len(),
        executed.len(),
        "no tick id ran twice: {executed:?}"
    );
    assert!(
        (28..=31).contains(&executed.len()),
        "{} executions in {RUN_FOR:?} of a 1 s entry",
        executed.len()
    );
}

fn uuid_suffix() -> String {
    format!("{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
