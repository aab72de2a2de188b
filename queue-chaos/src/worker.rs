//! The worker process and its one task, `chaos.record`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use queue::{App, TaskContext, TaskError, Worker, task};

/// The name producers send and workers run.
pub const TASK: &str = "chaos.record";

/// Options of `queue-chaos worker`.
#[derive(clap::Args)]
pub struct Options {
    /// Broker URL (`redis://…`, `amqp://…`).
    #[arg(long)]
    broker: String,
    /// Result backend URL, or `none`.
    #[arg(long, default_value = "none")]
    backend: String,
    #[arg(long)]
    queue: String,
    /// This process's sink: one line with the task id per task run.
    #[arg(long)]
    sink: PathBuf,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 8)]
    prefetch: usize,
    /// Node name in the workers' logs and in the messages they send.
    #[arg(long)]
    node: String,
}

/// The sink file of this process. Each record is one `write(2)` of a whole line to a file
/// opened with O_APPEND: a line is in the page cache, so a SIGKILL right after it cannot
/// take it back, and a line cut short by a kill has no newline (xtask ignores it).
struct Sink(Mutex<std::fs::File>);

impl Sink {
    fn record(&self, id: &str) -> Result<(), TaskError> {
        let line = format!("{id}\n");
        let mut file = self
            .0
            .lock()
            .map_err(|_| TaskError::new("RuntimeError", "sink lock poisoned"))?;
        file.write_all(line.as_bytes())
            .map_err(|e| TaskError::new("OSError", format!("sink write failed: {e}")))
    }
}

/// Records that it ran, after `work_ms` of (simulated) work, and returns `work_ms`: the
/// work keeps tasks in flight when the faults strike. Records before returning, so a task
/// whose result is then lost or whose ack never arrives shows up as run (and, run again,
/// as a duplicate).
#[task(name = "chaos.record")]
async fn record(context: TaskContext, work_ms: u64) -> Result<u64, TaskError> {
    if work_ms > 0 {
        tokio::time::sleep(Duration::from_millis(work_ms)).await;
    }
    let sink = context
        .state::<Sink>()
        .ok_or_else(|| TaskError::new("RuntimeError", "no sink registered"))?;
    sink.record(context.id())?;
    Ok(work_ms)
}

pub async fn run(options: Options) -> crate::Result<()> {
    let sink = Sink(Mutex::new(crate::append_file(&options.sink)?));
    let app = with_backend(
        App::builder().broker(options.broker.clone()),
        &options.backend,
    )
    .default_queue(options.queue.clone())
    .state(sink)
    .task(record)
    .build()
    .await?;
    // xtask reads this line (in the worker's log) to know the process got this far.
    eprintln!(
        "queue-chaos worker {} consuming {}",
        options.node, options.queue
    );
    Worker::new(app)
        .queues([options.queue.as_str()])
        .concurrency(options.concurrency)
        .prefetch(options.prefetch)
        .fetch_wait(Duration::from_millis(200))
        .node_name(options.node)
        .run()
        .await?;
    Ok(())
}

/// The app a producer or a checker uses: the same task name, no worker.
pub async fn client(broker: &str, backend: &str, queue: &str) -> crate::Result<App> {
    Ok(
        with_backend(App::builder().broker(broker.to_owned()), backend)
            .default_queue(queue.to_owned())
            .task(record)
            .build()
            .await?,
    )
}

/// `none`: no result backend (nothing stored); anything else is a backend URL.
fn with_backend(builder: queue::AppBuilder, backend: &str) -> queue::AppBuilder {
    if backend == "none" {
        builder
    } else {
        builder.backend(backend.to_owned())
    }
}
