//! What the interop suites with a Python side share: the venv's Python, the broker of the
//! row and results in Redis, unique queue names, and our app with the interop tasks.
#![allow(dead_code)]

use std::path::PathBuf;

use queue::App;

use super::{python, tasks};

/// One row of an interop matrix: Python, a broker, results in Redis.
pub struct Setup {
    pub python: PathBuf,
    pub broker: String,
    pub backend: String,
}

/// The row for the broker in `broker_variable`, or `None` to skip (a failure under CI).
pub fn setup(broker_variable: &str) -> Option<Setup> {
    let python = python::python()?;
    let broker = queue_core::conformance::server_url(broker_variable)?;
    let backend = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL")?;
    Some(Setup {
        python,
        broker,
        backend,
    })
}

/// A queue name no other test uses.
pub fn unique(label: &str) -> String {
    use rand::Rng;
    let suffix = rand::rng().random::<u64>() & 0xffff_ffff_ffff;
    format!("interop.{label}.{suffix:012x}")
}

/// Our app on the row's broker and backend, with the interop tasks and `queue` as default.
pub async fn rust_app(setup: &Setup, queue: &str) -> App {
    tasks::register(App::builder())
        .broker(setup.broker.clone())
        .backend(setup.backend.clone())
        .default_queue(queue)
        .build()
        .await
        .expect("connect")
}

/// Runs `script` with the row's broker and backend, off the runtime; its JSON output.
pub async fn run_script(setup: &Setup, script: String) -> serde_json::Value {
    let python = setup.python.clone();
    let (broker, backend) = (setup.broker.clone(), setup.backend.clone());
    tokio::task::spawn_blocking(move || python::run_script(&python, &broker, &backend, &script))
        .await
        .expect("the script's thread")
}
