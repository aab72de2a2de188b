//! Canvas on Redis (broker and results): a group of N `tasks.add(i, 1)` read with
//! `GroupResult::get`, and a chord of N such header parts with a `tasks.xsum` body, timed
//! from the first send to the last result read; then Python Celery 5.7 on the same
//! workload in the same run. N is `QUEUE_BENCH_CANVAS_TASKS` (default 10000).
//!
//! Both workers run as their own process, so their peak memory is theirs alone: ours is
//! this bench binary started again with `QUEUE_BENCH_CANVAS_WORKER=<queue>` (it runs only
//! a worker, until its stdin closes), Python's is a solo-pool Celery worker. The peak is
//! `VmHWM` from `/proc/<pid>/status`, read once the results are in, next to the `VmRSS`
//! the worker had when it was ready. The client is this process (ours) or a Python
//! script; its peak RSS rise over the run is given on the detail line.

use std::io::{BufRead, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use queue::canvas::Group;
use queue::{App, Worker, task};

use super::Row;
use super::redis_bench::{Urls, urls};

/// Set in the worker process this bench starts: the queue it consumes.
const WORKER_ENV: &str = "QUEUE_BENCH_CANVAS_WORKER";
/// Our worker's slots (the drain rows' figure), with Celery's prefetch multiplier 4.
const CONCURRENCY: usize = 64;
/// How long the client waits for all results.
const RESULT_WAIT: Duration = Duration::from_secs(600);
/// Results of these runs expire after five minutes, so database 3 does not grow.
const RESULT_EXPIRES_S: u32 = 300;

#[task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "tasks.xsum")]
fn xsum(numbers: Vec<i64>) -> i64 {
    numbers.iter().sum()
}

/// N, from `QUEUE_BENCH_CANVAS_TASKS`.
pub fn tasks() -> usize {
    std::env::var("QUEUE_BENCH_CANVAS_TASKS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10_000)
}

fn backend_url(urls: &Urls) -> String {
    format!("{}?result_expires={RESULT_EXPIRES_S}", urls.backend)
}

fn queue_name(label: &str) -> String {
    format!("bench.canvas.{label}.{}", std::process::id())
}

async fn app(urls: &Urls, queue: &str) -> App {
    App::builder()
        .broker(urls.broker.clone())
        .backend(backend_url(urls))
        .default_queue(queue)
        .task(add)
        .task(xsum)
        .build()
        .await
        .expect("redis canvas app")
}

/// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in kB.
fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resets this process's `VmHWM` to its current RSS (Linux `clear_refs` value 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// In the worker process (`QUEUE_BENCH_CANVAS_WORKER` set): runs our worker on that queue
/// until stdin closes, and returns `true`; otherwise `false` at once.
pub fn worker_process() -> bool {
    let Ok(queue) = std::env::var(WORKER_ENV) else {
        return false;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let urls = urls().expect("QUEUE_TEST_REDIS_URL");
        let app = app(&urls, &queue).await;
        let node = format!("celery@{queue}");
        let worker = Worker::new(app.clone())
            .queues([queue.as_str()])
            .node_name(node.as_str())
            .concurrency(CONCURRENCY)
            .prefetch(3 * CONCURRENCY)
            .spawn();
        // Ready once it answers control requests (connected and consuming).
        let control = app
            .control()
            .destination([node.as_str()])
            .timeout(Duration::from_millis(200));
        while control
            .ping()
            .await
            .map_or(true, |replies| replies.is_empty())
        {}
        println!("READY");
        std::io::stdout().flush().expect("stdout");
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        worker.shutdown().await.expect("shutdown");
    });
    true
}

/// A worker process of either kind, started and ready.
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: String,
    ready_kb: Option<u64>,
}

