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
                    TaskMeta::success(format!("{run}-{writer}-{index}"), serde_json::json!(index))
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
