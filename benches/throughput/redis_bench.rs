use std::time::{Duration, Instant};

use queue::{App, Signature, Worker};

use super::{Row, calls, echo, noop, noop_result};

/// Keeps the Redis connector linked even before the facade names it.
#[used]
static LINK_REDIS: &fn() -> std::sync::Arc<dyn queue_core::connect::Connector> =
    &queue_redis::REDIS_CONNECTOR;

pub struct Urls {
    pub broker: String,
    pub backend: String,
}

/// The server from `QUEUE_TEST_REDIS_URL`, or `None` (the Redis rows are skipped).
pub fn urls() -> Option<Urls> {
    let base = std::env::var("QUEUE_TEST_REDIS_URL").ok()?;
    let base = base.split('?').next().unwrap_or_default();
    // `redis://host:port/0` → `redis://host:port`, then our databases.
    let server = match base.rsplit_once('/') {
        Some((server, db)) if server.contains("://") && db.parse::<u8>().is_ok() => server,
        _ => base.trim_end_matches('/'),
    };
    Some(Urls {
        broker: format!("{server}/2"),
        backend: format!("{server}/3"),
    })
}

fn queue_name(label: &str) -> String {
    format!("bench.{label}.{}", std::process::id())
}

async fn app(urls: &Urls, queue: &str) -> App {
    App::builder()
        .broker(urls.broker.clone())
        .backend(urls.backend.clone())
        .default_queue(queue)
        .task(noop)
        .task(noop_result)
        .task(echo)
        .build()
        .await
        .expect("redis app")
}

async fn purge(app: &App, queue: &str) {
    app.broker().purge(queue).await.expect("purge");
}

pub async fn publish(urls: &Urls, count: usize, producers: usize, batch: usize) -> f64 {
    let queue = queue_name("publish");
    let app = app(urls, &queue).await;
    let per_producer = count / producers;
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..producers {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut left = per_producer;
            while left > 0 {
                let size = left.min(batch);
                if batch == 1 {
                    app.send(Signature::new("bench.noop")).await.expect("send");
                } else {
                    app.send_many(calls("bench.noop", size))
                        .await
                        .expect("send");
                }
                left -= size;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("producer");
    }
    let rate = (per_producer * producers) as f64 / started.elapsed().as_secs_f64();
    purge(&app, &queue).await;
    rate
}

/// Drains `count` queued tasks; returns the rate and where the CPU went while draining
/// (and, with task events on, how many events the worker dropped).
pub async fn drain(
    urls: &Urls,
    count: usize,
    name: &'static str,
    concurrency: usize,
    task_events: bool,
) -> (f64, String) {
    let queue = queue_name(name);
    let app = app(urls, &queue).await;
    for chunk in calls(name, count).chunks(1000) {
        app.send_many(chunk.to_vec()).await.expect("send");
    }
    let mut dropped = 0;
    let (rate, mut cpu) = cpu_per_task(urls, count, async {
        let started = Instant::now();
        let worker = Worker::new(app.clone())
            .queues([queue.as_str()])
            .concurrency(concurrency)
            // Celery's default prefetch multiplier (4) over the slots.
            .prefetch(3 * concurrency)
            .fetch_wait(Duration::from_millis(5))
            .task_events(task_events)
            .spawn();
        while worker.stats().succeeded.get() < count as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        // Events are dropped as they are made: every task's are counted by now.
        dropped = worker.stats().events_dropped.get();
        // Shutdown sends what is still buffered: its CPU is counted, not its time.
        worker.shutdown().await.expect("shutdown");
        count as f64 / elapsed.as_secs_f64()
    })
    .await;
    purge(&app, &queue).await;
    if task_events {
        cpu.push_str(&format!(", events dropped {dropped}"));
    }
    (rate, cpu)
}

pub async fn round_trip(urls: &Urls, count: usize) -> (Duration, Duration) {
    let queue = queue_name("round_trip");
    let app = app(urls, &queue).await;
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .concurrency(4)
        .spawn();
    let mut latencies = Vec::with_capacity(count);
    for value in 0..count as u64 {
        let started = Instant::now();
        let result = echo::new(value).send(&app).await.expect("send");
        let echoed = result.get(Duration::from_secs(10)).await.expect("result");
        latencies.push(started.elapsed());
        assert_eq!(echoed, value);
    }
    worker.shutdown().await.expect("shutdown");
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    (percentile(0.50), percentile(0.99))
}

/// CPU seconds per second of a worker at rest (heartbeats, control listener, idle
/// fetches), over 10 s.
async fn idle_cpu(urls: &Urls) -> f64 {
    let queue = queue_name("idle");
    let app = app(urls, &queue).await;
    let node = format!("celery@{queue}");
    let worker = Worker::new(app.clone())
        .queues([queue.as_str()])
        .node_name(node.as_str())
        .spawn();
    // Settled first: it answers control requests once connected and past mingle.
    let control = app
        .control()
        .destination([node.as_str()])
        .timeout(Duration::from_millis(200));
    while control
        .ping()
        .await
        .map_or(true, |replies| replies.is_empty())
    {}
    let before = cpu_seconds("self");
    let started = Instant::now();
    // The measured period itself: the worker at rest.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = cpu_seconds("self");
    let elapsed = started.elapsed().as_secs_f64();
    worker.shutdown().await.expect("shutdown");
    match (before, after) {
        (Some(before), Some(after)) => (after - before) / elapsed,
        _ => f64::NAN,
    }
}

/// CPU seconds (user + system) used so far by a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The pid of the Redis server (from `INFO server`), when it runs on this machine.
fn redis_pid(urls: &Urls) -> Option<String> {
    use std::io::{Read, Write};
    let address = urls
        .broker
        .strip_prefix("redis://")?
        .split('/')
        .next()?
        .to_owned();
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut buffer = vec![0u8; 16384];
    let read = stream.read(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..read]);
    let pid = text
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .trim()
        .to_owned();
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Runs `work` (which handles `count` tasks) and says where the CPU went: µs per task in
/// this process (producer and worker) and in the Redis server.
async fn cpu_per_task<F: std::future::Future<Output = f64>>(
    urls: &Urls,
    count: usize,
    work: F,
) -> (f64, String) {
    let server = redis_pid(urls);
    let ours_before = cpu_seconds("self");
    let server_before = server.as_deref().and_then(cpu_seconds);
    let rate = work.await;
    let per_task = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(before), Some(after)) => format!("{:.1}", (after - before) * 1e6 / count as f64),
        _ => "?".to_owned(),
    };
    let ours = per_task(ours_before, cpu_seconds("self"));
    let redis = per_task(server_before, server.as_deref().and_then(cpu_seconds));
    (
        rate,
        format!("CPU µs/task: worker process {ours}, redis-server {redis}"),
    )
}

