//! Logs go through `tracing`: a span per execution and per publish carrying the task id,
//! name, queue and retry count; secrets never reach a log line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{App, TaskContext, TaskError, Worker, task};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[task(name = "logs.flaky", max_retries = 1, retry_delay = 0)]
async fn flaky(context: TaskContext) -> Result<u32, TaskError> {
    if context.retries() == 0 {
        return Err(TaskError::new("IOError", "first try fails").into_retry());
    }
    Ok(1)
}

// Single-threaded runtime: the subscriber set for this test sees the worker's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn task_and_publish_spans_carry_id_name_queue_and_retries_without_secrets() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = App::builder()
        .broker("memory://operator:s3cr3t-pass@localhost/0")
        .backend("memory://operator:s3cr3t-pass@localhost/1")
        .default_queue("logged")
        .task(flaky)
        .build()
        .await
        .unwrap();
    let worker = Worker::new(app.clone()).queues(["logged"]).spawn();
    let result = flaky::new().send(&app).await.unwrap();
    assert_eq!(result.get(Duration::from_secs(20)).await.unwrap(), 1);
    worker.shutdown().await.unwrap();

    let logs = captured.text();
    let id = result.id();
    let execution = format!("task{{task_id={id} task_name=logs.flaky queue=logged retries=0}}");
    let retried = format!("task{{task_id={id} task_name=logs.flaky queue=logged retries=1}}");
    assert!(
        logs.contains(&execution),
        "no first execution span in:\n{logs}"
    );
    assert!(
        logs.contains(&retried),
        "no retried execution span in:\n{logs}"
    );
    assert!(logs.contains("task will be retried"), "{logs}");
    assert!(logs.contains("task succeeded"), "{logs}");
    let publish = format!("publish{{task_id={id} task_name=logs.flaky queue=logged retries=1}}");
    assert!(
        logs.contains(&publish),
        "no publish span for the retry in:\n{logs}"
    );
    assert!(
        !logs.contains("s3cr3t-pass"),
        "a secret reached the logs:\n{logs}"
    );
}
