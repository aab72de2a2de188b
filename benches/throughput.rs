//! Throughput and latency on `memory://`: publish, drain, and the round trip send → result.
//!
//! Run with `cargo xtask bench` (or `cargo bench --bench throughput`). Prints a table.
//! `QUEUE_BENCH_TASKS` sets the number of tasks (default 20000).

use std::time::{Duration, Instant};

use queue::{App, Signature, Task, Worker, task};

#[task(name = "bench.noop", ignore_result = true)]
async fn noop() {}

#[task(name = "bench.noop_result")]
async fn noop_result() {}

#[task(name = "bench.echo")]
async fn echo(value: u64) -> u64 {
    value
}

struct Row {
    scenario: String,
    figure: String,
}

async fn app() -> App {
    App::builder()
        .broker("memory://")
        .backend("memory://")
        .task(noop)
        .task(noop_result)
        .task(echo)
        .build()
        .await
        .expect("memory app")
}

fn calls(name: &'static str, count: usize) -> Vec<Signature> {
    (0..count).map(|_| Signature::new(name)).collect()
}

async fn publish(count: usize, producers: usize, batch: usize) -> f64 {
    let app = app().await;
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
    (per_producer * producers) as f64 / started.elapsed().as_secs_f64()
}

async fn drain(count: usize, name: &'static str, concurrency: usize) -> f64 {
    let app = app().await;
    for chunk in calls(name, count).chunks(1000) {
        app.send_many(chunk.to_vec()).await.expect("send");
    }
    let started = Instant::now();
    let worker = Worker::new(app.clone())
        .concurrency(concurrency)
        .fetch_wait(Duration::from_millis(5))
        .spawn();
    while worker.stats().succeeded.get() < count as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    worker.shutdown().await.expect("shutdown");
    count as f64 / elapsed.as_secs_f64()
}

