//! Periodic tasks on the embedded memory broker: two beats (as on two nodes) share one lease,
//! one of them sends; a worker runs the ticks. Stops after five runs.
//!
//! ```text
//! cargo run --example beat --features beat
//! ```
//!
//! On Redis, PostgreSQL or SQLite (set `QUEUE_BROKER_URL` / `QUEUE_RESULT_BACKEND`) the lease
//! lives there, and the beats may run in different processes and hosts.

use std::sync::Arc;
use std::time::Duration;

use queue::beat::Beat;
use queue::beat::chrono_tz::Europe::Berlin;
use queue::lease::MemoryLease;
use queue::{App, Signature, TaskContext, Worker, task};

#[task(name = "reports.heartbeat")]
fn heartbeat(context: &TaskContext, node: String) -> String {
    println!("tick {} from {node}", context.id());
    node
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::builder()
        .broker("memory://")
        .task(heartbeat)
        .build()
        .await?;
    // Two instances in one process share a memory lease; across processes, a store does.
    let lease = Arc::new(MemoryLease::new());
    let mut beats = Vec::new();
    for node in ["node-a", "node-b"] {
        let beat = Beat::new(app.clone())
            .lease(lease.clone())
            .holder(node)
            .every(
                "heartbeat",
                Duration::from_secs(1),
                heartbeat::new(node.to_owned()),
            )
            .cron(
                "nightly",
                "0 3 * * *",
                Berlin,
                Signature::new("reports.nightly"),
            )
            .start()
            .await?;
        beats.push(beat);
    }
    let mut sent = beats[0].sent();
    let mut sent_by_b = beats[1].sent();
    let worker = Worker::new(app.clone()).spawn();
    for _ in 0..5 {
        let tick = tokio::select! {
            tick = sent.recv() => tick?,
            tick = sent_by_b.recv() => tick?,
        };
        println!(
            "sent {} scheduled {} (token {})",
            tick.entry, tick.scheduled, tick.token
        );
    }
    for beat in &beats {
        let status = beat.status();
        for entry in &status.entries {
            println!(
                "{}: leading={} {} next {:?}",
                status.holder, status.leading, entry.schedule, entry.next_tick
            );
        }
    }
    for beat in beats {
        beat.shutdown().await;
    }
    worker.shutdown().await?;
    Ok(())
}