impl WorkerProcess {
    /// Starts `command` and waits for its `READY` line (`None` if it exits first).
    async fn start(mut command: Command) -> Option<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let ready = tokio::task::spawn_blocking(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.trim() == "READY")
        })
        .await
        .unwrap_or(false);
        let pid = child.id().to_string();
        let stdin = child.stdin.take();
        let mut worker = Self {
            child,
            stdin,
            ready_kb: status_kb(&pid, "VmRSS"),
            pid,
        };
        if ready {
            Some(worker)
        } else {
            worker.stop();
            None
        }
    }

    /// Its peak RSS so far, in kB.
    fn peak_kb(&self) -> Option<u64> {
        status_kb(&self.pid, "VmHWM")
    }

    /// Closes its stdin (ours shuts down), then makes sure it is gone.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured run: the wall time, the worker's memory, the client's peak RSS rise.
struct Measured {
    seconds: f64,
    worker_ready_kb: Option<u64>,
    worker_peak_kb: Option<u64>,
    client_rise_kb: Option<u64>,
}

impl Measured {
    fn detail(&self) -> String {
        let kb = |value: Option<u64>| value.map_or("?".to_owned(), mb);
        format!(
            "{:.2} s; worker peak RSS {} ({} when ready), client +{}",
            self.seconds,
            kb(self.worker_peak_kb),
            kb(self.worker_ready_kb),
            kb(self.client_rise_kb),
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Group,
    Chord,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Group => "group",
            Workload::Chord => "chord",
        }
    }
}

