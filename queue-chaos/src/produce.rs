//! The producer process: `count` tasks `chaos.record` with ids `<prefix>-<n>`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use queue::Signature;

use crate::worker::{TASK, client};

/// Options of `queue-chaos produce`.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long)]
    broker: String,
    #[arg(long)]
    queue: String,
    /// Task ids are `<prefix>-<n>` for n in 0..count.
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// The tasks' simulated work in milliseconds.
    #[arg(long, default_value_t = 1)]
    work_ms: u64,
    /// Pause between batches, to spread the load over the run instead of queueing it all
    /// up front (load shaping, not synchronisation).
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Whether the tasks' results are stored (the backend is the workers').
    #[arg(long)]
    results: bool,
    /// Appended after each confirmed batch: the number of tasks confirmed so far.
    #[arg(long)]
    progress: PathBuf,
    /// A batch still unconfirmed after this long fails the producer.
    #[arg(long, default_value_t = 120)]
    give_up_after: u64,
}

pub async fn run(options: Options) -> crate::Result<()> {
    let app = client(&options.broker, "none", &options.queue).await?;
    let mut progress = crate::append_file(&options.progress)?;
    let give_up = Duration::from_secs(options.give_up_after);
    let mut sent = 0;
    let mut failures = 0u64;
    while sent < options.count {
        let size = options.batch.min(options.count - sent);
        let batch: Vec<Signature> = (sent..sent + size)
            .map(|n| {
                Signature::new(TASK)
                    .arg(options.work_ms)
                    .task_id(format!("{}-{n}", options.prefix))
                    .queue(options.queue.clone())
                    .ignore_result(!options.results)
            })
            .collect();
        // A batch whose publish failed may or may not have landed: send it again with the
        // same ids (at least once); a second copy shows up as a duplicate, never as a loss.
        let started = Instant::now();
        loop {
            match app.send_many(batch.clone()).await {
                Ok(_) => break,
                Err(error) => {
                    failures += 1;
                    if started.elapsed() > give_up {
                        return Err(format!(
                            "batch at {sent} unconfirmed for {give_up:?}: {error}"
                        )
                        .into());
                    }
                    tracing::warn!(%error, sent, "publish failed; sending the batch again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        sent += size;
        progress.write_all(format!("{sent}\n").as_bytes())?;
        if options.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(options.pace_ms)).await;
        }
    }
    eprintln!("queue-chaos produce: {sent} sent, {failures} failed publishes retried");
    Ok(())
}
