//! Quickstart: a worker and a producer in one process on the embedded memory broker.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Sends a few hundred tasks over two queues (`urgent` before `celery`) with priorities,
//! including one that is retried and one that fails, shows a progress bar while the worker
//! drains them, then reads every result back by id and prints a summary.
//!
//! Results stay in memory unless `QUEUE_RESULT_BACKEND` names another store, e.g.
//! `sqlite://quickstart.db`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use queue::{App, AsyncResult, ResultError, Signature, TaskContext, TaskError, Worker, task};

// Links the SQL connector, so that `QUEUE_RESULT_BACKEND=sqlite://quickstart.db` works with
// plain `cargo run --example quickstart` (the `sqlite` feature does this for applications).
#[used]
static LINK_SQL: &fn() -> std::sync::Arc<dyn queue::connect::Connector> =
    &queue_results::SQL_CONNECTOR;

/// Adds two numbers (a sync task: it runs on the blocking pool).
#[task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Pretends to resize an image (an async task with a default queue of its own).
#[task(name = "tasks.resize", queue = "urgent", priority = 5)]
async fn resize(image_id: u64, width: u32) -> String {
    tokio::time::sleep(Duration::from_millis(2)).await;
    format!("image-{image_id}@{width}px")
}

/// Fails on its first two runs, then succeeds: retried with exponential backoff.
#[task(
    name = "tasks.flaky",
    max_retries = 5,
    retry_delay = 0.05,
    retry_backoff = true
)]
async fn flaky(context: TaskContext) -> Result<u32, TaskError> {
    if context.retries() < 2 {
        return Err(TaskError::new("ConnectionError", "upstream not ready").into_retry());
    }
    Ok(context.retries())
}

/// Always fails, with a Python-compatible exception type.
#[task(name = "tasks.charge")]
async fn charge(amount_cents: i64) -> Result<(), TaskError> {
    Err(TaskError::new(
        "ValueError",
        format!("card declined for {amount_cents} cents"),
    ))
}

const TASKS: usize = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // Results in memory by default; an embedded SQLite file works too:
    // QUEUE_RESULT_BACKEND=sqlite://quickstart.db cargo run --example quickstart
    let backend = std::env::var("QUEUE_RESULT_BACKEND").unwrap_or_else(|_| "memory://".into());
    let app = App::builder()
        .broker("memory://")
        .backend(&backend)
        .task(add)
        .task(resize)
        .task(flaky)
        .task(charge)
        .build()
        .await?;

    // Producer: sums at priorities 0–9 on `celery`, resizes on `urgent`, one flaky, one failing.
    let mut calls: Vec<Signature> = Vec::with_capacity(TASKS);
    for index in 0..TASKS - 2 {
        let index = index as i64;
        if index % 3 == 0 {
            calls.push(resize::new(index as u64, 640).into());
        } else {
            calls.push(add::new(index, index).priority((index % 10) as u8).into());
        }
    }
    calls.push(flaky::new().into());
    calls.push(charge::new(4200).into());
    let started = Instant::now();
    let results = app.send_many(calls).await?;
    println!(
        "sent {} tasks in {:.1?} (queued: urgent={}, celery={})",
        results.len(),
        started.elapsed(),
        app.broker().queue_length("urgent").await?.total,
        app.broker().queue_length("celery").await?.total,
    );

    // Worker: `urgent` strictly before `celery`, 8 tasks at a time.
    let worker = Worker::new(app.clone())
        .queues(["urgent", "celery"])
        .concurrency(8)
        .spawn();

    let progress = ProgressBar::new(results.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos}/{len} tasks {msg}",
    )?);
    let mut pending: FuturesUnordered<_> = results
        .iter()
        .map(|result| async move { result.get(Duration::from_secs(30)).await })
        .collect();
    while let Some(outcome) = pending.next().await {
        progress.inc(1);
        if let Err(ResultError::Failed { .. }) = outcome {
            progress.set_message("(one failed, as planned)");
        }
    }
    progress.finish();
    let elapsed = started.elapsed();
    worker.shutdown().await?;

    // Summary: every state read back by id, from a fresh handle.
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for result in &results {
        let by_id: AsyncResult = app.result(result.id());
        *states.entry(by_id.state().await?.to_string()).or_default() += 1;
    }
    println!("\n{} tasks done in {elapsed:.1?}", results.len());
    for (state, count) in &states {
        println!("  {state:<8} {count}");
    }
    let first_sum: i64 = app.result(results[1].id()).get(Duration::ZERO).await?;
    let first_resize: String = resize::result(&app, results[0].id())
        .get(Duration::ZERO)
        .await?;
    let retries: u32 = flaky::result(&app, results[TASKS - 2].id())
        .get(Duration::ZERO)
        .await?;
    println!("  tasks.add(1, 1)        = {first_sum}");
    println!("  tasks.resize(0, 640)   = {first_resize:?}");
    println!("  tasks.flaky()          = succeeded after {retries} retries");
    match app
        .result::<()>(results[TASKS - 1].id())
        .get(Duration::ZERO)
        .await
    {
        Err(ResultError::Failed { error, .. }) => {
            println!(
                "  tasks.charge(4200)     = {}: {}",
                error.exc_type(),
                error.message()
            )
        }
        other => println!("  tasks.charge(4200)     = unexpected {other:?}"),
    }
    Ok(())
}
