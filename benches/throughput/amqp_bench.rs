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
pub async fn drain(url: &str, count: usize, concurrency: usize, prefetch: usize) -> (f64, String) {
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
