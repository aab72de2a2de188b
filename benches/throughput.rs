//! Throughput and latency on `memory://`: publish, drain, and the round trip send → result.
//!
//! Run with `cargo xtask bench` (or `cargo bench --bench throughput`). Prints a table.
//! `QUEUE_BENCH_TASKS` sets the number of tasks (default 20000); `QUEUE_BENCH_ONLY=redis-events`
//! runs only the Redis task events rows. The canvas rows (Redis, `throughput/canvas.rs`): a
//! group and a chord of `QUEUE_BENCH_CANVAS_TASKS` (default 10000) `tasks.add` parts, their
//! time and each worker process's peak RSS, ours against Python Celery 5.7 in the same run;
//! alone with `QUEUE_BENCH_ONLY=canvas`.

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
#[path = "throughput/redis_bench.rs"]
mod redis_bench;

// Canvas on Redis: a group and a chord of 10k `tasks.add`, each worker (ours: this binary
// started again as a worker; Python's: a solo Celery worker) in its own process so its
// peak RSS is its own. Needs the `redis` feature.
#[cfg(feature = "redis")]
#[path = "throughput/canvas.rs"]
mod canvas;

// ---------------------------------------------------------------------------------------
// SQL result backends (`queue-results`): the round trip with results in PostgreSQL
// (`QUEUE_TEST_POSTGRES_URL`, as exported by `cargo xtask bench`) and in a SQLite file, on
// the memory broker; and result writes per second straight to each backend. Needs the
// `postgres` / `sqlite` features. Rows are written with a 5-minute expiry and earlier runs'
// rows are cleaned up first, so the shared database does not grow.
// ---------------------------------------------------------------------------------------

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[path = "throughput/sql_bench.rs"]
mod sql_bench;

// ---------------------------------------------------------------------------------------
// RabbitMQ (`QUEUE_TEST_AMQP_URL`, as exported by `cargo xtask bench`): publish with
// publisher confirms from concurrent producers, drain with acks late (results ignored),
// the round trip (results in memory://, producer and worker in one app), and Python Celery
// 5.7 draining the same workload on the same server (`QUEUE_BENCH_PYTHON`). Every row says
// how much CPU RabbitMQ itself spent per task (beam.smp's user + system time), the ceiling
// any client shares the machine's cores with. Needs the `amqp` feature.
// ---------------------------------------------------------------------------------------

#[cfg(feature = "amqp")]
#[path = "throughput/amqp_bench.rs"]
mod amqp_bench;

fn main() {
    // This binary started again by the canvas rows, as their worker process.
    #[cfg(feature = "redis")]
    if canvas::worker_process() {
        return;
    }
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
    // `QUEUE_BENCH_ONLY=redis-events`: only the Redis task events rows (on / off).
    if std::env::var("QUEUE_BENCH_ONLY").as_deref() == Ok("redis-events") {
        #[cfg(feature = "redis")]
        runtime.block_on(async {
            match redis_bench::urls() {
                Some(urls) => rows.extend(redis_bench::event_rows(&urls, count).await),
                None => eprintln!("redis rows skipped: QUEUE_TEST_REDIS_URL not set"),
            }
        });
        print_table(count, rows);
        return;
    }
    // `QUEUE_BENCH_ONLY=canvas`: only the canvas rows (Redis).
    if std::env::var("QUEUE_BENCH_ONLY").as_deref() == Ok("canvas") {
        #[cfg(feature = "redis")]
        runtime.block_on(async {
            match redis_bench::urls() {
                Some(urls) => rows.extend(canvas::rows(&urls).await),
                None => eprintln!("canvas rows skipped: QUEUE_TEST_REDIS_URL not set"),
            }
        });
        print_table(count, rows);
        return;
    }
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
            Some(urls) => {
                rows.extend(redis_bench::rows(&urls, count).await);
                rows.extend(canvas::rows(&urls).await);
            }
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
    print_table(count, rows);
}

fn print_table(count: usize, rows: Vec<Row>) {
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
