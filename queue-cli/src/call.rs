//! The task commands: `call`, `result`, `queues`, `purge`.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Args;
use queue::{App, AsyncResult, ResultError, Signature};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct CallArgs {
    /// Task name, e.g. tasks.add.
    name: String,
    /// Positional arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    kwargs: String,
    /// Queue to send to (default: celery).
    #[arg(long)]
    queue: Option<String>,
    /// Priority 0 (lowest) to 9 (highest).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Seconds before the task may run.
    #[arg(long)]
    countdown: Option<f64>,
    /// Seconds after which the task expires (is REVOKED instead of run).
    #[arg(long)]
    expires: Option<f64>,
    /// Waits up to this many seconds for the result and prints it.
    #[arg(long)]
    wait: Option<f64>,
}

fn parse_json(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("--{what} is not valid JSON: {error}"))
}

pub fn seconds(what: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{what} must be a positive number"))
}

pub async fn call(app: &App, call: CallArgs) -> Result<(), String> {
    let Value::Array(args) = parse_json("args", &call.args)? else {
        return Err("--args must be a JSON array".into());
    };
    let Value::Object(kwargs) = parse_json("kwargs", &call.kwargs)? else {
        return Err("--kwargs must be a JSON object".into());
    };
    let mut signature = Signature::new(call.name).args(args).kwargs(kwargs);
    if let Some(queue) = call.queue {
        signature = signature.queue(queue);
    }
    if let Some(priority) = call.priority {
        signature = signature.priority(priority);
    }
    if let Some(countdown) = call.countdown {
        signature = signature.countdown(seconds("countdown", countdown)?);
    }
    if let Some(expires) = call.expires {
        signature = signature.expires_in(seconds("expires", expires)?);
    }
    let result = app
        .send(signature)
        .await
        .map_err(|error| error.to_string())?;
    println!("{}", result.id());
    if let Some(wait) = call.wait {
        let value = result
            .get(seconds("wait", wait)?)
            .await
            .map_err(|error| describe(&error))?;
        println!("{value}");
    }
    Ok(())
}

pub async fn result(app: &App, id: String) -> Result<(), String> {
    let result: AsyncResult = app.result(id);
    let meta = result.meta().await.map_err(|error| error.to_string())?;
    let shown = match meta {
        None => json!({"task_id": result.id(), "status": "PENDING", "result": null}),
        Some(meta) => serde_json::to_value(&meta).map_err(|error| error.to_string())?,
    };
    println!("{shown}");
    Ok(())
}

pub async fn queues(app: &App, queues: Vec<String>) -> Result<(), String> {
    for queue in queues {
        let length = app
            .broker()
            .queue_length(&queue)
            .await
            .map_err(|error| error.to_string())?;
        let by_priority: Map<String, Value> = length
            .by_priority
            .iter()
            .map(|(priority, count)| (priority.to_string(), json!(count)))
            .collect();
        println!("{queue}\t{}\t{}", length.total, Value::Object(by_priority));
    }
    Ok(())
}

pub async fn purge(app: &App, queue: String, yes: bool) -> Result<(), String> {
    if !yes && !confirm(&format!("Purge every ready message of {queue:?}? [y/N] "))? {
        return Err("not purged".into());
    }
    let removed = app
        .broker()
        .purge(&queue)
        .await
        .map_err(|error| error.to_string())?;
    println!("purged {removed} messages from {queue}");
    Ok(())
}

fn describe(error: &ResultError) -> String {
    match error {
        ResultError::Failed { error, .. } => {
            let mut text = format!("{}: {}", error.exc_type(), error.message());
            if let Some(traceback) = error.traceback_text() {
                text.push('\n');
                text.push_str(traceback);
            }
            text
        }
        other => other.to_string(),
    }
}

fn confirm(question: &str) -> Result<bool, String> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| error.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