const PYTHON_WORKER: &str = r#"
import os, sys, time
from celery import Celery
url, backend, queue, count, task = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
app = Celery("bench", broker=url, backend=backend)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, task_default_queue=queue)
state = {"n": 0, "t0": None, "c0": None}
def count_one():
    if state["t0"] is None:
        state["t0"], state["c0"] = time.perf_counter(), time.process_time()
    state["n"] += 1
    if state["n"] == count:
        elapsed = time.perf_counter() - state["t0"]
        cpu = time.process_time() - state["c0"]
        # The worker redirects stdout into its logger: write to the real one.
        print("RATE", count / elapsed, "CPU", cpu * 1e6 / count, file=sys.__stdout__, flush=True)
        os._exit(0)
@app.task(name="bench.noop", ignore_result=True, acks_late=True)
def noop():
    count_one()
@app.task(name="bench.noop_result", acks_late=True)
def noop_result():
    # The last task's result is stored after this returns; the rate counts the work.
    count_one()
app.worker_main(["worker", "-Q", queue, "--pool=solo", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel=WARNING"])
"#;

/// Python Celery 5.7 (solo pool, acks late, prefetch multiplier 4) draining `count`
/// tasks that we queued on the same Redis, or `None` without `QUEUE_BENCH_PYTHON`.
pub async fn python_drain(urls: &Urls, count: usize, name: &'static str) -> Option<(f64, String)> {
    let python = std::env::var("QUEUE_BENCH_PYTHON").ok()?;
    let queue = queue_name(&format!("python.{name}"));
    let app = app(urls, &queue).await;
    // Our priority 9 is kombu's 0, the list Python's own tasks go to.
    let calls: Vec<Signature> = (0..count)
        .map(|_| Signature::new(name).priority(9))
        .collect();
    for chunk in calls.chunks(1000) {
        app.send_many(chunk.to_vec()).await.expect("send");
    }
    let server = redis_pid(urls);
    let server_before = server.as_deref().and_then(cpu_seconds);
    let child = std::process::Command::new(&python)
        .args(["-c", PYTHON_WORKER, &urls.broker, &urls.backend, &queue])
        .args([&count.to_string(), name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the Python worker");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("wait")
        .expect("python output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut fields = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RATE "))?
        .split_whitespace();
    let rate: f64 = fields.next()?.parse().ok()?;
    let worker_cpu = fields
        .nth(1)
        .unwrap_or("?")
        .parse::<f64>()
        .map_or("?".into(), |cpu| format!("{cpu:.1}"));
    // The server's CPU over the whole run, start-up included: an upper bound.
    let redis = match (server_before, server.as_deref().and_then(cpu_seconds)) {
        (Some(before), Some(after)) => format!("{:.1}", (after - before) * 1e6 / count as f64),
        _ => "?".to_owned(),
    };
    purge(&app, &queue).await;
    Some((
        rate,
        format!("CPU µs/task: Python worker {worker_cpu}, redis-server ≤ {redis}"),
    ))
}

/// The task events rows: the same drain with task events off, then on (3 events per
/// task, in `task.multi` batches), which must not slow it much (issue 10: ratio ≥ 0.8).
/// Alone with `QUEUE_BENCH_ONLY=redis-events`.
pub async fn event_rows(urls: &Urls, count: usize) -> Vec<Row> {
    let (off, cpu_off) = drain(urls, count, "bench.noop_result", 64, false).await;
    let (on, cpu_on) = drain(urls, count, "bench.noop_result", 64, true).await;
    let row = |scenario: String, figure: String| Row { scenario, figure };
    vec![
        row(
            "redis: drain no-op, results stored, task events off".into(),
            format!("{off:>10.0} tasks/s"),
        ),
        row(format!("  {cpu_off}"), String::new()),
        row(
            "redis: drain no-op, results stored, task events on".into(),
            format!("{on:>10.0} tasks/s"),
        ),
        row(format!("  {cpu_on}"), String::new()),
        row(
            "  ratio task events on / off (same run)".into(),
            format!("{:>10.2} x", on / off),
        ),
    ]
}

/// The Redis rows: publish, drain with results ignored and stored, round trip.
pub async fn rows(urls: &Urls, count: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |scenario: String, figure: String| rows.push(Row { scenario, figure });
    let tasks_per_second = |rate: f64| format!("{rate:>10.0} tasks/s");
    let rate = publish(urls, count, 1, 1).await;
    push(
        "redis: publish, 1 producer, one by one".into(),
        tasks_per_second(rate),
    );
    let rate = publish(urls, count, 4, 500).await;
    push(
        "redis: publish, 4 producers, batches of 500".into(),
        tasks_per_second(rate),
    );
    for (name, label) in [
        ("bench.noop", "results ignored"),
        ("bench.noop_result", "results stored"),
    ] {
        let (rate, cpu) = drain(urls, count, name, 64, false).await;
        push(
            format!("redis: drain no-op, {label}, conc. 64"),
            tasks_per_second(rate),
        );
        push(format!("  {cpu}"), String::new());
        match python_drain(urls, count, name).await {
            Some((python, cpu)) => {
                push(
                    format!("redis: Python Celery 5.7 drain, {label}, solo"),
                    tasks_per_second(python),
                );
                push(format!("  {cpu}"), String::new());
                push(
                    format!("  ratio Rust / Python, {label}"),
                    format!("{:>10.1} x", rate / python),
                );
            }
            None => {
                eprintln!("Python Celery rows skipped (QUEUE_BENCH_PYTHON not set, or no rate)")
            }
        }
    }
    rows.extend(event_rows(urls, count).await);
    let mut push = |scenario: String, figure: String| rows.push(Row { scenario, figure });
    push(
        "redis: idle worker, heartbeats every 2 s: CPU".into(),
        format!("{:>10.2} ms/s", idle_cpu(urls).await * 1e3),
    );
    let (p50, p99) = round_trip(urls, 2_000).await;
    let micros = |latency: Duration| format!("{:>10.1} µs", latency.as_secs_f64() * 1e6);
    push("redis: round trip send -> result, p50".into(), micros(p50));
    push("redis: round trip send -> result, p99".into(), micros(p99));
    rows
}
