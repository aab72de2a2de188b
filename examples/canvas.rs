//! Workflows on the embedded memory broker: a chain, a group and a chord, typed.
//!
//! ```text
//! cargo run --example canvas
//! ```
//!
//! The same code runs on Redis or RabbitMQ (set `QUEUE_BROKER_URL` and
//! `QUEUE_RESULT_BACKEND`), with Python Celery workers taking part in the same workflows.

use std::time::Duration;

use queue::canvas::{Group, chain, chord, group};
use queue::{App, Signature, Worker, task};

#[task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "tasks.mul")]
fn mul(x: i64, y: i64) -> i64 {
    x * y
}

#[task(name = "tasks.xsum")]
fn xsum(numbers: Vec<i64>) -> i64 {
    numbers.iter().sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::builder()
        .broker(std::env::var("QUEUE_BROKER_URL").unwrap_or_else(|_| "memory://".into()))
        .backend(std::env::var("QUEUE_RESULT_BACKEND").unwrap_or_else(|_| "memory://".into()))
        .task(add)
        .task(mul)
        .task(xsum)
        .build()
        .await?;
    let worker = Worker::new(app.clone()).concurrency(8).spawn();
    let wait = Duration::from_secs(30);

    // A chain: each step gets the previous result as its first argument. (2 + 2) * 8 + 1
    let chained: i64 = add::new(2, 2)
        .then(mul::partial(8))
        .then(add::partial(1))
        .send(&app)
        .await?
        .get(wait)
        .await?;
    println!("chain (2 + 2) * 8 + 1 = {chained}");

    // A group: in parallel, every result in order.
    let doubled: Vec<i64> = Group::of((0..10).map(|i| add::new(i, i)))
        .send(&app)
        .await?
        .get(wait)
        .await?;
    println!("group 0+0 … 9+9 = {doubled:?}");

    // A chord: a group, then a body given the list of its results.
    let total: i64 = Group::of((0..100).map(|i| mul::new(i, i)))
        .then(xsum::partial())
        .send(&app)
        .await?
        .get(wait)
        .await?;
    println!("chord sum of squares 0..100 = {total}");

    // Untyped, by name (tasks that may live in Python): a chain with a chord inside.
    let by_name = chain([
        Signature::new("tasks.add").arg(1).arg(1),
        chord(
            [
                Signature::new("tasks.mul").arg(2),
                Signature::new("tasks.mul").arg(3),
            ],
            Signature::new("tasks.xsum"),
        ),
        Signature::new("tasks.add").arg(100),
    ]);
    let nested = app.send(by_name).await?.get(wait).await?;
    println!("chain 1 + 1 → [×2, ×3] → sum → + 100 = {nested}");

    let sums = app
        .send_group(group([add::new(1, 2), add::new(3, 4)]))
        .await?;
    println!("group by name = {:?}", sums.get(wait).await?);

    worker.shutdown().await?;
    Ok(())
}