/// Ours: our worker in its own process, this process sends and reads.
async fn rust_run(urls: &Urls, workload: Workload, count: usize) -> Option<Measured> {
    let queue = queue_name(&format!("rust.{}", workload.label()));
    let mut command = Command::new(std::env::current_exe().ok()?);
    command.env(WORKER_ENV, &queue);
    let mut worker = WorkerProcess::start(command).await?;
    let app = app(urls, &queue).await;
    let reset = reset_peak();
    let client_before = status_kb("self", "VmRSS");
    let members = (0..count as i64).map(|i| add::new(i, 1));
    let started = Instant::now();
    let outcome: Result<i64, String> = match workload {
        Workload::Group => match Group::of(members).send(&app).await {
            Ok(sent) => sent
                .get(RESULT_WAIT)
                .await
                .map(|sums| sums.iter().sum())
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        Workload::Chord => match Group::of(members).then(xsum::partial()).send(&app).await {
            Ok(sent) => sent
                .get(RESULT_WAIT)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
    };
    let seconds = started.elapsed().as_secs_f64();
    let measured = Measured {
        seconds,
        worker_ready_kb: worker.ready_kb,
        worker_peak_kb: worker.peak_kb(),
        client_rise_kb: match (reset, client_before, status_kb("self", "VmHWM")) {
            (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
            _ => None,
        },
    };
    worker.stop();
    app.broker().purge(&queue).await.expect("purge");
    let expected = (count * (count + 1) / 2) as i64;
    match outcome {
        Ok(total) if total == expected => Some(measured),
        Ok(total) => {
            eprintln!(
                "canvas {}: sum {total}, expected {expected}",
                workload.label()
            );
            None
        }
        Err(error) => {
            eprintln!("canvas {}: {error}", workload.label());
            None
        }
    }
}

/// Python Celery's side, in one script: `worker` runs a solo-pool worker on the queue and
/// prints READY when it is; `group` / `chord` send the workload and print
/// `TIME <seconds> RISE <kB>` (their peak RSS rise over the run).
const PYTHON: &str = r#"
import sys, time
from celery import Celery, chord, group, signals
mode, broker, backend, queue, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
app = Celery("bench", broker=broker, backend=backend)
app.conf.update(task_default_queue=queue, worker_prefetch_multiplier=4,
                result_expires=int(sys.argv[6]), worker_redirect_stdouts=False)
@app.task(name="tasks.add")
def add(x, y):
    return x + y
@app.task(name="tasks.xsum")
def xsum(numbers):
    return sum(numbers)
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
if mode == "worker":
    @signals.worker_ready.connect
    def ready(**_):
        print("READY", file=sys.__stdout__, flush=True)
    app.worker_main(["worker", "-Q", queue, "--pool=solo", "--without-gossip",
                     "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"])
else:
    expected = count * (count + 1) // 2
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
    before = status_kb("VmRSS")
    started = time.perf_counter()
    if mode == "group":
        total = sum(group(add.s(i, 1) for i in range(count)).apply_async().get(timeout=600))
    else:
        total = chord(add.s(i, 1) for i in range(count))(xsum.s()).get(timeout=600)
    elapsed = time.perf_counter() - started
    assert total == expected, (total, expected)
    print("TIME", elapsed, "RISE", status_kb("VmHWM") - before, flush=True)
"#;

fn python_command(python: &str, mode: &str, urls: &Urls, queue: &str, count: usize) -> Command {
    let mut command = Command::new(python);
    command
        // Celery takes the expiry from its config (`result_expires`), not the URL.
        .args(["-c", PYTHON, mode, &urls.broker, &urls.backend, queue])
        .args([count.to_string(), RESULT_EXPIRES_S.to_string()]);
    command
}

/// Python's: a solo-pool Celery worker process, a Python client process.
async fn python_run(urls: &Urls, workload: Workload, count: usize) -> Option<Measured> {
    let python = std::env::var("QUEUE_BENCH_PYTHON").ok()?;
    let queue = queue_name(&format!("python.{}", workload.label()));
    let worker_command = python_command(&python, "worker", urls, &queue, count);
    let mut worker = WorkerProcess::start(worker_command).await?;
    let mut client = python_command(&python, workload.label(), urls, &queue, count);
    let output = tokio::task::spawn_blocking(move || client.stderr(Stdio::inherit()).output())
        .await
        .ok()
        .and_then(Result::ok);
    let worker_peak_kb = worker.peak_kb();
    worker.stop();
    let app = app(urls, &queue).await;
    app.broker().purge(&queue).await.expect("purge");
    let stdout = String::from_utf8_lossy(&output?.stdout).into_owned();
    let mut fields = stdout
        .lines()
        .find_map(|line| line.strip_prefix("TIME "))?
        .split_whitespace();
    let seconds = fields.next()?.parse().ok()?;
    let client_rise_kb = fields.nth(1).and_then(|rise| rise.parse().ok());
    Some(Measured {
        seconds,
        worker_ready_kb: worker.ready_kb,
        worker_peak_kb,
        client_rise_kb,
    })
}

/// The canvas rows: per workload ours, Python's, and the ratios. Alone with
/// `QUEUE_BENCH_ONLY=canvas`.
pub async fn rows(urls: &Urls) -> Vec<Row> {
    let count = tasks();
    let mut rows = Vec::new();
    let mut push = |scenario: String, figure: String| rows.push(Row { scenario, figure });
    for workload in [Workload::Group, Workload::Chord] {
        let what = match workload {
            Workload::Group => format!("group of {count} add, get all"),
            Workload::Chord => format!("chord of {count} add + xsum"),
        };
        let rate =
            |measured: &Measured| format!("{:>10.0} tasks/s", count as f64 / measured.seconds);
        let rust = rust_run(urls, workload, count).await;
        match &rust {
            Some(measured) => {
                push(
                    format!("redis canvas: {what}, conc. {CONCURRENCY}"),
                    rate(measured),
                );
                push(format!("  {}", measured.detail()), String::new());
            }
            None => eprintln!("canvas {}: our run failed", workload.label()),
        }
        let python = python_run(urls, workload, count).await;
        match &python {
            Some(measured) => {
                push(
                    format!("redis canvas: Python Celery 5.7 {}, solo", workload.label()),
                    rate(measured),
                );
                push(format!("  {}", measured.detail()), String::new());
            }
            None => eprintln!(
                "Python canvas {} row skipped (QUEUE_BENCH_PYTHON not set, or it failed)",
                workload.label()
            ),
        }
        if let (Some(rust), Some(python)) = (&rust, &python) {
            push(
                format!("  ratio Rust / Python, {} time", workload.label()),
                format!("{:>10.3} x", rust.seconds / python.seconds),
            );
            if let (Some(ours), Some(theirs)) = (rust.worker_peak_kb, python.worker_peak_kb) {
                push(
                    format!(
                        "  ratio Rust / Python, {} worker peak RSS",
                        workload.label()
                    ),
                    format!("{:>10.2} x", ours as f64 / theirs as f64),
                );
            }
        }
    }
    rows
}