async fn round_trip(count: usize) -> (Duration, Duration) {
    let app = app().await;
    let worker = Worker::new(app.clone()).concurrency(4).spawn();
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

// ---------------------------------------------------------------------------------------
// Redis: the same workloads against a real server (`QUEUE_TEST_REDIS_URL`, as exported by
// `cargo xtask bench`), broker in database 2 and results in database 3 as in the wire
// samples, with unique queue names per run. Needs the `redis` feature.
// ---------------------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod redis_bench {
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

    /// Drains `count` queued tasks; returns the rate and where the CPU went while draining.
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
        let measured = cpu_per_task(urls, count, async {
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
            worker.shutdown().await.expect("shutdown");
            count as f64 / elapsed.as_secs_f64()
        })
        .await;
        purge(&app, &queue).await;
        measured
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
        let worker = Worker::new(app.clone()).queues([queue.as_str()]).spawn();
        // Settled first: connections made, mingle done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = cpu_seconds("self");
        let started = Instant::now();
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
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
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
    pub async fn python_drain(
        urls: &Urls,
        count: usize,
        name: &'static str,
    ) -> Option<(f64, String)> {
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
        // Task events (4 per task, in task.multi batches) must not slow the drain much.
        let (off, _) = drain(urls, count, "bench.noop_result", 64, false).await;
        let (on, cpu) = drain(urls, count, "bench.noop_result", 64, true).await;
        push(
            "redis: drain no-op, results stored, task events on".into(),
            tasks_per_second(on),
        );
        push(format!("  {cpu}"), String::new());
        push(
            "  ratio task events on / off (same run)".into(),
            format!("{:>10.2} x", on / off),
        );
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
}
// ---------------------------------------------------------------------------------------
// SQL result backends (`queue-results`): the round trip with results in PostgreSQL
// (`QUEUE_TEST_POSTGRES_URL`, as exported by `cargo xtask bench`) and in a SQLite file, on
// the memory broker; and result writes per second straight to each backend. Needs the
// `postgres` / `sqlite` features. Rows are written with a 5-minute expiry and earlier runs'
// rows are cleaned up first, so the shared database does not grow.
// ---------------------------------------------------------------------------------------

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql_bench {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use queue::{App, ResultBackend, TaskMeta, Worker};

    use super::{Row, echo};

    /// The backends to measure: (label, URL).
    pub fn targets() -> Vec<(&'static str, String)> {
        let mut targets = Vec::new();
        #[cfg(feature = "postgres")]
        match std::env::var("QUEUE_TEST_POSTGRES_URL") {
            Ok(url) => {
                let separator = if url.contains('?') { '&' } else { '?' };
                targets.push(("postgres", format!("{url}{separator}expires=300")));
            }
            Err(_) => eprintln!("postgres rows skipped: QUEUE_TEST_POSTGRES_URL not set"),
        }
        #[cfg(feature = "sqlite")]
        {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("bench-results-{}.db", std::process::id()));
            targets.push(("sqlite", format!("sqlite://{}?expires=300", path.display())));
        }
        targets
    }

    /// Deletes the database file of a `sqlite://` target.
    pub fn remove(url: &str) {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }

    async fn app(backend: &str) -> App {
        App::builder()
            .broker("memory://")
            .backend(backend)
            .task(echo)
            .build()
            .await
            .expect("app with a SQL result backend")
    }

    /// Send → result latencies of `count` calls one after the other: (p50, p99).
    pub async fn round_trip(backend: &str, count: usize) -> (Duration, Duration) {
        let app = app(backend).await;
        let worker = Worker::new(app.clone()).concurrency(4).spawn();
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

    /// SUCCESS results stored per second by `writers` concurrent writers, one `store` per
    /// result (batch 1, what a worker does) or `store_many` batches.
    pub async fn writes(
        backend: &Arc<dyn ResultBackend>,
        count: usize,
        writers: usize,
        batch: usize,
    ) -> f64 {
        let run = format!("bench-{}-{writers}-{batch}", std::process::id());
        let per_writer = count / writers;
        let started = Instant::now();
        let mut handles = Vec::new();
        for writer in 0..writers {
            let backend = backend.clone();
            let run = run.clone();
            handles.push(tokio::spawn(async move {
                let metas: Vec<TaskMeta> = (0..per_writer)
                    .map(|index| {
                        TaskMeta::success(
                            format!("{run}-{writer}-{index}"),
                            serde_json::json!(index),
                        )
                    })
                    .collect();
                for chunk in metas.chunks(batch) {
                    if batch == 1 {
                        backend.store(chunk[0].clone()).await.expect("store");
                    } else {
                        backend
                            .store_many(chunk.to_vec())
                            .await
                            .expect("store_many");
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.expect("writer");
        }
        (per_writer * writers) as f64 / started.elapsed().as_secs_f64()
    }

    /// The rows of one SQL backend: round trip, then writes one by one and batched.
    pub async fn rows(label: &str, url: &str, count: usize) -> Vec<Row> {
        let backend = app(url).await.backend().cloned().expect("a backend");
        backend
            .cleanup_expired()
            .await
            .expect("cleanup of earlier runs");
        let mut rows = Vec::new();
        let (p50, p99) = round_trip(url, 2_000).await;
        for (name, value) in [("p50", p50), ("p99", p99)] {
            rows.push(Row {
                scenario: format!("{label} results: round trip, {name}"),
                figure: format!("{:>10.1} µs", value.as_secs_f64() * 1e6),
            });
        }
        for (writers, batch) in [(1, 1), (16, 1), (4, 100)] {
            let rate = writes(&backend, count, writers, batch).await;
            let how = if batch == 1 {
                "one by one".to_owned()
            } else {
                format!("batches of {batch}")
            };
            rows.push(Row {
                scenario: format!(
                    "{label}: result writes, {writers} writer{}, {how}",
                    if writers == 1 { "" } else { "s" }
                ),
                figure: format!("{rate:>10.0} writes/s"),
            });
        }
        rows
    }
}

// ---------------------------------------------------------------------------------------
// RabbitMQ (`QUEUE_TEST_AMQP_URL`, as exported by `cargo xtask bench`): publish with
// publisher confirms from concurrent producers, drain with acks late (results ignored),
// the round trip (results in memory://, producer and worker in one app), and Python Celery
// 5.7 draining the same workload on the same server (`QUEUE_BENCH_PYTHON`). Every row says
// how much CPU RabbitMQ itself spent per task (beam.smp's user + system time), the ceiling
// any client shares the machine's cores with. Needs the `amqp` feature.
// ---------------------------------------------------------------------------------------

#[cfg(feature = "amqp")]
mod amqp_bench {
    use std::time::{Duration, Instant};

    use queue::{App, Signature, Worker};

    use super::{Row, calls, echo, noop};

    /// Keeps the AMQP connector linked even before the facade names it.
    #[used]
    static LINK_AMQP: &fn() -> std::sync::Arc<dyn queue_core::connect::Connector> =
        &queue_amqp::AMQP_CONNECTOR;

    /// Queues of this run vanish ten minutes after their last use (`x-expires`).
    const QUEUE_EXPIRES_MS: u32 = 600_000;

    /// The broker URL from `QUEUE_TEST_AMQP_URL`, or `None` (the RabbitMQ rows are skipped).
    pub fn url() -> Option<String> {
        let base = std::env::var("QUEUE_TEST_AMQP_URL").ok()?;
        let separator = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{separator}queue_expires={QUEUE_EXPIRES_MS}"))
    }

    fn queue_name(label: &str) -> String {
        format!("bench.amqp.{label}.{}", std::process::id())
    }

    async fn app(url: &str, queue: &str) -> App {
        App::builder()
            .broker(url)
            .backend("memory://")
            .default_queue(queue)
            .task(noop)
            .task(echo)
            .build()
            .await
            .expect("amqp app")
    }

    /// CPU seconds (user + system) used so far by a process, from `/proc/<pid>/stat`.
    fn cpu_seconds(pid: &str) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// The RabbitMQ node's pid: from the pid file `cargo xtask services` writes, or else
    /// the `beam.smp` process whose command line names a rabbit node.
    fn rabbit_pid() -> Option<String> {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/services/rabbitmq/rabbitmq.pid");
        if let Ok(pid) = std::fs::read_to_string(file) {
            let pid = pid.trim().to_owned();
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Some(pid);
            }
        }
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid = entry.file_name().into_string().ok()?;
                pid.parse::<u32>().ok()?;
                let command = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let command = String::from_utf8_lossy(&command);
                (command.contains("beam.smp") && command.contains("rabbit")).then_some(pid)
            })
    }

    /// Runs `work` (which handles `count` tasks) and says where the CPU went, in µs per
    /// task: this process (producers and worker) and RabbitMQ.
    async fn cpu_per_task<F: std::future::Future<Output = f64>>(
        count: usize,
        work: F,
    ) -> (f64, String) {
        let server = rabbit_pid();
        let client_before = cpu_seconds("self");
        let server_before = server.as_deref().and_then(cpu_seconds);
        let rate = work.await;
        let per_task = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(before), Some(after)) => format!("{:.1}", (after - before) * 1e6 / count as f64),
            _ => "?".to_owned(),
        };
        let ours = per_task(client_before, cpu_seconds("self"));
        let rabbit = per_task(server_before, server.as_deref().and_then(cpu_seconds));
        (
            rate,
            format!("CPU µs/task: client {ours}, RabbitMQ {rabbit}"),
        )
    }

    /// Tasks published per second (each publish returns once RabbitMQ confirmed it).
    pub async fn publish(url: &str, count: usize, producers: usize, batch: usize) -> (f64, String) {
        let queue = queue_name("publish");
        let app = app(url, &queue).await;
        app.broker().declare_queue(&queue).await.expect("declare");
        let per_producer = count / producers;
        let measured = cpu_per_task(per_producer * producers, async {
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
            (per_producer * producers) as f64 / started.elapsed().as_secs_f64()
        })
        .await;
        app.broker().purge(&queue).await.expect("purge");
        measured
    }

    async fn fill(app: &App, count: usize) {
        let mut sends = Vec::new();
        for chunk in calls("bench.noop", count).chunks(1000) {
            let app = app.clone();
            let chunk = chunk.to_vec();
            sends.push(tokio::spawn(async move {
                app.send_many(chunk).await.expect("send")
            }));
        }
        for send in sends {
            send.await.expect("send");
        }
    }

    /// Drains `count` queued no-op tasks (results ignored, acks late).
    pub async fn drain(
        url: &str,
        count: usize,
        concurrency: usize,
        prefetch: usize,
    ) -> (f64, String) {
        let queue = queue_name("drain");
        let app = app(url, &queue).await;
        app.broker().declare_queue(&queue).await.expect("declare");
        fill(&app, count).await;
        let measured = cpu_per_task(count, async {
            let started = Instant::now();
            let worker = Worker::new(app.clone())
                .queues([queue.as_str()])
                .concurrency(concurrency)
                .prefetch(prefetch)
                .fetch_wait(Duration::from_millis(5))
                .spawn();
            while worker.stats().succeeded.get() < count as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let elapsed = started.elapsed();
            worker.shutdown().await.expect("shutdown");
            count as f64 / elapsed.as_secs_f64()
        })
        .await;
        app.broker().purge(&queue).await.expect("purge");
        measured
    }

    /// Send → result latencies of `count` calls one after the other: (p50, p99).
    pub async fn round_trip(url: &str, count: usize) -> (Duration, Duration) {
        let queue = queue_name("round_trip");
        let app = app(url, &queue).await;
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

    /// A Celery worker (solo pool, acks late, results ignored) that prints its drain rate
    /// once it ran `N` tasks, timed from its first task.
    const PYTHON_WORKER: &str = r#"
import os, sys, time
from celery import Celery
from kombu import Exchange, Queue
url, queue, count, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = Celery("bench", broker=url)
app.conf.update(task_acks_late=True, task_ignore_result=True, worker_prefetch_multiplier=prefetch,
                worker_redirect_stdouts=False,
                task_queues=[Queue(queue, Exchange(queue), routing_key=queue,
                                   queue_arguments={"x-expires": int(sys.argv[5])})])
state = {"n": 0, "t0": None, "cpu0": None}
@app.task(name="bench.noop", ignore_result=True, acks_late=True)
def noop():
    if state["t0"] is None:
        state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
    state["n"] += 1
    if state["n"] == count:
        rate = count / (time.perf_counter() - state["t0"])
        cpu = (time.process_time() - state["cpu0"]) * 1e6 / count
        print(f"RATE {rate:.1f} {cpu:.1f}", flush=True)
        os._exit(0)
app.worker_main(["worker", "-Q", queue, "--pool=solo", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel=WARNING"])
"#;

    /// Python Celery 5.7 draining `count` tasks we queued on the same server, or `None`
    /// when `QUEUE_BENCH_PYTHON` is not set.
    pub async fn python_drain(url: &str, count: usize, prefetch: usize) -> Option<(f64, String)> {
        let python = std::env::var("QUEUE_BENCH_PYTHON").ok()?;
        let plain = std::env::var("QUEUE_TEST_AMQP_URL").ok()?;
        let queue = queue_name("python");
        let app = app(url, &queue).await;
        app.broker().declare_queue(&queue).await.expect("declare");
        fill(&app, count).await;
        let child = std::process::Command::new(&python)
            .args([
                "-c",
                PYTHON_WORKER,
                &plain,
                &queue,
                &count.to_string(),
                &prefetch.to_string(),
            ])
            .arg(QUEUE_EXPIRES_MS.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the Python worker");
        // The worker reports its own CPU per task (it is gone before /proc could be read).
        let worker_cpu = std::sync::Arc::new(std::sync::Mutex::new(String::from("?")));
        let reported = worker_cpu.clone();
        let (rate, cpu) = cpu_per_task(count, async move {
            let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await;
            let stdout = match output {
                Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout).into_owned(),
                _ => String::new(),
            };
            let line = stdout.lines().find_map(|line| line.strip_prefix("RATE "));
            let mut fields = line.unwrap_or_default().split_whitespace();
            let rate = fields
                .next()
                .and_then(|rate| rate.parse().ok())
                .unwrap_or(0.0);
            if let Some(cpu) = fields.next() {
                *reported.lock().unwrap() = cpu.to_owned();
            }
            rate
        })
        .await;
        let rabbit = cpu.rsplit("RabbitMQ ").next().unwrap_or("?");
        let worker = worker_cpu.lock().unwrap().clone();
        let measured = (
            rate,
            format!("CPU µs/task: Python worker {worker}, RabbitMQ {rabbit}"),
        );
        app.broker().purge(&queue).await.expect("purge");
        Some(measured)
    }

    /// The RabbitMQ rows.
    pub async fn rows(url: &str, count: usize) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut push = |scenario: String, figure: String| rows.push(Row { scenario, figure });
        let (rate, cpu) = publish(url, count.min(5_000), 1, 1).await;
        push(
            "amqp: publish+confirm, 1 producer, one by one".into(),
            format!("{rate:>10.0} tasks/s"),
        );
        push(format!("  {cpu}"), String::new());
        for producers in [4, 16] {
            let (rate, cpu) = publish(url, count, producers, 500).await;
            push(
                format!("amqp: publish+confirm, {producers} producers, batch 500"),
                format!("{rate:>10.0} tasks/s"),
            );
            push(format!("  {cpu}"), String::new());
        }
        for (concurrency, prefetch) in [(64, 0), (64, 448)] {
            let (rate, cpu) = drain(url, count, concurrency, prefetch).await;
            push(
                format!(
                    "amqp: drain no-op, acks late, conc. {concurrency}, prefetch {}",
                    concurrency + prefetch
                ),
                format!("{rate:>10.0} tasks/s"),
            );
            push(format!("  {cpu}"), String::new());
        }
        let (p50, p99) = round_trip(url, 2_000).await;
        push(
            "amqp: round trip send -> result, p50".into(),
            format!("{:>10.1} µs", p50.as_secs_f64() * 1e6),
        );
        push(
            "amqp: round trip send -> result, p99".into(),
            format!("{:>10.1} µs", p99.as_secs_f64() * 1e6),
        );
        match python_drain(url, count, 64).await {
            Some((rate, cpu)) => {
                push(
                    "amqp: Python Celery 5.7 drain, solo, prefetch 64".into(),
                    format!("{rate:>10.0} tasks/s"),
                );
                push(format!("  {cpu}"), String::new());
            }
            None => eprintln!("Python Celery row skipped: QUEUE_BENCH_PYTHON not set"),
        }
        rows
    }
}

fn main() {
    let count: usize = std::env::var("QUEUE_BENCH_TASKS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Keep the noop tasks referenced so their names stay registered in the table below.
    let _ = (noop.name(), noop_result.name());
    let mut rows = Vec::new();
    runtime.block_on(async {
        let rate = publish(count, 1, 1).await;
        rows.push(Row {
            scenario: "publish, 1 producer, one by one".into(),
            figure: format!("{rate:>10.0} tasks/s"),
        });
        let rate = publish(count, 4, 500).await;
        rows.push(Row {
            scenario: "publish, 4 producers, batches of 500".into(),
            figure: format!("{rate:>10.0} tasks/s"),
        });
        let rate = drain(count, "bench.noop", 64).await;
        rows.push(Row {
            scenario: "drain no-op, results ignored, concurrency 64".into(),
            figure: format!("{rate:>10.0} tasks/s"),
        });
        let rate = drain(count, "bench.noop_result", 64).await;
        rows.push(Row {
            scenario: "drain no-op, results stored, concurrency 64".into(),
            figure: format!("{rate:>10.0} tasks/s"),
        });
        let (p50, p99) = round_trip(2_000).await;
        rows.push(Row {
            scenario: "round trip send -> result, p50".into(),
            figure: format!("{:>10.1} µs", p50.as_secs_f64() * 1e6),
        });
        rows.push(Row {
            scenario: "round trip send -> result, p99".into(),
            figure: format!("{:>10.1} µs", p99.as_secs_f64() * 1e6),
        });
        #[cfg(feature = "redis")]
        match redis_bench::urls() {
            Some(urls) => rows.extend(redis_bench::rows(&urls, count).await),
            None => eprintln!("redis rows skipped: QUEUE_TEST_REDIS_URL not set"),
        }
        #[cfg(feature = "amqp")]
        match amqp_bench::url() {
            Some(url) => rows.extend(amqp_bench::rows(&url, count).await),
            None => eprintln!("RabbitMQ rows skipped: QUEUE_TEST_AMQP_URL not set"),
        }
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        for (label, url) in sql_bench::targets() {
            rows.extend(sql_bench::rows(label, &url, count).await);
            sql_bench::remove(&url);
        }
    });
    println!();
    println!(
        "memory:// broker and backend, {count} tasks, {} CPUs",
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    println!("{:<48} {:>16}", "scenario", "result");
    println!("{}", "-".repeat(65));
    for row in rows {
        println!("{:<48} {:>16}", row.scenario, row.figure);
    }
}
